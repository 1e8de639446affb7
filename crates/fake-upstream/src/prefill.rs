//! Continuing from a prefill: a request whose conversation ends with the
//! assistant's own text (the three ways providers take one: a trailing
//! assistant message, the same with `"prefix": true`, or vLLM's
//! `continue_final_message`) is answered with the rest of the reply.

use serde_json::Value;

use super::Scenario;
use super::reply;

/// The text of the trailing assistant message, if the conversation ends
/// with one.
pub(crate) fn of(request: &Value) -> Option<String> {
    let last = request.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return None;
    }
    Some(reply::content_text(last.get("content")?))
}

/// The scenario that continues the reply after `prefill`: its text is the
/// rest, with no content-chunk misbehaviour; `Err` says why the prefill
/// cannot be continued (it is not how the reply begins).
pub(crate) fn continuation(
    request: &Value,
    scenario: &Scenario,
    prefill: &str,
) -> Result<Scenario, String> {
    let whole = reply::reply_text(request, scenario);
    let Some(rest) = whole.strip_prefix(prefill) else {
        return Err(format!(
            "the assistant prefill ({} bytes) is not how the reply begins",
            prefill.len()
        ));
    };
    Ok(Scenario {
        reply: Some(rest.to_owned()),
        repeat: None,
        cut_after: None,
        stall_after: None,
        malformed_after: None,
        error_frame_after: None,
        ..scenario.clone()
    })
}

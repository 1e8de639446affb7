//! An OpenAI request body → the internal request, or a 400 that says what
//! is wrong and where (`messages[0].role: unknown variant ...`).
//!
//! The body deserializes straight into [`ChatRequest`] (its serde form is
//! OpenAI's). Only when that fails do we look again for what OpenAI accepts
//! but the typed model does not (`null` meaning "not set", `stop` as one
//! string), so well-formed requests pay for one parse and nothing else.
//!
//! Two OpenAI fields are the facade's, not the upstream's:
//! - `stream_options`: the provider's config decides what we ask upstream
//!   (usage, so the call is accounted); the caller's `include_usage` only
//!   decides whether it *sees* the usage chunk, which, as with OpenAI, it
//!   does only when it asked for it.
//! - `metadata` (string tags): attribution, kept by the sidecar and never
//!   sent upstream, as the gRPC API's `metadata`.

use super::api_error::{ApiError, is_path};
use crate::model::ChatRequest;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A caller's request and what it asked of the facade itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub request: ChatRequest,
    /// `stream_options.include_usage`: show the caller the usage chunk.
    pub include_usage: bool,
}

pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let mut request = deserialize(body)?;
    let include_usage = take_stream_options(&mut request.extra)?;
    request.metadata = take_metadata(&mut request.extra)?;
    Ok(Parsed {
        request,
        include_usage,
    })
}

fn deserialize(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let rejection = match Json::<ChatRequest>::from_bytes(body) {
        Ok(Json(request)) => return Ok(request),
        Err(rejection) => rejection,
    };
    // Only JSON that is not a request may be one that OpenAI accepts; it
    // goes through bytes again so that a remaining error keeps its path.
    if let JsonRejection::JsonDataError(_) = rejection
        && let Ok(mut value) = serde_json::from_slice::<Value>(body)
        && normalize(&mut value)
        && let Ok(bytes) = serde_json::to_vec(&value)
    {
        return Json::<ChatRequest>::from_bytes(&bytes)
            .map(|Json(request)| request)
            .map_err(|rejection| body_error(&rejection));
    }
    Err(body_error(&rejection))
}

/// Rewrites what OpenAI accepts into what the typed model reads; true when
/// anything changed.
fn normalize(body: &mut Value) -> bool {
    let Some(fields) = body.as_object_mut() else {
        return false;
    };
    let mut changed = drop_nulls(fields, &[]);
    if let Some(Value::String(stop)) = fields.get_mut("stop") {
        let one = std::mem::take(stop);
        fields.insert("stop".to_owned(), Value::Array(vec![Value::String(one)]));
        changed = true;
    }
    if let Some(Value::Array(messages)) = fields.get_mut("messages") {
        for message in messages.iter_mut().filter_map(Value::as_object_mut) {
            // `"content": null` is meaningful (an assistant message that
            // only calls tools) and the model reads it.
            changed |= drop_nulls(message, &["content"]);
        }
    }
    changed
}

fn drop_nulls(fields: &mut Map<String, Value>, keep: &[&str]) -> bool {
    let before = fields.len();
    fields.retain(|key, value| !value.is_null() || keep.contains(&key.as_str()));
    fields.len() != before
}

/// axum's rejection text, without its own preamble, with the field path
/// as `param` when serde gave one.
fn body_error(rejection: &JsonRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text
        .split_once(": ")
        .map_or(text.as_str(), |(_, rest)| rest);
    match rejection {
        JsonRejection::JsonSyntaxError(_) => ApiError::invalid(
            "invalid_json",
            format!("the request body is not valid JSON: {detail}"),
            None,
        ),
        _ => {
            let param = detail
                .split_once(": ")
                .map(|(head, _)| head)
                .filter(|head| is_path(head) && *head != ".")
                .map(str::to_owned);
            ApiError::invalid(
                "invalid_request",
                format!("the request body is not a valid chat completion request: {detail}"),
                param,
            )
        }
    }
}

fn take_stream_options(extra: &mut Map<String, Value>) -> Result<bool, ApiError> {
    match extra.remove("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(include)) => Ok(*include),
            Some(_) => Err(ApiError::invalid(
                "invalid_request",
                "`stream_options.include_usage` must be true or false",
                Some("stream_options.include_usage".to_owned()),
            )),
        },
        Some(_) => Err(ApiError::invalid(
            "invalid_request",
            "`stream_options` must be an object, e.g. {\"include_usage\": true}",
            Some("stream_options".to_owned()),
        )),
    }
}

fn take_metadata(extra: &mut Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "invalid_request",
            "`metadata` must be an object of string values",
            Some("metadata".to_owned()),
        )
    };
    match extra.remove("metadata") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(tags)) => tags
            .into_iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key, value)),
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Content, Role};
    use serde_json::json;

    fn parse_json(body: Value) -> Result<Parsed, ApiError> {
        parse(&serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn an_openai_body_is_the_request() {
        let parsed = parse_json(json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.5,
            "stream": true,
            "max_completion_tokens": 10,
            "fake": {"chunks": 2},
        }))
        .unwrap();
        let request = parsed.request;
        assert_eq!(request.model, "gpt-4o-mini");
        assert_eq!(request.messages[0].role, Role::User);
        assert_eq!(request.temperature, Some(0.5));
        assert!(request.stream);
        assert_eq!(request.extra["max_completion_tokens"], 10);
        assert_eq!(request.extra["fake"], json!({"chunks": 2}));
        assert!(!parsed.include_usage);
    }

    #[test]
    fn syntax_errors_say_where() {
        let error = parse(b"{\"model\": ").unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.code.as_deref(), Some("invalid_json"));
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        assert!(error.message.contains("line 1 column"), "{}", error.message);
        assert!(parse(b"").is_err());
    }

    #[test]
    fn type_errors_name_the_field() {
        let error = parse_json(json!({
            "model": "m",
            "messages": [{"role": "robot", "content": "hi"}],
        }))
        .unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.param.as_deref(), Some("messages[0].role"));
        assert!(
            error
                .message
                .contains("messages[0].role: unknown variant `robot`"),
            "{}",
            error.message
        );

        let error =
            parse_json(json!({"model": "m", "messages": [], "temperature": "hot"})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("temperature"));
    }

    #[test]
    fn missing_fields_are_named() {
        let error =
            parse_json(json!({"messages": [{"role": "user", "content": "hi"}]})).unwrap_err();
        assert!(
            error.message.contains("missing field `model`"),
            "{}",
            error.message
        );
        let error = parse_json(json!({"model": "m"})).unwrap_err();
        assert!(
            error.message.contains("missing field `messages`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn nulls_mean_unset_and_stop_may_be_one_string() {
        let parsed = parse_json(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi", "name": null},
                {"role": "assistant", "content": null, "tool_calls": null},
            ],
            "stop": "END",
            "tools": null,
            "stream": null,
            "temperature": null,
        }))
        .unwrap();
        assert_eq!(parsed.request.stop, vec!["END".to_owned()]);
        assert!(parsed.request.tools.is_empty());
        assert!(!parsed.request.stream);
        assert_eq!(parsed.request.messages[1].content, None);
        assert_eq!(
            parsed.request.messages[0].content,
            Some(Content::Text("hi".into()))
        );
    }

    #[test]
    fn normalizing_does_not_hide_the_real_error() {
        let error = parse_json(json!({
            "model": "m",
            "messages": [{"role": "robot", "content": "hi"}],
            "stop": null,
        }))
        .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn stream_options_are_the_facades() {
        let parsed = parse_json(json!({
            "model": "m", "messages": [], "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .unwrap();
        assert!(parsed.include_usage);
        assert!(!parsed.request.extra.contains_key("stream_options"));
        let parsed = parse_json(json!({
            "model": "m", "messages": [], "stream_options": {"include_usage": false},
        }))
        .unwrap();
        assert!(!parsed.include_usage);
        let error =
            parse_json(json!({"model": "m", "messages": [], "stream_options": true})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("stream_options"));
    }

    #[test]
    fn metadata_becomes_tags_not_upstream_fields() {
        let parsed = parse_json(json!({
            "model": "m", "messages": [], "metadata": {"team": "search"},
        }))
        .unwrap();
        assert_eq!(parsed.request.metadata["team"], "search");
        assert!(!parsed.request.extra.contains_key("metadata"));
        let error =
            parse_json(json!({"model": "m", "messages": [], "metadata": {"n": 1}})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("metadata"));
    }
}

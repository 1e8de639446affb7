//! Checks a request before anything is sent upstream — only for what the
//! sidecar itself needs: a model to route, and a message list to send.
//!
//! Everything else (roles, content shapes, empty tool results, sampling
//! ranges, tool names) is the caller's and the provider's business: the
//! provider knows its own rules, which change faster than any copy of them
//! here, and a refusal of a shape the provider accepts is an outage the
//! caller cannot work around.
//!
//! The one exception is size: what the sidecar keeps about a call (the
//! model name, the attribution tags, the caller's name) goes into the
//! ledger, the spans and the log line, so each has a bound here, and a
//! request over it is refused (INVALID_ARGUMENT, HTTP 400) before any of
//! it is kept or sent.

use crate::error::Error;
use crate::model::ChatRequest;
use serde_json::Value;
use std::collections::BTreeMap;

/// The longest `model` accepted, in bytes. Real model names are under 100
/// (`anthropic/claude-3.5-sonnet:beta`, `accounts/fireworks/models/…`).
pub const MAX_MODEL_BYTES: usize = 256;
/// The most attribution tags (`metadata` entries) one request may carry;
/// OpenAI's own `metadata` allows 16.
pub const MAX_TAGS: usize = 64;
/// The longest tag key accepted, in bytes (OpenAI's limit is 64 characters).
pub const MAX_TAG_KEY_BYTES: usize = 128;
/// The longest tag value accepted, in bytes (OpenAI's limit is 512
/// characters).
pub const MAX_TAG_VALUE_BYTES: usize = 1024;
/// The longest caller name (the `ledger.caller_header` value, by default
/// `x-llm-caller`) accepted, in bytes.
pub const MAX_CALLER_BYTES: usize = 256;

/// `Err(InvalidRequest)` naming the field when the model is missing or
/// longer than [`MAX_MODEL_BYTES`], the tags break a limit
/// ([`check_tags`]), or the messages are missing, not a list, or empty.
pub fn validate(request: &ChatRequest) -> Result<(), Error> {
    if request.model.trim().is_empty() {
        return Err(Error::invalid(
            "`model` is required, e.g. \"mock/echo\" or \"gpt-4o-mini\"",
        ));
    }
    if request.model.len() > MAX_MODEL_BYTES {
        return Err(Error::invalid(format!(
            "`model` is {} bytes long: a model name is at most {MAX_MODEL_BYTES} bytes",
            request.model.len()
        )));
    }
    check_tags(&request.metadata)?;
    match request.body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => Ok(()),
        Some(Value::Array(_)) => Err(Error::invalid(
            "`messages` is empty: send at least one message",
        )),
        None | Some(Value::Null) => Err(Error::invalid(
            "`messages` is required: a list of message objects",
        )),
        Some(_) => Err(Error::invalid(
            "`messages` must be a list of message objects",
        )),
    }
}

/// `Err(InvalidRequest)` naming `metadata` and the limit when there are
/// more than [`MAX_TAGS`] tags, or a key longer than
/// [`MAX_TAG_KEY_BYTES`], or a value longer than [`MAX_TAG_VALUE_BYTES`].
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!(
            "`metadata` has {} tags: at most {MAX_TAGS} are accepted",
            tags.len()
        )));
    }
    for (key, value) in tags {
        if key.len() > MAX_TAG_KEY_BYTES {
            return Err(Error::invalid(format!(
                "`metadata` has a key of {} bytes: a tag key is at most {MAX_TAG_KEY_BYTES} bytes",
                key.len()
            )));
        }
        if value.len() > MAX_TAG_VALUE_BYTES {
            return Err(Error::invalid(format!(
                "`metadata` value of {key:?} is {} bytes long: a tag value is at most {MAX_TAG_VALUE_BYTES} bytes",
                value.len()
            )));
        }
    }
    Ok(())
}

/// `Err(InvalidRequest)` naming `header` when the caller's name in it is
/// longer than [`MAX_CALLER_BYTES`].
pub fn check_caller(header: &str, name: Option<&str>) -> Result<(), Error> {
    match name {
        Some(name) if name.len() > MAX_CALLER_BYTES => Err(Error::invalid(format!(
            "`{header}` header is {} bytes long: a caller name is at most {MAX_CALLER_BYTES} bytes",
            name.len()
        ))),
        _ => Ok(()),
    }
}

/// `text` cut to at most `max` bytes on a character boundary: what is kept
/// of a refused request's strings, so a refusal is recorded at a bounded
/// cost too.
pub fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The tags within the limits, for the record of a refused request: the
/// first [`MAX_TAGS`] whose key and value fit.
pub fn bounded_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    if check_tags(tags).is_ok() {
        return tags.clone();
    }
    tags.iter()
        .filter(|(key, value)| key.len() <= MAX_TAG_KEY_BYTES && value.len() <= MAX_TAG_VALUE_BYTES)
        .take(MAX_TAGS)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(messages: Value) -> ChatRequest {
        let mut request = ChatRequest::new("m", Vec::new());
        request.body.insert("messages".into(), messages);
        request
    }

    fn problem(request: &ChatRequest) -> String {
        validate(request).unwrap_err().to_string()
    }

    #[test]
    fn shapes_the_sidecar_does_not_read_are_the_providers_business() {
        validate(&request(json!([
            {"role": "user", "content": ""},
            {"role": "function", "name": "f", "content": "{}"},
            {"role": "tool", "content": ""},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]},
        ])))
        .unwrap();
    }

    #[test]
    fn model_and_messages_are_required() {
        let mut missing_model = request(json!([{"role": "user", "content": "hi"}]));
        missing_model.model.clear();
        assert!(problem(&missing_model).contains("`model` is required"));
        assert!(problem(&request(json!([]))).contains("`messages` is empty"));
        assert!(problem(&request(json!(null))).contains("`messages` is required"));
        assert!(problem(&request(json!("hi"))).contains("must be a list"));
    }

    fn tags(count: usize, key_bytes: usize, value_bytes: usize) -> BTreeMap<String, String> {
        (0..count)
            .map(|index| {
                let key = format!("{index:0>key_bytes$}");
                (key, "v".repeat(value_bytes))
            })
            .collect()
    }

    #[test]
    fn sizes_at_the_limit_pass_and_one_byte_over_is_refused() {
        let mut at_limit = request(json!([{"role": "user", "content": "hi"}]));
        at_limit.model = "m".repeat(MAX_MODEL_BYTES);
        at_limit.metadata = tags(MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES);
        validate(&at_limit).unwrap();

        let mut long_model = at_limit.clone();
        long_model.model.push('m');
        assert!(problem(&long_model).starts_with("`model` is 257 bytes long"));
        let too_many = tags(MAX_TAGS + 1, 4, 1);
        assert!(
            check_tags(&too_many)
                .unwrap_err()
                .to_string()
                .contains("at most 64")
        );
        let long_key = tags(1, MAX_TAG_KEY_BYTES + 1, 1);
        assert!(
            check_tags(&long_key)
                .unwrap_err()
                .to_string()
                .contains("key of 129 bytes")
        );
        let long_value = tags(1, 2, MAX_TAG_VALUE_BYTES + 1);
        assert!(
            check_tags(&long_value)
                .unwrap_err()
                .to_string()
                .contains("1025 bytes")
        );
        assert_eq!(bounded_tags(&too_many).len(), MAX_TAGS);
        assert!(bounded_tags(&long_value).is_empty());
    }

    #[test]
    fn caller_names_are_bounded_and_cuts_keep_characters_whole() {
        check_caller("x-llm-caller", Some(&"c".repeat(MAX_CALLER_BYTES))).unwrap();
        check_caller("x-llm-caller", None).unwrap();
        let error = check_caller("x-llm-caller", Some(&"c".repeat(MAX_CALLER_BYTES + 1)));
        assert!(
            error
                .unwrap_err()
                .to_string()
                .starts_with("`x-llm-caller` header")
        );
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("short", 256), "short");
    }
}

//! An OpenAI request body → the internal request, or a 400 that says what
//! is wrong and where.
//!
//! The body is kept whole as JSON: every member the caller sent reaches the
//! upstream as it is, at every depth, except the few the sidecar owns,
//! which are read here:
//! - `model` (a string) is routed and rewritten;
//! - `stream` (`true`, `false` or `null`) picks the kind of answer;
//! - `stream_options.include_usage` only decides whether the caller *sees*
//!   the usage chunk (the sidecar always asks the upstream for usage, to
//!   account the call); the caller's other `stream_options` pass on;
//! - `metadata` (string tags) is attribution, kept by the sidecar and sent
//!   upstream only to providers that set `forward_metadata`.
//!
//! Nothing else is checked here: the pipeline checks that `messages` is a
//! non-empty list, and the rest is the provider's to judge.

use super::api_error::ApiError;
use crate::model::ChatRequest;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A caller's request and what it asked of the facade itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub request: ChatRequest,
    /// `stream_options.include_usage`: show the caller the usage chunk.
    pub include_usage: bool,
}

/// `Err` is a 400 naming the member (`param`) and what was expected.
pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let mut fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            return Err(ApiError::invalid(
                "invalid_request",
                "the request body must be a JSON object (a chat completion request)",
                None,
            ));
        }
        Err(error) => {
            return Err(ApiError::invalid(
                "invalid_json",
                format!("the request body is not valid JSON: {error}"),
                None,
            ));
        }
    };
    let model = match fields.shift_remove("model") {
        Some(Value::String(model)) => model,
        None | Some(Value::Null) => {
            return Err(invalid(
                "model",
                "missing field `model`: name the model to use",
            ));
        }
        Some(_) => return Err(invalid("model", "`model` must be a string")),
    };
    let stream = match fields.shift_remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => stream,
        Some(_) => return Err(invalid("stream", "`stream` must be true or false")),
    };
    let include_usage = include_usage(&fields)?;
    let metadata = take_metadata(&mut fields)?;
    Ok(Parsed {
        request: ChatRequest {
            model,
            stream,
            body: fields,
            max_output_tokens: None,
            metadata,
            proto: None,
        },
        include_usage,
    })
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "invalid_request",
        format!("the request body is not a valid chat completion request: {message}"),
        Some(param.to_owned()),
    )
}

fn include_usage(fields: &Map<String, Value>) -> Result<bool, ApiError> {
    match fields.get("stream_options") {
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

fn take_metadata(fields: &mut Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "invalid_request",
            "`metadata` must be an object of string values",
            Some("metadata".to_owned()),
        )
    };
    match fields.shift_remove("metadata") {
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
    use serde_json::json;

    fn parse_json(body: Value) -> Result<Parsed, ApiError> {
        parse(&serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn the_body_is_kept_whole_but_for_what_the_sidecar_owns() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": null, "reasoning_content": "r"},
                {"role": "tool", "tool_call_id": "c", "content": ""},
                {"role": "function", "name": "f", "content": "{}"},
            ],
            "temperature": "hot",
            "stream": true,
            "stream_options": {"include_usage": true, "include_obfuscation": false},
            "max_completion_tokens": 10,
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
            "metadata": {"team": "search"},
            "fake": {"chunks": 2},
        });
        let parsed = parse_json(body.clone()).unwrap();
        let request = parsed.request;
        assert_eq!(request.model, "gpt-4o-mini");
        assert!(request.stream);
        assert!(parsed.include_usage);
        assert_eq!(request.metadata["team"], "search");
        let mut expected = body.as_object().cloned().unwrap();
        for owned in ["model", "stream", "metadata"] {
            expected.shift_remove(owned);
        }
        assert_eq!(request.body, expected);
    }

    #[test]
    fn syntax_errors_say_where() {
        let error = parse(b"{\"model\": ").unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.code.as_deref(), Some("invalid_json"));
        assert!(error.message.contains("line 1 column"), "{}", error.message);
        assert!(parse(b"").is_err());
        assert!(parse(b"[1]").is_err());
    }

    #[test]
    fn the_owned_fields_are_named_when_wrong() {
        let error = parse_json(json!({"messages": []})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("model"));
        assert!(
            error.message.contains("missing field `model`"),
            "{}",
            error.message
        );
        let error = parse_json(json!({"model": 3, "messages": []})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("model"));
        let error = parse_json(json!({"model": "m", "stream": "yes"})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("stream"));
        let error =
            parse_json(json!({"model": "m", "messages": [], "stream_options": true})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("stream_options"));
        let error =
            parse_json(json!({"model": "m", "messages": [], "metadata": {"n": 1}})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("metadata"));
    }

    #[test]
    fn nulls_in_owned_fields_mean_unset() {
        let parsed = parse_json(json!({
            "model": "m", "messages": [], "stream": null, "stream_options": null, "metadata": null,
        }))
        .unwrap();
        assert!(!parsed.request.stream);
        assert!(!parsed.include_usage);
        assert_eq!(
            parsed.request.body.get("stream_options"),
            Some(&Value::Null)
        );
    }
}

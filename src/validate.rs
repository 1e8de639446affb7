//! Checks a request before anything is sent upstream — only for what the
//! sidecar itself needs: a model to route, and a message list to send.
//!
//! Everything else (roles, content shapes, empty tool results, sampling
//! ranges, tool names) is the caller's and the provider's business: the
//! provider knows its own rules, which change faster than any copy of them
//! here, and a refusal of a shape the provider accepts is an outage the
//! caller cannot work around.

use crate::error::Error;
use crate::model::ChatRequest;
use serde_json::Value;

/// `Err(InvalidRequest)` naming the field when the model is missing or the
/// messages are missing, not a list, or empty.
pub fn validate(request: &ChatRequest) -> Result<(), Error> {
    if request.model.trim().is_empty() {
        return Err(Error::invalid(
            "`model` is required, e.g. \"mock/echo\" or \"gpt-4o-mini\"",
        ));
    }
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
}

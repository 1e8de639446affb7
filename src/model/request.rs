//! The request half of the chat model: the caller's JSON body, kept whole.
//!
//! The sidecar owns only `model` (it routes and rewrites it), `stream` and
//! `stream_options.include_usage` (it always asks for usage, to account the
//! call) and `metadata` (its attribution tags). Everything else stays in
//! [`ChatRequest::body`] exactly as the caller sent it, at every depth, and
//! reaches the upstream unchanged. What the sidecar must read from it (text
//! for estimates, sampling parameters for spans) is read leniently by the
//! accessors here: a value of an unexpected shape is "absent", never an error.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One chat completion request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The model asked for; the pipeline rewrites it to the routed
    /// upstream's name before sending.
    pub model: String,
    /// Whether the answer streams: the gRPC method or the facade's `stream`.
    pub stream: bool,
    /// Every other field of the request as the caller sent it, in the
    /// OpenAI chat-completions JSON shape (`messages`, `tools`, sampling
    /// parameters, provider extensions ...).
    pub body: Map<String, Value>,
    /// A token cap (tokens) whose JSON spelling the caller left to the
    /// sidecar (gRPC `max_tokens`): sent as the field the serving provider
    /// accepts (`max_tokens` or `max_completion_tokens`, its
    /// `max_tokens_field`). A facade caller spells the field itself, in
    /// `body`.
    pub max_output_tokens: Option<u32>,
    /// Attribution tags, recorded by the sidecar and not sent upstream
    /// unless the provider sets `forward_metadata`.
    pub metadata: BTreeMap<String, String>,
    /// How a gRPC caller wants the answer or stream events: decoded into
    /// protobuf in the same pass that reads them. `None`: the JSON only
    /// (the facade forwards it as it is).
    pub proto: Option<ProtoDecoders>,
}

/// The gRPC edge's one-pass decoders; printed by their type's name,
/// compared by address.
#[derive(Clone, Copy)]
pub struct ProtoDecoders {
    /// For a stream's events.
    pub chunk: super::chunk::ProtoChunkDecoder,
    /// For a whole answer.
    pub answer: super::response::ProtoAnswerDecoder,
}

impl std::fmt::Debug for ProtoDecoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProtoDecoders")
    }
}

impl PartialEq for ProtoDecoders {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.chunk, other.chunk)
            && std::ptr::fn_addr_eq(self.answer, other.answer)
    }
}

impl ChatRequest {
    /// A request for `model` with these `messages` (OpenAI message objects).
    pub fn new(model: impl Into<String>, messages: Vec<Value>) -> ChatRequest {
        let mut body = Map::new();
        body.insert("messages".to_owned(), Value::Array(messages));
        ChatRequest {
            model: model.into(),
            body,
            ..ChatRequest::default()
        }
    }

    /// The messages, or none when `messages` is missing or not a list.
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// A number field (`temperature`, `top_p` ...), if it is a number.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.body.get(key).and_then(Value::as_f64)
    }

    /// An integer field (`seed`, `n` ...), if it is an integer.
    pub fn integer(&self, key: &str) -> Option<i64> {
        self.body.get(key).and_then(Value::as_i64)
    }

    /// The token cap in whichever spelling the caller used (tokens).
    pub fn max_tokens(&self) -> Option<i64> {
        self.max_output_tokens
            .map(i64::from)
            .or_else(|| self.integer("max_completion_tokens"))
            .or_else(|| self.integer("max_tokens"))
    }

    /// Whether an output cap is given as a number that is no whole `i64`
    /// (`1e30`, `99999999999999999999`, `1.5`): [`ChatRequest::max_tokens`]
    /// reads none, yet an upstream may take it as no cap at all.
    pub fn max_tokens_unreadable(&self) -> bool {
        self.max_output_tokens.is_none()
            && ["max_completion_tokens", "max_tokens"].iter().any(|key| {
                self.body
                    .get(*key)
                    .is_some_and(|value| value.is_number() && value.as_i64().is_none())
            })
    }

    /// `stop` as one string or a list of strings; other shapes are absent.
    pub fn stop_sequences(&self) -> Vec<&str> {
        match self.body.get("stop") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Bytes of prompt text, for the token estimate when no tokenizer is at
    /// hand (images, audio and files are not counted).
    pub fn prompt_text_bytes(&self) -> usize {
        self.messages()
            .iter()
            .map(|message| message_texts(message).map(str::len).sum::<usize>())
            .sum()
    }
}

/// A message's `role`, if it is a string.
pub fn message_role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// The texts of a message: its `content` when it is a string, else the
/// `text` of each part that has one.
pub fn message_texts(message: &Value) -> impl Iterator<Item = &str> {
    let content = message.get("content");
    let whole = content.and_then(Value::as_str);
    let parts = content
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|part| part.get("text").and_then(Value::as_str));
    whole.into_iter().chain(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request_of(body: Value) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            body: body.as_object().cloned().unwrap(),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn readers_are_lenient() {
        let request = request_of(json!({
            "messages": [
                {"role": "user", "content": "four"},
                {"role": "user", "content": [{"type": "text", "text": "six..."},
                    {"type": "file", "file": {"file_data": "xx"}}]},
                {"role": "assistant", "content": null},
            ],
            "temperature": "hot",
            "top_p": 0.5,
            "stop": "END",
            "max_completion_tokens": 9,
        }));
        assert_eq!(request.prompt_text_bytes(), 10);
        assert_eq!(request.number("temperature"), None);
        assert_eq!(request.number("top_p"), Some(0.5));
        assert_eq!(request.stop_sequences(), ["END"]);
        assert_eq!(request.max_tokens(), Some(9));
        assert!(request_of(json!({"messages": null})).messages().is_empty());
    }
}

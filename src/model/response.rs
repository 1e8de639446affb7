//! A whole (non-streamed) answer: the upstream's bytes, and what the
//! sidecar read from them.
//!
//! For a gRPC caller the answer is decoded into protobuf in the same pass
//! that reads it ([`ProtoAnswerDecoder`], supplied by the gRPC edge with
//! the request), as stream events are: reading it twice, once for the
//! sidecar and once for the caller, was most of a unary call's JSON work.

use super::sanitize::readable;
use super::usage::Usage;
use super::view::{AnswerView, is_null};
use crate::proto::v1 as pb;
use bytes::Bytes;
use serde_json::Value;

/// A `chat.completion` answer. `json` is the body exactly as the upstream
/// sent it; the facade forwards it as it is, the gRPC edge converts it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatResponse {
    pub json: Bytes,
    /// The upstream's response id, `""` when it sent none.
    pub id: String,
    /// The model the upstream says served the answer, `""` when none.
    pub model: String,
    /// One per choice that has a finish reason, in choice order.
    pub finish_reasons: Vec<String>,
    /// Token counts, read from any provider's spelling.
    pub usage: Option<Usage>,
    /// Bytes of generated text (content, refusal, reasoning, arguments).
    pub output_bytes: usize,
    /// The answer as the gRPC edge's message (`provider` left empty), when
    /// the request asked for it and the answer has the usual shape; the
    /// edge converts `json` otherwise.
    pub proto: Option<Box<pb::ChatResponse>>,
}

/// Decodes a whole answer's JSON straight into protobuf, in one pass;
/// `None` when the answer is not of the usual shape (an `error` member, a
/// member of an unexpected type ...), and [`ChatResponse::read_for`] then
/// reads it through its JSON view.
pub type ProtoAnswerDecoder = fn(&str) -> Option<ProtoAnswer>;

/// An answer decoded by a [`ProtoAnswerDecoder`].
#[derive(Debug)]
pub struct ProtoAnswer {
    /// The answer; each choice's `index` is its place in the list when the
    /// upstream sent none.
    pub message: Box<pb::ChatResponse>,
    /// The `usage` object's counts, in any spelling.
    pub usage: Option<Usage>,
}

/// Why an answer body is not an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerProblem {
    /// Not a JSON object, or JSON with no choices and no error.
    Malformed(String),
    /// An error object where the answer should be (a 200 that failed).
    InBand(Value),
}

impl ChatResponse {
    /// Reads what the sidecar needs from an answer body, keeping the body
    /// (less a UTF-8 byte-order mark, which JSON does not allow).
    pub fn read(json: Bytes) -> Result<ChatResponse, AnswerProblem> {
        Self::read_for(json, None)
    }

    /// [`ChatResponse::read`], decoding the answer into protobuf in the
    /// same pass when `proto` is given (a gRPC caller) and the answer has
    /// the usual shape; any other answer is read through the JSON view.
    pub fn read_for(
        mut json: Bytes,
        proto: Option<ProtoAnswerDecoder>,
    ) -> Result<ChatResponse, AnswerProblem> {
        if json.starts_with(b"\xEF\xBB\xBF") {
            json = json.slice(3..);
        }
        let decoded = proto.and_then(|decode| decode(std::str::from_utf8(&json).ok()?));
        if let Some(decoded) = decoded.filter(|decoded| !decoded.message.choices.is_empty()) {
            return Ok(Self::judged(decoded, json));
        }
        let malformed = |error: serde_json::Error| {
            AnswerProblem::Malformed(format!("the body is not a chat completion: {error}"))
        };
        // Bytes that are not UTF-8, or a lone surrogate escape, are read as
        // U+FFFD; the caller still gets the body as sent.
        let fixed;
        let view: AnswerView = match serde_json::from_slice(&json) {
            Ok(view) => view,
            Err(error) => {
                // A member the view reads given twice (`"id"` twice): read
                // as a JSON value reads it, the last one wins.
                let text = readable(&json);
                let reads = serde_json::from_str::<AnswerView>(&text).is_ok();
                fixed = if reads {
                    text.into_owned()
                } else {
                    serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|value| serde_json::to_string(&value).ok())
                        .ok_or_else(|| malformed(error))?
                };
                serde_json::from_str(&fixed).map_err(malformed)?
            }
        };
        let choices: Vec<_> = view.choices.0.iter().flat_map(|c| c.0.as_ref()).collect();
        if choices.is_empty() {
            // Some upstreams answer 200 with an error object instead.
            return Err(match view.error.filter(|raw| !is_null(raw)) {
                Some(raw) => {
                    AnswerProblem::InBand(serde_json::from_str(raw.get()).unwrap_or(Value::Null))
                }
                None => AnswerProblem::Malformed("the completion has no choices".to_owned()),
            });
        }
        let output_bytes = choices
            .iter()
            .filter_map(|choice| choice.message.0.as_ref())
            .map(|message| message.output_bytes())
            .sum();
        let response = ChatResponse {
            json: Bytes::new(),
            id: view.id.as_deref().unwrap_or_default().to_owned(),
            model: view.model.as_deref().unwrap_or_default().to_owned(),
            finish_reasons: choices
                .iter()
                .filter_map(|choice| choice.finish_reason.as_deref())
                .map(str::to_owned)
                .collect(),
            usage: view
                .usage_object()
                .and_then(|raw| Usage::from_json_text(raw.get())),
            output_bytes,
            proto: None,
        };
        drop(view);
        Ok(ChatResponse { json, ..response })
    }

    /// What the sidecar reads from an answer, taken from its protobuf
    /// message: the same facts the JSON view gives (a test holds the two
    /// paths to that).
    fn judged(decoded: ProtoAnswer, json: Bytes) -> ChatResponse {
        let ProtoAnswer { message, usage } = decoded;
        let choices = &message.choices;
        ChatResponse {
            json,
            id: message.id.clone(),
            model: message.model.clone(),
            finish_reasons: choices
                .iter()
                .filter(|choice| !choice.finish_reason.is_empty())
                .map(|choice| choice.finish_reason.clone())
                .collect(),
            usage,
            output_bytes: choices
                .iter()
                .map(|choice| {
                    choice.content.as_ref().map_or(0, String::len)
                        + choice.refusal.len()
                        + choice.reasoning_content.len()
                        + choice
                            .tool_calls
                            .iter()
                            .filter_map(|call| call.function.as_ref())
                            .map(|function| function.arguments.len())
                            .sum::<usize>()
                })
                .sum(),
            proto: Some(message),
        }
    }

    /// The whole answer as a JSON value, for the gRPC edge and opt-in
    /// content capture (text that is not UTF-8 read as U+FFFD); `Err` says
    /// why the bytes cannot be one (JSON nested deeper than 128 levels).
    pub fn to_value(&self) -> Result<Value, String> {
        decode(&self.json)
    }
}

/// JSON text → value, strictly, else read as [`readable`] text.
pub(super) fn decode(json: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(json).or_else(|error| {
        serde_json::from_str(&readable(json))
            .map_err(|_| format!("the upstream's JSON cannot be decoded: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ChatResponse, AnswerProblem> {
        ChatResponse::read(Bytes::from(text.to_owned()))
    }

    #[test]
    fn a_vllm_answer_with_nulls_is_an_answer() {
        let text = r#"{"id":"cmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"hi","tool_calls":null,"reasoning_content":null,
            "function_call":null},"logprobs":null,"finish_reason":"stop","stop_reason":null}],
            "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":null}}"#;
        let response = read(text).unwrap();
        assert_eq!(response.finish_reasons, ["stop"]);
        assert_eq!(response.usage.unwrap().total_tokens, 4);
        assert_eq!(response.output_bytes, 2);
        assert_eq!(&response.json[..], text.as_bytes());
    }

    #[test]
    fn odd_text_is_read_and_kept_as_sent() {
        let text = "\u{feff}{\"x\":\"bad \\udc00\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"hi \\ud83d\"},\"finish_reason\":\"stop\"}]}";
        let response = read(text).unwrap();
        assert_eq!(&response.json[..], &text.as_bytes()[3..]);
        assert_eq!(response.finish_reasons, ["stop"]);
        let value = response.to_value().unwrap();
        assert_eq!(value["x"], "bad \u{fffd}");
        let deep = format!(
            "{{\"choices\":[{{\"index\":0}}],\"d\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(read(&deep).unwrap().to_value().is_err());
    }

    #[test]
    fn errors_and_garbage_are_told_apart() {
        assert!(matches!(
            read(r#"{"error":{"message":"overloaded","code":502}}"#),
            Err(AnswerProblem::InBand(_))
        ));
        assert!(matches!(read("[1]"), Err(AnswerProblem::Malformed(_))));
        assert!(matches!(
            read(r#"{"choices":[]}"#),
            Err(AnswerProblem::Malformed(_))
        ));
    }
}

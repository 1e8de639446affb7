//! Answers in OpenAI's JSON shape. The internal model is OpenAI-shaped
//! already; these views add what OpenAI's objects have and the model does
//! not keep (`object`, the message's `role`, `logprobs`), by reference, so
//! an answer is written once with no copy.

use crate::model::{ChatChunk, ChatResponse, Choice, ChoiceDelta, ResponseMessage, Usage};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

/// A `chat.completion` object.
#[derive(Serialize)]
pub struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Choices<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
}

impl<'a> Completion<'a> {
    pub fn new(response: &'a ChatResponse) -> Self {
        Completion {
            id: &response.id,
            object: "chat.completion",
            created: response.created,
            model: &response.model,
            choices: Choices(&response.choices),
            usage: response.usage.as_ref(),
        }
    }
}

struct Choices<'a>(&'a [Choice]);

impl Serialize for Choices<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for choice in self.0 {
            seq.serialize_element(&ChoiceView {
                index: choice.index,
                message: MessageView {
                    role: "assistant",
                    message: &choice.message,
                },
                logprobs: None,
                finish_reason: choice.finish_reason.as_deref(),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ChoiceView<'a> {
    index: u32,
    message: MessageView<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct MessageView<'a> {
    role: &'static str,
    #[serde(flatten)]
    message: &'a ResponseMessage,
}

/// A `chat.completion.chunk` object.
#[derive(Serialize)]
pub struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChoiceDelta],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
}

impl<'a> Chunk<'a> {
    pub fn new(chunk: &'a ChatChunk) -> Self {
        Chunk {
            id: &chunk.id,
            object: "chat.completion.chunk",
            created: chunk.created,
            model: &chunk.model,
            choices: &chunk.choices,
            usage: chunk.usage.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Delta, FunctionCall, ToolCall};
    use serde_json::json;

    #[test]
    fn a_completion_has_openai_shape() {
        let response = ChatResponse {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    content: None,
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: "get_time".into(),
                            arguments: "{}".into(),
                        },
                    }],
                    ..ResponseMessage::default()
                },
                finish_reason: Some("tool_calls".into()),
            }],
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5,
                ..Usage::default()
            }),
        };
        assert_eq!(
            serde_json::to_value(Completion::new(&response)).unwrap(),
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 7,
                "model": "m",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"}}],
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            })
        );
    }

    #[test]
    fn a_chunk_has_openai_shape() {
        let chunk = ChatChunk {
            id: "c".into(),
            created: 1,
            model: "m".into(),
            choices: vec![ChoiceDelta {
                index: 0,
                delta: Delta {
                    content: Some("hi".into()),
                    ..Delta::default()
                },
                finish_reason: None,
            }],
            usage: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(Chunk::new(&chunk)).unwrap(),
            json!({
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}],
            })
        );
    }
}

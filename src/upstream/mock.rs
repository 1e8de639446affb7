//! The built-in offline provider, so the sidecar can be tried and apps
//! developed with no key and no network. `mock/echo` answers with the text
//! of the last user message, streamed word by word.

use crate::error::Error;
use crate::model::{ChatChunk, ChatRequest, ChatResponse, message_role, message_texts};
use crate::upstream::stream_reader::StreamReader;
use crate::upstream::{ChunkStream, PassedHeaders, Reply};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const ECHO_MODEL: &str = "mock/echo";

#[derive(Debug)]
pub struct MockUpstream {
    provider: Arc<str>,
}

impl MockUpstream {
    pub fn new(provider: Arc<str>) -> Self {
        MockUpstream { provider }
    }

    /// The answer is built as an upstream's JSON and read like one.
    pub fn complete(&self, request: &ChatRequest) -> Result<Reply<ChatResponse>, Error> {
        let reply = self.reply(request)?;
        let answer = json!({
            "id": response_id(),
            "object": "chat.completion",
            "created": now(),
            "model": request.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }],
            "usage": usage(request, &reply),
        });
        let value = ChatResponse::read(Bytes::from(answer.to_string()))
            .map_err(|problem| Error::Internal(format!("the mock's answer: {problem:?}")))?;
        Ok(Reply {
            value,
            headers: PassedHeaders::default(),
        })
    }

    /// Word by word, then the finish, then the usage, as an upstream sends.
    pub fn stream(&self, request: &ChatRequest) -> Result<Reply<ChunkStream>, Error> {
        let reply = self.reply(request)?;
        let id = response_id();
        let created = now();
        let event = |delta: Value, finish_reason: Option<&str>| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            })
        };
        let mut events: Vec<Value> = split_words(&reply)
            .enumerate()
            .map(|(index, word)| {
                let delta = if index == 0 {
                    json!({"role": "assistant", "content": word})
                } else {
                    json!({"content": word})
                };
                event(delta, None)
            })
            .collect();
        events.push(event(json!({}), Some("stop")));
        events.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": request.model, "choices": [], "usage": usage(request, &reply),
        }));
        let mut reader = StreamReader::default();
        let chunks: Vec<ChatChunk> = events
            .into_iter()
            .map(|event| reader.read(event.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|problem| Error::Internal(format!("the mock's stream: {problem:?}")))?;
        Ok(Reply {
            value: Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
            headers: PassedHeaders::default(),
        })
    }

    fn reply(&self, request: &ChatRequest) -> Result<String, Error> {
        if request.model != ECHO_MODEL {
            return Err(Error::ModelNotFound {
                model: request.model.clone(),
                hint: format!("the `{}` provider offers only {ECHO_MODEL}", self.provider),
            });
        }
        Ok(request
            .messages()
            .iter()
            .rev()
            .find(|message| message_role(message) == Some("user"))
            .map(|message| message_texts(message).collect::<Vec<_>>().join(" "))
            .unwrap_or_default())
    }
}

/// Words with the whitespace that follows each, so the pieces concatenate
/// back to the original text.
fn split_words(text: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut after_space = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            after_space = true;
        } else if after_space {
            pieces.push(&text[start..at]);
            start = at;
            after_space = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces.into_iter()
}

fn usage(request: &ChatRequest, reply: &str) -> Value {
    let prompt: usize = request
        .messages()
        .iter()
        .flat_map(message_texts)
        .map(|text| text.split_whitespace().count())
        .sum();
    let completion = reply.split_whitespace().count();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn response_id() -> String {
    format!("mock-{}", uuid::Uuid::new_v4().simple())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn request(text: &str) -> ChatRequest {
        ChatRequest::new(
            ECHO_MODEL,
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": text}),
            ],
        )
    }

    #[tokio::test]
    async fn echo_streams_word_by_word_and_reassembles() {
        let mock = MockUpstream::new("mock".into());
        let chunks: Vec<ChatChunk> = mock
            .stream(&request("hello  big world"))
            .unwrap()
            .value
            .map(Result::unwrap)
            .collect()
            .await;
        let text: String = chunks
            .iter()
            .filter_map(|chunk| {
                chunk.to_value().unwrap()["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "hello  big world");
        assert_eq!(chunks.len(), 3 + 2);
        assert_eq!(chunks.last().unwrap().usage.unwrap().completion_tokens, 3);
    }

    #[test]
    fn other_mock_models_are_not_found() {
        let mock = MockUpstream::new("mock".into());
        let mut request = request("x");
        request.model = "mock/other".into();
        assert!(matches!(
            mock.complete(&request),
            Err(Error::ModelNotFound { .. })
        ));
    }
}

//! The built-in offline provider, so the sidecar can be tried and apps
//! developed with no key and no network. `mock/echo` answers with the text
//! of the last user message, streamed word by word.

use crate::error::Error;
use crate::model::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChoiceDelta, Delta, ResponseMessage, Role, Usage,
};
use crate::upstream::ChunkStream;
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

    pub fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        let reply = self.reply(request)?;
        Ok(ChatResponse {
            id: response_id(),
            created: now(),
            model: request.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    content: Some(reply.clone()),
                    ..ResponseMessage::default()
                },
                finish_reason: Some("stop".to_owned()),
            }],
            usage: Some(usage(request, &reply)),
        })
    }

    pub fn stream(&self, request: &ChatRequest) -> Result<ChunkStream, Error> {
        let reply = self.reply(request)?;
        let id = response_id();
        let created = now();
        let chunk = |delta: Delta, finish_reason: Option<&str>| ChatChunk {
            id: id.clone(),
            created,
            model: request.model.clone(),
            choices: vec![ChoiceDelta {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_owned),
            }],
            usage: None,
            error: None,
        };
        let mut chunks: Vec<ChatChunk> = split_words(&reply)
            .enumerate()
            .map(|(index, word)| {
                chunk(
                    Delta {
                        role: (index == 0).then(|| "assistant".to_owned()),
                        content: Some(word.to_owned()),
                        ..Delta::default()
                    },
                    None,
                )
            })
            .collect();
        chunks.push(chunk(Delta::default(), Some("stop")));
        chunks.push(ChatChunk {
            choices: Vec::new(),
            usage: Some(usage(request, &reply)),
            ..chunk(Delta::default(), None)
        });
        Ok(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
    }

    fn reply(&self, request: &ChatRequest) -> Result<String, Error> {
        if request.model != ECHO_MODEL {
            return Err(Error::ModelNotFound {
                model: request.model.clone(),
                hint: format!("the `{}` provider offers only {ECHO_MODEL}", self.provider),
            });
        }
        Ok(request
            .messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map(|message| message.text_content())
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

fn usage(request: &ChatRequest, reply: &str) -> Usage {
    let prompt = request
        .messages
        .iter()
        .map(|message| message.text_content().split_whitespace().count())
        .sum::<usize>();
    let completion = reply.split_whitespace().count();
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens: as_u32(prompt),
        completion_tokens: as_u32(completion),
        total_tokens: as_u32(prompt + completion),
        ..Usage::default()
    }
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
    use crate::model::Message;
    use futures::StreamExt;

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            model: ECHO_MODEL.to_owned(),
            messages: vec![
                Message::text(Role::System, "be brief"),
                Message::text(Role::User, text),
            ],
            ..ChatRequest::default()
        }
    }

    #[tokio::test]
    async fn echo_streams_word_by_word_and_reassembles() {
        let mock = MockUpstream::new("mock".into());
        let chunks: Vec<ChatChunk> = mock
            .stream(&request("hello  big world"))
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        let text: String = chunks
            .iter()
            .flat_map(|chunk| chunk.choices.iter())
            .filter_map(|choice| choice.delta.content.as_deref())
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

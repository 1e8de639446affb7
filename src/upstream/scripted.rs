//! A provider whose HTTP exchange is a script (test builds only): each
//! call takes the next step — a delay, then an answer or an error — so the
//! pipeline's own slot, retry, budget, circuit, limit and fallback code can
//! be tested in memory, with tokio's paused clock. It replaces only what
//! `openai.rs` does on the wire.

use super::stream_reader::StreamReader;
use super::{ChunkStream, PassedHeaders, Reply};
use crate::error::{Error, UpstreamError};
use crate::model::{ChatRequest, ChatResponse};
use bytes::Bytes;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One scripted exchange.
#[derive(Debug)]
pub struct Step {
    /// How long the exchange takes before its outcome.
    pub delay: Duration,
    pub outcome: Outcome,
}

/// What an exchange ends with.
#[derive(Debug)]
pub enum Outcome {
    /// A complete answer whose text is this.
    Answer(&'static str),
    /// An HTTP error status, with `Retry-After` when given.
    Status(u16, Option<Duration>),
    /// The connection failed.
    Connect,
    /// Streams: a first chunk with this text, then the body breaks off.
    CutAfterFirstChunk(&'static str),
}

/// The script and what was asked of it.
#[derive(Debug)]
pub struct ScriptedUpstream {
    name: String,
    steps: Mutex<VecDeque<Step>>,
    /// When each call began (the paused clock's time).
    calls: Mutex<Vec<Instant>>,
}

impl ScriptedUpstream {
    /// Answers by `steps` in turn, then with "done" for every later call.
    pub fn new(name: &str, steps: impl IntoIterator<Item = Step>) -> ScriptedUpstream {
        ScriptedUpstream {
            name: name.to_owned(),
            steps: Mutex::new(steps.into_iter().collect()),
            calls: Mutex::default(),
        }
    }

    /// When each call so far began.
    pub fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    pub async fn complete(&self, _request: &ChatRequest) -> Result<Reply<ChatResponse>, Error> {
        let text = match self.next().await {
            Outcome::Answer(text) => text,
            other => return Err(self.failure(other)),
        };
        let answer = json!({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1,
            "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        });
        let value = ChatResponse::read(Bytes::from(answer.to_string()))
            .map_err(|problem| Error::Internal(format!("{problem:?}")))?;
        Ok(Reply {
            value,
            headers: PassedHeaders::default(),
        })
    }

    /// The text in one chunk and a finish; or a first chunk and then a
    /// break; or the step's error before any chunk.
    pub async fn stream(&self, _request: &ChatRequest) -> Result<Reply<ChunkStream>, Error> {
        let (text, cut) = match self.next().await {
            Outcome::Answer(text) => (text, false),
            Outcome::CutAfterFirstChunk(text) => (text, true),
            other => return Err(self.failure(other)),
        };
        let event = |delta: serde_json::Value, finish: Option<&str>| {
            json!({
                "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1,
                "model": "scripted",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
            .to_string()
        };
        let mut reader = StreamReader::default();
        let mut read = |event: String| {
            reader
                .read(event)
                .map_err(|problem| Error::Internal(format!("{problem:?}")))
        };
        let first = read(event(json!({"role": "assistant", "content": text}), None));
        let last = if cut {
            Err(Error::StreamIncomplete {
                provider: self.name.clone(),
                detail: "scripted break".to_owned(),
            })
        } else {
            read(event(json!({}), Some("stop")))
        };
        Ok(Reply {
            value: Box::pin(futures::stream::iter([first, last])),
            headers: PassedHeaders::default(),
        })
    }

    /// The next step, after its delay.
    async fn next(&self) -> Outcome {
        self.calls.lock().unwrap().push(Instant::now());
        let step = self.steps.lock().unwrap().pop_front().unwrap_or(Step {
            delay: Duration::ZERO,
            outcome: Outcome::Answer("done"),
        });
        tokio::time::sleep(step.delay).await;
        step.outcome
    }

    /// The error an exchange that did not answer ends with.
    fn failure(&self, outcome: Outcome) -> Error {
        match outcome {
            Outcome::Status(status, retry_after) => Error::Upstream(Box::new(UpstreamError {
                provider: self.name.clone(),
                status,
                message: format!("scripted {status}"),
                error_type: None,
                error_code: None,
                param: None,
                object: None,
                retry_after,
                headers: PassedHeaders::default(),
                in_band: false,
            })),
            Outcome::Connect => Error::Connect {
                provider: self.name.clone(),
                detail: "scripted connection failure".to_owned(),
            },
            Outcome::Answer(_) | Outcome::CutAfterFirstChunk(_) => {
                Error::Internal("an answer is not a failure".to_owned())
            }
        }
    }
}

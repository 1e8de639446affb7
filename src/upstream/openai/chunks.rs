//! An upstream SSE body as a stream of chat chunks.
//!
//! Success is explicit: the stream ends OK only after `data: [DONE]` or a
//! finish reason. A body that ends, breaks or sends garbage before that ends
//! the stream with an error, so a cut answer is never reported complete.
//! The stream is pulled: the next body read happens only when the caller
//! wants the next chunk, so a slow reader slows the upstream read instead of
//! filling memory.

use super::error_body::in_band_error;
use crate::error::{Error, UpstreamError};
use crate::model::ChatChunk;
use crate::secret::ApiKey;
use crate::upstream::sse::{SseEvents, SseStreamError, sse_events};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How long we keep reading after `[DONE]` in the background so the
/// connection can go back to the pool instead of being closed.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

pub struct UpstreamChunks<S> {
    events: Option<Pin<Box<SseEvents<S, reqwest::Error>>>>,
    provider: Arc<str>,
    /// The provider's keys, to scrub error frames with.
    keys: Arc<[ApiKey]>,
    finished: bool,
}

impl<S> UpstreamChunks<S> {
    pub fn new(body: S, max_line_bytes: usize, provider: Arc<str>, keys: Arc<[ApiKey]>) -> Self
    where
        S: Stream<Item = Result<Bytes, reqwest::Error>>,
    {
        UpstreamChunks {
            events: Some(Box::pin(sse_events(body, max_line_bytes))),
            provider,
            keys,
            finished: false,
        }
    }

    fn incomplete(&self, detail: impl Into<String>) -> Error {
        Error::StreamIncomplete {
            provider: self.provider.to_string(),
            detail: detail.into(),
        }
    }

    fn malformed(&self, detail: impl Into<String>) -> Error {
        Error::MalformedResponse {
            provider: self.provider.to_string(),
            detail: detail.into(),
        }
    }

    /// One event's data turned into a chunk, an error, or nothing.
    fn on_data(&mut self, data: &str) -> Option<Result<ChatChunk, Error>> {
        if data.is_empty() {
            return None;
        }
        let mut chunk: ChatChunk = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(error) => {
                return Some(Err(
                    self.malformed(format!("a stream event is not a chat chunk: {error}"))
                ));
            }
        };
        if let Some(error) = &chunk.error {
            return Some(Err(
                in_band_error(&self.provider, error, self.keys.iter()).into()
            ));
        }
        if chunk.finish_reasons().any(|reason| reason == "error") {
            return Some(Err(UpstreamError {
                provider: self.provider.to_string(),
                status: 0,
                message: "the upstream ended the answer with finish_reason \"error\"".to_owned(),
                error_type: None,
                error_code: None,
                retry_after: None,
                in_band: true,
            }
            .into()));
        }
        if chunk.finish_reasons().next().is_some() {
            self.finished = true;
        }
        for call in chunk
            .choices
            .iter_mut()
            .flat_map(|choice| choice.delta.tool_calls.iter_mut())
        {
            call.complete_kind();
        }
        Some(Ok(chunk))
    }
}

impl<S> UpstreamChunks<S> {
    /// An `event: error` frame: its data is an error object or plain text.
    fn in_band(&self, data: &str) -> Error {
        let value = serde_json::from_str::<serde_json::Value>(data)
            .unwrap_or_else(|_| serde_json::Value::String(data.to_owned()));
        let error = value.get("error").unwrap_or(&value);
        in_band_error(&self.provider, error, self.keys.iter()).into()
    }

    /// Ends the stream with `error`; the upstream body is dropped (and so
    /// the upstream request closed) right here.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<ChatChunk, Error>>> {
        self.events = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl<S> Stream for UpstreamChunks<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(events) = this.events.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => {
                    if event.data == "[DONE]" {
                        if let Some(rest) = this.events.take() {
                            drain_in_background(rest);
                        }
                        return Poll::Ready(None);
                    }
                    let outcome = if event.event == "error" {
                        Some(Err(this.in_band(&event.data)))
                    } else {
                        this.on_data(&event.data)
                    };
                    match outcome {
                        None => continue,
                        Some(Ok(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                        Some(Err(error)) => return this.fail(error),
                    }
                }
                Some(Err(SseStreamError::Parse(error))) => {
                    let error = this.malformed(format!("the event stream is invalid: {error}"));
                    return this.fail(error);
                }
                Some(Err(SseStreamError::Body(error))) => {
                    let detail = format!("reading the body failed: {}", super::describe(&error));
                    let error = this.incomplete(detail);
                    return this.fail(error);
                }
                None if this.finished => {
                    this.events = None;
                    return Poll::Ready(None);
                }
                None => {
                    let error = this.incomplete(
                        "the upstream closed the stream without [DONE] or a finish reason",
                    );
                    return this.fail(error);
                }
            }
        }
    }
}

/// Reads what follows `[DONE]` (normally just the end of the body) off the
/// request path, so the answer ends for the caller at once and the
/// connection still returns to the pool.
fn drain_in_background<S>(mut rest: Pin<Box<SseEvents<S, reqwest::Error>>>)
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_AFTER_DONE, async {
                while rest.next().await.is_some() {}
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tool_call_opened_without_its_kind_gets_one() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: [DONE]\n\n",
        );
        let body = futures::stream::iter([Ok::<_, reqwest::Error>(Bytes::from(body))]);
        let chunks: Vec<ChatChunk> = UpstreamChunks::new(body, 1 << 20, "p".into(), Arc::from([]))
            .map(|chunk| chunk.expect("a valid chunk"))
            .collect()
            .await;
        let kinds: Vec<Option<&str>> = chunks
            .iter()
            .map(|chunk| chunk.choices[0].delta.tool_calls[0].kind.as_deref())
            .collect();
        assert_eq!(kinds, [Some("function"), None]);
    }
}

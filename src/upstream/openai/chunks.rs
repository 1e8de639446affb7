//! An upstream SSE body as a stream of chat chunks.
//!
//! Success is explicit: the stream ends OK only after `data: [DONE]`, or at
//! the end of the body once every choice that appeared has finished (see
//! [`StreamReader`]). A body that ends, breaks or sends garbage before that
//! ends the stream with an error, so a cut answer is never reported
//! complete. The stream is pulled: the next body read happens only when
//! the caller wants the next chunk, so a slow reader slows the upstream
//! read instead of filling memory.

use super::error_body::in_band_error;
use crate::error::{Error, UpstreamError};
use crate::model::{ChatChunk, ProtoChunkDecoder};
use crate::secret::Scrubber;
use crate::upstream::sse::{SseEvents, SseStreamError, sse_events};
use crate::upstream::stream_reader::{EventProblem, StreamReader};
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
    /// The provider's secrets: every error the stream ends with is
    /// scrubbed of them (in [`UpstreamChunks::fail`], its one way out).
    scrubber: Arc<Scrubber>,
    reader: StreamReader,
    /// Set for a gRPC caller: events are decoded into protobuf as they are
    /// read.
    proto: Option<ProtoChunkDecoder>,
}

impl<S> UpstreamChunks<S> {
    pub fn new(body: S, max_line_bytes: usize, provider: Arc<str>, scrubber: Arc<Scrubber>) -> Self
    where
        S: Stream<Item = Result<Bytes, reqwest::Error>>,
    {
        UpstreamChunks {
            events: Some(Box::pin(sse_events(body, max_line_bytes))),
            provider,
            scrubber,
            reader: StreamReader::default(),
            proto: None,
        }
    }

    /// Decodes each event into protobuf too, with `decode` (a gRPC caller).
    pub fn with_proto(mut self, decode: Option<ProtoChunkDecoder>) -> Self {
        self.proto = decode;
        self
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
    fn on_data(&mut self, data: Bytes) -> Option<Result<ChatChunk, Error>> {
        if data.is_empty() {
            return None;
        }
        Some(self.reader.read_for(data, self.proto).map_err(|problem| {
            match problem {
                EventProblem::Malformed(detail) => self.malformed(detail),
                EventProblem::InBand(error) => in_band_error(&self.provider, &error).into(),
                EventProblem::FinishError => UpstreamError {
                    provider: self.provider.to_string(),
                    message: "the upstream ended the answer with finish_reason \"error\""
                        .to_owned(),
                    in_band: true,
                    ..UpstreamError::default()
                }
                .into(),
            }
        }))
    }

    /// Why a body that ended without `[DONE]` is not complete.
    fn cut(&self) -> Error {
        let unfinished = self.reader.unfinished_choices();
        self.incomplete(if unfinished.is_empty() {
            "the upstream closed the stream without [DONE] or a finish reason".to_owned()
        } else {
            format!(
                "the upstream closed the stream without [DONE] while choices {unfinished:?} had not finished"
            )
        })
    }
}

impl<S> UpstreamChunks<S> {
    /// An `event: error` frame: its data is an error object or plain text.
    fn in_band(&self, data: &str) -> Error {
        let value = serde_json::from_str::<serde_json::Value>(data)
            .unwrap_or_else(|_| serde_json::Value::String(data.to_owned()));
        let error = value.get("error").unwrap_or(&value);
        in_band_error(&self.provider, error).into()
    }

    /// Ends the stream with `error`, scrubbed; the upstream body is dropped
    /// (and so the upstream request closed) right here.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<ChatChunk, Error>>> {
        self.events = None;
        Poll::Ready(Some(Err(error.scrubbed(&self.scrubber))))
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
                    if event.data.trim_ascii() == b"[DONE]" {
                        if let Some(rest) = this.events.take() {
                            drain_in_background(rest);
                        }
                        return Poll::Ready(None);
                    }
                    let outcome = if event.event == "error" {
                        Some(Err(this.in_band(&String::from_utf8_lossy(&event.data))))
                    } else {
                        this.on_data(event.data)
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
                None if this.reader.all_choices_finished() => {
                    this.events = None;
                    return Poll::Ready(None);
                }
                None => {
                    let error = this.cut();
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

    async fn outcome(body: &'static str) -> Vec<Result<ChatChunk, Error>> {
        let body = futures::stream::iter([Ok::<_, reqwest::Error>(Bytes::from(body))]);
        UpstreamChunks::new(body, 1 << 20, "p".into(), Arc::default())
            .collect()
            .await
    }

    #[tokio::test]
    async fn an_n2_stream_cut_after_one_choice_finished_is_incomplete() {
        let chunks = outcome(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        ))
        .await;
        let last = chunks.last().unwrap().as_ref().unwrap_err();
        assert!(matches!(last, Error::StreamIncomplete { .. }), "{last}");
        assert!(last.to_string().contains("[1]"), "{last}");
    }

    #[tokio::test]
    async fn a_stream_whose_every_choice_finished_is_complete_without_done() {
        let chunks = outcome(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"},{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        ))
        .await;
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(Result::is_ok));
    }
}

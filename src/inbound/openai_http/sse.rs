//! A chunk stream as OpenAI's server-sent events: `data: {chunk}\n\n` per
//! chunk, `data: [DONE]\n\n` only after the stream completed, and an
//! `data: {"error": {...}}\n\n` event (then the end) when it failed midway:
//! the status line went out with the first chunk, so this event is how the
//! OpenAI SDKs learn that the answer is cut, and they raise on it.
//!
//! [`SseBody`] is pulled by hyper as the connection can take bytes: one
//! upstream chunk in, one event out, no channel or task in between, so a
//! slow reader slows the upstream read, and a caller that goes away drops
//! the body and with it the upstream request.

use super::api_error::ApiError;
use super::wire;
use crate::error::Error;
use crate::model::ChatChunk;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Room for the first event; chunks are usually a few hundred bytes.
const FIRST_EVENT_BYTES: usize = 512;

/// Writes events into one buffer whose memory is reused once hyper has
/// sent the previous event (`BytesMut` reclaims it), with room for an event
/// as large as the last one, so the JSON is written without regrowing.
#[derive(Debug)]
pub struct Encoder {
    buffer: BytesMut,
    last: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            buffer: BytesMut::new(),
            last: FIRST_EVENT_BYTES,
        }
    }
}

impl Encoder {
    pub fn chunk(&mut self, chunk: &ChatChunk) -> serde_json::Result<Bytes> {
        self.event(|out| serde_json::to_writer(out, &wire::Chunk::new(chunk)))
    }

    pub fn error(&mut self, error: &ApiError) -> Bytes {
        // An error object is plain strings: writing it cannot fail.
        self.event(|out| error.write_json(out))
            .unwrap_or_else(|_| Bytes::from_static(b"data: {\"error\":{}}\n\n"))
    }

    /// One `data: ...\n\n` event, written by `json` in one go.
    fn event(
        &mut self,
        json: impl FnOnce(&mut bytes::buf::Writer<&mut BytesMut>) -> serde_json::Result<()>,
    ) -> serde_json::Result<Bytes> {
        self.buffer.clear();
        self.buffer.reserve(self.last + self.last / 4);
        self.buffer.put_slice(b"data: ");
        json(&mut (&mut self.buffer).writer())?;
        self.buffer.put_slice(b"\n\n");
        self.last = self.buffer.len();
        Ok(self.buffer.split().freeze())
    }
}

/// The response body of a streamed answer.
pub struct SseBody<S> {
    /// `None` once the stream ended: dropped at once, so a failed upstream
    /// request is closed before the caller reads the error event.
    chunks: Option<S>,
    encoder: Encoder,
    include_usage: bool,
}

impl<S> SseBody<S> {
    /// `include_usage`: the caller asked for usage (`stream_options`);
    /// without it the usage-only chunk is left out, as OpenAI does.
    pub fn new(chunks: S, include_usage: bool) -> Self {
        SseBody {
            chunks: Some(chunks),
            encoder: Encoder::default(),
            include_usage,
        }
    }
}

impl<S> Stream for SseBody<S>
where
    S: Stream<Item = Result<ChatChunk, Error>> + Unpin,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(chunks) = this.chunks.as_mut() else {
                return Poll::Ready(None);
            };
            let event = match ready!(chunks.poll_next_unpin(cx)) {
                Some(Ok(mut chunk)) => {
                    if !this.include_usage && !without_usage(&mut chunk) {
                        continue;
                    }
                    match this.encoder.chunk(&chunk) {
                        Ok(event) => return Poll::Ready(Some(Ok(event))),
                        Err(error) => {
                            let error = Error::Internal(format!("cannot encode a chunk: {error}"));
                            this.encoder.error(&ApiError::from_error(&error))
                        }
                    }
                }
                Some(Err(error)) => this.encoder.error(&ApiError::from_error(&error)),
                None => Bytes::from_static(DONE),
            };
            this.chunks = None;
            return Poll::Ready(Some(Ok(event)));
        }
    }
}

/// Takes the usage off a chunk; false when nothing else is left of it.
fn without_usage(chunk: &mut ChatChunk) -> bool {
    chunk.usage.take().is_none() || !chunk.choices.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChoiceDelta, Delta, Usage};
    use serde_json::{Value, json};

    fn text(content: &str) -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            model: "m".into(),
            choices: vec![ChoiceDelta {
                delta: Delta {
                    content: Some(content.into()),
                    ..Delta::default()
                },
                ..ChoiceDelta::default()
            }],
            ..ChatChunk::default()
        }
    }

    fn usage_only() -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            usage: Some(Usage {
                prompt_tokens: 2,
                completion_tokens: 3,
                total_tokens: 5,
                ..Usage::default()
            }),
            ..ChatChunk::default()
        }
    }

    fn cut() -> Error {
        Error::StreamIncomplete {
            provider: "fake".into(),
            detail: "the upstream closed the stream".into(),
        }
    }

    /// The body's events, as their data lines.
    async fn events(chunks: Vec<Result<ChatChunk, Error>>, include_usage: bool) -> Vec<String> {
        let body = SseBody::new(futures::stream::iter(chunks), include_usage);
        let bytes: Vec<Bytes> = body.map(|event| event.unwrap()).collect().await;
        bytes
            .iter()
            .map(|event| {
                let event = std::str::from_utf8(event).unwrap();
                assert!(
                    event.starts_with("data: ") && event.ends_with("\n\n"),
                    "{event:?}"
                );
                event["data: ".len()..event.len() - 2].to_owned()
            })
            .collect()
    }

    fn json_of(data: &str) -> Value {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn a_chunk_is_one_event() {
        let mut encoder = Encoder::default();
        let event = encoder.chunk(&text("hi")).unwrap();
        assert_eq!(
            &event[..],
            b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\
              \"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n"
        );
        // The buffer is reused for the next event, and events stay intact.
        let second = encoder.chunk(&text("there")).unwrap();
        assert!(std::str::from_utf8(&second).unwrap().contains("\"there\""));
        assert!(std::str::from_utf8(&event).unwrap().contains("\"hi\""));
    }

    #[test]
    fn an_error_event_is_an_openai_error_object() {
        let event = Encoder::default().error(&ApiError::from_error(&cut()));
        let data = std::str::from_utf8(&event).unwrap();
        let error = json_of(data.strip_prefix("data: ").unwrap().trim_end());
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(error["error"]["code"], "upstream_stream_incomplete");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ended before completing")
        );
    }

    #[tokio::test]
    async fn a_complete_stream_ends_with_done() {
        let events = events(vec![Ok(text("a")), Ok(text("b")), Ok(usage_only())], true).await;
        assert_eq!(events.len(), 4);
        assert_eq!(json_of(&events[1])["choices"][0]["delta"]["content"], "b");
        assert_eq!(json_of(&events[2])["usage"]["total_tokens"], 5);
        assert_eq!(json_of(&events[2])["choices"], json!([]));
        assert_eq!(events[3], "[DONE]");
    }

    #[tokio::test]
    async fn usage_is_shown_only_when_asked_for() {
        let mut last = text("b");
        last.usage = usage_only().usage;
        let events = events(vec![Ok(text("a")), Ok(last), Ok(usage_only())], false).await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(json_of(&events[1]).get("usage").is_none());
        assert_eq!(events[2], "[DONE]");
    }

    #[tokio::test]
    async fn a_failed_stream_ends_with_an_error_and_no_done() {
        let events = events(vec![Ok(text("a")), Err(cut()), Ok(text("never"))], true).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            json_of(&events[1])["error"]["code"],
            "upstream_stream_incomplete"
        );
    }
}

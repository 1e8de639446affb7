//! A chunk stream as OpenAI's server-sent events: `data: {chunk}\n\n` per
//! chunk, with the chunk's JSON as the upstream sent it (the only edits:
//! for a caller that did not ask for usage, the usage-only chunk is left
//! out and a `"usage": null` member is cut, both there only because the
//! sidecar asked for usage), `data: [DONE]\n\n` only after the stream
//! completed (also when the upstream completed it by finish reasons and
//! sent none), and an
//! `data: {"error": {...}}\n\n` event (then the end) when it failed midway:
//! the status line went out with the first chunk, so this event is how the
//! OpenAI SDKs learn that the answer is cut, and they raise on it.
//!
//! A stream cut and resumed (`pipeline/resume.rs`) gets one comment line
//! at the seam, before the continuation's first event:
//! `: x-llm-resumed: <reason>` (the cut's reason, as the ledger spells it).
//! The headers went out long before, and SDKs ignore comments (WHATWG SSE),
//! so it tells a caller that reads the raw stream without disturbing any.
//!
//! [`SseBody`] is pulled by hyper as the connection can take bytes: one
//! upstream chunk in, one event out, no channel or task in between, so a
//! slow reader slows the upstream read, and a caller that goes away drops
//! the body and with it the upstream request.

use super::api_error::ApiError;
use crate::error::Error;
use crate::model::ChatChunk;
use crate::secret::Scrubber;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The block events are written into, one after another: an event is
/// split off the block, so a new block (an allocation) is needed once per
/// this many bytes of events, not once per event while hyper still holds
/// the ones before it. It is also what a stream holds at most beyond its
/// events in flight.
const BLOCK_BYTES: usize = 8 * 1024;

/// Writes each event into the free end of one block and splits it off
/// (`BytesMut::split`: no copy, no allocation), so an event costs no heap
/// allocation; the block's memory is reused once hyper has sent all the
/// events in it.
#[derive(Debug, Default)]
pub struct Encoder {
    buffer: BytesMut,
}

impl Encoder {
    /// The chunk as the upstream sent it; without a `"usage": null`
    /// member when `cut_null_usage`.
    pub fn chunk(&mut self, chunk: &ChatChunk, cut_null_usage: bool) -> Bytes {
        let parts = match chunk.json_without_null_usage() {
            Some((head, tail)) if cut_null_usage => [head, tail],
            _ => [&chunk.json[..], &[][..]],
        };
        self.start(parts[0].len() + parts[1].len());
        if let Some(reason) = chunk.resumed_after {
            self.resumed_at(reason);
        }
        self.buffer.put_slice(parts[0]);
        self.buffer.put_slice(parts[1]);
        self.end()
    }

    pub fn error(&mut self, error: &ApiError) -> Bytes {
        self.start(error.message.len() + 96);
        // Into a buffer: writing cannot fail.
        if error.write_json(&mut (&mut self.buffer).writer()).is_err() {
            return Bytes::from_static(b"data: {\"error\":{}}\n\n");
        }
        self.end()
    }

    /// The seam of a resumed stream: a comment block of its own before the
    /// event being started.
    fn resumed_at(&mut self, reason: &str) {
        self.buffer.clear();
        self.buffer.put_slice(b": x-llm-resumed: ");
        self.buffer
            .put_slice(reason.to_ascii_lowercase().as_bytes());
        self.buffer.put_slice(b"\n\ndata: ");
    }

    /// Starts a `data: ...\n\n` event with room for `json_len` bytes.
    fn start(&mut self, json_len: usize) {
        self.buffer.clear();
        // `reserve` takes a new block only when this one's free end is too
        // short (or reclaims it when every event split off it is gone).
        let needed = json_len + 8;
        if self.buffer.capacity() < needed {
            self.buffer.reserve(needed.max(BLOCK_BYTES));
        }
        self.buffer.put_slice(b"data: ");
    }

    fn end(&mut self) -> Bytes {
        self.buffer.put_slice(b"\n\n");
        self.buffer.split().freeze()
    }
}

/// The response body of a streamed answer.
pub struct SseBody<S> {
    /// `None` once the stream ended: dropped at once, so a failed upstream
    /// request is closed before the caller reads the error event.
    chunks: Option<S>,
    encoder: Encoder,
    include_usage: bool,
    /// For the error event a failed stream ends with.
    scrubber: Arc<Scrubber>,
}

impl<S> SseBody<S> {
    /// `include_usage`: the caller asked for usage (`stream_options`);
    /// without it the usage-only chunk is left out, as OpenAI does.
    pub fn new(chunks: S, include_usage: bool, scrubber: Arc<Scrubber>) -> Self {
        SseBody {
            chunks: Some(chunks),
            encoder: Encoder::default(),
            include_usage,
            scrubber,
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
                Some(Ok(chunk)) => {
                    if !this.include_usage && chunk.is_usage_only() {
                        continue;
                    }
                    let event = this.encoder.chunk(&chunk, !this.include_usage);
                    return Poll::Ready(Some(Ok(event)));
                }
                Some(Err(error)) => this
                    .encoder
                    .error(&ApiError::from_error(&error, &this.scrubber)),
                None => Bytes::from_static(DONE),
            };
            this.chunks = None;
            return Poll::Ready(Some(Ok(event)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::stream_reader::StreamReader;
    use serde_json::{Value, json};

    fn read(event: &str) -> ChatChunk {
        StreamReader::default().read(event.to_owned()).unwrap()
    }

    const TEXT: &str = r#"{"id":"c","object":"chat.completion.chunk","model":"m","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
    const USAGE_ONLY: &str = r#"{"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5,"prompt_cache_hit_tokens":1}}"#;

    fn cut() -> Error {
        Error::StreamIncomplete {
            provider: "fake".into(),
            detail: "the upstream closed the stream".into(),
        }
    }

    /// The body's events, as their data lines.
    async fn events(chunks: Vec<Result<ChatChunk, Error>>, include_usage: bool) -> Vec<String> {
        let body = SseBody::new(futures::stream::iter(chunks), include_usage, Arc::default());
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
    fn a_chunk_is_the_upstreams_bytes() {
        let mut encoder = Encoder::default();
        let event = encoder.chunk(&read(TEXT), false);
        assert_eq!(&event[..], format!("data: {TEXT}\n\n").as_bytes());
        let cut = encoder.chunk(&read(TEXT), true);
        assert_eq!(
            std::str::from_utf8(&cut).unwrap(),
            format!("data: {}\n\n", TEXT.replace(r#","usage":null"#, ""))
        );
        // The buffer is reused for the next event, and events stay intact.
        assert!(
            std::str::from_utf8(&event)
                .unwrap()
                .contains("\"usage\":null")
        );
    }

    #[test]
    fn an_error_event_is_an_openai_error_object() {
        let event = Encoder::default().error(&ApiError::from_error(&cut(), &Scrubber::default()));
        let data = std::str::from_utf8(&event).unwrap();
        let error = json_of(data.strip_prefix("data: ").unwrap().trim_end());
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(error["error"]["code"], "upstream_stream_incomplete");
    }

    #[tokio::test]
    async fn a_complete_stream_ends_with_done_and_shows_usage_as_sent() {
        let events = events(vec![Ok(read(TEXT)), Ok(read(USAGE_ONLY))], true).await;
        assert_eq!(events, [TEXT, USAGE_ONLY, "[DONE]"]);
    }

    #[tokio::test]
    async fn usage_is_shown_only_when_asked_for() {
        let events = events(vec![Ok(read(TEXT)), Ok(read(USAGE_ONLY))], false).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(json_of(&events[0]).get("usage").is_none());
        assert_eq!(json_of(&events[0])["system_fingerprint"], "fp_1");
        assert_eq!(events[1], "[DONE]");
    }

    #[tokio::test]
    async fn a_failed_stream_ends_with_an_error_and_no_done() {
        let events = events(vec![Ok(read(TEXT)), Err(cut()), Ok(read(TEXT))], true).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            json_of(&events[1])["error"]["code"],
            "upstream_stream_incomplete"
        );
        let _ = json!(null);
    }
}

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
use std::task::{Context, Poll};

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The block events are written into, one after another: what is written
/// is split off the block, so a new block (an allocation) is needed once
/// per this many bytes of events, not once per event while hyper still
/// holds the ones before it.
const BLOCK_BYTES: usize = 8 * 1024;

/// The most bytes of events gathered into one body frame: events the
/// upstream delivered together (fast providers send several per read) go
/// out in one frame, one HTTP chunk and one write, up to this size. It is
/// also what a stream holds at most beyond its events in flight.
const FRAME_BYTES: usize = 16 * 1024;

/// Writes events into the free end of one block and splits what was
/// written off (`BytesMut::split`: no copy, no allocation), so an event
/// costs no heap allocation; the block's memory is reused once hyper has
/// sent all the events in it.
#[derive(Debug, Default)]
pub struct Encoder {
    buffer: BytesMut,
}

impl Encoder {
    /// Appends the chunk as the upstream sent it; without a `"usage":
    /// null` member when `cut_null_usage`.
    pub fn push_chunk(&mut self, chunk: &ChatChunk, cut_null_usage: bool) {
        let parts = match chunk.json_without_null_usage() {
            Some((head, tail)) if cut_null_usage => [head, tail],
            _ => [&chunk.json[..], &[][..]],
        };
        let seam = chunk.resumed_after.map_or(0, |reason| reason.len() + 24);
        self.reserve(parts[0].len() + parts[1].len() + seam + 8);
        if let Some(reason) = chunk.resumed_after {
            self.resumed_at(reason);
        }
        self.buffer.put_slice(b"data: ");
        self.buffer.put_slice(parts[0]);
        self.buffer.put_slice(parts[1]);
        self.buffer.put_slice(b"\n\n");
    }

    /// Appends an `{"error": ...}` event.
    pub fn push_error(&mut self, error: &ApiError) {
        self.reserve(error.message.len() + 96);
        let start = self.buffer.len();
        self.buffer.put_slice(b"data: ");
        // Into a buffer: writing cannot fail.
        if error.write_json(&mut (&mut self.buffer).writer()).is_err() {
            self.buffer.truncate(start);
            self.buffer.put_slice(b"data: {\"error\":{}}");
        }
        self.buffer.put_slice(b"\n\n");
    }

    /// Appends `data: [DONE]`.
    pub fn push_done(&mut self) {
        self.reserve(DONE.len());
        self.buffer.put_slice(DONE);
    }

    /// Bytes appended and not yet taken.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// What was appended since the last take, as one frame.
    pub fn take(&mut self) -> Bytes {
        self.buffer.split().freeze()
    }

    /// The seam of a resumed stream: a comment block of its own before the
    /// event being appended.
    fn resumed_at(&mut self, reason: &str) {
        self.buffer.put_slice(b": x-llm-resumed: ");
        for byte in reason.bytes() {
            self.buffer.put_u8(byte.to_ascii_lowercase());
        }
        self.buffer.put_slice(b"\n\n");
    }

    /// Room for `bytes` more at the free end: a new block only when this
    /// one's free end is too short (or the block reclaimed when every frame
    /// split off it is gone).
    fn reserve(&mut self, bytes: usize) {
        if self.buffer.capacity() - self.buffer.len() < bytes {
            self.buffer.reserve(bytes.max(BLOCK_BYTES));
        }
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

    /// Every event ready now, in one frame: the chunk stream is polled
    /// until it has nothing more at once (it has then registered for the
    /// next read), ends, or the frame reaches [`FRAME_BYTES`]. Chunks come
    /// in bursts ([`super::super::gather`]), so a burst is one frame.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while let Some(chunks) = this.chunks.as_mut() {
            if this.encoder.pending() >= FRAME_BYTES {
                break;
            }
            match chunks.poll_next_unpin(cx) {
                Poll::Pending if this.encoder.pending() == 0 => return Poll::Pending,
                Poll::Pending => break,
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.include_usage || !chunk.is_usage_only() {
                        this.encoder.push_chunk(&chunk, !this.include_usage);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.encoder
                        .push_error(&ApiError::from_error(&error, &this.scrubber));
                    this.chunks = None;
                }
                Poll::Ready(None) => {
                    this.encoder.push_done();
                    this.chunks = None;
                }
            }
        }
        if this.encoder.pending() == 0 {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(this.encoder.take())))
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
        let frames: Vec<Bytes> = body.map(|frame| frame.unwrap()).collect().await;
        data_lines(&frames.concat())
    }

    /// The data lines of a body's bytes, whole events only.
    fn data_lines(body: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(body).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        text.split_terminator("\n\n")
            .map(|event| {
                assert!(event.starts_with("data: "), "{event:?}");
                event["data: ".len()..].to_owned()
            })
            .collect()
    }

    fn encoded(write: impl FnOnce(&mut Encoder)) -> Bytes {
        let mut encoder = Encoder::default();
        write(&mut encoder);
        encoder.take()
    }

    fn json_of(data: &str) -> Value {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn a_chunk_is_the_upstreams_bytes() {
        let mut encoder = Encoder::default();
        encoder.push_chunk(&read(TEXT), false);
        let event = encoder.take();
        assert_eq!(&event[..], format!("data: {TEXT}\n\n").as_bytes());
        encoder.push_chunk(&read(TEXT), true);
        let cut = encoder.take();
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
        let event = encoded(|encoder| {
            encoder.push_error(&ApiError::from_error(&cut(), &Scrubber::default()));
        });
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

    /// A chunk stream that has nothing ready where the script says `None`
    /// (it wakes the body at once, as a socket with more data would).
    struct Scripted(std::collections::VecDeque<Option<Result<ChatChunk, Error>>>);

    impl Stream for Scripted {
        type Item = Result<ChatChunk, Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.pop_front() {
                Some(Some(item)) => Poll::Ready(Some(item)),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }
    }

    #[tokio::test]
    async fn events_ready_together_go_out_in_one_frame() {
        let script = [
            Some(Ok(read(TEXT))),
            Some(Ok(read(TEXT))),
            None,
            Some(Ok(read(TEXT))),
            None,
            Some(Ok(read(USAGE_ONLY))),
        ];
        let body = SseBody::new(Scripted(script.into()), true, Arc::default());
        let frames: Vec<Bytes> = body.map(|frame| frame.unwrap()).collect().await;
        let events: Vec<Vec<String>> = frames.iter().map(|frame| data_lines(frame)).collect();
        assert_eq!(
            events,
            [vec![TEXT, TEXT], vec![TEXT], vec![USAGE_ONLY, "[DONE]"]]
        );
    }

    #[tokio::test]
    async fn a_frame_stops_growing_at_its_bound() {
        let many = 3 * FRAME_BYTES / TEXT.len();
        let script = (0..many).map(|_| Some(Ok(read(TEXT))));
        let body = SseBody::new(Scripted(script.collect()), true, Arc::default());
        let frames: Vec<Bytes> = body.map(|frame| frame.unwrap()).collect().await;
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let event = TEXT.len() + "data: \n\n".len();
        assert!(frames.iter().all(|frame| frame.len() < FRAME_BYTES + event));
        assert_eq!(data_lines(&frames.concat()).len(), many + 1);
    }
}

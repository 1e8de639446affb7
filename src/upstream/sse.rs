//! A Server-Sent Events parser following the WHATWG "event stream
//! interpretation" rules: CRLF, LF and CR line ends (also split across
//! reads), multi-line data, comments, a leading BOM, UTF-8 split anywhere.
//!
//! Written here rather than taken from eventsource-stream because we must
//! cap line and event size: a broken or hostile upstream must not make the
//! sidecar buffer without bound.

use bytes::Bytes;
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty means the default type, "message".
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// A line, or the data of one event, is longer than the cap.
    #[error("SSE line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("SSE stream is not valid UTF-8")]
    InvalidUtf8,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental parser: feed bytes as they arrive, take events as they
/// complete.
#[derive(Debug)]
pub struct SseParser {
    max_line_bytes: usize,
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous byte was a CR, so a leading LF is part of that line end.
    after_cr: bool,
    /// Bytes of a possible BOM seen at the very start, until decided.
    bom_seen: usize,
    bom_done: bool,
    event: String,
    data: String,
    id: Option<String>,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    pub fn new(max_line_bytes: usize) -> Self {
        SseParser {
            max_line_bytes,
            line: Vec::new(),
            after_cr: false,
            bom_seen: 0,
            bom_done: false,
            event: String::new(),
            data: String::new(),
            id: None,
            ready: VecDeque::new(),
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), SseError> {
        if !self.bom_done {
            chunk = self.skip_bom(chunk);
            if !self.bom_done {
                return Ok(());
            }
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.after_cr && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (body, rest) = chunk.split_at(end);
            if self.line.is_empty() {
                self.check_len(body.len())?;
                self.process_line(body)?;
            } else {
                self.check_len(self.line.len() + body.len())?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(body);
                let result = self.process_line(&line);
                line.clear();
                self.line = line;
                result?;
            }
            chunk = if rest[0] == b'\r' {
                match rest.get(1) {
                    Some(b'\n') => &rest[2..],
                    Some(_) => &rest[1..],
                    None => {
                        self.after_cr = true;
                        &rest[1..]
                    }
                }
            } else {
                &rest[1..]
            };
        }
        self.check_len(self.line.len() + chunk.len())?;
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// True when an unfinished line or undispatched fields are buffered:
    /// the stream was cut in the middle of an event.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || !self.event.is_empty()
    }

    /// Consumes a leading BOM, which may itself arrive split across reads.
    fn skip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let mut taken = 0;
        while self.bom_seen < BOM.len() {
            match chunk.get(taken) {
                None => return &chunk[taken..],
                Some(&byte) if byte == BOM[self.bom_seen] => {
                    self.bom_seen += 1;
                    taken += 1;
                }
                Some(_) => {
                    // Not a BOM after all: the bytes we held back are data.
                    self.bom_done = true;
                    self.line.extend_from_slice(&BOM[..self.bom_seen]);
                    return &chunk[taken..];
                }
            }
        }
        self.bom_done = true;
        &chunk[taken..]
    }

    fn check_len(&self, len: usize) -> Result<(), SseError> {
        if len > self.max_line_bytes {
            Err(SseError::LineTooLong {
                limit: self.max_line_bytes,
            })
        } else {
            Ok(())
        }
    }

    fn process_line(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                self.check_len(self.data.len() + value.len())?;
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        self.ready.push_back(SseEvent {
            event: std::mem::take(&mut self.event),
            data,
            // The last event id persists across events, per the spec.
            id: self.id.clone(),
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SseStreamError<E> {
    #[error(transparent)]
    Parse(SseError),
    #[error("reading the event stream failed: {0}")]
    Body(E),
}

/// How much of a body read is parsed at a time. A read may hold hundreds
/// of events (an HTTP/1.1 read buffer reaches 400 KiB); parsing it a piece
/// at a time keeps the parsed events waiting for a slow reader to this
/// much, instead of a copy of the whole read.
const PARSE_BYTES: usize = 16 * 1024;

/// Events from a byte stream. Pulled: the body is read only when no parsed
/// event is waiting, so backpressure reaches the network read.
pub fn sse_events<S, E>(body: S, max_line_bytes: usize) -> SseEvents<S, E>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    SseEvents {
        body: Box::pin(body),
        parser: SseParser::new(max_line_bytes),
        unparsed: Bytes::new(),
        ended: false,
        error: None,
    }
}

/// The stream [`sse_events`] returns. After an error it ends.
pub struct SseEvents<S, E> {
    body: Pin<Box<S>>,
    parser: SseParser,
    /// What is left of the last read, parsed [`PARSE_BYTES`] at a time.
    unparsed: Bytes,
    /// No more body reads: the body ended or failed.
    ended: bool,
    /// Reported after the events that completed before it.
    error: Option<SseStreamError<E>>,
}

// Nothing is pinned in place: the body is boxed and the rest is plain data.
impl<S, E> Unpin for SseEvents<S, E> {}

impl<S, E> Stream for SseEvents<S, E>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<SseEvent, SseStreamError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.parser.next_event() {
                return Poll::Ready(Some(Ok(event)));
            }
            if !this.unparsed.is_empty() {
                let piece = this.unparsed.split_to(this.unparsed.len().min(PARSE_BYTES));
                if let Err(error) = this.parser.feed(&piece) {
                    this.unparsed = Bytes::new();
                    this.ended = true;
                    this.error = Some(SseStreamError::Parse(error));
                }
                continue;
            }
            if let Some(error) = this.error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(this.body.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => this.unparsed = bytes,
                Some(Err(error)) => {
                    this.ended = true;
                    this.error = Some(SseStreamError::Body(error));
                }
                None => this.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests;

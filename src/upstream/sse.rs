//! A Server-Sent Events parser following the WHATWG "event stream
//! interpretation" rules: CRLF, LF and CR line ends (also split across
//! reads), multi-line data, comments, a leading BOM, UTF-8 split anywhere.
//!
//! Written here rather than taken from eventsource-stream because we must
//! cap line and event size: a broken or hostile upstream must not make the
//! sidecar buffer without bound, and because an event's data must come out
//! as a slice of the read it arrived in (no copy, no allocation per event):
//! it is copied only when it spans reads or several `data:` lines.

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
    /// UTF-8 (checked as it was parsed); several `data:` lines joined by
    /// line feeds.
    pub data: Bytes,
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
    /// The event's one `data:` line so far, as a slice of the read it came
    /// in; moved to `data` when a second line comes.
    data_slice: Option<Bytes>,
    /// The event's data lines when they could not stay a slice, each
    /// followed by a line feed.
    data: String,
    id: Option<String>,
    ready: VecDeque<SseEvent>,
}

/// Where a complete line's bytes are: in the read being fed (so its data
/// can be sliced out of it), or in the parser's own buffer.
#[derive(Clone, Copy)]
enum Source<'a> {
    Read { read: &'a Bytes, start: usize },
    Buffered,
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
            data_slice: None,
            data: String::new(),
            id: None,
            ready: VecDeque::new(),
        }
    }

    /// Parses `chunk`, copying it first (the tests' way in); see
    /// [`SseParser::feed_read`].
    #[cfg(test)]
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        self.feed_read(&Bytes::copy_from_slice(chunk))
    }

    /// Parses one read. An event whose one data line lies whole in `read`
    /// gets that line as a slice of it.
    pub fn feed_read(&mut self, read: &Bytes) -> Result<(), SseError> {
        let mut start = 0;
        if !self.bom_done {
            start = read.len() - self.skip_bom(read).len();
            if !self.bom_done {
                return Ok(());
            }
        }
        if start == read.len() {
            return Ok(());
        }
        if self.after_cr && read[start] == b'\n' {
            start += 1;
        }
        self.after_cr = false;
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &read[start..]) {
            let end = start + offset;
            if self.line.is_empty() {
                self.check_len(end - start)?;
                self.process_line(&read[start..end], Source::Read { read, start })?;
            } else {
                self.check_len(self.line.len() + end - start)?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&read[start..end]);
                let result = self.process_line(&line, Source::Buffered);
                line.clear();
                self.line = line;
                result?;
            }
            start = if read[end] == b'\r' {
                match read.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    None => {
                        self.after_cr = true;
                        end + 1
                    }
                }
            } else {
                end + 1
            };
        }
        self.check_len(self.line.len() + read.len() - start)?;
        self.line.extend_from_slice(&read[start..]);
        Ok(())
    }

    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// True when an unfinished line or undispatched fields are buffered:
    /// the stream was cut in the middle of an event.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty()
            || self.data_slice.is_some()
            || !self.data.is_empty()
            || !self.event.is_empty()
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

    fn process_line(&mut self, line: &[u8], source: Source<'_>) -> Result<(), SseError> {
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
                let held = self.data_slice.as_ref().map_or(0, Bytes::len);
                self.check_len(held + self.data.len() + value.len())?;
                match source {
                    // The event's first data line, whole in this read.
                    Source::Read { read, start }
                        if self.data_slice.is_none() && self.data.is_empty() =>
                    {
                        let at = start + (value.as_ptr() as usize - line.as_ptr() as usize);
                        self.data_slice = Some(read.slice(at..at + value.len()));
                    }
                    _ => {
                        if let Some(first) = self.data_slice.take() {
                            // Checked as UTF-8 when its line was parsed.
                            self.data.push_str(&String::from_utf8_lossy(&first));
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        self.data.push('\n');
                    }
                }
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
        let data = match self.data_slice.take() {
            Some(slice) => slice,
            None if self.data.is_empty() => {
                self.event.clear();
                return;
            }
            None => {
                let mut data = std::mem::take(&mut self.data);
                data.pop();
                Bytes::from(data.into_bytes())
            }
        };
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
                if let Err(error) = this.parser.feed_read(&piece) {
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

//! What one stream did, as the caller saw it: time to the first chunk and
//! to the end, the gaps between chunks and, when the fake upstream stamps
//! them, each chunk's transit (its send stamp to our read, on the same
//! clock).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct StreamTrace {
    started: Instant,
    last: Option<Instant>,
    pub ttfc: Option<Duration>,
    /// From sending the request to reading the end of a complete stream.
    pub whole: Option<Duration>,
    /// Content chunks read.
    chunks: usize,
    /// Nanoseconds from the upstream writing each stamped chunk to us
    /// reading it.
    pub transits_ns: Vec<u64>,
    /// Nanoseconds between consecutive chunks as read here.
    pub gaps_ns: Vec<u64>,
    /// The stream ended as a complete one ([DONE], or gRPC status OK).
    pub complete: bool,
    pub error: Option<String>,
}

impl StreamTrace {
    pub fn start() -> StreamTrace {
        StreamTrace {
            started: Instant::now(),
            last: None,
            ttfc: None,
            whole: None,
            chunks: 0,
            transits_ns: Vec::with_capacity(64),
            gaps_ns: Vec::with_capacity(64),
            complete: false,
            error: None,
        }
    }

    /// A content delta arrived: an empty one (a role or a finish) is no
    /// chunk; a stamp (all of them, from the fake upstream in stamp mode)
    /// also gives the chunk's transit.
    pub fn content(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.chunks += 1;
        let now = Instant::now();
        if let Ok(stamp) = text.parse::<u128>() {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            self.transits_ns
                .push(u64::try_from(wall.saturating_sub(stamp)).unwrap_or(u64::MAX));
        }
        match self.last {
            None => self.ttfc = Some(now - self.started),
            Some(last) => self.gaps_ns.push(nanos(now - last)),
        }
        self.last = Some(now);
    }

    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The stream ended as a complete one ([DONE], or gRPC status OK).
    pub fn finish(&mut self) {
        self.complete = true;
        self.whole = Some(self.started.elapsed());
    }

    pub fn fail(&mut self, error: impl std::fmt::Display) {
        self.error.get_or_insert_with(|| error.to_string());
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The text of the first `"content"` string in an OpenAI chunk, as
/// written (escapes kept: it is only counted, or read as a stamp). A scan,
/// not a JSON parse: the caller's own cost should stay small next to what
/// it measures; spaces after the colon are allowed because Python peers
/// write them.
pub fn content_in(json: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"content\"";
    let at = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &json[at..];
    let rest = trim_start(rest).strip_prefix(b":")?;
    let rest = trim_start(rest).strip_prefix(b"\"")?;
    let mut end = 0;
    while end < rest.len() && rest[end] != b'"' {
        // An escape: the next byte is never the end.
        end += if rest[end] == b'\\' { 2 } else { 1 };
    }
    if end >= rest.len() {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_in_compact_and_spaced_json() {
        let compact = br#"{"choices":[{"delta":{"content":"1700000000123"},"index":0}]}"#;
        assert_eq!(content_in(compact), Some("1700000000123"));
        let spaced = br#"{"choices": [{"delta": {"content": "42", "role": null}}]}"#;
        assert_eq!(content_in(spaced), Some("42"));
        assert_eq!(
            content_in(br#"{"delta":{"content":"hi \"x\""}}"#),
            Some(r#"hi \"x\""#)
        );
        assert_eq!(content_in(br#"{"delta":{"content":null}}"#), None);
        assert_eq!(content_in(br#"{"delta":{"reasoning_content":"1"}}"#), None);
        assert_eq!(content_in(br#"{"delta":{"content":"cut"#), None);
    }

    #[test]
    fn counts_non_empty_chunks_and_transits_of_stamps() {
        let mut trace = StreamTrace::start();
        trace.content("");
        trace.content("1");
        trace.content("token ");
        trace.content("2");
        assert_eq!(trace.chunks(), 3);
        assert_eq!(trace.transits_ns.len(), 2);
        assert!(trace.ttfc.is_some());
        assert_eq!(trace.gaps_ns.len(), 2);
        assert!(trace.whole.is_none());
        trace.finish();
        assert!(trace.complete && trace.whole.is_some());
    }
}

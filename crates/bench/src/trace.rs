//! What one stream did, as the caller saw it: time to the first chunk, each
//! chunk's transit (the fake upstream's send stamp to our read, on the same
//! clock) and the gaps between chunks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct StreamTrace {
    started: Instant,
    last: Option<Instant>,
    pub ttfc: Option<Duration>,
    /// Nanoseconds from the upstream writing each chunk to us reading it.
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
            transits_ns: Vec::with_capacity(64),
            gaps_ns: Vec::with_capacity(64),
            complete: false,
            error: None,
        }
    }

    /// A content delta arrived; only stamped ones (all of them, from the
    /// fake upstream in stamp mode) count as chunks.
    pub fn content(&mut self, text: &str) {
        let Ok(stamp) = text.parse::<u128>() else {
            return;
        };
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.transits_ns
            .push(u64::try_from(wall.saturating_sub(stamp)).unwrap_or(u64::MAX));
        match self.last {
            None => self.ttfc = Some(now - self.started),
            Some(last) => self.gaps_ns.push(nanos(now - last)),
        }
        self.last = Some(now);
    }

    pub fn chunks(&self) -> usize {
        self.transits_ns.len()
    }

    pub fn fail(&mut self, error: impl std::fmt::Display) {
        self.error.get_or_insert_with(|| error.to_string());
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The text of the first `"content"` string in an OpenAI chunk, when it is
/// a plain number (a stamp). A scan, not a JSON parse: the caller's own cost
/// should stay small next to what it measures; spaces after the colon are
/// allowed because Python peers write them.
pub fn stamp_in(json: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"content\"";
    let at = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &json[at..];
    let rest = trim_start(rest).strip_prefix(b":")?;
    let rest = trim_start(rest).strip_prefix(b"\"")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'"') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_stamps_in_compact_and_spaced_json() {
        let compact = br#"{"choices":[{"delta":{"content":"1700000000123"},"index":0}]}"#;
        assert_eq!(stamp_in(compact), Some("1700000000123"));
        let spaced = br#"{"choices": [{"delta": {"content": "42", "role": null}}]}"#;
        assert_eq!(stamp_in(spaced), Some("42"));
        assert_eq!(stamp_in(br#"{"delta":{"content":"hi"}}"#), None);
        assert_eq!(stamp_in(br#"{"delta":{"content":null}}"#), None);
        assert_eq!(stamp_in(br#"{"delta":{"reasoning_content":"1"}}"#), None);
    }

    #[test]
    fn counts_stamped_chunks_only() {
        let mut trace = StreamTrace::start();
        trace.content("");
        trace.content("1");
        trace.content("2");
        assert_eq!(trace.chunks(), 2);
        assert!(trace.ttfc.is_some());
        assert_eq!(trace.gaps_ns.len(), 1);
    }
}

//! What a call's answer showed as it went by: chunks, the first chunk's
//! time, the served model, finish reasons, the usage the upstream reported
//! and, for the estimate when it reported none, how much text came out.

use crate::model::{ChatChunk, Usage};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub chunks: u64,
    pub time_to_first_chunk: Option<Duration>,
    pub served_model: Option<String>,
    pub response_id: Option<String>,
    pub finish_reasons: Vec<String>,
    pub usage: Option<Usage>,
    /// Bytes of generated text (content, reasoning, tool arguments).
    pub output_bytes: usize,
    /// The answer's text, kept only when the operator opted in to content
    /// capture, and only up to `capture_limit` bytes.
    pub captured: Option<String>,
    pub capture_limit: usize,
    /// A stream's: what the sidecar had added when its first chunk was in
    /// hand (later work, a resumed stream's continuation, is not ours to
    /// count against the caller's wait).
    pub overhead_at_first_chunk: Option<Duration>,
}

impl Tally {
    /// A tally that also keeps the answer's text, up to `limit` bytes.
    pub fn capturing(limit: Option<usize>) -> Tally {
        Tally {
            captured: limit.map(|_| String::new()),
            capture_limit: limit.unwrap_or(0),
            ..Tally::default()
        }
    }

    /// Notes one chunk; `since_start` is the call's age when it arrived.
    pub fn note(&mut self, chunk: &ChatChunk, since_start: Duration) {
        self.chunks += 1;
        if self.time_to_first_chunk.is_none() {
            self.time_to_first_chunk = Some(since_start);
        }
        if let Some(identity) = &chunk.identity {
            if self.served_model.is_none() && !identity.model.is_empty() {
                self.served_model = Some(identity.model.clone());
            }
            if self.response_id.is_none() && !identity.id.is_empty() {
                self.response_id = Some(identity.id.clone());
            }
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        self.output_bytes += chunk.output_bytes;
        for (_, reason) in &chunk.finish_reasons {
            self.finish_reasons.push(reason.clone());
        }
        if let Some(captured) = &mut self.captured {
            // Opt-in only: the event is decoded again for its text.
            let event = chunk.to_value().unwrap_or_default();
            let choices = event.get("choices").and_then(serde_json::Value::as_array);
            for choice in choices.into_iter().flatten() {
                if let Some(text) = choice["delta"]["content"].as_str() {
                    capture(captured, text, self.capture_limit);
                }
            }
        }
    }

    /// The usage as reported, or estimated (about four bytes a token) when
    /// the upstream reported none; the flag says which.
    pub fn usage_or_estimate(&self, prompt_estimate: u32) -> (Option<Usage>, bool) {
        if let Some(usage) = self.usage {
            return (Some(usage), false);
        }
        if self.chunks == 0 && self.output_bytes == 0 {
            return (None, false);
        }
        let completion = u32::try_from(self.output_bytes.div_ceil(4)).unwrap_or(u32::MAX);
        let usage = Usage {
            prompt_tokens: prompt_estimate,
            completion_tokens: completion,
            total_tokens: prompt_estimate.saturating_add(completion),
            ..Usage::default()
        };
        (Some(usage), true)
    }
}

/// Appends what fits under `limit`, cut on a character boundary.
fn capture(captured: &mut String, text: &str, limit: usize) {
    let room = limit.saturating_sub(captured.len());
    if room == 0 {
        return;
    }
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    captured.push_str(&text[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::stream_reader::StreamReader;
    use serde_json::json;

    fn read(event: serde_json::Value) -> ChatChunk {
        StreamReader::default().read(event.to_string()).unwrap()
    }

    fn text_chunk(text: &str) -> ChatChunk {
        read(
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}),
        )
    }

    #[test]
    fn reported_usage_wins_and_is_not_an_estimate() {
        let mut tally = Tally::default();
        tally.note(&text_chunk("hello"), Duration::from_millis(3));
        tally.note(
            &read(json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})),
            Duration::from_millis(4),
        );
        let (usage, estimated) = tally.usage_or_estimate(100);
        assert_eq!(usage.unwrap().total_tokens, 9);
        assert!(!estimated);
        assert_eq!(tally.time_to_first_chunk, Some(Duration::from_millis(3)));
        assert_eq!(tally.served_model.as_deref(), Some("m"));
    }

    #[test]
    fn without_usage_the_output_is_estimated_and_flagged() {
        let mut tally = Tally::default();
        tally.note(&text_chunk("12345678"), Duration::ZERO);
        tally.note(&text_chunk("9"), Duration::ZERO);
        let (usage, estimated) = tally.usage_or_estimate(10);
        let usage = usage.unwrap();
        assert!(estimated);
        assert_eq!(usage.prompt_tokens, 10);
        assert_eq!(usage.completion_tokens, 3);
        assert_eq!(usage.total_tokens, 13);
    }

    #[test]
    fn capture_keeps_text_only_when_asked_and_only_up_to_the_limit() {
        let mut plain = Tally::default();
        plain.note(&text_chunk("secret prompt echo"), Duration::ZERO);
        assert_eq!(plain.captured, None);

        let mut capturing = Tally::capturing(Some(7));
        capturing.note(&text_chunk("héllo"), Duration::ZERO);
        // "héllo" is 6 bytes: the one byte left cannot hold the two of
        // "ö", and the cut never splits a character.
        capturing.note(&text_chunk("öx"), Duration::ZERO);
        assert_eq!(capturing.captured.as_deref(), Some("héllo"));
    }

    #[test]
    fn nothing_seen_nothing_estimated() {
        assert_eq!(Tally::default().usage_or_estimate(10), (None, false));
    }
}

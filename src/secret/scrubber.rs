//! The one scrubbing step for text that reaches a caller or an operator:
//! every configured secret (each provider key, rotated ones included, and
//! each secret provider header value) is replaced wherever it appears, and
//! the token after a well-known credential marker (`sk-`, `Bearer `) is too,
//! for keys the sidecar never held (a proxy echoing someone else's header).
//!
//! Built once per provider when a config is loaded (so keys re-read from
//! files on a reload come with the new pipeline); used on error paths and
//! per response header, never per chunk. A text with nothing to scrub costs
//! one multi-pattern scan (aho-corasick) and no allocation.

use aho_corasick::{AhoCorasick, MatchKind};
use http::HeaderValue;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Shorter values are not treated as secrets: scrubbing every `abc` would
/// mangle ordinary text, and no real credential is that short.
pub const MIN_SECRET_CHARS: usize = 8;

/// Markers of a credential whose value we may not know; the token after
/// one (up to whitespace, a quote, a comma or a bracket) is redacted.
const MARKERS: [&str; 3] = ["sk-", "Bearer ", "bearer "];

/// Secrets to remove from text. `Default` holds none (markers still apply).
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Every secret, longest first, without repeats.
    secrets: Arc<[Arc<str>]>,
    /// The secrets as one automaton; `None` when there are none.
    finder: Option<AhoCorasick>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

impl Scrubber {
    /// A scrubber for `secrets`; those under [`MIN_SECRET_CHARS`] are left
    /// out.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Scrubber {
        let mut list: Vec<Arc<str>> = secrets
            .into_iter()
            .filter(|secret| secret.as_ref().chars().count() >= MIN_SECRET_CHARS)
            .map(|secret| Arc::from(secret.as_ref()))
            .collect();
        list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        list.dedup();
        // Leftmost-longest: a secret that contains another is removed whole.
        let finder = (!list.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(list.iter().map(|secret| secret.as_bytes()))
                .expect("a handful of literal patterns always builds")
        });
        Scrubber {
            secrets: list.into(),
            finder,
        }
    }

    /// One scrubber for the secrets of all of `scrubbers` (a pipeline's
    /// providers, for the edges).
    pub fn union<'a>(scrubbers: impl IntoIterator<Item = &'a Scrubber>) -> Scrubber {
        Scrubber::new(
            scrubbers
                .into_iter()
                .flat_map(|scrubber| scrubber.secrets.iter().cloned()),
        )
    }

    /// How many secrets it knows.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret and every marked token replaced by
    /// [`REDACTED`]; borrowed when there was nothing to replace.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        // Secrets first: a marked token that ends inside a secret (at a
        // comma the secret contains) must not leave the secret's tail.
        let known = match &self.finder {
            Some(finder) if finder.is_match(text) => {
                Cow::Owned(finder.replace_all(text, &vec![REDACTED; self.secrets.len()]))
            }
            _ => Cow::Borrowed(text),
        };
        let mut out = known;
        for marker in MARKERS {
            if let Some(redacted) = redact_after(&out, marker) {
                out = Cow::Owned(redacted);
            }
        }
        out
    }

    /// Scrubs `text` where it is.
    pub fn scrub_string(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.scrub(text) {
            *text = clean;
        }
    }

    /// Scrubs every string of a JSON value, object keys included.
    pub fn scrub_json(&self, value: &mut Value) {
        match value {
            Value::String(text) => self.scrub_string(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.scrub_json(item)),
            Value::Object(fields) => {
                let renamed = fields
                    .keys()
                    .any(|key| matches!(self.scrub(key), Cow::Owned(_)));
                if renamed {
                    let old = std::mem::take(fields);
                    for (key, item) in old {
                        fields.insert(self.scrub(&key).into_owned(), item);
                    }
                }
                fields.values_mut().for_each(|item| self.scrub_json(item));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// A header value scrubbed; `None` if nothing changed. Bytes that are
    /// not UTF-8 are read as U+FFFD (and so written back as such).
    pub fn scrub_header(&self, value: &HeaderValue) -> Option<HeaderValue> {
        let text = String::from_utf8_lossy(value.as_bytes());
        match self.scrub(&text) {
            Cow::Borrowed(_) if matches!(text, Cow::Borrowed(_)) => None,
            clean => Some(
                HeaderValue::from_str(&clean)
                    .unwrap_or_else(|_| HeaderValue::from_static(REDACTED)),
            ),
        }
    }
}

/// The text with the token after each `marker` replaced by [`REDACTED`]
/// (the marker kept, so the message still says what kind of thing was
/// there); `None` when nothing was replaced.
fn redact_after(text: &str, marker: &str) -> Option<String> {
    if !text.contains(marker) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find(marker) {
        let (before, from_marker) = rest.split_at(at);
        out.push_str(before);
        out.push_str(marker);
        let token = &from_marker[marker.len()..];
        let end = token
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | ']' | '}' | '<' | '>')
            })
            .unwrap_or(token.len());
        // "task-list" is not a key: the marker must start a word; and an
        // already redacted token stays as it is.
        let starts_word = !before.ends_with(|c: char| c.is_alphanumeric() || c == '-');
        if starts_word && end >= 4 {
            out.push_str(REDACTED);
            changed = true;
        } else {
            out.push_str(&token[..end]);
        }
        rest = &token[end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests;

//! API keys: held in one type that never prints itself, and a scrubber for
//! text that came back from an upstream (providers echo keys in errors, e.g.
//! "Incorrect API key provided: sk-abc...").

use crate::config::{Env, KeySource};
use std::fmt;
use std::sync::Arc;

/// A provider API key. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the Authorization header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Reads a provider's key: the file if one is configured (a mounted
/// Kubernetes Secret; surrounding whitespace such as the trailing newline
/// `kubectl create secret --from-file` keeps is dropped), else the
/// environment variable. `Ok(None)` when neither holds a key.
pub fn load_key(source: &KeySource, env: Env<'_>) -> Result<Option<ApiKey>, String> {
    if let Some(path) = &source.file {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the key file {}: {error}", path.display()))?;
        let key = text.trim();
        if key.is_empty() {
            return Err(format!("the key file {} is empty", path.display()));
        }
        return Ok(Some(ApiKey::new(key)));
    }
    Ok(source
        .env
        .as_deref()
        .and_then(env)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .map(ApiKey::new))
}

/// Longest upstream message we pass on: enough to act on, bounded so a
/// provider that returns a whole HTML page does not flood logs and callers.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Removes anything that looks like a credential from upstream text: the
/// key we used (if it appears verbatim) and well-known key shapes (`sk-...`,
/// `Bearer ...`), then bounds the length.
/// [`scrub`] applied to every string of a JSON value (object keys stay).
pub fn scrub_json(value: &mut serde_json::Value, keys: &[ApiKey]) {
    match value {
        serde_json::Value::String(text) => *text = scrub(text, keys),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| scrub_json(item, keys)),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(|item| scrub_json(item, keys));
        }
        _ => {}
    }
}

pub fn scrub<'a>(text: &str, keys: impl IntoIterator<Item = &'a ApiKey>) -> String {
    let mut out = text.to_owned();
    for key in keys {
        if !key.expose().is_empty() {
            out = out.replace(key.expose(), "<redacted>");
        }
    }
    for marker in ["sk-", "Bearer "] {
        out = redact_after(&out, marker);
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    out
}

/// Replaces the token that follows each `marker` (up to whitespace or a
/// quote) with `<redacted>`, keeping the marker so the message still says
/// what kind of thing was there.
fn redact_after(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let (before, from_marker) = rest.split_at(at);
        out.push_str(before);
        out.push_str(marker);
        let token = &from_marker[marker.len()..];
        let end = token
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')'))
            .unwrap_or(token.len());
        // "task-list" is not a key: the marker must start a word.
        let starts_word = !before.ends_with(|c: char| c.is_alphanumeric());
        if starts_word && end >= 4 {
            out.push_str("<redacted>");
        } else {
            out.push_str(&token[..end]);
        }
        rest = &token[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("sk-live-1234567890");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn scrub_removes_the_key_and_key_shapes() {
        let key = ApiKey::new("custom-secret-value");
        let text = "bad key custom-secret-value; Incorrect API key provided: sk-abc123xyz. Bearer tok3nvalue";
        let clean = scrub(text, Some(&key));
        assert!(!clean.contains("custom-secret-value"));
        assert!(!clean.contains("abc123xyz"));
        assert!(!clean.contains("tok3nvalue"));
        assert!(clean.contains("Incorrect API key provided: sk-<redacted>"));
    }

    #[test]
    fn scrub_keeps_ordinary_text_and_bounds_length() {
        assert_eq!(scrub("task-list is fine", []), "task-list is fine");
        let long = "x".repeat(5000);
        assert!(scrub(&long, []).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}

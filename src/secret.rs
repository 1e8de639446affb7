//! API keys: held in one type that never prints itself, and the scrubber
//! for text that reaches a caller or an operator (providers and proxies echo
//! keys and headers in errors, e.g. "Incorrect API key provided: sk-abc...").

mod scrubber;

pub use scrubber::{MIN_SECRET_CHARS, REDACTED, Scrubber};

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
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters (an ellipsis marks the
/// cut). Scrub before bounding: a cut through a secret would leave a
/// prefix the scrubber no longer recognises.
pub fn bound_message(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Whether a provider header's value is a secret by its name alone:
/// `authorization`, `proxy-authorization`, `cookie`, or any name containing
/// `key`, `token` or `secret` (case-insensitive). Other values are secret
/// only when the config marks them `secret = true`.
pub fn header_name_is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || ["key", "token", "secret"]
        .iter()
        .any(|part| name.contains(part))
}

/// The strings a secret header value is scrubbed as: the value itself and,
/// for an `Authorization`-style value (`Bearer abc…`, `Basic abc…`), the
/// credential alone, which is what an upstream is likelier to echo.
pub fn header_secret_forms(value: &str) -> impl Iterator<Item = &str> {
    let credential = value
        .split_once(' ')
        .map(|(_, credential)| credential.trim())
        .filter(|credential| !credential.is_empty());
    std::iter::once(value).chain(credential)
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
    fn messages_are_bounded_by_characters() {
        assert_eq!(bound_message("short"), "short");
        let long = "é".repeat(5000);
        let bounded = bound_message(&long);
        assert_eq!(bounded.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(bounded.ends_with('…'));
    }

    #[test]
    fn secret_header_names_follow_the_rule() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-Api-Key",
            "api-key",
            "X-Auth-Token",
            "X-Client-Secret",
        ] {
            assert!(header_name_is_secret(name), "{name}");
        }
        for name in [
            "X-Title",
            "HTTP-Referer",
            "OpenAI-Organization",
            "User-Agent",
        ] {
            assert!(!header_name_is_secret(name), "{name}");
        }
    }

    #[test]
    fn an_authorization_value_is_scrubbed_whole_and_as_its_credential() {
        let forms: Vec<&str> = header_secret_forms("Bearer abc-123456789").collect();
        assert_eq!(forms, ["Bearer abc-123456789", "abc-123456789"]);
        let forms: Vec<&str> = header_secret_forms("plainsecretvalue").collect();
        assert_eq!(forms, ["plainsecretvalue"]);
    }
}

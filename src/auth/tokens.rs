//! Caller tokens: which presented secret names which caller.

use http::HeaderMap;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// The metadata key (gRPC) or header (HTTP) a token may come in besides
/// `authorization: Bearer <token>`.
pub const TOKEN_HEADER: &str = "x-llm-token";

/// The caller a valid token named, put in the request's extensions for the
/// observer (it becomes the ledger's `caller_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCaller(pub Arc<str>);

/// A secret that never prints itself.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    pub fn new(value: &str) -> Secret {
        Secret(value.as_bytes().into())
    }

    /// Constant time in the contents, so a caller cannot find a token
    /// byte by byte from how long a refusal takes.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_ref().ct_eq(presented))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The caller tokens in force: each with the name it gives its caller.
#[derive(Debug, Clone, Default)]
pub struct CallerTokens {
    tokens: Vec<(Arc<str>, Secret)>,
}

impl CallerTokens {
    pub fn new(tokens: impl IntoIterator<Item = (String, String)>) -> CallerTokens {
        CallerTokens {
            tokens: tokens
                .into_iter()
                .map(|(name, value)| (Arc::from(name), Secret::new(&value)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token `presented` is. Every token is compared, so
    /// the time taken does not say which one came close.
    pub fn caller(&self, presented: &[u8]) -> Option<Arc<str>> {
        let mut found = None;
        for (name, secret) in &self.tokens {
            if secret.matches(presented) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }
}

/// The token a request presents: `authorization: Bearer <token>` (what
/// the OpenAI SDKs send as their `api_key`) or `x-llm-token: <token>`.
/// `None` when neither is there.
pub fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    // An empty `x-llm-token` (a client's unset variable) hides nothing.
    if let Some(token) = headers
        .get(TOKEN_HEADER)
        .map(|value| value.as_bytes().trim_ascii())
        .filter(|token| !token.is_empty())
    {
        return Some(token);
    }
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let scheme = b"bearer ";
    let bearer = value.len() > scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme);
    Some(if bearer {
        value[scheme.len()..].trim_ascii()
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn a_bearer_or_the_token_header_is_read() {
        let bearer = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(presented(&bearer), Some(&b"abc"[..]));
        let lower = headers(&[("authorization", "bearer  abc ")]);
        assert_eq!(presented(&lower), Some(&b"abc"[..]));
        let own = headers(&[("x-llm-token", "xyz"), ("authorization", "Bearer abc")]);
        assert_eq!(presented(&own), Some(&b"xyz"[..]));
        let empty = headers(&[("x-llm-token", ""), ("authorization", "Bearer abc")]);
        assert_eq!(presented(&empty), Some(&b"abc"[..]));
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn a_token_names_its_caller_and_nothing_else_does() {
        let tokens = CallerTokens::new([
            ("app".to_owned(), "secret-one".to_owned()),
            ("batch".to_owned(), "secret-two".to_owned()),
        ]);
        assert_eq!(tokens.caller(b"secret-two").as_deref(), Some("batch"));
        assert_eq!(tokens.caller(b"secret-one").as_deref(), Some("app"));
        assert_eq!(tokens.caller(b"secret-on"), None);
        assert_eq!(tokens.caller(b""), None);
        assert!(!format!("{tokens:?}").contains("secret"));
    }
}

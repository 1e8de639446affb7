//! The upstream response headers that reach the caller: the provider's
//! rate-limit state (OpenAI's `x-ratelimit-*`, the IETF draft's
//! `ratelimit*`, Anthropic's `anthropic-ratelimit-*`), when to retry
//! (`retry-after`, `retry-after-ms`), and its own request id
//! (`x-request-id` or `request-id`), renamed `x-upstream-request-id` because
//! `x-request-id` is the call's own id.
//! HTTP callers get them as headers, gRPC callers as response metadata
//! (or trailers, on an error). Their values are scrubbed of the provider's
//! secrets (a proxy may echo a key into any of them) where the provider
//! reads them.

use crate::secret::Scrubber;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The name an upstream's request id travels under to the caller.
pub const UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";

/// Selected upstream headers, names lower-case, in the upstream's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassedHeaders(Vec<(HeaderName, HeaderValue)>);

impl PassedHeaders {
    /// Picks the headers a caller should see from an upstream response,
    /// their values scrubbed of `scrubber`'s secrets.
    pub fn from_upstream(headers: &HeaderMap, scrubber: &Scrubber) -> PassedHeaders {
        let mut passed = Vec::new();
        for (name, value) in headers {
            let text = name.as_str();
            let rate_limit = ["x-ratelimit-", "ratelimit", "anthropic-ratelimit-"]
                .iter()
                .any(|prefix| text.starts_with(prefix));
            let value = || {
                scrubber
                    .scrub_header(value)
                    .unwrap_or_else(|| value.clone())
            };
            if rate_limit || text == "retry-after" || text == "retry-after-ms" {
                passed.push((name.clone(), value()));
            } else if text == "x-request-id" || text == "request-id" {
                passed.push((HeaderName::from_static(UPSTREAM_REQUEST_ID), value()));
            }
        }
        PassedHeaders(passed)
    }

    /// Every value scrubbed of `scrubber`'s secrets.
    pub fn scrub(&mut self, scrubber: &Scrubber) {
        for (_, value) in &mut self.0 {
            if let Some(clean) = scrubber.scrub_header(value) {
                *value = clean;
            }
        }
    }

    /// [`PassedHeaders::scrub`], by value.
    pub fn scrubbed(mut self, scrubber: &Scrubber) -> PassedHeaders {
        self.scrub(scrubber);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(name, value)| (name, value))
    }

    /// Adds them to `headers`, leaving alone any the sidecar set itself.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            if !headers.contains_key(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_retry_and_the_request_id_pass() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-remaining-requests", "9"),
            ("x-ratelimit-reset-tokens", "6ms"),
            ("retry-after", "2"),
            ("x-request-id", "req_123"),
            ("anthropic-ratelimit-tokens-remaining", "800"),
            ("ratelimit-policy", "10;w=60"),
            ("set-cookie", "secret=1"),
            ("content-type", "application/json"),
        ] {
            upstream.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let passed = PassedHeaders::from_upstream(&upstream, &Scrubber::default());
        let names: Vec<&str> = passed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-tokens",
                "retry-after",
                UPSTREAM_REQUEST_ID,
                "anthropic-ratelimit-tokens-remaining",
                "ratelimit-policy",
            ]
        );
        let mut out = HeaderMap::new();
        out.insert("retry-after", HeaderValue::from_static("5"));
        passed.add_to(&mut out);
        assert_eq!(out["retry-after"], "5");
        assert_eq!(out[UPSTREAM_REQUEST_ID], "req_123");
    }

    #[test]
    fn passed_values_are_scrubbed() {
        let mut upstream = HeaderMap::new();
        upstream.insert(
            "x-request-id",
            HeaderValue::from_static("req for secret-value-0123456789"),
        );
        let passed =
            PassedHeaders::from_upstream(&upstream, &Scrubber::new(["secret-value-0123456789"]));
        let values: Vec<&HeaderValue> = passed.iter().map(|(_, value)| value).collect();
        assert_eq!(values, ["req for <redacted>"]);
    }
}

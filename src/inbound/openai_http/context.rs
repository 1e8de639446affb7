//! What the request headers tell the pipeline: the caller's deadline and
//! its cap on attempts, and the request id that ties the call together.
//!
//! The deadline comes from `x-llm-timeout-ms`, or else from the OpenAI
//! SDKs' `x-stainless-timeout` (seconds) on unary calls. That header is the
//! SDK's *read* timeout: for a unary call it is the wait for the answer,
//! but for a stream it bounds only the gap between bytes, so applying it to
//! a whole stream would cut answers the SDK would have accepted.

use super::api_error::ApiError;
use axum::http::HeaderMap;
use std::time::Duration;
use tokio::time::Instant;

/// Attempts the caller allows (0 or 1: no retries), as on gRPC.
pub const MAX_ATTEMPTS_HEADER: &str = "x-llm-max-attempts";
/// The caller's deadline, in milliseconds from the request's arrival.
pub const TIMEOUT_MS_HEADER: &str = "x-llm-timeout-ms";
/// The OpenAI SDKs' read timeout, in seconds (e.g. `600` or `600.0`).
pub const SDK_TIMEOUT_HEADER: &str = "x-stainless-timeout";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// We end the call a hair before the caller gives up, so it gets our 504
/// (and we keep a record of the call) instead of its own timeout.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The caller's limits on the call, read from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub deadline: Option<Instant>,
    pub max_attempts: Option<u32>,
}

pub fn call_context(
    headers: &HeaderMap,
    stream: bool,
    now: Instant,
) -> Result<CallLimits, ApiError> {
    let max_attempts = match header(headers, MAX_ATTEMPTS_HEADER) {
        None => None,
        Some(text) => Some(text.trim().parse::<u32>().map_err(|_| {
            ApiError::invalid(
                "invalid_header",
                format!(
                    "header `{MAX_ATTEMPTS_HEADER}` must be a whole number (0 or 1: no retries)"
                ),
                None,
            )
        })?),
    };
    let timeout = match header(headers, TIMEOUT_MS_HEADER) {
        Some(text) => Some(
            text.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    ApiError::invalid(
                        "invalid_header",
                        format!(
                            "header `{TIMEOUT_MS_HEADER}` must be a whole number of milliseconds"
                        ),
                        None,
                    )
                })?,
        ),
        // Not our header: a value we cannot read is ignored, not an error.
        None if !stream => header(headers, SDK_TIMEOUT_HEADER).and_then(sdk_timeout),
        None => None,
    };
    let deadline = timeout.map(|timeout| {
        let margin = DEADLINE_MARGIN.min(timeout / 10);
        now + timeout.saturating_sub(margin)
    });
    Ok(CallLimits {
        deadline,
        max_attempts,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn sdk_timeout(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().parse().ok()?;
    // Also refuses NaN and absurd values that would overflow.
    (seconds > 0.0 && seconds < 1e9).then(|| Duration::from_secs_f64(seconds))
}

pub use crate::inbound::observe::request_id;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn deadline_after(pairs: &[(&'static str, &str)], stream: bool) -> Option<Duration> {
        let now = Instant::now();
        call_context(&headers(pairs), stream, now)
            .unwrap()
            .deadline
            .map(|deadline| deadline - now)
    }

    #[test]
    fn no_headers_no_bounds() {
        let call = call_context(&HeaderMap::new(), false, Instant::now()).unwrap();
        assert_eq!(call.deadline, None);
        assert_eq!(call.max_attempts, None);
    }

    #[test]
    fn max_attempts_is_a_whole_number() {
        let call = call_context(
            &headers(&[(MAX_ATTEMPTS_HEADER, "1")]),
            false,
            Instant::now(),
        );
        assert_eq!(call.unwrap().max_attempts, Some(1));
        let error = call_context(
            &headers(&[(MAX_ATTEMPTS_HEADER, "two")]),
            false,
            Instant::now(),
        )
        .unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.message.contains(MAX_ATTEMPTS_HEADER));
    }

    #[test]
    fn our_timeout_wins_and_keeps_a_margin() {
        let both = [(TIMEOUT_MS_HEADER, "1000"), (SDK_TIMEOUT_HEADER, "600")];
        assert_eq!(
            deadline_after(&both, false),
            Some(Duration::from_millis(980))
        );
        assert_eq!(
            deadline_after(&both, true),
            Some(Duration::from_millis(980))
        );
        assert_eq!(
            deadline_after(&[(TIMEOUT_MS_HEADER, "100")], false),
            Some(Duration::from_millis(90))
        );
        let error = call_context(
            &headers(&[(TIMEOUT_MS_HEADER, "1s")]),
            false,
            Instant::now(),
        )
        .unwrap_err();
        assert!(error.message.contains(TIMEOUT_MS_HEADER));
    }

    #[test]
    fn the_sdk_timeout_bounds_unary_calls_only() {
        assert_eq!(
            deadline_after(&[(SDK_TIMEOUT_HEADER, "600.0")], false),
            Some(Duration::from_secs(600) - DEADLINE_MARGIN)
        );
        assert_eq!(deadline_after(&[(SDK_TIMEOUT_HEADER, "600")], true), None);
        for garbage in ["soon", "-1", "0", "NaN", "inf"] {
            assert_eq!(
                deadline_after(&[(SDK_TIMEOUT_HEADER, garbage)], false),
                None,
                "{garbage}"
            );
        }
    }

    #[test]
    fn sane_request_ids_are_echoed_others_replaced() {
        assert_eq!(
            request_id(&headers(&[(REQUEST_ID_HEADER, "req-42_a.b:c")])),
            "req-42_a.b:c"
        );
        let long = "x".repeat(129);
        for odd in ["", "has space", "semi;colon", long.as_str()] {
            let id = request_id(&headers(&[(REQUEST_ID_HEADER, odd)]));
            assert_ne!(id, odd);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        let fresh = request_id(&HeaderMap::new());
        assert!(uuid::Uuid::parse_str(&fresh).is_ok());
        assert_ne!(fresh, request_id(&HeaderMap::new()));
    }
}

//! What the request headers tell the pipeline: the caller's deadline and
//! its cap on attempts, and the request id that ties the call together.
//!
//! The deadline comes from `x-llm-timeout-ms`, or else from the OpenAI
//! SDKs' timeout headers: openai-python's `x-stainless-read-timeout`
//! (seconds, a float) and openai-node's `x-stainless-timeout` (whole
//! seconds, truncated: `3` for 3.5 s, so it is read as "under 4 s"). Both
//! are the SDK's *read* timeout: for a unary call the wait for the answer,
//! but for a stream only the gap between bytes, so on a stream they bound
//! the wait for the first byte and nothing after it (applied to the whole
//! stream they would cut answers the SDK would have accepted).
//!
//! A request with `x-stainless-retry-count` above 0 is the SDK's own retry:
//! the SDK's retry loop is already the retry, so the sidecar gives that
//! request one attempt per target instead of multiplying it by its own
//! (fallbacks still apply). The sidecar's errors tell the SDK when not to
//! retry at all (`x-should-retry: false`, see `api_error.rs`).

use super::api_error::ApiError;
use axum::http::HeaderMap;
use std::time::Duration;
use tokio::time::Instant;

/// Attempts the caller allows (0 or 1: no retries), as on gRPC.
pub const MAX_ATTEMPTS_HEADER: &str = "x-llm-max-attempts";
/// The caller's deadline, in milliseconds from the request's arrival.
pub const TIMEOUT_MS_HEADER: &str = "x-llm-timeout-ms";
/// openai-node's timeout, in whole seconds (truncated).
pub const SDK_TIMEOUT_HEADER: &str = "x-stainless-timeout";
/// openai-python's read timeout, in seconds (a float, e.g. `600.0`).
pub const SDK_READ_TIMEOUT_HEADER: &str = "x-stainless-read-timeout";
/// How many times the OpenAI SDK has already retried this request.
pub const SDK_RETRY_COUNT_HEADER: &str = "x-stainless-retry-count";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// We end the call a hair before the caller gives up, so it gets our 504
/// (and we keep a record of the call) instead of its own timeout.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

pub use crate::pipeline::CallLimits;

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
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_header",
                        format!(
                            "header `{TIMEOUT_MS_HEADER}` must be a whole number of milliseconds above 0"
                        ),
                        None,
                    )
                })?,
        ),
        None if !stream => sdk_timeout(headers),
        None => None,
    };
    let before = |timeout: Duration| {
        let margin = DEADLINE_MARGIN.min(timeout / 10);
        now + timeout.saturating_sub(margin)
    };
    // The SDK's retry is the retry: one attempt per target for it.
    // Any count above 0, however large, is a retry.
    let sdk_retry = header(headers, SDK_RETRY_COUNT_HEADER)
        .map(str::trim)
        .is_some_and(|count| {
            !count.is_empty()
                && count.bytes().all(|b| b.is_ascii_digit())
                && count.bytes().any(|b| b != b'0')
        });
    let max_attempts = match (max_attempts, sdk_retry) {
        (Some(attempts), true) => Some(attempts.min(1)),
        (None, true) => Some(1),
        (attempts, false) => attempts,
    };
    Ok(CallLimits {
        deadline: timeout.map(before),
        first_byte_deadline: if stream {
            sdk_timeout(headers).map(before)
        } else {
            None
        },
        max_attempts,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The SDK's read timeout, from whichever of its headers came. Not our
/// headers: a value we cannot read is ignored, not an error.
fn sdk_timeout(headers: &HeaderMap) -> Option<Duration> {
    if let Some(text) = header(headers, SDK_READ_TIMEOUT_HEADER) {
        return seconds(text);
    }
    let text = header(headers, SDK_TIMEOUT_HEADER)?.trim();
    let seconds = seconds(text)?;
    // Whole seconds are openai-node's truncation: `3` was up to 3.999 s,
    // and cutting the call before the SDK gives up is worse than after.
    if text.bytes().all(|b| b.is_ascii_digit()) {
        Some(seconds + Duration::from_secs(1))
    } else {
        Some(seconds)
    }
}

fn seconds(text: &str) -> Option<Duration> {
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
        for odd in ["1s", "0", "-5"] {
            let error = call_context(&headers(&[(TIMEOUT_MS_HEADER, odd)]), false, Instant::now())
                .unwrap_err();
            assert!(error.message.contains(TIMEOUT_MS_HEADER), "{odd}");
        }
    }

    #[test]
    fn the_sdk_timeouts_bound_a_unary_call_and_a_streams_first_byte() {
        let first_byte_after = |pairs: &[(&'static str, &str)]| {
            let now = Instant::now();
            let limits = call_context(&headers(pairs), true, now).unwrap();
            assert_eq!(limits.deadline, None, "never the whole stream");
            limits.first_byte_deadline.map(|deadline| deadline - now)
        };
        // openai-python: float seconds, exactly.
        let python = [(SDK_READ_TIMEOUT_HEADER, "2.5")];
        let python_after = Duration::from_millis(2500) - DEADLINE_MARGIN;
        assert_eq!(deadline_after(&python, false), Some(python_after));
        assert_eq!(first_byte_after(&python), Some(python_after));
        // openai-node: `3` was 3 s to 3.999 s; never cut before 3.5 s.
        let node = [(SDK_TIMEOUT_HEADER, "3")];
        let node_after = Duration::from_secs(4) - DEADLINE_MARGIN;
        assert_eq!(deadline_after(&node, false), Some(node_after));
        assert_eq!(first_byte_after(&node), Some(node_after));
        assert_eq!(
            deadline_after(&[(SDK_TIMEOUT_HEADER, "600.0")], false),
            Some(Duration::from_secs(600) - DEADLINE_MARGIN)
        );
        for garbage in ["soon", "-1", "0", "NaN", "inf"] {
            for name in [SDK_TIMEOUT_HEADER, SDK_READ_TIMEOUT_HEADER] {
                assert_eq!(deadline_after(&[(name, garbage)], false), None, "{garbage}");
            }
        }
    }

    #[test]
    fn an_sdk_retry_gets_one_attempt() {
        let limits = |pairs: &[(&'static str, &str)]| {
            call_context(&headers(pairs), false, Instant::now())
                .unwrap()
                .max_attempts
        };
        assert_eq!(limits(&[(SDK_RETRY_COUNT_HEADER, "0")]), None);
        assert_eq!(limits(&[(SDK_RETRY_COUNT_HEADER, "2")]), Some(1));
        assert_eq!(
            limits(&[(SDK_RETRY_COUNT_HEADER, "1"), (MAX_ATTEMPTS_HEADER, "3")]),
            Some(1)
        );
        assert_eq!(limits(&[(SDK_RETRY_COUNT_HEADER, "many")]), None);
        assert_eq!(
            limits(&[(SDK_RETRY_COUNT_HEADER, "99999999999999999999")]),
            Some(1)
        );
        assert_eq!(limits(&[(SDK_RETRY_COUNT_HEADER, "00")]), None);
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

//! The one table from cause to gRPC code, HTTP status and retryability.
//!
//! Upstream 401/403 mean *our* key failed, not the caller's credentials, so
//! they become FAILED_PRECONDITION (an operator must act), never
//! UNAUTHENTICATED, which would send the caller looking at its own auth.

use super::{EdgeFault, Error, OverloadKind, TimeoutKind, UpstreamError};
use tonic::Code;

/// How one error presents at the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub code: Code,
    pub http_status: u16,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
    /// A stable machine-readable reason for google.rpc.ErrorInfo.
    pub reason: &'static str,
}

const fn class(code: Code, http_status: u16, retryable: bool, reason: &'static str) -> Class {
    Class {
        code,
        http_status,
        retryable,
        reason,
    }
}

pub fn classify(error: &Error) -> Class {
    match error {
        Error::InvalidRequest(_) => class(Code::InvalidArgument, 400, false, "INVALID_REQUEST"),
        Error::ModelNotFound { .. } => class(Code::NotFound, 404, false, "MODEL_NOT_ROUTED"),
        Error::ProviderNotReady { .. } => {
            class(Code::FailedPrecondition, 503, false, "PROVIDER_NOT_READY")
        }
        Error::Upstream(upstream) => classify_upstream(upstream),
        Error::Connect { .. } => class(Code::Unavailable, 502, true, "UPSTREAM_UNREACHABLE"),
        Error::StreamIncomplete { .. } => {
            class(Code::Unavailable, 502, true, "UPSTREAM_STREAM_INCOMPLETE")
        }
        Error::MalformedResponse { .. } => {
            class(Code::Internal, 502, false, "UPSTREAM_MALFORMED_RESPONSE")
        }
        // Our own limit: trying again here would only queue again; the
        // caller gets RetryInfo and decides.
        Error::Overloaded { kind, .. } => match kind {
            OverloadKind::QueueFull => class(Code::ResourceExhausted, 429, false, "QUEUE_FULL"),
            OverloadKind::QueueWait => {
                class(Code::ResourceExhausted, 429, false, "QUEUE_WAIT_EXPIRED")
            }
            OverloadKind::Rate => class(Code::ResourceExhausted, 429, false, "LOCAL_RATE_LIMIT"),
            OverloadKind::SharedRate => {
                class(Code::ResourceExhausted, 429, false, "SHARED_RATE_LIMIT")
            }
        },
        Error::CircuitOpen { .. } => class(Code::Unavailable, 503, false, "CIRCUIT_OPEN"),
        // Spent for this window: only its reset helps.
        Error::BudgetExceeded(_) => class(Code::ResourceExhausted, 429, false, "BUDGET_EXCEEDED"),
        // Before any output a timeout is worth another try; a stream that
        // stalled midway is not retried anyway (output already went out).
        Error::Timeout { kind, .. } => match kind {
            TimeoutKind::Connect => class(Code::Unavailable, 504, true, "UPSTREAM_CONNECT_TIMEOUT"),
            TimeoutKind::Headers => class(
                Code::DeadlineExceeded,
                504,
                true,
                "UPSTREAM_HEADERS_TIMEOUT",
            ),
            TimeoutKind::FirstChunk => class(
                Code::DeadlineExceeded,
                504,
                true,
                "UPSTREAM_FIRST_CHUNK_TIMEOUT",
            ),
            TimeoutKind::Idle => class(Code::DeadlineExceeded, 504, false, "UPSTREAM_IDLE_TIMEOUT"),
            TimeoutKind::Total => class(Code::DeadlineExceeded, 504, false, "TOTAL_TIMEOUT"),
        },
        Error::DeadlineExceeded { .. } => {
            class(Code::DeadlineExceeded, 504, false, "DEADLINE_EXCEEDED")
        }
        // The sidecar's own cap, like its queues: the caller decides
        // when to come back.
        Error::TooManyCalls { .. } => {
            class(Code::ResourceExhausted, 429, false, "CALLS_IN_FLIGHT_LIMIT")
        }
        // The same answer again would be as large.
        Error::ResponseTooLarge { .. } => {
            class(Code::ResourceExhausted, 502, false, "RESPONSE_TOO_LARGE")
        }
        // Refused by the operator's choice (`on_unavailable = "closed"`)
        // until the store answers again; nothing was sent upstream.
        Error::SharedStoreUnavailable { .. } | Error::SharedStoreRefused { .. } => {
            class(Code::Unavailable, 503, false, "SHARED_STORE_UNAVAILABLE")
        }
        Error::ShuttingDown => class(Code::Unavailable, 503, true, "SIDECAR_SHUTTING_DOWN"),
        Error::Internal(_) => class(Code::Internal, 500, false, "INTERNAL"),
        // gRPC's own table: a message over the limit is RESOURCE_EXHAUSTED
        // (either way), an encoding not accepted UNIMPLEMENTED.
        Error::Edge { fault, .. } => match fault {
            EdgeFault::UndecodableRequest => {
                class(Code::InvalidArgument, 400, false, "UNDECODABLE_REQUEST")
            }
            EdgeFault::RequestTooLarge => {
                class(Code::ResourceExhausted, 413, false, "REQUEST_TOO_LARGE")
            }
            EdgeFault::UnsupportedEncoding => {
                class(Code::Unimplemented, 415, false, "UNSUPPORTED_ENCODING")
            }
            EdgeFault::RequestBodyTimeout => {
                class(Code::DeadlineExceeded, 408, false, "REQUEST_BODY_TIMEOUT")
            }
            EdgeFault::ResponseTooLarge => {
                class(Code::ResourceExhausted, 500, false, "RESPONSE_TOO_LARGE")
            }
        },
    }
}

fn classify_upstream(error: &UpstreamError) -> Class {
    if is_quota_exhausted(error) {
        // Out of credit: retrying cannot help until someone pays.
        return class(
            Code::ResourceExhausted,
            429,
            false,
            "UPSTREAM_QUOTA_EXHAUSTED",
        );
    }
    if is_context_length(error) {
        return class(Code::InvalidArgument, 400, false, "UPSTREAM_CONTEXT_LENGTH");
    }
    match error.status {
        400 | 413 | 422 => class(
            Code::InvalidArgument,
            400,
            false,
            "UPSTREAM_INVALID_REQUEST",
        ),
        401 | 403 => class(Code::FailedPrecondition, 502, false, "UPSTREAM_AUTH_FAILED"),
        404 => class(Code::NotFound, 404, false, "UPSTREAM_NOT_FOUND"),
        408 => class(Code::DeadlineExceeded, 504, true, "UPSTREAM_TIMEOUT"),
        409 => class(Code::Aborted, 409, true, "UPSTREAM_CONFLICT"),
        429 => class(Code::ResourceExhausted, 429, true, "UPSTREAM_RATE_LIMITED"),
        504 => class(Code::DeadlineExceeded, 504, true, "UPSTREAM_TIMEOUT"),
        500..=599 => class(Code::Unavailable, 503, true, "UPSTREAM_UNAVAILABLE"),
        // An error frame without a usable code: the upstream failed mid-way.
        0 if error.in_band => class(Code::Unavailable, 502, true, "UPSTREAM_ERROR"),
        _ => class(Code::Internal, 502, false, "UPSTREAM_UNEXPECTED_STATUS"),
    }
}

/// OpenAI `insufficient_quota`, Anthropic `enforced_spend_limit_reached`,
/// OpenRouter's 402: spending limits, not rate limits.
fn is_quota_exhausted(error: &UpstreamError) -> bool {
    const MARKERS: [&str; 3] = [
        "insufficient_quota",
        "enforced_spend_limit_reached",
        "insufficient_credits",
    ];
    error.status == 402
        || [&error.error_code, &error.error_type]
            .into_iter()
            .flatten()
            .any(|value| MARKERS.contains(&value.as_str()))
}

fn is_context_length(error: &UpstreamError) -> bool {
    error.error_code.as_deref() == Some("context_length_exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16) -> UpstreamError {
        UpstreamError {
            provider: "p".into(),
            status,
            message: "m".into(),
            ..UpstreamError::default()
        }
    }

    fn code_of(status: u16) -> Code {
        classify(&Error::from(upstream(status))).code
    }

    #[test]
    fn upstream_statuses_map_to_the_documented_codes() {
        assert_eq!(code_of(400), Code::InvalidArgument);
        assert_eq!(code_of(422), Code::InvalidArgument);
        assert_eq!(code_of(401), Code::FailedPrecondition);
        assert_eq!(code_of(403), Code::FailedPrecondition);
        assert_eq!(code_of(404), Code::NotFound);
        assert_eq!(code_of(429), Code::ResourceExhausted);
        assert_eq!(code_of(502), Code::Unavailable);
        assert_eq!(code_of(503), Code::Unavailable);
        assert_eq!(code_of(529), Code::Unavailable);
        assert_eq!(code_of(504), Code::DeadlineExceeded);
    }

    #[test]
    fn rate_limits_are_retryable_but_spend_limits_are_not() {
        assert!(classify(&Error::from(upstream(429))).retryable);
        let mut quota = upstream(429);
        quota.error_code = Some("insufficient_quota".into());
        let class = classify(&Error::from(quota));
        assert_eq!(class.code, Code::ResourceExhausted);
        assert!(!class.retryable);
        assert!(!classify(&Error::from(upstream(402))).retryable);
    }

    #[test]
    fn client_errors_are_never_retryable() {
        for status in [400, 401, 403, 404, 422] {
            assert!(
                !classify(&Error::from(upstream(status))).retryable,
                "{status}"
            );
        }
    }
}

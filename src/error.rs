//! What can go wrong with a call, said once where it happens and classified
//! once at the edge (see [`classify`]) into a gRPC code, an HTTP status and
//! whether trying again may help.

mod classify;
mod scrub;

pub use classify::{Class, classify};

use std::time::Duration;

/// Every failure a chat call can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's request is invalid; nothing was sent upstream.
    #[error("{0}")]
    InvalidRequest(String),
    /// No route matches the model; nothing was sent upstream.
    #[error("no provider serves model `{model}`: {hint}")]
    ModelNotFound { model: String, hint: String },
    /// The provider cannot be called as configured (e.g. no API key).
    #[error("provider `{provider}` is not usable: {reason}")]
    ProviderNotReady { provider: String, reason: String },
    /// The upstream answered with an HTTP error status (boxed: it carries
    /// the upstream's words and headers, and keeps `Error` small on the
    /// stream path).
    #[error(transparent)]
    Upstream(Box<UpstreamError>),
    /// The upstream could not be reached, or the connection broke before a
    /// response started.
    #[error("cannot reach provider `{provider}`: {detail}")]
    Connect { provider: String, detail: String },
    /// The upstream stream broke off after it started: no `[DONE]`, no
    /// finish reason, or the body failed mid-way.
    #[error("the stream from provider `{provider}` ended before completing: {detail}")]
    StreamIncomplete { provider: String, detail: String },
    /// The upstream sent something that is not a valid chat completion.
    #[error("provider `{provider}` sent an invalid response: {detail}")]
    MalformedResponse { provider: String, detail: String },
    /// One of the provider's own limits holds the call back (see
    /// [`OverloadKind`]); nothing was sent upstream.
    #[error("provider `{provider}` is at its limit: {kind}")]
    Overloaded {
        provider: String,
        kind: OverloadKind,
        retry_after: Duration,
    },
    /// The provider's circuit is open after repeated failures; nothing was
    /// sent upstream.
    /// A budget (`[[budgets]]`) would be taken past its limit.
    #[error("{0}")]
    BudgetExceeded(crate::budget::BudgetExceeded),
    #[error("provider `{provider}` is failing and skipped for now (circuit open)")]
    CircuitOpen {
        provider: String,
        retry_after: Duration,
    },
    /// One of our own timeouts fired (see [`TimeoutKind`]).
    #[error("provider `{provider}` timed out: {kind} after {after:?}")]
    Timeout {
        provider: String,
        kind: TimeoutKind,
        after: Duration,
    },
    /// The caller's deadline passed.
    #[error("the deadline passed after {elapsed:?} ({stage})")]
    DeadlineExceeded {
        stage: &'static str,
        elapsed: Duration,
    },
    /// The sidecar already has its most calls in flight
    /// (`server.max_calls_in_flight`): refused at once, nothing sent
    /// upstream.
    #[error(
        "the sidecar already has {limit} calls in flight (server.max_calls_in_flight); try again shortly"
    )]
    TooManyCalls { limit: usize },
    /// A unary answer larger than a caller can receive
    /// (`server.max_message_bytes`): refused from its `Content-Length`, or
    /// as soon as the read passed the limit, so it is never held whole.
    /// `size` is the upstream's `Content-Length` when it sent one.
    #[error("{}", too_large(provider, *limit, *size))]
    ResponseTooLarge {
        provider: String,
        limit: usize,
        size: Option<u64>,
    },
    /// The shared limits store is unreachable and `[shared] on_unavailable`
    /// is `"closed"`: the provider's fleet-wide limits cannot be checked,
    /// so it is not called. `retry_after` is how long until the store is
    /// tried again (at least 1 s): the refusal's Retry-After.
    #[error(
        "the shared limits store (Redis, [shared] redis_url) is unreachable and \
         on_unavailable = \"closed\": provider `{provider}` is not called until it answers"
    )]
    SharedStoreUnavailable {
        provider: String,
        retry_after: Duration,
    },
    /// The sidecar is stopping and its grace period for calls in flight is
    /// over; the caller may try again (on the restarted sidecar).
    #[error("the sidecar is shutting down; try again")]
    ShuttingDown,
    /// A bug or an unexpected local failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// The edge itself could not read the caller's request or send the
    /// answer back in the caller's protocol (see [`EdgeFault`]); `message`
    /// says what was wrong.
    #[error("{message}")]
    Edge { fault: EdgeFault, message: String },
}

/// What an edge found wrong with the bytes of a call, outside anything the
/// pipeline judges: each its own reason in the ledger and in ErrorInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeFault {
    /// The request message is not a message of the method's type (gRPC:
    /// not protobuf of it, cut short, or missing).
    UndecodableRequest,
    /// The request message is larger than the edge accepts.
    RequestTooLarge,
    /// The request is compressed in an encoding the edge does not accept.
    UnsupportedEncoding,
    /// The request body did not arrive within `server.body_read_timeout_ms`.
    RequestBodyTimeout,
    /// The answer is larger than the caller's protocol may carry
    /// (`server.max_message_bytes`); the upstream has answered (and billed).
    ResponseTooLarge,
}

/// Which of a provider's limits held a call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverloadKind {
    /// All slots busy and the queue full.
    QueueFull,
    /// Queued, but no slot came free in time.
    QueueWait,
    /// Over its requests- or tokens-per-minute rate for longer than a call may wait.
    Rate,
    /// Over the fleet's requests- or tokens-per-minute (`[shared]`) for
    /// longer than a call may wait.
    SharedRate,
}

impl std::fmt::Display for OverloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OverloadKind::QueueFull => "every slot is busy and the queue is full",
            OverloadKind::QueueWait => "the wait in the queue ran out",
            OverloadKind::Rate => "its requests or tokens per minute are used up",
            OverloadKind::SharedRate => {
                "the fleet's requests or tokens per minute (shared by every pod) are used up"
            }
        })
    }
}

/// Which of the sidecar's own timeouts fired; each is its own error so an
/// operator can tell a dead upstream from a slow or stalling one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No connection to the upstream in time.
    Connect,
    /// No response headers in time.
    Headers,
    /// Headers came, but no first chunk of a stream in time.
    FirstChunk,
    /// A stream stalled: too long a gap between two chunks.
    Idle,
    /// The whole call took longer than its total budget.
    Total,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "no connection",
            TimeoutKind::Headers => "no response headers",
            TimeoutKind::FirstChunk => "no first chunk",
            TimeoutKind::Idle => "no chunk for too long",
            TimeoutKind::Total => "the call's total time ran out",
        })
    }
}

/// An error the upstream reported, in its own words (scrubbed of secrets
/// where it becomes an [`Error`], see [`Error::scrubbed`]). `status` is the HTTP status, or the in-band code an upstream put
/// in an error frame of a 200 response (0 when it gave none).
#[derive(Debug, Clone, Default, thiserror::Error)]
#[error("provider `{provider}` {}: {message}", answered(*status))]
pub struct UpstreamError {
    pub provider: String,
    pub status: u16,
    pub message: String,
    pub error_type: Option<String>,
    pub error_code: Option<String>,
    /// The request field the upstream says the error is about.
    pub param: Option<String>,
    /// The upstream's own error object when it is
    /// an OpenAI-style object with a `message`: passed to HTTP callers as
    /// it is (numeric codes, `metadata` and all).
    pub object: Option<serde_json::Value>,
    pub retry_after: Option<Duration>,
    /// The upstream's rate-limit, retry and request-id headers, for the
    /// caller.
    pub headers: crate::upstream::PassedHeaders,
    /// True when the error came inside a 200 response (an SSE error frame or
    /// an error object in the body) rather than as an HTTP status.
    pub in_band: bool,
}

/// The words of [`Error::ResponseTooLarge`]: the limit, and the size when
/// it is known.
fn too_large(provider: &str, limit: usize, size: Option<u64>) -> String {
    let size = match size {
        Some(bytes) => format!("{bytes} bytes, "),
        None => String::new(),
    };
    format!(
        "provider `{provider}` answered with {size}more than the {limit} bytes a caller can receive (server.max_message_bytes)"
    )
}

/// How an upstream error is introduced: its status, or none in band.
fn answered(status: u16) -> String {
    if status == 0 {
        "reported an error".to_owned()
    } else {
        format!("answered {status}")
    }
}

#[cfg(test)]
impl Error {
    /// An upstream's HTTP error `status` (provider `p`), with its
    /// Retry-After when given: the shape most tests need.
    pub(crate) fn upstream_status(status: u16, retry_after: Option<Duration>) -> Error {
        Error::from(UpstreamError {
            provider: "p".into(),
            status,
            message: "m".into(),
            retry_after,
            ..UpstreamError::default()
        })
    }
}

impl From<UpstreamError> for Error {
    fn from(error: UpstreamError) -> Error {
        Error::Upstream(Box::new(error))
    }
}

impl Error {
    /// Failures that say the provider itself is unwell (as opposed to the
    /// request being wrong, or our own limits): they feed its circuit
    /// breaker and let a route fall back to its next target.
    pub fn is_provider_failure(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::StreamIncomplete { .. } | Error::Timeout { .. } => true,
            Error::Upstream(_) => classify(self).retryable,
            _ => false,
        }
    }

    /// A rate limit (429): the provider is busy, not broken, so it does
    /// not count against its circuit.
    pub fn is_rate_limit(&self) -> bool {
        matches!(self, Error::Upstream(upstream) if upstream.status == 429)
    }

    /// The upstream said nothing before one of our per-attempt limits
    /// (connect, headers, first chunk): with another target to try, it is
    /// not waited on again.
    pub fn is_silence(&self) -> bool {
        matches!(
            self,
            Error::Timeout {
                kind: TimeoutKind::Connect | TimeoutKind::Headers | TimeoutKind::FirstChunk,
                ..
            }
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }

    /// How long the upstream asked us to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Upstream(upstream) => upstream.retry_after,
            Error::Overloaded { retry_after, .. }
            | Error::CircuitOpen { retry_after, .. }
            | Error::SharedStoreUnavailable { retry_after, .. } => Some(*retry_after),
            // The window's reset; none for a refusal no wait can help.
            Error::BudgetExceeded(refusal) => {
                (!refusal.retry_after.is_zero()).then_some(refusal.retry_after)
            }
            _ => None,
        }
    }

    pub fn provider(&self) -> Option<&str> {
        match self {
            Error::ProviderNotReady { provider, .. }
            | Error::Connect { provider, .. }
            | Error::StreamIncomplete { provider, .. }
            | Error::MalformedResponse { provider, .. }
            | Error::Timeout { provider, .. }
            | Error::Overloaded { provider, .. }
            | Error::CircuitOpen { provider, .. }
            | Error::SharedStoreUnavailable { provider, .. }
            | Error::ResponseTooLarge { provider, .. } => Some(provider),
            Error::Upstream(upstream) => Some(&upstream.provider),
            _ => None,
        }
    }
}

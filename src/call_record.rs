//! What one caller request was and what became of it: the single record
//! the edges fill in and the side channels (ledger, metrics, the request
//! log line) read. Plain data, no behaviour beyond small derived values.

use crate::model::Usage;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Who made the call, as far as we can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Who the caller is: the name of its caller token when it came with
    /// one (`crate::auth`), else what it says it is (`x-llm-caller`
    /// metadata or header).
    pub name: Option<String>,
    /// What a caller with a token says it is besides (`x-llm-caller`),
    /// kept apart: a token's holder cannot pass for another caller.
    pub claimed: Option<String>,
    /// The peer process on the Unix socket (SO_PEERCRED).
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Failed before any output reached the caller. `code` is the short
    /// reason from the error table (`rate_limited`, `timeout_first_chunk`…).
    Error {
        code: String,
    },
    /// The caller went away (cancelled, or its deadline passed on its side).
    Cancelled {
        partial: bool,
    },
    /// A stream failed after output had reached the caller.
    Partial {
        code: String,
    },
}

impl Outcome {
    /// The outcome as stored and shown: `ok`, `cancelled`, `partial:<code>`,
    /// `error:<code>`.
    pub fn label(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Error { code } => format!("error:{code}"),
            Outcome::Cancelled { .. } => "cancelled".to_owned(),
            Outcome::Partial { code } => format!("partial:{code}"),
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// Which edge the call came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Grpc,
    Http,
}

impl Edge {
    pub fn as_str(self) -> &'static str {
        match self {
            Edge::Grpc => "grpc",
            Edge::Http => "http",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// A UUID, also returned to the caller (`x-request-id`).
    pub request_id: String,
    pub started_at: SystemTime,
    pub edge: Edge,
    pub stream: bool,
    pub caller: Caller,
    /// The caller's attribution tags (the request's `metadata`).
    pub tags: BTreeMap<String, String>,
    /// The model the caller asked for (before aliases and rewrites).
    pub requested_model: String,
    /// The configured route the call matched (alias, exact model, pattern
    /// or `*` for the default provider); `None` when none did. The
    /// metrics' label, never the caller's own words; not in the ledger.
    pub route: Option<Arc<str>>,
    /// The model that answered, as the upstream named it.
    pub served_model: Option<String>,
    /// The provider that served the call (or the last one tried).
    pub provider: Option<String>,
    pub outcome: Outcome,
    /// Upstream attempts over all providers tried.
    pub attempts: u32,
    /// Time spent waiting for a concurrency slot or a rate quota.
    pub queue_wait: Duration,
    /// From the call's arrival to its end (the last chunk for streams).
    pub latency: Duration,
    pub time_to_first_chunk: Option<Duration>,
    /// Token counts as the upstream reported them, or estimated.
    pub usage: Option<Usage>,
    /// The usage is our estimate: the upstream reported none (a cancelled
    /// or cut stream, or a provider that does not send usage).
    pub usage_estimated: bool,
    /// In US dollars; `None` when the model has no price (unknown, not 0).
    pub cost_usd: Option<f64>,
    /// The stream was cut and continued from its text so far
    /// (`pipeline/resume.rs`); the outcome says whether the continuation
    /// completed it (`ok`) or the call ended with the cut.
    pub resumed: bool,
}

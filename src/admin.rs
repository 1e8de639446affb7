//! The operator's view: usage and spend from the ledger, recent requests,
//! provider health, metrics and the log level. One set of queries, served
//! twice — as JSON on the loopback admin HTTP port ([`http`]) and as the
//! gRPC `AdminService` ([`grpc`]) — so both always agree.

pub mod grpc;
pub mod http;
mod window;

pub use window::parse_instant;

use crate::inbound::observe::Observer;
use crate::ledger::{
    GroupBy, LedgerError, LedgerRow, OutcomeFilter, RECENT_LIMIT_MAX, RecentQuery, SummaryQuery,
    SummaryRow,
};
use crate::pipeline::PipelineHandle;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The default usage window: the last day.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_RECENT_LIMIT: usize = 100;

/// Renders the Prometheus text exposition of the sidecar's metrics.
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct Admin {
    pipeline: Arc<PipelineHandle>,
    observer: Arc<Observer>,
    metrics: Option<MetricsText>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Why an admin query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The question was wrong (a bad window, an unknown grouping).
    #[error("{0}")]
    Invalid(String),
    /// The ledger is off or could not be read.
    #[error("{0}")]
    Unavailable(String),
}

impl From<LedgerError> for AdminError {
    fn from(error: LedgerError) -> Self {
        AdminError::Unavailable(error.to_string())
    }
}

/// Usage over a window, as asked.
#[derive(Debug, Clone, Default)]
pub struct UsageQuestion {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub group_by: Option<String>,
}

/// Recent requests, as asked; empty filters do not filter.
#[derive(Debug, Clone, Default)]
pub struct RecentQuestion {
    pub limit: Option<usize>,
    pub since: Option<SystemTime>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub caller: Option<String>,
    pub outcome: Option<String>,
}

/// `/admin/ledger`: always this pod's own figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerStatus {
    /// Rows committed to the local file since start.
    pub written: u64,
    /// Records that could not be queued or written to the local file.
    pub dropped: u64,
    /// Times the local file was opened again after it was replaced.
    pub reopened: u64,
    /// The fleet ledger's forwarder; absent without `[ledger] url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::ledger::FleetStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderHealth {
    pub name: String,
    pub circuit: &'static str,
    pub in_flight: usize,
    pub queued: usize,
}

impl Admin {
    pub fn new(
        pipeline: Arc<PipelineHandle>,
        observer: Arc<Observer>,
        metrics: Option<MetricsText>,
    ) -> Admin {
        Admin {
            pipeline,
            observer,
            metrics,
        }
    }

    pub async fn usage(&self, question: UsageQuestion) -> Result<Vec<SummaryRow>, AdminError> {
        let until = question.until.unwrap_or_else(SystemTime::now);
        let since = question.since.unwrap_or_else(|| {
            until
                .checked_sub(DEFAULT_WINDOW)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
        if since > until {
            return Err(AdminError::Invalid(
                "`since` is after `until`: the window is empty".to_owned(),
            ));
        }
        let group_by: GroupBy = question
            .group_by
            .as_deref()
            .filter(|text| !text.is_empty())
            .unwrap_or("model")
            .parse()
            .map_err(AdminError::Invalid)?;
        let mut rows = self
            .ledger()?
            .summary(SummaryQuery {
                since,
                until,
                group_by,
            })
            .await?;
        // Biggest spend first, then most requests: what an operator looks for.
        rows.sort_by(|a, b| {
            b.cost_usd
                .total_cmp(&a.cost_usd)
                .then(b.requests.cmp(&a.requests))
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok(rows)
    }

    /// The newest calls, at most `limit` (default [`DEFAULT_RECENT_LIMIT`],
    /// capped at [`RECENT_LIMIT_MAX`]) and at most
    /// [`RECENT_BYTES_MAX`](crate::ledger::RECENT_BYTES_MAX) of rows.
    pub async fn recent(&self, question: RecentQuestion) -> Result<Vec<LedgerRow>, AdminError> {
        // Above the most, the most: a dashboard asking for "all" gets
        // what one answer may hold rather than an error.
        let limit = question
            .limit
            .unwrap_or(DEFAULT_RECENT_LIMIT)
            .min(RECENT_LIMIT_MAX);
        if limit == 0 {
            return Err(AdminError::Invalid(format!(
                "`limit` must be between 1 and {RECENT_LIMIT_MAX}"
            )));
        }
        let outcome = match question.outcome.as_deref().filter(|text| !text.is_empty()) {
            None => None,
            Some(text) => Some(text.parse::<OutcomeFilter>().map_err(AdminError::Invalid)?),
        };
        let non_empty = |value: Option<String>| value.filter(|text| !text.is_empty());
        Ok(self
            .ledger()?
            .recent(RecentQuery {
                limit,
                since: question.since,
                model: non_empty(question.model),
                provider: non_empty(question.provider),
                caller: non_empty(question.caller),
                outcome,
            })
            .await?)
    }

    /// Every budget's window, limits, spend and reservations now: the
    /// fleet's when a `[shared]` store holds them, else this pod's.
    pub async fn budgets(&self) -> Vec<crate::budget::BudgetStatus> {
        let pipeline = self.pipeline.current();
        match pipeline.shared_store() {
            Some(store) => self.observer.budgets().status_shared(store).await,
            None => self.observer.budgets().status(),
        }
    }

    pub fn providers(&self) -> Vec<ProviderHealth> {
        self.pipeline
            .current()
            .provider_states()
            .map(|state| ProviderHealth {
                name: state.name.to_owned(),
                circuit: state.circuit.as_str(),
                in_flight: state.in_flight,
                queued: state.queued,
            })
            .collect()
    }

    /// This pod's ledger: rows written and dropped, and with a fleet
    /// ledger the forwarder's state (connected, forwarded, spooled, given
    /// up over the spool's bound, the last error).
    pub fn ledger_status(&self) -> Result<LedgerStatus, AdminError> {
        let ledger = self.ledger()?;
        Ok(LedgerStatus {
            written: ledger.written(),
            dropped: ledger.dropped(),
            reopened: ledger.reopened(),
            fleet: ledger.fleet_status(),
        })
    }

    pub fn metrics_text(&self) -> Option<String> {
        self.metrics.as_ref().map(|render| render())
    }

    fn ledger(&self) -> Result<&crate::ledger::Ledger, AdminError> {
        self.observer.ledger().ok_or_else(|| {
            AdminError::Unavailable("the usage ledger is off (ledger.enabled = false)".to_owned())
        })
    }
}

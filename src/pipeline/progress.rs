//! What the pipeline did for one call — attempts, waits, time spent
//! upstream, the last provider tried — written as it happens and read by
//! the edge when it records the call. Atomics rather than a lock: the
//! writer is the call's own task and the reader comes after it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct CallProgress {
    attempts: AtomicU32,
    queue_wait_us: AtomicU64,
    upstream_us: AtomicU64,
    backoff_us: AtomicU64,
    provider: Mutex<Option<Arc<str>>>,
    route: OnceLock<Arc<str>>,
    /// A [`RetryStop`] as its number; 0: none.
    retry_stop: AtomicU8,
    /// Why the stream was resumed (`pipeline/resume.rs`), once it was.
    resumed: OnceLock<&'static str>,
    /// The cut attempt's share of the call's usage is our estimate.
    resumed_usage_estimated: AtomicBool,
    /// The caller went away; the stream may still be read for its usage.
    caller_left: AtomicBool,
    /// When the caller stops waiting, if it said.
    deadline: OnceLock<Instant>,
    /// What the call holds against its budgets until it is settled.
    budget: Mutex<Option<crate::budget::Reservation>>,
    /// What is left of the tightest budget it matched, once reserved.
    budget_remaining: OnceLock<crate::budget::Remaining>,
}

/// Why the sidecar did not retry the last attempt's failure although the
/// error itself is worth another try. The edges say so (ErrorInfo, headers)
/// and decide from it whether to tell the caller's SDK not to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStop {
    /// The provider's retry budget is spent: retrying now would add to an
    /// outage (and so would the caller's own retry).
    BudgetExhausted,
    /// The upstream's `Retry-After` is longer than the sidecar waits out
    /// with no caller deadline; the caller decides.
    LeftToCaller,
}

impl RetryStop {
    /// Its stable name, as in ErrorInfo and `x-llm-retry-stopped`.
    pub fn reason(self) -> &'static str {
        match self {
            RetryStop::BudgetExhausted => "RETRY_BUDGET_EXHAUSTED",
            RetryStop::LeftToCaller => "RETRY_AFTER_LEFT_TO_CALLER",
        }
    }

    fn from_number(number: u8) -> Option<RetryStop> {
        match number {
            1 => Some(RetryStop::BudgetExhausted),
            2 => Some(RetryStop::LeftToCaller),
            _ => None,
        }
    }

    fn number(stop: Option<RetryStop>) -> u8 {
        match stop {
            None => 0,
            Some(RetryStop::BudgetExhausted) => 1,
            Some(RetryStop::LeftToCaller) => 2,
        }
    }
}

/// A copy of the progress at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub attempts: u32,
    /// Waiting for a concurrency slot or rate quota.
    pub queue_wait: Duration,
    /// Inside upstream requests (until the answer, or the first chunk).
    pub upstream: Duration,
    /// Sleeping between attempts.
    pub backoff: Duration,
    /// The provider tried last (the one that served, on success).
    pub provider: Option<Arc<str>>,
    /// The configured route the call matched (see
    /// [`Resolved::route`](crate::pipeline::routing::Resolved::route)); `None` when
    /// none did.
    pub route: Option<Arc<str>>,
    /// Why the last failure was not retried though it could have been.
    pub retry_stop: Option<RetryStop>,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
    /// The stream was cut and a continuation opened; the cut's reason
    /// (the error table's, e.g. `UPSTREAM_STREAM_INCOMPLETE`).
    pub resumed: Option<&'static str>,
    /// Part of the usage the stream reports (the cut attempt's) is our
    /// estimate: the upstream reported none before the cut.
    pub resumed_usage_estimated: bool,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl CallProgress {
    pub(super) fn attempt_started(&self, provider: &Arc<str>) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        // A new attempt's failure speaks for itself.
        self.retry_stop.store(0, Ordering::Relaxed);
        let mut last = self
            .provider
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if last.as_deref() != Some(&**provider) {
            *last = Some(provider.clone());
        }
    }

    /// The call matched `route`; set once, when it is resolved.
    pub(super) fn routed(&self, route: &Arc<str>) {
        // A second resolution of one call cannot happen; if it did, the
        // first route named is the one the call went by.
        let _ = self.route.set(route.clone());
    }

    /// The caller's deadline, once known (set once, by the edge).
    pub fn set_deadline(&self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
    }

    /// The call's budget reservation, and what it left, once reserved.
    pub(super) fn hold_budget(
        &self,
        reservation: crate::budget::Reservation,
        remaining: Option<crate::budget::Remaining>,
    ) {
        *self
            .budget
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(reservation);
        if let Some(remaining) = remaining {
            let _ = self.budget_remaining.set(remaining);
        }
    }

    /// The reservation to settle, once, when the call ends.
    pub fn take_budget(&self) -> Option<crate::budget::Reservation> {
        self.budget
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }

    /// What is left of the tightest budget the call matched.
    pub fn budget_remaining(&self) -> Option<&crate::budget::Remaining> {
        self.budget_remaining.get()
    }

    /// The caller went away: nothing more is worth paying for.
    pub fn leave(&self) {
        self.caller_left.store(true, Ordering::Relaxed);
    }

    /// Whether the caller went away (see [`CallProgress::leave`]).
    pub fn caller_left(&self) -> bool {
        self.caller_left.load(Ordering::Relaxed)
    }

    /// The last attempt's failure was not retried, for `stop`.
    pub(super) fn retry_stopped(&self, stop: RetryStop) {
        self.retry_stop
            .store(RetryStop::number(Some(stop)), Ordering::Relaxed);
    }

    /// The stream was cut for `reason` and is being resumed; whether the
    /// cut attempt's usage is estimated.
    pub(super) fn resumed(&self, reason: &'static str, usage_estimated: bool) {
        let _ = self.resumed.set(reason);
        self.resumed_usage_estimated
            .store(usage_estimated, Ordering::Relaxed);
    }

    pub(super) fn add_queue_wait(&self, wait: Duration) {
        self.queue_wait_us
            .fetch_add(micros(wait), Ordering::Relaxed);
    }

    /// Times an upstream exchange from now until the guard is dropped,
    /// however it ends: answered, failed, or dropped at the caller's
    /// deadline (else a call cut by its deadline would count its whole
    /// wait as the sidecar's own overhead).
    pub(super) fn upstream_timer(&self) -> UpstreamTimer<'_> {
        UpstreamTimer {
            progress: self,
            sent: Instant::now(),
        }
    }

    pub(super) fn add_upstream(&self, spent: Duration) {
        self.upstream_us.fetch_add(micros(spent), Ordering::Relaxed);
    }

    pub(super) fn add_backoff(&self, slept: Duration) {
        self.backoff_us.fetch_add(micros(slept), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            attempts: self.attempts.load(Ordering::Relaxed),
            queue_wait: Duration::from_micros(self.queue_wait_us.load(Ordering::Relaxed)),
            upstream: Duration::from_micros(self.upstream_us.load(Ordering::Relaxed)),
            backoff: Duration::from_micros(self.backoff_us.load(Ordering::Relaxed)),
            provider: self
                .provider
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
            route: self.route.get().cloned(),
            retry_stop: RetryStop::from_number(self.retry_stop.load(Ordering::Relaxed)),
            deadline: self.deadline.get().copied(),
            resumed: self.resumed.get().copied(),
            resumed_usage_estimated: self.resumed_usage_estimated.load(Ordering::Relaxed),
        }
    }
}

/// See [`CallProgress::upstream_timer`].
pub(super) struct UpstreamTimer<'a> {
    progress: &'a CallProgress,
    sent: Instant,
}

impl UpstreamTimer<'_> {
    /// The time since the exchange was sent.
    pub(super) fn elapsed(&self) -> Duration {
        self.sent.elapsed()
    }
}

impl Drop for UpstreamTimer<'_> {
    fn drop(&mut self) {
        self.progress.add_upstream(self.sent.elapsed());
    }
}

impl ProgressSnapshot {
    /// The time the sidecar itself added to a call that took `elapsed`:
    /// everything that was not upstream work, a queue wait or a backoff.
    pub fn overhead(&self, elapsed: Duration) -> Duration {
        elapsed
            .saturating_sub(self.upstream)
            .saturating_sub(self.queue_wait)
            .saturating_sub(self.backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_what_is_left_after_upstream_queue_and_backoff() {
        let progress = CallProgress::default();
        let provider: Arc<str> = "a".into();
        progress.attempt_started(&provider);
        progress.attempt_started(&provider);
        progress.add_upstream(Duration::from_millis(30));
        progress.add_queue_wait(Duration::from_millis(5));
        progress.add_backoff(Duration::from_millis(10));
        let snapshot = progress.snapshot();
        assert_eq!(snapshot.attempts, 2);
        assert_eq!(snapshot.provider.as_deref(), Some("a"));
        assert_eq!(
            snapshot.overhead(Duration::from_millis(46)),
            Duration::from_millis(1)
        );
        assert_eq!(snapshot.overhead(Duration::from_millis(1)), Duration::ZERO);
    }
}

//! What became of the records handed to the ledger: written or dropped
//! (and how often its file had to be opened again).
//! Every lost record is counted here and announced in a warning, so a slow
//! or failing disk shows up in the logs instead of as quietly missing rows.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often, at most, the same kind of loss is logged: a full queue under
/// load drops thousands of records a second, one line every few seconds
/// with the running total says the same without flooding the log.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    reopened: AtomicU64,
    not_queued_warning: RateLimit,
    write_failed_warning: RateLimit,
}

impl Counters {
    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Times the file was opened again after it was deleted or replaced.
    pub(super) fn reopened(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }

    pub(super) fn add_reopened(&self) {
        self.reopened.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_written(&self, rows: u64) {
        self.written.fetch_add(rows, Ordering::Relaxed);
    }

    /// One record never reached the writer.
    pub(super) fn not_queued(&self, why: &str) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.not_queued_warning.allow() {
            tracing::warn!(
                dropped_total = total,
                "ledger: a usage record was dropped: {why}"
            );
        }
    }

    /// A whole batch reached the writer but could not be committed.
    pub(super) fn write_failed(&self, rows: u64, error: &dyn Display) {
        let total = self.dropped.fetch_add(rows, Ordering::Relaxed) + rows;
        if self.write_failed_warning.allow() {
            tracing::error!(
                dropped_total = total,
                "ledger: writing {rows} usage record(s) failed, they are lost: {error}"
            );
        }
    }
}

/// Lets one event through per [`WARN_INTERVAL`], from any thread, without a lock.
#[derive(Debug)]
struct RateLimit {
    origin: Instant,
    /// Milliseconds after `origin` of the last allowed event; `NEVER` before the first.
    last_ms: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            origin: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
        }
    }
}

impl RateLimit {
    fn allow(&self) -> bool {
        let now_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NEVER - 1);
        let last_ms = self.last_ms.load(Ordering::Relaxed);
        let due =
            last_ms == NEVER || now_ms.saturating_sub(last_ms) >= WARN_INTERVAL.as_millis() as u64;
        // Of several threads finding it due, only the one that moves the mark logs.
        due && self
            .last_ms
            .compare_exchange(last_ms, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

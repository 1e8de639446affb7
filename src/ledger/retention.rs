//! Keeping the ledger bounded: rows past the age limit and the oldest rows
//! beyond the row limit are deleted, in chunks so that no single
//! transaction (and the WAL file it grows) gets large.

use super::timestamp;
use rusqlite::Connection;
use std::time::{Duration, Instant, SystemTime};

/// Rows deleted per transaction.
pub(super) const CHUNK_ROWS: u64 = 5_000;

/// The writer runs retention after this many batches or this much time,
/// whichever comes first: often enough that the limits hold under load,
/// rarely enough that the count query does not matter.
const EVERY_BATCHES: u32 = 100;
pub(super) const EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RetentionPolicy {
    pub(super) max_age: Option<Duration>,
    pub(super) max_rows: Option<u64>,
    /// Rows not yet forwarded to the fleet ledger, and the newest row (so
    /// that row ids never start again at 1), are kept whatever the limits.
    pub(super) keep_unforwarded: bool,
}

impl RetentionPolicy {
    fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_rows.is_none()
    }
}

/// Deletes what `policy` no longer keeps, as of `now`; returns the number of
/// rows deleted.
pub(super) fn enforce(
    conn: &Connection,
    policy: &RetentionPolicy,
    now: SystemTime,
    chunk_rows: u64,
) -> rusqlite::Result<u64> {
    let mut deleted = 0;
    let guard = if policy.keep_unforwarded {
        FORWARDED_ONLY
    } else {
        ""
    };
    if let Some(max_age) = policy.max_age
        && let Some(cutoff) = now.checked_sub(max_age)
    {
        deleted += delete_older_than(conn, timestamp::unix_ms(cutoff), chunk_rows, guard)?;
    }
    if let Some(max_rows) = policy.max_rows {
        deleted += delete_beyond(conn, max_rows, chunk_rows, guard)?;
    }
    Ok(deleted)
}

/// The condition that spares rows PostgreSQL does not have yet (past the
/// watermark, `fleet/spool.rs`) and the newest row.
const FORWARDED_ONLY: &str = "AND id <= COALESCE((SELECT CAST(value AS INTEGER) FROM ledger_meta
         WHERE key = 'forwarded_through'), 0)
     AND id < (SELECT MAX(id) FROM requests)";

fn delete_older_than(
    conn: &Connection,
    cutoff_ms: i64,
    chunk_rows: u64,
    guard: &str,
) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached(&format!(
        "DELETE FROM requests WHERE id IN
             (SELECT id FROM requests WHERE started_at_ms < ?1 {guard} LIMIT ?2)"
    ))?;
    let mut deleted = 0;
    loop {
        let chunk = statement.execute((cutoff_ms, sql_int(chunk_rows)))? as u64;
        deleted += chunk;
        if chunk < chunk_rows {
            return Ok(deleted);
        }
    }
}

/// Keeps the `max_rows` newest rows (by start time).
fn delete_beyond(
    conn: &Connection,
    max_rows: u64,
    chunk_rows: u64,
    guard: &str,
) -> rusqlite::Result<u64> {
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM requests", [], |row| row.get(0))?;
    let mut excess = u64::try_from(rows).unwrap_or(0).saturating_sub(max_rows);
    let mut statement = conn.prepare_cached(&format!(
        "DELETE FROM requests WHERE id IN
             (SELECT id FROM requests WHERE 1 = 1 {guard} ORDER BY started_at_ms, id LIMIT ?1)"
    ))?;
    let mut deleted = 0;
    while excess > 0 {
        let chunk = statement.execute([sql_int(excess.min(chunk_rows))])? as u64;
        if chunk == 0 {
            break;
        }
        deleted += chunk;
        excess = excess.saturating_sub(chunk);
    }
    Ok(deleted)
}

/// SQLite integers are signed; counts beyond `i64::MAX` do not occur.
fn sql_int(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// When the writer next runs retention.
#[derive(Debug)]
pub(super) struct RetentionSchedule {
    policy: RetentionPolicy,
    batches_since: u32,
    last_run: Instant,
}

impl RetentionSchedule {
    /// Starts counting from now: `Ledger::open` has just run retention.
    pub(super) fn new(policy: RetentionPolicy) -> Self {
        RetentionSchedule {
            policy,
            batches_since: 0,
            last_run: Instant::now(),
        }
    }

    pub(super) fn after_batch(&mut self, conn: &Connection) {
        self.batches_since += 1;
        self.run_if_due(conn);
    }

    pub(super) fn run_if_due(&mut self, conn: &Connection) {
        let due = self.batches_since >= EVERY_BATCHES || self.last_run.elapsed() >= EVERY;
        if self.policy.is_unlimited() || !due {
            return;
        }
        self.batches_since = 0;
        self.last_run = Instant::now();
        match enforce(conn, &self.policy, SystemTime::now(), CHUNK_ROWS) {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!("ledger: retention deleted {deleted} row(s)"),
            // Not fatal: the rows stay a little longer and the next run tries again.
            Err(error) => tracing::warn!("ledger: retention failed: {error}"),
        }
    }
}

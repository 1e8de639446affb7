//! The usage ledger: one SQLite row per caller request (who called, which
//! model and provider, tokens, cost, outcome, latency), kept next to the
//! sidecar so usage and spend can be answered without any backend.
//!
//! A request never waits for the ledger. [`Ledger::record`] hands the
//! record to a bounded queue with `try_send` and returns; a dedicated
//! writer thread owns the SQLite connection and commits records in
//! batches. When the queue is full or the writer is gone, the record is
//! counted in [`Ledger::dropped`] and a rate-limited warning says so: a
//! slow disk costs ledger rows, never request latency, and never silently.
//!
//! A batch is committed at most [`LedgerConfig::flush_interval`] (5 ms)
//! after its first record arrived, so a process killed outright (SIGKILL,
//! OOM) loses only the records of the last few milliseconds: a committed
//! transaction is in the WAL, which outlives the process. Before each
//! batch the writer checks that the path still names the file it has
//! open; a file deleted or replaced is opened again at the path (counted
//! in [`Ledger::reopened`]).
//!
//! # Layout
//!
//! - `schema`: opening the file, pragmas, the numbered migrations.
//! - `writer`: the writer thread: batches, one transaction each, flushes.
//! - `queue`: the records on their way to it, bounded by count, allocated
//!   as they come.
//! - `file`: the two connections, and opening the path again when the
//!   file under it was deleted or replaced.
//! - `retention`: deleting rows past the age or row-count limit.
//! - `row`: a [`CallRecord`] as a table row, and [`LedgerRow`] read back.
//! - `summary`, `recent`: the two queries, on their own read connection.
//! - `pricing`: model name → USD for a call's tokens.
//! - `counters`: written and dropped counts, and the drop warnings.
//! - `error`: [`LedgerError`], every message naming the file.
//! - `timestamp`: unix milliseconds and RFC 3339.
//! - `fleet`: with `[ledger] url`, the rows forwarded from the file to
//!   PostgreSQL by a thread of their own, and the queries answered there.

mod counters;
mod error;
mod file;
pub mod fleet;
mod pricing;
mod queue;
mod recent;
mod retention;
mod row;
mod schema;
mod spend;
mod summary;
pub(crate) mod timestamp;
mod writer;

#[cfg(test)]
mod tests;

pub use error::LedgerError;
pub use fleet::{FleetConfig, FleetStatus, FleetTarget};
pub use pricing::{PriceEntry, Pricing};
pub use recent::{OutcomeFilter, RECENT_BYTES_MAX, RECENT_LIMIT_MAX, RecentQuery};
pub use row::LedgerRow;
pub use row::MAX_READ_TAGS_BYTES;
pub use summary::{GroupBy, SummaryQuery, SummaryRow};

use crate::call_record::CallRecord;
use counters::Counters;
use file::{LedgerFile, SharedReader};
use queue::QueueSender;
use retention::{RetentionPolicy, RetentionSchedule};
use rusqlite::Connection;
use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use writer::{Message, Writer};

/// How long [`Ledger::close`] forwards to the fleet ledger at most.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    pub path: PathBuf,
    /// Records waiting for the writer; beyond this they are dropped.
    pub queue_capacity: usize,
    /// Most rows per transaction.
    pub batch_max: usize,
    /// The longest a record waits in a batch before it is committed: what
    /// a SIGKILL can cost, besides the commit under way.
    pub flush_interval: Duration,
    /// Rows older than this are deleted (at open, then every few minutes).
    pub retention_max_age: Option<Duration>,
    /// Only this many newest rows are kept.
    pub retention_max_rows: Option<u64>,
    /// The fleet ledger: rows forwarded to PostgreSQL, and the queries
    /// answered there. `None`: this file only, and no forwarder at all.
    pub fleet: Option<FleetConfig>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            path: PathBuf::from("llm-sidecar-ledger.sqlite3"),
            queue_capacity: 65_536,
            batch_max: 512,
            // What a SIGKILL may cost (README, "Durability"); more, smaller
            // transactions cost the writer some CPU per row, not the calls.
            flush_interval: Duration::from_millis(5),
            retention_max_age: None,
            retention_max_rows: None,
            fleet: None,
        }
    }
}

/// A handle on the ledger; clones share one writer.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed, or for a ledger that never opened. `close` takes
    /// it under the write lock, so a record racing with `close` is either
    /// queued while the writer still drains the queue, or counted as
    /// dropped: never stranded in a queue nobody reads.
    queue: RwLock<Option<QueueSender>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    store: Store,
    /// The forwarder, only when a fleet ledger is configured.
    fleet: Option<fleet::Fleet>,
}

enum Store {
    Open {
        path: PathBuf,
        /// A connection of its own so that queries read beside the writer
        /// (WAL), never behind it. The writer replaces it when the file is
        /// opened again (`None` meanwhile).
        reader: SharedReader,
    },
    Unavailable {
        reason: String,
    },
}

impl Ledger {
    /// Opens (creating if needed) the SQLite file in WAL mode, migrates the
    /// schema, applies retention and starts the writer thread. Errors name
    /// the path and say what is wrong: not a database, corrupt, a directory
    /// that is missing or not writable, a schema newer than this build.
    pub fn open(config: &LedgerConfig) -> Result<Ledger, LedgerError> {
        let path = config.path.clone();
        let file = LedgerFile::open(&path)?;
        let policy = RetentionPolicy {
            max_age: config.retention_max_age,
            max_rows: config.retention_max_rows,
            keep_unforwarded: config.fleet.is_some(),
        };
        if let Some(conn) = file.current() {
            retention::enforce(conn, &policy, SystemTime::now(), retention::CHUNK_ROWS)
                .map_err(|error| LedgerError::from_sqlite(&path, error))?;
        }
        let reader = file.reader();

        let (sender, receiver) = queue::bounded(config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            file,
            queue: receiver,
            counters: Arc::clone(&counters),
            batch_max: config.batch_max.max(1),
            flush_interval: config.flush_interval,
            retention: RetentionSchedule::new(policy),
            cache_held: false,
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(LedgerError::WriterThread)?;
        let fleet = match &config.fleet {
            Some(fleet) => Some(fleet::Fleet::start(
                fleet.clone(),
                path.clone(),
                Arc::clone(&counters),
            )?),
            None => None,
        };

        Ok(Ledger {
            inner: Arc::new(Inner {
                queue: RwLock::new(Some(sender)),
                writer: Mutex::new(Some(handle)),
                counters,
                store: Store::Open { path, reader },
                fleet,
            }),
        })
    }

    /// A ledger that stores nothing, for when the file could not be opened
    /// or the ledger is off: every record is counted as dropped, with
    /// `reason` in the (rate-limited) warning, and queries fail with it.
    pub fn unavailable(reason: impl Into<String>) -> Ledger {
        Ledger {
            inner: Arc::new(Inner {
                queue: RwLock::new(None),
                writer: Mutex::new(None),
                counters: Arc::new(Counters::default()),
                store: Store::Unavailable {
                    reason: reason.into(),
                },
                fleet: None,
            }),
        }
    }

    /// Hands the record to the writer without blocking or awaiting. A full
    /// queue or a stopped writer counts it in [`Ledger::dropped`] and logs
    /// a warning (at most every few seconds, with the running count).
    pub fn record(&self, record: CallRecord) {
        // `try_read` fails only while `close` holds the lock for a moment:
        // the record is then as good as late, and waiting is not allowed.
        let Ok(queue) = self.inner.queue.try_read() else {
            self.inner.counters.not_queued("the ledger is closing");
            return;
        };
        let Some(sender) = queue.as_ref() else {
            self.inner.counters.not_queued(self.closed_reason());
            return;
        };
        match sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self
                .inner
                .counters
                .not_queued("the queue is full: the disk is slower than the request rate"),
            Err(TrySendError::Disconnected(_)) => self
                .inner
                .counters
                .not_queued("the writer thread has stopped"),
        }
    }

    /// Rows committed.
    pub fn written(&self) -> u64 {
        self.inner.counters.written()
    }

    /// Records that could not be queued or written.
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped()
    }

    /// Times the writer opened the configured path again because the file
    /// under it had been deleted or replaced (or could not be opened).
    pub fn reopened(&self) -> u64 {
        self.inner.counters.reopened()
    }

    /// Rows given up because the fleet ledger's spool was over its bound
    /// (`spool_max_rows`); 0 without a fleet ledger.
    pub fn spool_dropped(&self) -> u64 {
        self.inner
            .fleet
            .as_ref()
            .map_or(0, fleet::Fleet::spool_dropped)
    }

    /// The forwarder's state; `None` without a fleet ledger.
    pub fn fleet_status(&self) -> Option<FleetStatus> {
        self.inner.fleet.as_ref().map(fleet::Fleet::status)
    }

    /// Waits until every record handed over before this call is committed
    /// (or failed and counted as dropped).
    pub async fn flush(&self) {
        let Some(sender) = self.sender() else { return };
        let (done, committed) = oneshot::channel();
        // Unlike a record, the marker is never refused for room: only a
        // stopped writer refuses it.
        if sender.try_send(Message::Flush(done)).is_ok() {
            // An error here means the writer died; nothing left to wait for.
            let _ = committed.await;
        }
    }

    /// Commits everything queued and stops the writer thread; later
    /// `record` calls count as dropped. Queries keep working. With a fleet
    /// ledger, then forwards what it can within [`DEFAULT_DRAIN`].
    pub async fn close(&self) {
        self.close_within(DEFAULT_DRAIN).await;
    }

    /// [`close`](Self::close), forwarding to the fleet ledger for at most
    /// `drain` after the last row is in the file. Rows left then stay in
    /// the file, and the next start on it forwards them.
    pub async fn close_within(&self, drain: Duration) {
        self.close_writer().await;
        if let Some(fleet) = &self.inner.fleet {
            fleet.drain(drain).await;
        }
    }

    async fn close_writer(&self) {
        // Dropping the last sender ends the writer once it has drained the
        // queue (in-flight `flush` calls hold clones, and finish first).
        drop(self.write_queue().take());
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && !matches!(
                tokio::task::spawn_blocking(move || handle.join()).await,
                Ok(Ok(()))
            )
        {
            tracing::error!("ledger: the writer thread panicked; its last batch may be lost");
        }
    }

    /// Usage totals over a window. Runs on the read connection, off the
    /// async runtime; with a fleet ledger, in PostgreSQL over every pod's
    /// rows (an error naming the cause when it cannot be reached).
    pub async fn summary(&self, query: SummaryQuery) -> Result<Vec<SummaryRow>, LedgerError> {
        if let Some(fleet) = &self.inner.fleet {
            return fleet.summary(query).await;
        }
        self.read(move |conn| summary::summarize(conn, &query))
            .await
    }

    /// The latest calls, newest first. Runs on the read connection, off
    /// the async runtime; with a fleet ledger, every pod's, from PostgreSQL.
    pub async fn recent(&self, query: RecentQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        if let Some(fleet) = &self.inner.fleet {
            return fleet.recent(query).await;
        }
        self.read(move |conn| recent::recent(conn, &query)).await
    }

    /// `(tokens, USD)` spent by the calls under `scope` started from
    /// `since_ms` up to `until_ms` (unix milliseconds), read on the read
    /// connection off the runtime.
    pub async fn spent_between(
        &self,
        scope: crate::config::budgets::BudgetScope,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<(u64, f64), LedgerError> {
        self.read(move |conn| spend::spent_between(conn, &scope, since_ms, until_ms))
            .await
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (path, reader) = match &self.inner.store {
            Store::Open { path, reader } => (path.clone(), Arc::clone(reader)),
            Store::Unavailable { reason } => {
                return Err(LedgerError::Unavailable {
                    reason: reason.clone(),
                });
            }
        };
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(conn) = conn.as_ref() else {
                return Err(LedgerError::Unavailable {
                    reason: format!(
                        "the ledger file {} is being opened again after it was deleted or \
                         replaced; try again",
                        path.display()
                    ),
                });
            };
            query(conn).map_err(|error| LedgerError::from_sqlite(&path, error))
        })
        .await
        .map_err(LedgerError::QueryTask)?
    }

    fn sender(&self) -> Option<QueueSender> {
        self.inner
            .queue
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn write_queue(&self) -> std::sync::RwLockWriteGuard<'_, Option<QueueSender>> {
        self.inner
            .queue
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_reason(&self) -> &str {
        match &self.inner.store {
            Store::Open { .. } => "the ledger is closed",
            Store::Unavailable { reason } => reason,
        }
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Ledger");
        match &self.inner.store {
            Store::Open { path, .. } => debug.field("path", path),
            Store::Unavailable { reason } => debug.field("unavailable", reason),
        };
        debug
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

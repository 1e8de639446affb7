//! The writer thread: the only owner of the writing connection. It takes
//! records off the queue in batches and commits each batch in one
//! transaction, so the cost of a commit is shared by many records.

use super::counters::Counters;
use super::file::LedgerFile;
use super::queue::QueueReceiver;
use super::retention::{self, RetentionSchedule};
use super::row;
use crate::call_record::CallRecord;
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(super) enum Message {
    /// Boxed so the queue's slots stay small.
    Record(Box<CallRecord>),
    /// Answered once everything queued before it is committed or counted
    /// as dropped. It travels the same queue as records, so nothing can
    /// overtake it.
    Flush(oneshot::Sender<()>),
}

impl Message {
    /// A record, which counts against the queue's capacity.
    pub(super) fn is_record(&self) -> bool {
        matches!(self, Message::Record(_))
    }
}

/// The longest `flush_interval` honoured: any longer is a configuration
/// mistake, and would overflow `Instant` arithmetic.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(3600);

/// How often a gathering batch looks for more records (and flushes).
const GATHER_TICK: Duration = Duration::from_millis(10);

/// How long the writer waits without a record before it hands SQLite's
/// page cache back (`sqlite3_db_release_memory`): after a burst it holds
/// some 300 KiB the quiet process does not need, and the heap trim that
/// follows calls pausing (`crate::heap`) can only return what is freed.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    pub(super) file: LedgerFile,
    pub(super) queue: QueueReceiver,
    pub(super) counters: Arc<Counters>,
    pub(super) batch_max: usize,
    pub(super) flush_interval: Duration,
    pub(super) retention: RetentionSchedule,
    /// Whether SQLite may hold cache since the last release.
    pub(super) cache_held: bool,
}

// Boxes in a list on purpose: the records arrive boxed.
#[allow(clippy::vec_box)]
#[derive(Default)]
struct Batch {
    /// Kept in the boxes they were queued in: a list of up to `batch_max`
    /// records by value (376 bytes each) grew to 192 KiB on the writer's
    /// thread, in a heap of its own that a burst left resident.
    records: Vec<Box<CallRecord>>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn add(&mut self, message: Message) {
        match message {
            Message::Record(record) => self.records.push(record),
            Message::Flush(done) => self.flushes.push(done),
        }
    }
}

impl Writer {
    /// Runs until every sender is gone and the queue is empty, which is
    /// how `Ledger::close` stops it: nothing queued is left behind.
    pub(super) fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            if !batch.records.is_empty() {
                self.commit(&batch.records);
            }
            for done in batch.flushes {
                // The flusher may have stopped waiting; nothing to tell then.
                let _ = done.send(());
            }
        }
    }

    /// Waits for a first message, then gathers more until the batch is
    /// full, `flush_interval` has passed since that first message, or
    /// someone asks for a flush. `None` once the ledger is closed and the
    /// queue is drained.
    fn next_batch(&mut self) -> Option<Batch> {
        let first = loop {
            // Waking up when idle lets retention run on a quiet ledger too.
            let wait = if self.cache_held {
                RELEASE_AFTER
            } else {
                retention::EVERY
            };
            match self.queue.recv_timeout(wait) {
                Ok(message) => break message,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(conn) = self.file.current() {
                        self.retention.run_if_due(conn);
                        if std::mem::take(&mut self.cache_held) {
                            // Only a cache: an error here loses nothing.
                            let _ = conn.release_memory();
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        };
        let mut batch = Batch::default();
        batch.add(first);
        let deadline = Instant::now() + self.flush_interval.min(MAX_FLUSH_INTERVAL);
        while batch.records.len() < self.batch_max && batch.flushes.is_empty() {
            match self.queue.try_recv() {
                Ok(message) => batch.add(message),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    // A nap, not a blocking receive: a receiver blocked on
                    // the queue is woken by every send — a context switch
                    // per call, which costs the serving thread more than
                    // the record itself. Napping gathers many per wake-up.
                    std::thread::sleep(left.min(GATHER_TICK));
                }
            }
        }
        Some(batch)
    }

    fn commit(&mut self, records: &[Box<CallRecord>]) {
        let rows = records.len() as u64;
        // The file the path names now: one deleted or replaced since the
        // last batch is opened again first (a `stat` per batch).
        let conn = match self.file.connection(&self.counters) {
            Ok(conn) => conn,
            Err(error) => return self.counters.write_failed(rows, &error),
        };
        match insert_all(conn, records) {
            Ok(()) => {
                self.cache_held = true;
                self.counters.add_written(rows);
                self.retention.after_batch(conn);
            }
            // Disk full, directory gone, locked too long: these rows are
            // lost, but counted and logged, and the next batch tries again.
            Err(error) => self.counters.write_failed(rows, &error),
        }
    }
}

fn insert_all(conn: &Connection, records: &[Box<CallRecord>]) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock up front, so a busy file makes us
    // wait for the lock (busy_timeout) instead of failing mid-batch.
    // `BEGIN` and `COMMIT` are prepared once and kept with the insert:
    // rusqlite's `Transaction` parses both again for every batch, which at
    // a few calls a second (a batch per call) cost more than the row.
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let inserted = (|| {
        let mut insert = conn.prepare_cached(row::INSERT)?;
        for record in records {
            row::insert(&mut insert, record)?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    })();
    if inserted.is_err() && !conn.is_autocommit() {
        // Nothing of a failed batch stays half-written; the error says why.
        let _ = conn.execute_batch("ROLLBACK");
    }
    inserted
}

//! The fleet ledger: every pod's rows in one PostgreSQL database, so one
//! admin query answers for the whole fleet.
//!
//! Records still go to the local SQLite file first (the SIGKILL bound holds
//! as without PostgreSQL). A forwarder thread, started only when
//! `[ledger] url` is set, reads the file's rows past its watermark in
//! order, inserts them into PostgreSQL in one transaction per batch, keyed
//! by the file's random id and the row's id (`ON CONFLICT DO NOTHING`), and
//! moves the watermark in the file only after PostgreSQL committed: a row
//! arrives once, even when a commit's answer is lost. While PostgreSQL is
//! away the rows wait in the file (retention keeps them), up to
//! `spool_max_rows`; beyond that the oldest are given up, counted and
//! warned about once per episode. With no URL there is no thread, no
//! connection and no memory for any of this.
//!
//! # Layout
//!
//! - `target`: the URL, its password kept out of every text, connecting
//!   with TLS.
//! - `tls`: libpq's TLS keys tokio-postgres does not know (`verify-ca`,
//!   `verify-full`, `sslrootcert`, `sslcert`, `sslkey`), their files read.
//! - `schema`: the tables in PostgreSQL and their migrations.
//! - `spool`: the file's watermark, its random id, the rows to send.
//! - `forwarder`: the thread: batches, backoff, the spool's bound, drain.
//! - `rows`, `queries`: rows in and out of PostgreSQL; the admin queries.

mod forwarder;
mod queries;
mod rows;
mod schema;
mod spool;
mod target;
mod tls;

pub use schema::{MIGRATIONS, REQUESTS_TABLE, SCHEMA_VERSION, migrate, migrate_to};
pub use target::FleetTarget;

use super::counters::Counters;
use super::{LedgerError, LedgerRow, RecentQuery, SummaryQuery, SummaryRow};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The default `[ledger] spool_max_rows`: about 100 MB of file at ~400
/// bytes a row, a day of a busy pod (1 call a second) many times over.
pub const DEFAULT_SPOOL_MAX_ROWS: u64 = 250_000;

/// The fleet ledger's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// The database, and how to reach it.
    pub target: FleetTarget,
    /// The name each row carries: `POD_NAME`, `HOSTNAME` or the host name.
    pub pod: String,
    /// Rows not yet in PostgreSQL kept in the file; beyond this the oldest
    /// are given up (counted in [`FleetStatus::spool_dropped`]).
    pub spool_max_rows: u64,
    /// Most rows per PostgreSQL transaction.
    pub batch_max: usize,
    /// How often the forwarder looks for new rows when it has caught up:
    /// the usual delay between a call and its row in PostgreSQL.
    pub poll_interval: Duration,
}

impl FleetConfig {
    /// The defaults for `target` and `pod`.
    pub fn new(target: FleetTarget, pod: String) -> FleetConfig {
        FleetConfig {
            target,
            pod,
            spool_max_rows: DEFAULT_SPOOL_MAX_ROWS,
            batch_max: 500,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// What the forwarder has done, for the admin status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetStatus {
    /// `user@host:port/database`, never the password.
    pub target: String,
    pub pod: String,
    /// Whether the forwarder holds a working connection now.
    pub connected: bool,
    /// Rows PostgreSQL committed from this pod since start.
    pub forwarded: u64,
    /// Rows in the file not yet in PostgreSQL, at the last look.
    pub spooled: u64,
    /// Rows given up because the spool was over `spool_max_rows`.
    pub spool_dropped: u64,
    /// The last failure (scrubbed of the password), until a batch succeeds.
    pub last_error: Option<String>,
}

/// The forwarder's counts, shared with the handle.
#[derive(Debug, Default)]
struct State {
    connected: AtomicBool,
    forwarded: AtomicU64,
    spooled: AtomicU64,
    spool_dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl State {
    fn set_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// The running forwarder, held by the ledger.
pub(super) struct Fleet {
    config: FleetConfig,
    state: Arc<State>,
    /// `Some(deadline)`: drain until then, then stop. Dropping it stops
    /// the forwarder at once.
    control: watch::Sender<Option<Instant>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// An admin query found the schema current: later ones skip the
    /// migration (and its lock and notices).
    migrated: AtomicBool,
}

impl Fleet {
    /// Starts the forwarder thread on the file at `path`.
    pub(super) fn start(
        config: FleetConfig,
        path: PathBuf,
        counters: Arc<Counters>,
    ) -> Result<Fleet, LedgerError> {
        let state = Arc::new(State::default());
        let (control, commands) = watch::channel(None);
        let forwarder =
            forwarder::Forwarder::new(config.clone(), path, counters, Arc::clone(&state), commands);
        let thread = std::thread::Builder::new()
            .name("ledger-forwarder".to_owned())
            .spawn(move || forwarder.run())
            .map_err(LedgerError::WriterThread)?;
        tracing::info!(
            target = config.target.shown(),
            pod = %config.pod,
            "ledger: forwarding rows to PostgreSQL"
        );
        Ok(Fleet {
            config,
            state,
            control,
            thread: Mutex::new(Some(thread)),
            migrated: AtomicBool::new(false),
        })
    }

    pub(super) fn status(&self) -> FleetStatus {
        let state = &self.state;
        FleetStatus {
            target: self.config.target.shown().to_owned(),
            pod: self.config.pod.clone(),
            connected: state.connected.load(Ordering::Relaxed),
            forwarded: state.forwarded.load(Ordering::Relaxed),
            spooled: state.spooled.load(Ordering::Relaxed),
            spool_dropped: state.spool_dropped.load(Ordering::Relaxed),
            last_error: state
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    pub(super) fn spool_dropped(&self) -> u64 {
        self.state.spool_dropped.load(Ordering::Relaxed)
    }

    /// Forwards what the file holds until it is all in PostgreSQL or
    /// `within` has passed, then stops the thread. Call after the writer
    /// has committed its last rows.
    pub(super) async fn drain(&self, within: Duration) {
        let _ = self.control.send(Some(Instant::now() + within));
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && !matches!(
                tokio::task::spawn_blocking(move || thread.join()).await,
                Ok(Ok(()))
            )
        {
            tracing::error!("ledger: the forwarder thread panicked");
        }
    }

    pub(super) async fn summary(
        &self,
        query: SummaryQuery,
    ) -> Result<Vec<SummaryRow>, LedgerError> {
        let client = self.connect().await?;
        queries::summary(&client, &query)
            .await
            .map_err(|error| self.unreachable(self.config.target.describe(&error)))
    }

    pub(super) async fn recent(&self, query: RecentQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        let client = self.connect().await?;
        queries::recent(&client, &query)
            .await
            .map_err(|error| self.unreachable(self.config.target.describe(&error)))
    }

    /// A connection of the query's own, closed when it is answered: the
    /// admin port is rarely asked, and a held connection would count
    /// against PostgreSQL's `max_connections` for every pod.
    async fn connect(&self) -> Result<tokio_postgres::Client, LedgerError> {
        let target = &self.config.target;
        let mut client = target
            .connect()
            .await
            .map_err(|reason| self.unreachable(reason))?;
        if !self.migrated.load(Ordering::Relaxed) {
            migrate(&mut client)
                .await
                .map_err(|error| self.unreachable(target.describe(&error)))?;
            self.migrated.store(true, Ordering::Relaxed);
        }
        Ok(client)
    }

    fn unreachable(&self, reason: String) -> LedgerError {
        LedgerError::Fleet {
            target: self.config.target.shown().to_owned(),
            reason,
        }
    }
}

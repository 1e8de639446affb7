//! The forwarder thread: the file's rows to PostgreSQL, a batch at a time,
//! in order. It has its own small runtime and its own connections (one to
//! the file, one to PostgreSQL), so it never holds up a call or the
//! ledger's writer; a PostgreSQL that is away or slow only lets rows wait
//! in the file.

use super::{FleetConfig, State, rows, schema, spool};
use crate::ledger::counters::Counters;
use crate::ledger::schema as file_schema;
use rusqlite::Connection;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::{Client, Statement};

/// Reconnection waits: doubling from the first to the last, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(super) struct Forwarder {
    config: FleetConfig,
    path: PathBuf,
    /// The writer's counters: a change in `reopened` means the file under
    /// the path is another one, which the forwarder opens too.
    counters: Arc<Counters>,
    state: Arc<State>,
    commands: watch::Receiver<Option<Instant>>,
    file: Option<(Connection, u64)>,
    /// The open file's random id, read once: the writer needs the file's
    /// write lock, and a write per batch here would contend for it.
    origin: Option<String>,
    postgres: Option<(Client, Statement)>,
    failures: u32,
    /// A warning about given-up rows was logged in this episode.
    warned_over_bound: Cell<bool>,
}

enum Step {
    /// Sent a full batch: more may wait.
    More,
    /// Caught up, or could not go on: wait before the next look.
    Wait(Duration),
    Stop,
}

impl Forwarder {
    pub(super) fn new(
        config: FleetConfig,
        path: PathBuf,
        counters: Arc<Counters>,
        state: Arc<State>,
        commands: watch::Receiver<Option<Instant>>,
    ) -> Forwarder {
        Forwarder {
            config,
            path,
            counters,
            state,
            commands,
            file: None,
            origin: None,
            postgres: None,
            failures: 0,
            warned_over_bound: Cell::new(false),
        }
    }

    pub(super) fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!("ledger: cannot start the forwarder's runtime: {error}");
                return;
            }
        };
        runtime.block_on(async move {
            loop {
                match self.step().await {
                    Step::More if self.past_deadline() => break,
                    Step::More => {}
                    Step::Stop => break,
                    Step::Wait(wait) => {
                        if !self.wait(wait).await {
                            break;
                        }
                    }
                }
            }
            self.report_left();
        });
    }

    /// Waits `wait`, less when a drain's deadline comes first; `false` when
    /// the ledger is gone or the deadline has passed.
    async fn wait(&mut self, wait: Duration) -> bool {
        let deadline = *self.commands.borrow();
        let wait = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                wait.min(left).min(Duration::from_millis(100))
            }
            None => wait,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            changed = self.commands.changed() => changed.is_ok(),
        }
    }

    fn past_deadline(&self) -> bool {
        self.commands
            .borrow()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn draining(&self) -> bool {
        self.commands.borrow().is_some()
    }

    async fn step(&mut self) -> Step {
        if let Err(error) = self.check_spool() {
            tracing::warn!(
                path = %self.path.display(),
                "ledger: the forwarder cannot read the file: {error}"
            );
            self.file = None;
            return Step::Wait(self.backoff());
        }
        if self.postgres.is_none() {
            match self.connect().await {
                Ok(postgres) => self.postgres = Some(postgres),
                Err(error) => return self.failed(error),
            }
        }
        match self.forward_batch().await {
            Ok(0) if self.draining() => Step::Stop,
            Ok(0) => Step::Wait(self.config.poll_interval),
            Ok(sent) if sent < self.config.batch_max && !self.draining() => {
                Step::Wait(self.config.poll_interval)
            }
            Ok(_) => Step::More,
            Err(error) => {
                self.postgres = None;
                self.failed(error)
            }
        }
    }

    fn failed(&mut self, error: String) -> Step {
        self.state.connected.store(false, Ordering::Relaxed);
        if self.failures == 0 {
            tracing::warn!(
                target = self.config.target.shown(),
                "ledger: PostgreSQL is unreachable, rows wait in the local file: {error}"
            );
        } else {
            tracing::debug!(target = self.config.target.shown(), "ledger: {error}");
        }
        self.state.set_error(Some(error));
        Step::Wait(self.backoff())
    }

    /// The next wait after a failure: doubling, with full jitter.
    fn backoff(&mut self) -> Duration {
        let doubled = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let cap = doubled.min(BACKOFF_MAX);
        cap.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// The file's connection, opened again when the writer opened another
    /// file at the path.
    fn file(&mut self) -> Result<&Connection, String> {
        let reopened = self.counters.reopened();
        if self.file.as_ref().is_none_or(|(_, seen)| *seen != reopened) {
            let conn = file_schema::open_writer(&self.path).map_err(|error| error.to_string())?;
            self.file = Some((conn, reopened));
            self.origin = None;
        }
        match &self.file {
            Some((conn, _)) => Ok(conn),
            None => Err("the file is not open".to_owned()),
        }
    }

    /// Counts what waits, and holds the spool to its bound: the oldest
    /// rows past it are given up (the watermark moves over them).
    fn check_spool(&mut self) -> Result<(), String> {
        let bound = i64::try_from(self.config.spool_max_rows).unwrap_or(i64::MAX);
        self.file()?;
        let Some((conn, _)) = &self.file else {
            return Err("the file is not open".to_owned());
        };
        if self
            .hold_bound(conn, bound)
            .map_err(|error| error.to_string())?
        {
            self.origin = None;
        }
        Ok(())
    }

    /// `true` when the file's numbering began again (a new origin).
    fn hold_bound(&self, conn: &Connection, bound: i64) -> rusqlite::Result<bool> {
        let mut renumbered = false;
        let newest = spool::max_id(conn)?;
        let mut watermark = spool::watermark(conn)?;
        if newest < watermark {
            // Every row was deleted while nothing guarded them and the ids
            // began again: a new numbering, so no id names two rows.
            spool::renumber(conn)?;
            renumbered = true;
            watermark = 0;
        }
        let waiting = newest - watermark;
        let over = waiting - bound;
        if over > 0 {
            spool::set_watermark(conn, watermark + over)?;
            let total = self
                .state
                .spool_dropped
                .fetch_add(over as u64, Ordering::Relaxed)
                + over as u64;
            if !self.warned_over_bound.replace(true) {
                tracing::warn!(
                    spool_dropped_total = total,
                    spool_max_rows = bound,
                    "ledger: PostgreSQL has been away too long: the spool is full, its oldest \
                     rows are not forwarded (they stay in the local file until retention)"
                );
            }
        }
        self.state
            .spooled
            .store(waiting.min(bound).max(0) as u64, Ordering::Relaxed);
        Ok(renumbered)
    }

    async fn connect(&mut self) -> Result<(Client, Statement), String> {
        let target = &self.config.target;
        let mut client = target.connect().await?;
        let found = schema::migrate(&mut client)
            .await
            .map_err(|error| format!("migrating: {}", target.describe(&error)))?;
        if found < schema::SCHEMA_VERSION {
            tracing::info!(
                target = target.shown(),
                "ledger: PostgreSQL schema migrated from version {found} to {}",
                schema::SCHEMA_VERSION
            );
        }
        let insert = client
            .prepare(rows::INSERT)
            .await
            .map_err(|error| target.describe(&error))?;
        Ok((client, insert))
    }

    /// Sends the next batch; the number of rows it held.
    async fn forward_batch(&mut self) -> Result<usize, String> {
        let batch_max = self.config.batch_max;
        self.file()?;
        let Some((file, _)) = &self.file else {
            return Err("the file is not open".to_owned());
        };
        let read = (|| {
            let watermark = spool::watermark(file)?;
            let origin = match &self.origin {
                Some(origin) => origin.clone(),
                None => spool::origin(file)?,
            };
            Ok::<_, rusqlite::Error>((origin, spool::read_after(file, watermark, batch_max)?))
        })();
        let (origin, batch) = read.map_err(|error| format!("reading the local file: {error}"))?;
        self.origin = Some(origin.clone());
        let Some(&(last, _)) = batch.last() else {
            self.caught_up();
            return Ok(0);
        };
        let Some((client, insert)) = self.postgres.as_mut() else {
            return Err("not connected".to_owned());
        };
        let target = &self.config.target;
        let pod = self.config.pod.as_str();
        let fail = |error: tokio_postgres::Error| target.describe(&error);
        let tx = client.transaction().await.map_err(fail)?;
        let keys: Vec<String> = batch
            .iter()
            .map(|(id, _)| format!("{origin}-{id}"))
            .collect();
        // Sent together: tokio-postgres pipelines them on the connection.
        let inserted = futures::future::try_join_all(
            batch
                .iter()
                .zip(&keys)
                .map(|((_, row), key)| rows::insert(&tx, insert, key, pod, row)),
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        // Only now: a crash before this line sends the batch again, and
        // the rows already there are skipped by their keys.
        if let Some((file, _)) = &self.file
            && let Err(error) = spool::set_watermark(file, last)
        {
            tracing::warn!("ledger: cannot record the forwarded rows in the file: {error}");
        }
        let new = inserted.iter().filter(|inserted| **inserted).count();
        self.state
            .forwarded
            .fetch_add(new as u64, Ordering::Relaxed);
        self.state.connected.store(true, Ordering::Relaxed);
        if self.failures > 0 {
            tracing::info!(
                target = self.config.target.shown(),
                "ledger: PostgreSQL is back, forwarding the waiting rows"
            );
        }
        self.failures = 0;
        self.state.set_error(None);
        Ok(batch.len())
    }

    fn caught_up(&mut self) {
        self.state.spooled.store(0, Ordering::Relaxed);
        self.state.connected.store(true, Ordering::Relaxed);
        self.state.set_error(None);
        self.failures = 0;
        self.warned_over_bound.set(false);
    }

    fn report_left(&mut self) {
        let left = self.file().and_then(|conn| {
            Ok(spool::max_id(conn).map_err(|error| error.to_string())?
                - spool::watermark(conn).map_err(|error| error.to_string())?)
        });
        match left {
            Ok(0) => tracing::info!("ledger: every row is in PostgreSQL"),
            Ok(left) => tracing::warn!(
                rows = left,
                path = %self.path.display(),
                "ledger: rows not yet in PostgreSQL stay in the local file; the next start \
                 forwards them (an emptyDir dies with its pod, and these rows with it)"
            ),
            Err(error) => tracing::warn!("ledger: cannot count the rows left: {error}"),
        }
    }
}

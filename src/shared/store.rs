//! The connection to the shared store and what it knows of its health.
//!
//! One multiplexed connection per pipeline (the redis crate's
//! `ConnectionManager`), opened on the first call that needs it, reopened
//! by the manager after it breaks, and made anew after a failed round
//! trip (a reconnect that failed on a changed password does not recover). Every round trip
//! is bounded by `[shared] timeout_ms`; a failed one marks the store
//! unreachable, which is logged once per outage and counted, and calls then
//! skip it without waiting until the next probe is due (backoff from
//! 100 ms to 2 s), so a dead store costs a call no more than one timeout.

use crate::config::UnavailableMode;
use crate::error::Error;
use crate::secret::Scrubber;
use crate::telemetry::Metrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The first wait before the store is tried again after a failure…
const FIRST_PROBE_DELAY: Duration = Duration::from_millis(100);
/// …doubled per failure up to this.
const MAX_PROBE_DELAY: Duration = Duration::from_secs(2);
/// The shortest Retry-After of a refusal while the store is away: HTTP's
/// `Retry-After` counts whole seconds.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The store of the fleet-wide limits; see the module doc.
pub struct SharedStore {
    client: redis::Client,
    /// Opened at the first round trip; dropped after a failed one, so the
    /// next probe opens a fresh one (a manager whose reconnect failed, on
    /// a changed password say, would otherwise keep failing).
    connection: Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    /// The budgets' script (`budget.lua`).
    budget_script: redis::Script,
    /// The password (and the whole URL) in every form an error might
    /// show it.
    scrubber: Scrubber,
    pub(super) prefix: String,
    pub(super) expected_pods: u32,
    pub(super) on_unavailable: UnavailableMode,
    timeout: Duration,
    health: Mutex<Health>,
    metrics: OnceLock<Metrics>,
    /// The store's clock, as the budgets' script reports it.
    pub(super) clock: super::clock::FleetClock,
}

impl std::fmt::Debug for SharedStore {
    // Not derived: the client's connection info holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("prefix", &self.prefix)
            .field("expected_pods", &self.expected_pods)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Health {
    /// Since when the store has been unreachable; `None`: reachable.
    down_since: Option<Instant>,
    /// No round trip is tried before this.
    next_probe: Instant,
    delay: Duration,
}

/// The store could not be asked: it is down (and not due for a probe),
/// or the round trip failed or took longer than `timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

impl SharedStore {
    /// A store at `url` (not connected until the first round trip), with
    /// `certificates` for a `rediss://` one beyond the system's store.
    /// Errors name the problem, never the URL.
    pub(super) fn new(
        url: &str,
        certificates: Option<redis::TlsCertificates>,
        prefix: String,
        expected_pods: u32,
        on_unavailable: UnavailableMode,
        timeout: Duration,
    ) -> Result<SharedStore, String> {
        let scrubber = super::url::scrubber_for(url);
        let client = match certificates {
            None => redis::Client::open(url),
            Some(certificates) => redis::Client::build_with_tls(url, certificates),
        }
        .map_err(|error| {
            format!(
                "the shared store's URL is not a Redis URL: {}",
                scrubber.scrub(&error.to_string())
            )
        })?;
        Ok(SharedStore {
            client,
            connection: Mutex::new(None),
            script: redis::Script::new(include_str!("gcra.lua")),
            budget_script: redis::Script::new(include_str!("budget.lua")),
            scrubber,
            prefix,
            expected_pods,
            on_unavailable,
            timeout,
            health: Mutex::new(Health {
                down_since: None,
                next_probe: Instant::now(),
                delay: FIRST_PROBE_DELAY,
            }),
            metrics: OnceLock::new(),
            clock: super::clock::FleetClock::default(),
        })
    }

    /// Counts outages and fallbacks in `metrics` from now on.
    pub fn set_metrics(&self, metrics: Metrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Runs the limit script (EVALSHA; loaded again when the server
    /// answers NOSCRIPT) with `keys` and `args`: one round trip.
    pub(super) async fn limit(
        &self,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, Unreachable> {
        self.round_trip(|mut connection| async move {
            let mut invocation = self.script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// Runs the budgets' script (`budget.lua`): operation `op` on `keys`,
    /// with `args` after it. The answer's first number, the store's clock,
    /// goes to [`SharedStore::now`]; the rest is returned.
    pub(super) async fn budget(
        &self,
        op: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<i64>, Unreachable> {
        let sent_ms = super::clock::local_now_ms();
        let mut answer: Vec<i64> = self
            .round_trip(|mut connection| async move {
                let mut invocation = self.budget_script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                invocation.arg(op);
                for arg in args {
                    invocation.arg(arg);
                }
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        if answer.is_empty() {
            return Err(Unreachable);
        }
        self.clock
            .observe(answer[0], sent_ms, super::clock::local_now_ms());
        answer.remove(0);
        Ok(answer)
    }

    /// Sets `key` for `ttl` (a benched API key's fingerprint).
    pub(super) async fn set_for(&self, key: &str, ttl: Duration) -> Result<(), Unreachable> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.round_trip(|mut connection| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(millis)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    /// Whether a round trip is worth trying now: the store is up, or a
    /// probe is due (taken by this call alone: the others go on without).
    fn due(&self) -> bool {
        let mut health = self.health.lock().expect("never poisoned");
        let now = Instant::now();
        if health.down_since.is_none() {
            return true;
        }
        if now < health.next_probe {
            return false;
        }
        health.next_probe = now + self.timeout;
        true
    }

    async fn round_trip<T, F, Fut>(&self, work: F) -> Result<T, Unreachable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.due() {
            return Err(Unreachable);
        }
        let attempt = async {
            let connection = self.manager()?;
            work(connection).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => {
                self.reachable();
                Ok(value)
            }
            Ok(Err(error)) => {
                self.forget_connection();
                self.unreachable(&error.to_string());
                Err(Unreachable)
            }
            Err(_) => {
                self.forget_connection();
                self.unreachable(&format!("no answer within {:?}", self.timeout));
                Err(Unreachable)
            }
        }
    }

    /// The open connection, or a new one (connected lazily, on its first
    /// command).
    fn manager(&self) -> redis::RedisResult<ConnectionManager> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = connection.as_ref() {
            return Ok(manager.clone());
        }
        let manager = self.connect()?;
        *connection = Some(manager.clone());
        Ok(manager)
    }

    fn forget_connection(&self) {
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        ConnectionManager::new_lazy_with_config(self.client.clone(), config)
    }

    fn reachable(&self) {
        let mut health = self.health.lock().expect("never poisoned");
        if let Some(since) = health.down_since.take() {
            tracing::info!(
                down_ms = since.elapsed().as_millis() as u64,
                "the shared limits store (Redis) is reachable again: fleet-wide limits resume"
            );
        }
        health.delay = FIRST_PROBE_DELAY;
    }

    fn unreachable(&self, why: &str) {
        let mut health = self.health.lock().expect("never poisoned");
        let now = Instant::now();
        if health.down_since.is_none() {
            health.down_since = Some(now);
            let fallback = match self.on_unavailable {
                UnavailableMode::Local => "calls go on under this pod's share of each limit",
                UnavailableMode::Closed => "calls to rate-limited providers are refused",
            };
            tracing::warn!(
                error = %self.scrubber.scrub(why),
                "the shared limits store (Redis) is unreachable: {fallback} until it answers again"
            );
            if let Some(metrics) = self.metrics.get() {
                metrics.shared_store_outage();
            }
        }
        health.next_probe = now + health.delay;
        health.delay = (health.delay * 2).min(MAX_PROBE_DELAY);
    }

    /// The refusal of a call to `provider` while the store is away under
    /// `on_unavailable = "closed"`: its Retry-After is when the store is
    /// next tried, at least 1 s (a caller told to come back sooner would
    /// find it still untried).
    pub(crate) fn refusal(&self, provider: &str) -> Error {
        Error::SharedStoreUnavailable {
            provider: provider.to_owned(),
            retry_after: self.retry_after(),
        }
    }

    /// Until the store is next tried, at least 1 s: the Retry-After of a
    /// refusal decided without it.
    pub(crate) fn retry_after(&self) -> Duration {
        let next_probe = self
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_probe;
        next_probe
            .saturating_duration_since(Instant::now())
            .max(MIN_RETRY_AFTER)
    }

    /// How many pods share the store (`[shared] expected_pods`): while it
    /// is away each takes this share of a fleet-wide figure.
    pub fn expected_pods(&self) -> u32 {
        self.expected_pods.max(1)
    }

    /// Counts one call decided without the store (`local` or `closed`).
    pub(crate) fn count_fallback(&self, provider: &str) {
        if let Some(metrics) = self.metrics.get() {
            let mode = match self.on_unavailable {
                UnavailableMode::Local => "local",
                UnavailableMode::Closed => "closed",
            };
            metrics.shared_store_fallback(provider, mode);
        }
    }
}

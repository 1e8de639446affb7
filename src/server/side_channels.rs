//! The parts that watch calls rather than serve them — telemetry, the
//! ledger, and the observer that feeds both — set up so that their failure
//! never stops the sidecar from serving: a ledger file that cannot be
//! opened is reported clearly and its records are counted as dropped; a
//! collector that cannot be reached costs dropped spans, not requests.

use crate::config::{Config, Env};
use crate::inbound::observe::Observer;
use crate::ledger::{Ledger, LedgerConfig};
use crate::pipeline::PipelineHandle;
use crate::telemetry::{ProviderState, Telemetry, TelemetryConfig, TelemetryFileConfig};
use anyhow::Context as _;
use std::sync::{Arc, Weak};

/// The process's telemetry from the config file's `[telemetry]` and the
/// standard `OTEL_*` variables. A wrong value is a start-up error that
/// names the key or the variable.
pub fn telemetry(config: &Config, env: Env<'_>) -> anyhow::Result<Arc<Telemetry>> {
    let resolved = TelemetryConfig::resolve(&TelemetryFileConfig::from(&config.telemetry), env)
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "telemetry settings (in {} or the environment)",
                config.source
            )
        })?;
    let telemetry = Telemetry::init(&resolved).map_err(anyhow::Error::msg)?;
    match (&resolved.traces, &resolved.metrics) {
        (None, None) => tracing::info!(
            "no OTLP endpoint set: spans are not exported; metrics on the admin port's /metrics"
        ),
        (traces, metrics) => tracing::info!(
            traces = traces
                .as_ref()
                .map_or("off", |target| target.endpoint.as_str()),
            metrics = metrics
                .as_ref()
                .map_or("off", |target| target.endpoint.as_str()),
            "exporting telemetry over OTLP"
        ),
    }
    Ok(Arc::new(telemetry))
}

pub fn observer(
    config: &Config,
    env: Env<'_>,
    telemetry: &Arc<Telemetry>,
) -> anyhow::Result<Arc<Observer>> {
    let ledger = config.ledger.enabled.then(|| open_ledger(config, env));
    if let Some(ledger) = ledger
        .as_ref()
        .filter(|ledger| ledger.fleet_status().is_some())
    {
        let ledger = ledger.clone();
        telemetry
            .metrics()
            .observe_ledger_forwarding(telemetry.meter(), move || {
                let status = ledger.fleet_status();
                status.map_or((0, 0, 0), |status| {
                    (status.forwarded, status.spooled, status.spool_dropped)
                })
            });
    }
    if let Some(ledger) = &ledger {
        let reopens = ledger.clone();
        let ledger = ledger.clone();
        telemetry
            .metrics()
            .observe_ledger_dropped(telemetry.meter(), move || ledger.dropped());
        telemetry
            .metrics()
            .observe_ledger_reopened(telemetry.meter(), move || reopens.reopened());
    }
    let observer = Observer::new(config, ledger)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("in {}", config.source))?
        .with_telemetry(telemetry.clone())
        .with_call_limit(calls_in_flight(config));
    telemetry
        .metrics()
        .observe_budgets(telemetry.meter(), Arc::clone(observer.budgets()));
    Ok(Arc::new(observer))
}

/// Each budget (or only those named in `only`: budgets a reload added)
/// starts its window from what the ledger says this pod spent in it before
/// `started` (this process's start, or the reload; what calls spent since
/// is counted already). A ledger that cannot be read is logged, and the
/// budgets count from nothing.
pub async fn restore_budget_spend(
    observer: Arc<Observer>,
    started: std::time::SystemTime,
    only: Option<Vec<String>>,
) {
    let started_ms = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    let (Some(ledger), budgets) = (observer.ledger(), observer.budgets()) else {
        return;
    };
    if budgets.is_empty() {
        return;
    }
    // Calls that ended before a reload may still wait in the writer's
    // queue: their rows count too.
    ledger.flush().await;
    let wanted = |name: &String| only.as_ref().is_none_or(|only| only.contains(name));
    for (name, scope, window_start) in budgets.windows() {
        if !wanted(&name) {
            continue;
        }
        match ledger
            .spent_between(scope, window_start.saturating_mul(1000), started_ms)
            .await
        {
            Ok((tokens, usd)) => budgets.restore(&name, window_start, tokens, usd),
            Err(error) => tracing::warn!(
                budget = name.as_str(),
                "budget: the spend so far this window could not be read back from the ledger \
                 ({error}); it counts from nothing"
            ),
        }
    }
}

/// `server.max_calls_in_flight`, or the cgroup's memory limit over the
/// bound of one call (`server::memory_limit`).
fn calls_in_flight(config: &Config) -> usize {
    use super::memory_limit::{cgroup_memory_limit, default_calls_in_flight};
    if let Some(limit) = config.server.max_calls_in_flight {
        return limit;
    }
    let memory = cgroup_memory_limit();
    let limit = default_calls_in_flight(memory);
    match memory {
        Some(bytes) => tracing::info!(
            limit,
            memory_limit_mib = bytes / (1024 * 1024),
            "at most {limit} calls in flight, from the memory limit (server.max_calls_in_flight)"
        ),
        None => tracing::info!(
            limit,
            "at most {limit} calls in flight: no memory limit (server.max_calls_in_flight)"
        ),
    }
    limit
}

/// Queue depth and circuit state per provider, read at each collection.
/// Weak, so the meter's callback does not keep the pipeline alive.
pub fn observe_providers(telemetry: &Telemetry, pipeline: &Arc<PipelineHandle>) {
    let pipeline: Weak<PipelineHandle> = Arc::downgrade(pipeline);
    telemetry
        .metrics()
        .observe_providers(telemetry.meter(), move || {
            let Some(pipeline) = pipeline.upgrade() else {
                return Vec::new();
            };
            pipeline
                .current()
                .provider_states()
                .map(|state| ProviderState {
                    provider: state.name.to_owned(),
                    queued: state.queued as u64,
                    circuit: state.circuit.gauge(),
                })
                .collect()
        });
}

fn open_ledger(config: &Config, env: Env<'_>) -> Ledger {
    let settings = &config.ledger;
    if let Some(parent) = settings
        .path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        // Made private if missing; refused, like a socket's, when another
        // user could swap or read the file.
        use super::socket_dir::{Purpose, prepare};
        if let Err(error) = prepare(parent, 0o700, Purpose::Ledger) {
            tracing::error!(
                "usage ledger unavailable ({error}); serving on, every call's record will be counted as dropped"
            );
            return Ledger::unavailable(error.to_string());
        }
    }
    let ledger_config = LedgerConfig {
        path: settings.path.clone(),
        queue_capacity: settings.queue_capacity,
        retention_max_age: settings.retention_max_age,
        retention_max_rows: settings.retention_max_rows,
        fleet: settings
            .fleet
            .as_ref()
            .and_then(|fleet| super::fleet_ledger::settings(fleet, env, &config.source)),
        ..LedgerConfig::default()
    };
    match Ledger::open(&ledger_config) {
        Ok(ledger) => {
            tracing::info!(path = %settings.path.display(), "usage ledger open");
            ledger
        }
        Err(error) => {
            tracing::error!(
                "usage ledger unavailable ({error}); serving on, every call's record will be counted as dropped. \
                 Fix or move the file (ledger.path in {}), or set ledger.enabled = false",
                config.source
            );
            Ledger::unavailable(error.to_string())
        }
    }
}

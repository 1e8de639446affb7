//! The parts that watch calls rather than serve them — the ledger (and the
//! observer that feeds it) — set up so that their failure never stops the
//! sidecar from serving: a ledger file that cannot be opened is reported
//! clearly and its records are counted as dropped.

use crate::config::Config;
use crate::inbound::observe::Observer;
use crate::ledger::{Ledger, LedgerConfig};
use anyhow::Context as _;
use std::sync::Arc;

pub fn observer(config: &Config) -> anyhow::Result<Arc<Observer>> {
    let ledger = config.ledger.enabled.then(|| open_ledger(config));
    let observer = Observer::new(config, ledger)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("in {}", config.source))?;
    Ok(Arc::new(observer))
}

fn open_ledger(config: &Config) -> Ledger {
    let settings = &config.ledger;
    if let Some(parent) = settings
        .path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        // A missing directory is reported by the open below if this fails.
        let _ = std::fs::create_dir_all(parent);
    }
    let ledger_config = LedgerConfig {
        path: settings.path.clone(),
        queue_capacity: settings.queue_capacity,
        retention_max_age: settings.retention_max_age,
        retention_max_rows: settings.retention_max_rows,
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

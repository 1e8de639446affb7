//! Limits and key cooldowns that hold across every sidecar sharing one
//! store (Redis 7, or Valkey, which speaks the same protocol), from the
//! `[shared]` table. Without it nothing here is built: no client, no
//! connection, no task.
//!
//! # Layout
//!
//! - `store.rs`: [`SharedStore`], the one lazily opened connection, the
//!   bound on each round trip, and outages (logged once, counted, probed
//!   again with backoff).
//! - `gcra.lua`: the script: a GCRA per limit on Redis's clock, requests
//!   and tokens checked together with the benched keys, one round trip.
//! - `lease.rs`: the local cache, and the 10 % over-admission rule.
//! - `fleet_rate.rs`: [`FleetRate`], one provider's admission: lease →
//!   script → this pod's share of the limits when the store is away.
//! - `budget.lua`, `budgets.rs`: budgets held by the fleet (`crate::budget`),
//!   a hash per budget and window, reserved and settled in one round trip.
//! - `clock.rs`: the store's clock as the budgets' answers report it, for
//!   windows reckoned on Redis's time.
//! - `url.rs`: the URL from the config, a file or a variable; the scrubber
//!   of its password.
//! - `tls.rs`: a `rediss://` store's CA file and client certificate, read
//!   and checked.

mod budgets;
mod clock;
mod fleet_rate;
mod lease;
mod store;
mod tls;
mod url;

pub use budgets::{Reserved, SharedWindow};
pub use fleet_rate::FleetRate;
pub use lease::{LEASE_SHARE, LEASE_TTL, lease_cap};
pub use store::{SharedStore, Unreachable};

use crate::config::{Config, ConfigError, Env};
use crate::upstream::KeyRing;
use std::sync::Arc;

impl SharedStore {
    /// The store `config`'s `[shared]` table names, reading its URL now;
    /// `None` without the table.
    ///
    /// # Errors
    /// A URL that cannot be read or parsed, or TLS files that cannot be
    /// read or used (or are given with a `redis://` URL), naming the key
    /// (never the URL).
    pub fn for_config(
        config: &Config,
        env: Env<'_>,
    ) -> Result<Option<Arc<SharedStore>>, ConfigError> {
        let Some(shared) = &config.shared else {
            return Ok(None);
        };
        let url = url::load(shared, env, &config.source)?;
        if shared.tls.is_set() && !url.starts_with("rediss://") {
            return Err(ConfigError {
                file: config.source.clone(),
                key: "shared".to_owned(),
                message: "`ca_file` or a client certificate is given, but the URL is redis:// \
                          (no TLS): use rediss://"
                    .to_owned(),
            });
        }
        let certificates = tls::certificates(&shared.tls, &config.source)?;
        SharedStore::new(
            &url,
            certificates,
            shared.prefix.clone(),
            shared.expected_pods,
            shared.on_unavailable,
            shared.timeout,
        )
        .map(|store| Some(Arc::new(store)))
        .map_err(|message| ConfigError {
            file: config.source.clone(),
            // The key the URL came from, so the message points at it.
            key: match &shared.url {
                crate::config::SharedUrl::Inline(_) => "shared.redis_url",
                crate::config::SharedUrl::Loaded(from) if from.file.is_some() => {
                    "shared.redis_url_file"
                }
                crate::config::SharedUrl::Loaded(_) => "shared.redis_url_env",
            }
            .to_owned(),
            message: format!(
                "{message} (expected redis://[user:password@]host[:port][/db] or rediss://...)"
            ),
        })
    }

    /// Makes a key `ring` benches here benched on every pod: its
    /// fingerprint is set in the store for the cooldown (in the background;
    /// a store that is away loses the note, never the call).
    pub fn share_benches(self: &Arc<Self>, ring: &KeyRing, fleet: &FleetRate) {
        let keys: Vec<String> = (0..ring.all().len())
            .map_while(|index| fleet.bench_key(index).map(str::to_owned))
            .collect();
        if keys.is_empty() {
            return;
        }
        let store = self.clone();
        ring.on_bench(move |index, cooldown| {
            let (Some(key), Ok(runtime)) = (keys.get(index), tokio::runtime::Handle::try_current())
            else {
                return;
            };
            let (store, key) = (store.clone(), key.clone());
            runtime.spawn(async move {
                let _ = store.set_for(&key, cooldown).await;
            });
        });
    }
}

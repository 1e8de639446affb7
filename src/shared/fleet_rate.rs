//! One provider's requests- and tokens-per-minute held across the fleet:
//! the lease first, then one round trip to the store's script (both limits
//! and the benched keys at once), else this pod's share of the limits.

use super::lease::{Ask, Lease, lease_cap};
use super::store::{SharedStore, Unreachable};
use crate::config::{ProviderConfig, UnavailableMode};
use crate::error::{Error, OverloadKind};
use crate::pipeline::RateLimits;
use crate::upstream::KeyRing;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long benched keys read from the store are trusted before a call
/// reads them again (together with its limit check when it makes one).
const BENCHES_FRESH: Duration = Duration::from_secs(1);

/// A provider's fleet-wide limits; see the module doc.
#[derive(Debug)]
pub struct FleetRate {
    store: Arc<SharedStore>,
    provider: Arc<str>,
    /// The requests' and tokens' keys, then one per API key.
    keys: Vec<String>,
    /// Requests and tokens per minute, fleet-wide (0: not limited).
    limits: (u32, u32),
    /// `L` of each limit (see `lease.rs`).
    caps: (u64, u64),
    lease: Mutex<Lease>,
    /// This pod's share, for when the store is unreachable.
    local: Option<RateLimits>,
    max_wait: Duration,
}

impl FleetRate {
    /// `None` when the provider has neither a limit nor more than one key
    /// (nothing to share).
    pub fn new(
        store: &Arc<SharedStore>,
        config: &ProviderConfig,
        ring: Option<&KeyRing>,
    ) -> Option<FleetRate> {
        let fingerprints = ring
            .filter(|ring| ring.all().len() > 1)
            .map(KeyRing::fingerprints)
            .unwrap_or_default();
        let limits = (
            config.requests_per_minute.unwrap_or(0),
            config.tokens_per_minute.unwrap_or(0),
        );
        if limits == (0, 0) && fingerprints.is_empty() {
            return None;
        }
        let pods = store.expected_pods;
        // Braces: one hash slot per provider, should the store be a cluster.
        let base = format!("{}:{{{}}}", store.prefix, config.name);
        let mut keys = vec![format!("{base}:requests"), format!("{base}:tokens")];
        keys.extend(
            fingerprints
                .iter()
                .map(|print| format!("{base}:benched:{print}")),
        );
        let share = |limit: Option<u32>| limit.map(|limit| (limit / pods).max(1));
        Some(FleetRate {
            store: store.clone(),
            provider: config.name.as_str().into(),
            keys,
            limits,
            caps: (lease_cap(limits.0, pods), lease_cap(limits.1, pods)),
            lease: Mutex::new(Lease::new(Instant::now())),
            local: RateLimits::new(
                share(config.requests_per_minute),
                share(config.tokens_per_minute),
                config.max_queue_wait,
            ),
            max_wait: config.max_queue_wait,
        })
    }

    /// The store key of API key `index` while it is benched.
    pub fn bench_key(&self, index: usize) -> Option<&str> {
        self.keys.get(2 + index).map(String::as_str)
    }

    /// Waits for one request and `tokens` tokens (the prompt's estimate) of
    /// the fleet's quota, no longer than the queue wait and `call_end`
    /// allow; refreshes `ring`'s view of keys benched elsewhere.
    ///
    /// # Errors
    /// [`Error::Overloaded`] (`SharedRate`, with the wait as RetryInfo)
    /// when the quota does not come in time; with the store unreachable,
    /// the local share's own [`Error::Overloaded`], or
    /// [`Error::SharedStoreUnavailable`] under `on_unavailable = "closed"`.
    pub async fn admit(
        &self,
        tokens: u32,
        call_end: Instant,
        ring: Option<&KeyRing>,
    ) -> Result<(), Error> {
        let give_up = call_end.min(Instant::now() + self.max_wait);
        // More than a minute's worth can never fit: charge a full minute.
        let need = (
            u64::from(self.limits.0 > 0),
            match self.limits.1 {
                0 => 0,
                limit => u64::from(tokens.clamp(1, limit)),
            },
        );
        loop {
            let now = Instant::now();
            let ask = {
                let mut lease = self.lease.lock().expect("never poisoned");
                let benches_fresh = self.keys.len() == 2
                    || lease
                        .benches_read
                        .is_some_and(|at| now.saturating_duration_since(at) < BENCHES_FRESH);
                if benches_fresh && lease.take(now, need) {
                    return Ok(());
                }
                lease.ask(now, need, self.caps)
            };
            let wait = match self.ask_store(ask, ring).await {
                Ok((granted, Duration::ZERO)) => {
                    let mut lease = self.lease.lock().expect("never poisoned");
                    lease.benches_read = Some(now);
                    lease.grant(now, ask, granted, need);
                    return Ok(());
                }
                Ok((_, wait)) => wait,
                Err(Unreachable) => {
                    self.lease.lock().expect("never poisoned").abandon(ask);
                    return self.fallback(tokens, call_end).await;
                }
            };
            self.lease.lock().expect("never poisoned").abandon(ask);
            if Instant::now() + wait > give_up {
                return Err(Error::Overloaded {
                    provider: self.provider.to_string(),
                    kind: OverloadKind::SharedRate,
                    retry_after: wait,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One round trip: what was granted, and the wait when it was not.
    async fn ask_store(
        &self,
        ask: Ask,
        ring: Option<&KeyRing>,
    ) -> Result<((u64, u64), Duration), Unreachable> {
        let args = [
            u64::from(self.limits.0),
            ask.requests.0,
            ask.requests.1,
            u64::from(self.limits.1),
            ask.tokens.0,
            ask.tokens.1,
        ];
        let reply = self.store.limit(&self.keys, &args).await?;
        let number = |at: usize| reply.get(at).copied().unwrap_or(0);
        if let Some(ring) = ring {
            for (index, millis) in reply.iter().skip(3).enumerate() {
                if let Ok(millis @ 1..) = u64::try_from(*millis) {
                    ring.bench_from_fleet(index, Duration::from_millis(millis));
                }
            }
        }
        let granted = (number(0).max(0) as u64, number(1).max(0) as u64);
        let wait = Duration::from_micros(number(2).max(0) as u64);
        Ok((granted, wait))
    }

    /// The store is unreachable: this pod's share, or a refusal.
    async fn fallback(&self, tokens: u32, call_end: Instant) -> Result<(), Error> {
        let Some(local) = &self.local else {
            // Only keys are shared here: calls go on with the local view.
            return Ok(());
        };
        self.store.count_fallback(&self.provider);
        match self.store.on_unavailable {
            UnavailableMode::Local => local.admit(&self.provider, tokens, call_end).await,
            UnavailableMode::Closed => Err(self.store.refusal(&self.provider)),
        }
    }
}

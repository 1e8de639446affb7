//! Several keys (or deployments) for one provider, used round robin. A key
//! answered with 401/403 (revoked, wrong) or 429 (its own rate limit) is
//! set aside for a cooldown so the next attempt uses another. With a
//! shared store (`[shared]`) a key benched here is benched on every pod:
//! the ring tells the store ([`KeyRing::on_bench`]) and learns of keys
//! benched elsewhere ([`KeyRing::bench_from_fleet`]) by their
//! fingerprints, never the keys.

use crate::secret::ApiKey;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct KeyRing {
    keys: Arc<[ApiKey]>,
    /// Per key: benched until this many ms after `epoch` (0: usable).
    benched_until: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Instant,
    cooldown: Duration,
    /// Told of each key benched here (index, cooldown).
    on_bench: OnceLock<BenchHook>,
}

/// What the ring calls when it benches a key.
struct BenchHook(Box<dyn Fn(usize, Duration) + Send + Sync>);

impl std::fmt::Debug for BenchHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BenchHook")
    }
}

impl KeyRing {
    pub fn new(keys: Vec<ApiKey>, cooldown: Duration) -> Self {
        KeyRing {
            benched_until: keys.iter().map(|_| AtomicU64::new(0)).collect(),
            keys: keys.into(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            cooldown,
            on_bench: OnceLock::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn all(&self) -> &[ApiKey] {
        &self.keys
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next usable key in turn; when every key is benched, the one
    /// that comes back first (better than refusing the call outright).
    pub fn pick(&self) -> Option<(usize, &ApiKey)> {
        let count = self.keys.len();
        if count == 0 {
            return None;
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let usable = (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| self.benched_until[index].load(Ordering::Relaxed) <= now);
        let index = usable.unwrap_or_else(|| {
            (0..count)
                .min_by_key(|&index| self.benched_until[index].load(Ordering::Relaxed))
                .unwrap_or(0)
        });
        Some((index, &self.keys[index]))
    }

    /// Sets key `index` aside for the cooldown, here and (with a shared
    /// store) on every pod.
    pub fn bench(&self, index: usize) {
        self.rest(index, self.cooldown);
        if let Some(hook) = self.on_bench.get() {
            (hook.0)(index, self.cooldown);
        }
    }

    /// Key `index` was benched by another pod and stays so for `left`.
    pub fn bench_from_fleet(&self, index: usize, left: Duration) {
        self.rest(index, left);
    }

    fn rest(&self, index: usize, left: Duration) {
        if let Some(until) = self.benched_until.get(index) {
            let end = self.now_ms() + left.as_millis() as u64;
            until.fetch_max(end.max(1), Ordering::Relaxed);
        }
    }

    /// Calls `hook(index, cooldown)` whenever a key is benched here (set
    /// once; later calls are ignored).
    pub fn on_bench(&self, hook: impl Fn(usize, Duration) + Send + Sync + 'static) {
        let _ = self.on_bench.set(BenchHook(Box::new(hook)));
    }

    /// Per key, a name for it that does not reveal it: the first 16 hex
    /// digits of its SHA-256.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| {
                let digest = ring::digest::digest(&ring::digest::SHA256, key.expose().as_bytes());
                digest.as_ref()[..8]
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        KeyRing::new(
            (0..n).map(|i| ApiKey::new(format!("k{i}"))).collect(),
            Duration::from_secs(60),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_used_in_turn_and_benched_ones_are_skipped() {
        let ring = ring(3);
        let picks: Vec<usize> = (0..6).map(|_| ring.pick().unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        ring.bench(1);
        let picks: Vec<usize> = (0..4).map(|_| ring.pick().unwrap().0).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        tokio::time::advance(Duration::from_secs(61)).await;
        let picks: Vec<usize> = (0..3).map(|_| ring.pick().unwrap().0).collect();
        assert!(picks.contains(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_are_benched_the_first_back_is_used() {
        let ring = ring(2);
        ring.bench(1);
        tokio::time::advance(Duration::from_secs(1)).await;
        ring.bench(0);
        assert_eq!(ring.pick().unwrap().0, 1);
        assert!(KeyRing::new(Vec::new(), Duration::ZERO).pick().is_none());
    }
}

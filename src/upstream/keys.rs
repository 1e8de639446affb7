//! Several keys (or deployments) for one provider, used round robin. A key
//! answered with 401/403 (revoked, wrong) or 429 (its own rate limit) is
//! set aside for a cooldown so the next attempt uses another.

use crate::secret::ApiKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
}

impl KeyRing {
    pub fn new(keys: Vec<ApiKey>, cooldown: Duration) -> Self {
        KeyRing {
            benched_until: keys.iter().map(|_| AtomicU64::new(0)).collect(),
            keys: keys.into(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            cooldown,
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

    pub fn bench(&self, index: usize) {
        if let Some(until) = self.benched_until.get(index) {
            let end = self.now_ms() + self.cooldown.as_millis() as u64;
            until.store(end.max(1), Ordering::Relaxed);
        }
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

//! A retry budget per provider: retries may add at most `ratio` on top of
//! the first attempts of the last window, plus a small floor, so an outage
//! cannot multiply the load on a provider that is already failing.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The two most recent windows, so the count slides instead of resetting.
#[derive(Debug)]
struct Counts {
    window_start: Instant,
    requests: [u64; 2],
    retries: [u64; 2],
}

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: u64,
    window: Duration,
    counts: Mutex<Counts>,
}

impl RetryBudget {
    /// `floor` retries are allowed per window however few requests came.
    pub fn new(ratio: f64, floor: u64, window: Duration) -> Self {
        RetryBudget {
            ratio,
            floor,
            window,
            counts: Mutex::new(Counts {
                window_start: Instant::now(),
                requests: [0; 2],
                retries: [0; 2],
            }),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.with_counts(|counts| counts.requests[1] += 1);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let (ratio, floor) = (self.ratio, self.floor);
        self.with_counts(|counts| {
            let requests = (counts.requests[0] + counts.requests[1]) as f64;
            let allowed = floor + (requests * ratio) as u64;
            if counts.retries[0] + counts.retries[1] < allowed {
                counts.retries[1] += 1;
                true
            } else {
                false
            }
        })
    }

    fn with_counts<T>(&self, change: impl FnOnce(&mut Counts) -> T) -> T {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(counts.window_start);
        if elapsed >= self.window * 2 {
            *counts = Counts {
                window_start: now,
                requests: [0; 2],
                retries: [0; 2],
            };
        } else if elapsed >= self.window {
            counts.requests = [counts.requests[1], 0];
            counts.retries = [counts.retries[1], 0];
            counts.window_start += self.window;
        }
        change(&mut counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 2, Duration::from_secs(10));
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..1000).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 2 + 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_as_windows_pass() {
        let budget = RetryBudget::new(0.2, 1, Duration::from_secs(10));
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(budget.try_withdraw());
    }
}

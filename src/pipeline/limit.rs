//! A concurrency limit per provider with a bounded FIFO queue: at most
//! `max_in_flight` upstream requests at once, at most `max_queue` calls
//! waiting, none waiting longer than `max_wait` or past its call's end. A
//! full queue or an expired wait fails at once with RetryInfo, so callers
//! back off instead of piling up on an overloaded provider.

use crate::error::{Error, OverloadKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

#[derive(Debug)]
pub struct ConcurrencyLimit {
    // tokio's semaphore hands out permits in FIFO order.
    permits: Arc<Semaphore>,
    max_queue: usize,
    max_wait: Duration,
    queued: AtomicUsize,
}

/// A slot in flight; dropping it lets the next queued call go.
pub type Permit = Option<OwnedSemaphorePermit>;

impl ConcurrencyLimit {
    pub fn new(max_in_flight: usize, max_queue: usize, max_wait: Duration) -> Self {
        ConcurrencyLimit {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_queue,
            max_wait,
            queued: AtomicUsize::new(0),
        }
    }

    /// Calls currently waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub async fn acquire(&self, provider: &str, call_end: Instant) -> Result<Permit, Error> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let overloaded = |kind| Error::Overloaded {
            provider: provider.to_owned(),
            kind,
            retry_after: self.max_wait.min(Duration::from_secs(1)),
        };
        let position = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = LeaveQueue(&self.queued);
        if position >= self.max_queue {
            return Err(overloaded(OverloadKind::QueueFull));
        }
        let give_up = call_end.min(Instant::now() + self.max_wait);
        match tokio::time::timeout_at(give_up, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed; treat it like an expired wait.
            Ok(Err(_)) | Err(_) => Err(overloaded(OverloadKind::QueueWait)),
        }
    }
}

struct LeaveQueue<'a>(&'a AtomicUsize);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_fails_at_once_and_the_queue_is_fifo() {
        let limit = Arc::new(ConcurrencyLimit::new(1, 1, Duration::from_secs(10)));
        let held = limit.acquire("p", far()).await.unwrap();
        let waiting = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire("p", far()).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(limit.queued(), 1);
        let full = limit.acquire("p", far()).await.unwrap_err();
        assert!(matches!(
            full,
            Error::Overloaded {
                kind: OverloadKind::QueueFull,
                ..
            }
        ));
        drop(held);
        waiting.await.unwrap().unwrap();
        assert_eq!(limit.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_max_wait_or_the_calls_end() {
        let limit = ConcurrencyLimit::new(1, 10, Duration::from_secs(5));
        let _held = limit.acquire("p", far()).await.unwrap();
        let started = Instant::now();
        let expired = limit.acquire("p", far()).await.unwrap_err();
        assert!(matches!(
            expired,
            Error::Overloaded {
                kind: OverloadKind::QueueWait,
                ..
            }
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let started = Instant::now();
        limit
            .acquire("p", started + Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}

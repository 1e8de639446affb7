//! The cap on chat calls in flight over every edge (`[server]
//! max_calls_in_flight`). A call takes a slot when it arrives and gives it
//! back when it ends (its `Observation` is finished or dropped: an
//! answer delivered, a stream ended or abandoned). A call that finds no
//! slot free is refused at once, not queued: a queue would hold the
//! memory the cap is there to bound.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct CallSlots {
    free: Arc<Semaphore>,
    limit: usize,
}

impl CallSlots {
    /// `limit` slots (at most tokio's `Semaphore::MAX_PERMITS`).
    pub fn new(limit: usize) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        CallSlots {
            free: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A slot, held until dropped; `Err(limit)` when every one is taken.
    pub fn take(&self) -> Result<OwnedSemaphorePermit, usize> {
        self.free
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_comes_back_when_its_call_ends() {
        let slots = CallSlots::new(2);
        let first = slots.take().unwrap();
        let _second = slots.take().unwrap();
        assert_eq!(slots.take().unwrap_err(), 2);
        drop(first);
        assert!(slots.take().is_ok());
    }
}

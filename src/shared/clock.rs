//! The store's clock as this pod last saw it. Windows that the whole
//! fleet counts in (the budgets' hours, days and months) are reckoned on
//! Redis's clock (`TIME`), never on a pod's: pods whose clocks disagree by
//! minutes would otherwise count one call in different windows, or start
//! a new window early. Each answer of the budgets' script carries Redis's
//! time; the pod keeps the difference to its own clock and reckons from
//! its clock plus that difference until the next answer. The script turns
//! back a request whose windows do not hold Redis's now, so a guess that
//! is off only costs a second round trip, never a call counted in the
//! wrong window.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Redis's clock minus this pod's, learned from the store's answers.
#[derive(Debug, Default)]
pub struct FleetClock {
    /// Milliseconds; 0 until the first answer.
    offset_ms: AtomicI64,
}

impl FleetClock {
    /// Now on the store's clock, as far as this pod knows it: unix ms.
    pub fn now_ms(&self) -> i64 {
        local_now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Notes that the store's clock read `store_ms` (unix ms) during a
    /// round trip this pod sent at `sent_ms` and saw answered at
    /// `received_ms` (its own clock, unix ms): the store read its clock,
    /// as best the pod can tell, halfway between.
    pub fn observe(&self, store_ms: i64, sent_ms: i64, received_ms: i64) {
        let midway = sent_ms + (received_ms - sent_ms) / 2;
        self.offset_ms.store(store_ms - midway, Ordering::Relaxed);
    }
}

/// This pod's clock: unix ms.
pub fn local_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_taken_to_read_its_clock_halfway_through_the_round_trip() {
        let clock = FleetClock::default();
        // Sent at 1,000, answered at 1,010 (pod clock); the store read
        // 7,200,005: two hours ahead.
        clock.observe(7_200_005, 1_000, 1_010);
        // Less the milliseconds between the two readings of the clock.
        let ahead = clock.now_ms() - local_now_ms();
        assert!((7_198_900..=7_199_000).contains(&ahead), "{ahead}");
    }

    #[test]
    fn before_any_answer_the_pods_clock_is_the_guess() {
        let clock = FleetClock::default();
        assert!((clock.now_ms() - local_now_ms()).abs() < 1_000);
    }
}

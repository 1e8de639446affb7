//! Giving memory back after a burst. glibc keeps what a burst of calls
//! freed (a thousand streams leave some 35 MB behind) until it is asked
//! for it, so the sidecar asks — with `malloc_trim`, in the `heap-trim`
//! crate — when calls pause: never while calls keep arriving (the memory
//! would be needed again at once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Calls begun plus calls ended, process-wide: its standing still means
/// nothing started or finished.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// How long calls must pause before the free memory is released.
const QUIET: Duration = Duration::from_secs(1);

/// A call began or ended.
pub fn note_activity() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// When to release: 1, 2, 4, 8 ... seconds into a pause (up to about 17
/// minutes), never while calls flow. The first release takes what the
/// burst freed; the later ones what is freed as the pause goes on, such as
/// idle upstream connections closing (after `pool_idle_timeout_ms`).
#[derive(Debug)]
struct Pauses {
    seen: u64,
    /// Whole periods without activity since the last call, if there was
    /// any since the sidecar started.
    quiet_periods: Option<u32>,
}

/// The last release in one pause, in periods.
const LAST_RELEASE: u32 = 1024;

impl Pauses {
    fn new(activity: u64) -> Pauses {
        Pauses {
            seen: activity,
            quiet_periods: None,
        }
    }

    /// Called once per period with the activity count; true when it is
    /// time to release.
    fn at_tick(&mut self, activity: u64) -> bool {
        if activity != self.seen {
            self.seen = activity;
            self.quiet_periods = Some(0);
            return false;
        }
        let Some(quiet) = self.quiet_periods.as_mut() else {
            return false;
        };
        if *quiet > LAST_RELEASE {
            return false;
        }
        *quiet += 1;
        quiet.is_power_of_two()
    }
}

/// Runs until `stopped`: releases free memory each time calls pause.
pub async fn release_after_bursts(mut stopped: watch::Receiver<bool>) {
    let mut pauses = Pauses::new(ACTIVITY.load(Ordering::Relaxed));
    let mut tick = tokio::time::interval(QUIET);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if pauses.at_tick(ACTIVITY.load(Ordering::Relaxed)) {
            let released = heap_trim::release_free_memory();
            tracing::debug!(released, "calls paused: free memory given back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pauses;

    #[test]
    fn releases_as_a_pause_lengthens_and_never_while_calls_flow() {
        let mut pauses = Pauses::new(0);
        assert!(!pauses.at_tick(0), "nothing happened yet");
        assert!(!pauses.at_tick(5), "calls are flowing");
        assert!(!pauses.at_tick(9), "calls are flowing");
        let released: Vec<u32> = (1..=2000).filter(|_| pauses.at_tick(9)).collect();
        // The index of each quiet period that released.
        let expected: Vec<u32> = (0..=10).map(|power| 1 << power).collect();
        assert_eq!(released, expected);
        assert!(!pauses.at_tick(10), "a call again");
        assert!(pauses.at_tick(10), "one quiet period into the next pause");
        assert!(pauses.at_tick(10), "two");
        assert!(!pauses.at_tick(10), "three");
        assert!(pauses.at_tick(10), "four");
    }
}

//! A circuit breaker per provider: after `threshold` failures in a row the
//! provider is skipped for `cooldown` (callers fail fast, or fall back),
//! then one probe call at a time decides whether it is back.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe may go at `next_probe`; a probe that never reports (its
    /// caller went away) only delays the next one by a cooldown.
    HalfOpen {
        next_probe: Instant,
    },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// `threshold` 0 turns the breaker off.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go now; `Err` holds how long until one may.
    pub fn allow(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } | State::HalfOpen { next_probe: until } if now < until => {
                Err(until - now)
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen {
                    next_probe: now + self.cooldown,
                };
                Ok(())
            }
        }
    }

    /// Records a success; true when this closed an open circuit.
    pub fn on_success(&self) -> bool {
        let mut state = self.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        was_open
    }

    /// Records a failure; true when this opened the circuit.
    pub fn on_failure(&self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut state = self.lock();
        let was_closed = matches!(*state, State::Closed { .. });
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            // A failed probe: straight back to open.
            State::HalfOpen { .. } | State::Open { .. } => self.threshold,
        };
        *state = if failures >= self.threshold {
            State::Open {
                until: Instant::now() + self.cooldown,
            }
        } else {
            State::Closed { failures }
        };
        was_closed && matches!(*state, State::Open { .. })
    }

    /// Where the breaker stands, for health and admin views.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A circuit's state as shown: calls flow (closed), are skipped until the
/// cooldown ends (open), or one probe is let through (half open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`, as the admin views spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The `llm_sidecar.circuit.state` gauge: 0 closed, 1 half open, 2 open.
    pub fn gauge(self) -> u64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_half_opens_and_recovers() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(10));
        breaker.on_failure();
        breaker.on_failure();
        breaker.on_success();
        breaker.on_failure();
        breaker.on_failure();
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "a success resets the count"
        );
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(breaker.allow(), Err(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.allow(), Ok(()), "one probe");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(breaker.allow().is_err(), "only one probe at a time");
        breaker.on_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.allow(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(5));
        breaker.on_failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        breaker.allow().unwrap();
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_opens() {
        let breaker = CircuitBreaker::new(0, Duration::from_secs(5));
        for _ in 0..100 {
            breaker.on_failure();
        }
        assert_eq!(breaker.allow(), Ok(()));
    }
}

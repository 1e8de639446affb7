//! When to try a failed call again, and how long to wait first.
//!
//! Only what the classification table calls retryable is retried (429,
//! 408, 409, 5xx, 529, connect errors and in-band overloads; never 400,
//! 401, 403, 404, 422, context length or a spent quota). The wait is the
//! upstream's `Retry-After` when it sent one, else exponential backoff with
//! full jitter; a wait that would pass the call's end is not taken. With
//! no deadline from the caller, a `Retry-After` longer than
//! `retry.max_retry_after_ms` is not waited out either: the caller gets
//! the error at once, with the upstream's `Retry-After`, and decides (a
//! caller whose own timeout is shorter would otherwise see a timeout
//! instead of the 429 it could act on).

use crate::error::{Error, classify};
use std::time::Duration;
use tokio::time::Instant;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retries.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// With no caller deadline, the longest `Retry-After` waited out.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from(&crate::config::RetryConfig::default())
    }
}

impl From<&crate::config::RetryConfig> for RetryPolicy {
    fn from(config: &crate::config::RetryConfig) -> Self {
        RetryPolicy {
            max_attempts: config.max_attempts,
            base_delay: config.base_delay,
            max_delay: config.max_delay,
            max_retry_after: config.max_retry_after,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryAfter(Duration),
    /// Not retryable, out of attempts, or the wait would outlive the call.
    GiveUp,
    /// The upstream asked for a longer wait than the sidecar takes without
    /// a caller deadline: the error goes back now, with its `Retry-After`,
    /// and retrying is the caller's to decide.
    LeaveToCaller,
}

/// When a call must end, as the retry decision needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub end: Instant,
    /// Whether the caller set it (`grpc-timeout`, an SDK's timeout header),
    /// rather than only the sidecar's own total.
    pub set_by_caller: bool,
}

impl Deadline {
    /// A deadline the caller set.
    pub fn caller(end: Instant) -> Deadline {
        Deadline {
            end,
            set_by_caller: true,
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniformly random in [0, min(cap, base·2^(retry-1))], so
    /// many callers failing at once do not come back at once. `random` is
    /// in [0, 1).
    pub fn backoff(&self, retry: u32, random: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }

    /// Decides after attempt number `attempts` failed with `error`;
    /// `deadline` is when the call ends, if anything says.
    pub fn next(
        &self,
        error: &Error,
        attempts: u32,
        now: Instant,
        deadline: Option<Deadline>,
        random: f64,
    ) -> Next {
        if attempts >= self.max_attempts || !classify(error).retryable {
            return Next::GiveUp;
        }
        let caller_waits = deadline.is_some_and(|deadline| deadline.set_by_caller);
        let asked = error.retry_after();
        if !caller_waits && asked.is_some_and(|asked| asked > self.max_retry_after) {
            return Next::LeaveToCaller;
        }
        let wait = asked.unwrap_or_else(|| self.backoff(attempts, random));
        match deadline {
            Some(deadline) if now + wait >= deadline.end => Next::GiveUp,
            _ => Next::RetryAfter(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16, retry_after: Option<Duration>) -> Error {
        Error::upstream_status(status, retry_after)
    }

    #[test]
    fn backoff_grows_exponentially_to_the_cap_with_full_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.backoff(1, 0.999_999),
            Duration::from_millis(500).mul_f64(0.999_999)
        );
        assert_eq!(policy.backoff(3, 0.5), Duration::from_millis(1000));
        assert_eq!(policy.backoff(20, 1.0), Duration::from_secs(30));
        assert_eq!(policy.backoff(2, 0.0), Duration::ZERO);
    }

    #[test]
    fn retryable_statuses_are_retried_and_others_never() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        for status in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(
                matches!(
                    policy.next(&upstream(status, None), 1, now, None, 0.5),
                    Next::RetryAfter(_)
                ),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert_eq!(
                policy.next(&upstream(status, None), 1, now, None, 0.5),
                Next::GiveUp,
                "{status}"
            );
        }
        let connect = Error::Connect {
            provider: "p".into(),
            detail: "refused".into(),
        };
        assert!(matches!(
            policy.next(&connect, 1, now, None, 0.5),
            Next::RetryAfter(_)
        ));
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let policy = RetryPolicy::default();
        let error = upstream(429, Some(Duration::from_secs(3)));
        assert_eq!(
            policy.next(&error, 1, Instant::now(), None, 0.5),
            Next::RetryAfter(Duration::from_secs(3))
        );
    }

    #[test]
    fn a_long_retry_after_goes_back_to_a_caller_without_a_deadline() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let error = upstream(429, Some(Duration::from_secs(20)));
        assert_eq!(policy.next(&error, 1, now, None, 0.5), Next::LeaveToCaller);
        // Only the sidecar's own total: still the caller's to decide.
        let total = Deadline {
            end: now + Duration::from_secs(120),
            set_by_caller: false,
        };
        assert_eq!(
            policy.next(&error, 1, now, Some(total), 0.5),
            Next::LeaveToCaller
        );
        // A caller that said it waits 60 s gets the wait taken for it.
        let waits = Deadline::caller(now + Duration::from_secs(60));
        assert_eq!(
            policy.next(&error, 1, now, Some(waits), 0.5),
            Next::RetryAfter(Duration::from_secs(20))
        );
        // Up to the cap, nothing changes.
        let short = upstream(429, Some(policy.max_retry_after));
        assert_eq!(
            policy.next(&short, 1, now, None, 0.5),
            Next::RetryAfter(policy.max_retry_after)
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let now = Instant::now();
        assert!(matches!(
            policy.next(&upstream(503, None), 1, now, None, 0.5),
            Next::RetryAfter(_)
        ));
        assert_eq!(
            policy.next(&upstream(503, None), 2, now, None, 0.5),
            Next::GiveUp
        );
    }

    #[test]
    fn a_wait_past_the_deadline_is_not_taken() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let error = upstream(429, Some(Duration::from_secs(5)));
        assert_eq!(
            policy.next(
                &error,
                1,
                now,
                Some(Deadline::caller(now + Duration::from_secs(2))),
                0.5
            ),
            Next::GiveUp
        );
        assert!(matches!(
            policy.next(
                &error,
                1,
                now,
                Some(Deadline::caller(now + Duration::from_secs(10))),
                0.5
            ),
            Next::RetryAfter(_)
        ));
    }
}

//! What a failed call tells the caller's own retry logic, on both edges,
//! so the caller's retries do not stack on the sidecar's: the OpenAI SDKs
//! retry twice by default unless the response says `x-should-retry: false`
//! (their documented override), and gRPC's retry policy waits as
//! `grpc-retry-pushback-ms` says, never retrying on a negative value
//! (gRFC A6).

use crate::error::{Error, classify};
use crate::inbound::observe::Finished;
use crate::pipeline::RetryStop;
use std::time::Duration;
use tokio::time::Instant;

/// The advice for one failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAdvice {
    /// Retrying cannot help, or the sidecar already did: `x-should-retry:
    /// false`, a negative pushback.
    DoNotRetry,
    /// Worth another try after this long (the upstream's or our own
    /// `Retry-After`): the pushback in milliseconds; no `x-should-retry`.
    RetryAfter(Duration),
    /// Nothing to add: the caller's own policy decides.
    CallerDecides,
}

impl RetryAdvice {
    /// The advice for `error` after the sidecar made `attempts` upstream
    /// attempts and stopped retrying for `stop`, if it did; `time_left` is
    /// how long the caller still waits, if it said (a wait past it is no
    /// retry at all).
    pub fn for_error(
        error: &Error,
        attempts: u32,
        stop: Option<RetryStop>,
        time_left: Option<Duration>,
    ) -> RetryAdvice {
        let waits = || match error.retry_after() {
            Some(delay) if time_left.is_some_and(|left| delay >= left) => RetryAdvice::DoNotRetry,
            Some(delay) => RetryAdvice::RetryAfter(delay),
            None => RetryAdvice::CallerDecides,
        };
        match stop {
            // Too long a wait for the sidecar to take without a deadline:
            // the caller's to wait out, which is the point of returning.
            Some(RetryStop::LeftToCaller) => return waits(),
            // The provider is failing broadly: another retry from the
            // caller adds to the outage the budget holds back.
            Some(RetryStop::BudgetExhausted) => return RetryAdvice::DoNotRetry,
            None => {}
        }
        if attempts > 1 || retry_cannot_help(error) {
            return RetryAdvice::DoNotRetry;
        }
        waits()
    }

    /// The advice for a finished call that failed with `error`: its
    /// attempts, why it stopped retrying, and the caller's time left now.
    pub fn for_call(error: &Error, finished: &Finished) -> RetryAdvice {
        let time_left = finished
            .deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        RetryAdvice::for_error(error, finished.attempts, finished.retry_stop, time_left)
    }

    /// `x-should-retry`'s value, when the advice has one.
    pub fn should_retry_header(self) -> Option<&'static str> {
        match self {
            RetryAdvice::DoNotRetry => Some("false"),
            _ => None,
        }
    }

    /// `grpc-retry-pushback-ms`'s value, when the advice has one.
    pub fn pushback_ms(self) -> Option<i64> {
        match self {
            RetryAdvice::DoNotRetry => Some(-1),
            RetryAdvice::RetryAfter(delay) => {
                Some(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
            }
            RetryAdvice::CallerDecides => None,
        }
    }
}

/// Failures the same request cannot get past by being sent again: it is
/// wrong, or the sidecar's key or config is. The sidecar's own limits
/// (queue, circuit, calls in flight) and deadlines are not among them: a
/// later try may pass.
fn retry_cannot_help(error: &Error) -> bool {
    match error {
        Error::InvalidRequest(_)
        | Error::ModelNotFound { .. }
        | Error::ProviderNotReady { .. }
        | Error::MalformedResponse { .. }
        | Error::ResponseTooLarge { .. }
        | Error::BudgetExceeded(_)
        | Error::Edge { .. } => true,
        Error::Upstream(_) => !classify(error).retryable,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16, retry_after: Option<Duration>) -> Error {
        Error::upstream_status(status, retry_after)
    }

    #[test]
    fn an_error_the_sidecar_already_retried_is_not_retried_again() {
        let advice = RetryAdvice::for_error(&upstream(503, None), 3, None, None);
        assert_eq!(advice, RetryAdvice::DoNotRetry);
        assert_eq!(advice.should_retry_header(), Some("false"));
        assert_eq!(advice.pushback_ms(), Some(-1));
    }

    #[test]
    fn an_error_no_retry_can_fix_is_not_retried() {
        for error in [
            upstream(400, None),
            upstream(401, None),
            Error::invalid("`messages` must not be empty"),
            Error::ProviderNotReady {
                provider: "p".into(),
                reason: "no key".into(),
            },
        ] {
            assert_eq!(
                RetryAdvice::for_error(&error, 1, None, None),
                RetryAdvice::DoNotRetry,
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_single_attempt_leaves_the_caller_its_retry() {
        let wait = Duration::from_millis(1500);
        let advice = RetryAdvice::for_error(&upstream(429, Some(wait)), 1, None, None);
        assert_eq!(advice, RetryAdvice::RetryAfter(wait));
        assert_eq!(advice.should_retry_header(), None);
        assert_eq!(advice.pushback_ms(), Some(1500));
        let advice = RetryAdvice::for_error(&upstream(503, None), 1, None, None);
        assert_eq!(advice, RetryAdvice::CallerDecides);
        assert_eq!(advice.pushback_ms(), None);
    }

    #[test]
    fn a_long_retry_after_returned_early_is_the_callers_to_wait_out() {
        let wait = Duration::from_secs(20);
        let advice = RetryAdvice::for_error(
            &upstream(429, Some(wait)),
            2,
            Some(RetryStop::LeftToCaller),
            None,
        );
        assert_eq!(advice, RetryAdvice::RetryAfter(wait));
        assert_eq!(advice.should_retry_header(), None);
    }

    #[test]
    fn a_spent_retry_budget_asks_the_caller_not_to_retry_either() {
        let advice = RetryAdvice::for_error(
            &upstream(429, Some(Duration::from_secs(1))),
            1,
            Some(RetryStop::BudgetExhausted),
            None,
        );
        assert_eq!(advice, RetryAdvice::DoNotRetry);
    }

    #[test]
    fn a_wait_past_the_callers_deadline_is_no_retry() {
        let wait = Duration::from_secs(20);
        let error = upstream(429, Some(wait));
        let advice = RetryAdvice::for_error(&error, 1, None, Some(Duration::from_secs(15)));
        assert_eq!(advice, RetryAdvice::DoNotRetry);
        assert_eq!(advice.pushback_ms(), Some(-1));
        let advice = RetryAdvice::for_error(&error, 1, None, Some(Duration::from_secs(60)));
        assert_eq!(advice, RetryAdvice::RetryAfter(wait));
    }
}

//! Requests- and tokens-per-minute limits per provider (GCRA, from the
//! governor crate), so a pod stays inside its share of a provider account.
//! A call waits for its turn only as long as the queue wait and its own
//! bounds allow; otherwise it fails at once with RetryInfo, like a full
//! queue. Tokens are charged up front from an estimate of the prompt: the
//! completion's size is not known until it is generated.

use crate::error::{Error, OverloadKind};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimits {
    requests: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    clock: DefaultClock,
    max_wait: Duration,
}

fn per_minute(limit: Option<u32>) -> Option<(DefaultDirectRateLimiter, NonZeroU32)> {
    let burst = NonZeroU32::new(limit?)?;
    Some((RateLimiter::direct(Quota::per_minute(burst)), burst))
}

impl RateLimits {
    /// `None` when neither limit is set.
    pub fn new(
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
        max_wait: Duration,
    ) -> Option<Self> {
        if requests_per_minute.is_none() && tokens_per_minute.is_none() {
            return None;
        }
        Some(RateLimits {
            requests: per_minute(requests_per_minute),
            tokens: per_minute(tokens_per_minute),
            clock: DefaultClock::default(),
            max_wait,
        })
    }

    /// Waits for one request and `tokens` tokens of quota, or fails.
    pub async fn admit(&self, provider: &str, tokens: u32, call_end: Instant) -> Result<(), Error> {
        let give_up = call_end.min(Instant::now() + self.max_wait);
        if let Some((limiter, _)) = &self.requests {
            self.wait_for(provider, give_up, || {
                limiter
                    .check()
                    .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
            })
            .await?;
        }
        if let Some((limiter, burst)) = &self.tokens {
            // More than a minute's worth can never fit: charge a full minute.
            let cells = NonZeroU32::new(tokens.clamp(1, burst.get())).unwrap_or(*burst);
            self.wait_for(provider, give_up, || match limiter.check_n(cells) {
                Ok(Ok(())) | Err(_) => Ok(()),
                Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            })
            .await?;
        }
        Ok(())
    }

    async fn wait_for(
        &self,
        provider: &str,
        give_up: Instant,
        mut check: impl FnMut() -> Result<(), Duration>,
    ) -> Result<(), Error> {
        loop {
            let wait = match check() {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            if Instant::now() + wait > give_up {
                return Err(Error::Overloaded {
                    provider: provider.to_owned(),
                    kind: OverloadKind::Rate,
                    retry_after: wait,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// A rough count of the prompt's tokens (about four bytes each), enough to
/// keep a tokens-per-minute budget honest without a tokenizer.
pub fn estimate_prompt_tokens(request: &crate::model::ChatRequest) -> u32 {
    u32::try_from(request.prompt_text_bytes() / 4 + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn requests_beyond_the_rate_fail_with_retry_info_when_the_wait_is_too_long() {
        let limits = RateLimits::new(Some(2), None, Duration::from_millis(100)).unwrap();
        limits.admit("p", 1, far()).await.unwrap();
        limits.admit("p", 1, far()).await.unwrap();
        let error = limits.admit("p", 1, far()).await.unwrap_err();
        match error {
            Error::Overloaded {
                kind: OverloadKind::Rate,
                retry_after,
                ..
            } => {
                assert!(retry_after > Duration::from_secs(20), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn tokens_are_charged_from_the_estimate() {
        let limits = RateLimits::new(None, Some(1000), Duration::from_millis(50)).unwrap();
        limits.admit("p", 600, far()).await.unwrap();
        assert!(
            limits.admit("p", 600, far()).await.is_err(),
            "1200 tokens in a 1000/min budget"
        );
        assert!(limits.admit("p", 300, far()).await.is_ok());
    }

    #[test]
    fn no_limits_no_limiter() {
        assert!(RateLimits::new(None, None, Duration::ZERO).is_none());
    }
}

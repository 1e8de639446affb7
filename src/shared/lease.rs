//! The local cache of fleet-wide capacity: a lease of requests and tokens
//! already charged to the shared limit, spent here without a round trip.
//!
//! Why a lease (and not a cached view of the counters): capacity in a
//! lease was taken from the shared GCRA before it is spent, so the fleet
//! never admits a unit nobody paid for. What a lease can do is move units
//! in time: units taken before a window began and spent inside it come on
//! top of what the window itself allows. So the bound is what is held in
//! leases at any instant, and it is kept small:
//!
//! **A pod holds at most `L = floor(10 % × limit ÷ expected_pods)` units of
//! a limit beyond the call being admitted, so the pods the configuration
//! was told about (`expected_pods`) over-admit by at most 10 % of that
//! limit in any window, fleet-wide.** With `L = 0` (small limits) every
//! call asks the store and nothing is over-admitted. More pods than
//! `expected_pods` over-admit by at most `L` each.
//!
//! A lease lives [`LEASE_TTL`]; what is unspent then is dropped (it was
//! charged: dropping wastes capacity, never over-admits). Its size follows
//! the pod's recent pace (what it spent since the last refill, scaled to
//! one TTL, capped at `L`), so a quiet pod does not waste a full lease.
//! Only one refill at a time asks for more than its own call needs.

use std::time::Duration;
use tokio::time::Instant;

/// How long leased capacity may wait to be spent.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// The share of a limit all expected pods may hold in leases together.
pub const LEASE_SHARE: f64 = 0.10;

/// `L` of the module doc: the most units of `limit` one pod may hold
/// beyond its current call.
pub fn lease_cap(limit: u32, expected_pods: u32) -> u64 {
    (f64::from(limit) * LEASE_SHARE / f64::from(expected_pods.max(1))).floor() as u64
}

/// What a round trip asks the script for, per limit: at least `min` (the
/// call's own need), at most `max` (the need plus the lease).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    pub requests: (u64, u64),
    pub tokens: (u64, u64),
    /// This ask refills the lease (only one at a time does).
    pub refill: bool,
}

/// One provider's lease on this pod.
#[derive(Debug)]
pub struct Lease {
    requests: u64,
    tokens: u64,
    expires: Instant,
    /// Since when a refill has been out (a call dropped mid-way never
    /// reports back: after [`LEASE_TTL`] another call may refill).
    refilling: Option<Instant>,
    /// Spent since `since` (the last refill): the pace the next lease
    /// follows.
    used: (u64, u64),
    since: Instant,
    /// When the benched API keys were last read from the store.
    pub benches_read: Option<Instant>,
}

impl Lease {
    pub fn new(now: Instant) -> Lease {
        Lease {
            requests: 0,
            tokens: 0,
            expires: now,
            refilling: None,
            used: (0, 0),
            since: now,
            benches_read: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        if now >= self.expires {
            self.requests = 0;
            self.tokens = 0;
        }
    }

    /// Spends `need` (requests, tokens) from the lease, if it holds them.
    pub fn take(&mut self, now: Instant, need: (u64, u64)) -> bool {
        self.expire(now);
        if self.requests < need.0 || self.tokens < need.1 {
            return false;
        }
        self.requests -= need.0;
        self.tokens -= need.1;
        self.used.0 += need.0;
        self.used.1 += need.1;
        true
    }

    /// What to ask the store for a call that needs `need` (requests,
    /// tokens), with `caps` the `L` of each limit.
    pub fn ask(&mut self, now: Instant, need: (u64, u64), caps: (u64, u64)) -> Ask {
        self.expire(now);
        let refill = self
            .refilling
            .is_none_or(|since| now.saturating_duration_since(since) >= LEASE_TTL);
        let (mut extra_requests, mut extra_tokens) = (0, 0);
        if refill {
            self.refilling = Some(now);
            let elapsed = now
                .saturating_duration_since(self.since)
                .max(Duration::from_millis(1));
            let pace = |used: u64| {
                (used as f64 * LEASE_TTL.as_secs_f64() / elapsed.as_secs_f64()).ceil() as u64
            };
            extra_requests = pace(self.used.0).min(caps.0);
            extra_tokens = pace(self.used.1).min(caps.1);
            self.used = (0, 0);
            self.since = now;
        }
        let range = |need: u64, held: u64, extra: u64| {
            let min = need.saturating_sub(held);
            (min, min.max((need + extra).saturating_sub(held)))
        };
        Ask {
            requests: range(need.0, self.requests, extra_requests),
            tokens: range(need.1, self.tokens, extra_tokens),
            refill,
        }
    }

    /// The store granted `granted` (at least the ask's minimum): the call
    /// takes its own, the rest is the lease.
    pub fn grant(&mut self, now: Instant, ask: Ask, granted: (u64, u64), need: (u64, u64)) {
        self.expire(now);
        if ask.refill {
            self.refilling = None;
        }
        self.requests = (self.requests + granted.0).saturating_sub(need.0);
        self.tokens = (self.tokens + granted.1).saturating_sub(need.1);
        self.used.0 += need.0;
        self.used.1 += need.1;
        if granted != (0, 0) {
            self.expires = now + LEASE_TTL;
        }
    }

    /// The ask came to nothing (a wait, or no store).
    pub fn abandon(&mut self, ask: Ask) {
        if ask.refill {
            self.refilling = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_tenth_of_the_limit_shared_by_the_expected_pods() {
        assert_eq!(lease_cap(1000, 1), 100);
        assert_eq!(lease_cap(1000, 4), 25);
        assert_eq!(lease_cap(60, 2), 3);
        assert_eq!(lease_cap(9, 1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_never_holds_more_than_the_cap_beyond_its_call() {
        let caps = (5, 500);
        let mut lease = Lease::new(Instant::now());
        // A busy pod: calls every millisecond, each 100 tokens.
        for _ in 0..200 {
            tokio::time::advance(Duration::from_millis(1)).await;
            let now = Instant::now();
            if lease.take(now, (1, 100)) {
                continue;
            }
            let ask = lease.ask(now, (1, 100), caps);
            // The store grants all it is asked.
            lease.grant(now, ask, (ask.requests.1, ask.tokens.1), (1, 100));
            assert!(
                lease.requests <= caps.0 && lease.tokens <= caps.1,
                "{lease:?}"
            );
        }
        // A second ask while a refill is out asks for its own need only.
        let now = Instant::now();
        let mut lease = Lease::new(now);
        lease.used = (50, 5000);
        let first = lease.ask(now, (1, 100), caps);
        let second = lease.ask(now, (1, 100), caps);
        assert_eq!(first.requests, (1, 6));
        assert_eq!(second.requests, (1, 1));
        assert_eq!(second.tokens, (100, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unspent_lease_expires() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        let ask = Ask {
            requests: (1, 4),
            tokens: (0, 0),
            refill: true,
        };
        lease.grant(now, ask, (4, 0), (1, 0));
        assert!(lease.take(now, (1, 0)));
        tokio::time::advance(LEASE_TTL).await;
        assert!(!lease.take(Instant::now(), (1, 0)));
    }
}

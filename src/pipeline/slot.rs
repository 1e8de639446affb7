//! A provider's slot: the provider and everything that stands between a
//! call and it (retry budget, circuit, rates, concurrency limit).

use super::*;
use crate::shared::FleetRate;

/// A provider with its retry settings and budget.
#[derive(Debug)]
pub(super) struct ProviderSlot {
    pub(super) provider: Provider,
    pub(super) max_attempts: Option<u32>,
    /// The global timeouts with this provider's changes.
    pub(super) timeouts: Timeouts,
    pub(super) budget: RetryBudget,
    pub(super) limit: Option<ConcurrencyLimit>,
    pub(super) rate: Option<RateLimits>,
    /// The fleet-wide limits (`[shared]`); when set, they stand in for
    /// `rate`, which then serves only as their per-pod fallback.
    pub(super) fleet: Option<FleetRate>,
    pub(super) circuit: CircuitBreaker,
    pub(super) in_flight: InFlight,
}

impl ProviderSlot {
    /// Rate quota (if the provider has rates) for one request, then a slot
    /// under its concurrency limit (if it has one).
    pub(super) async fn acquire(
        &self,
        bounds: Bounds,
        request: &ChatRequest,
        call: &CallContext,
        trace: AttemptTrace<'_>,
        attempt: &TraceContext,
    ) -> Result<Permit, Error> {
        if self.rate.is_none() && self.limit.is_none() && self.fleet.is_none() {
            return Ok(None);
        }
        let asked = Instant::now();
        let permit = self.acquire_quota_and_slot(bounds, request).await;
        let waited = asked.elapsed();
        call.progress.add_queue_wait(waited);
        trace.queued(attempt, &self.provider, waited);
        permit
    }

    async fn acquire_quota_and_slot(
        &self,
        bounds: Bounds,
        request: &ChatRequest,
    ) -> Result<Permit, Error> {
        if let Some(fleet) = &self.fleet {
            let tokens = estimate_prompt_tokens(request);
            fleet
                .admit(tokens, bounds.end(), self.provider.key_ring())
                .await?;
        } else if let Some(rate) = &self.rate {
            let tokens = estimate_prompt_tokens(request);
            rate.admit(&self.provider.name, tokens, bounds.end())
                .await?;
        }
        match &self.limit {
            None => Ok(None),
            Some(limit) => limit.acquire(&self.provider.name, bounds.end()).await,
        }
    }
}

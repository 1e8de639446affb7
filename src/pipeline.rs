//! The one way every call goes, whichever edge it came in by. The stages,
//! in order, and why each stands where it does:
//!
//! 1. **capacity** (`CallContext::over_capacity`): a call over the
//!    sidecar's cap on calls in flight is refused before it costs anything.
//! 2. **validate** (`validate.rs`): a request that cannot succeed is
//!    refused before a route, a quota or a retry is spent on it.
//! 3. **route** (`routing.rs`): the model names its targets, the
//!    primary then its fallbacks, each with its retry policy and timeouts.
//!    Then the **budgets** (`crate::budget`): what the call may cost is
//!    reserved, or the call refused, before any provider is asked.
//! 4. per target, the **fallback loop** (`fallback.rs`): a failure that says
//!    the provider is unwell passes the call to the next target, only
//!    before anything reached the caller;
//! 5. per attempt, the **attempt loop** (`attempt.rs`):
//!    - **circuit**: an open circuit skips the provider at once;
//!    - **rates, then queue** (`slot.rs`): a quota (the fleet's, in
//!      [`crate::shared`], with a `[shared]` store), then a concurrency
//!      slot, each waited for no longer than the call's bounds allow;
//!    - **call** the provider, under the per-attempt timeouts;
//!    - **first chunk** (streams): an attempt ends when it arrives, so a
//!      retry never repeats output;
//!    - **retry** by the policy (`retry.rs`: backoff or the upstream's
//!      Retry-After, never past the deadline), paid from the provider's
//!      **budget** (`retry_budget.rs`) so retries cannot multiply an outage;
//! 6. **bounded stream** (`bounded_stream.rs`): past its first chunk a
//!    stream is bounded by the idle gap, the call's end and shutdown.
//! 7. **resume** (`resume.rs`, opt-in): a stream cut after output went out
//!    continues on a target that takes a prefill, outside the bounded
//!    stream, so the continuation gets bounds (and a slot) of its own.
//!
//! Everything runs inside the call's bounds (`bounds.rs`: the caller's
//! deadline or our total, whichever ends first); nothing else talks to
//! providers.

mod attempt;
mod attempt_trace;
mod bounded_stream;
mod bounds;
mod circuit;
mod fallback;
mod handle;
mod in_flight;
mod limit;
mod progress;
mod rate;
mod resume;
mod retry;
mod retry_budget;
pub mod routing;
mod slot;
pub mod validate;

pub use bounded_stream::BoundedStream;
pub use bounds::Bounds;
pub use circuit::{CircuitBreaker, CircuitState};
pub use handle::PipelineHandle;
pub use in_flight::{InFlight, InFlightGuard};
pub use limit::{ConcurrencyLimit, Permit};
pub use progress::{CallProgress, ProgressSnapshot, RetryStop};
pub use rate::{RateLimits, estimate_prompt_tokens};
pub use retry::{Deadline, Next, RetryPolicy};
pub use retry_budget::RetryBudget;

use attempt::Routed;
use attempt_trace::AttemptTrace;
use fallback::{Streaming, Unary, serve};
use slot::ProviderSlot;

use crate::config::{Config, Env, Timeouts};
use crate::error::{Error, TimeoutKind, classify};
use crate::model::{ChatRequest, ChatResponse};
use crate::secret::Scrubber;
use crate::shared::{FleetRate, SharedStore};
use crate::telemetry::Telemetry;
use crate::upstream::{ChunkStream, ClientError, PassedHeaders, Provider, Reply, UpstreamClients};
use futures::StreamExt;
use opentelemetry::Context as TraceContext;
use routing::{RouteInfo, Router};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use validate::{check_caller, validate};

/// The window over which a provider's retry budget is counted.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// What the edge knows about the call that the pipeline must honour.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the caller stops waiting (its `grpc-timeout`).
    pub deadline: Option<Instant>,
    /// Streams: when the caller stops waiting for the first byte (an
    /// SDK's read timeout, which bounds a gap, not the whole stream).
    pub first_byte_deadline: Option<Instant>,
    /// The caller's own cap on attempts (0 or 1: no retries, for callers
    /// that retry themselves); never more than the route or provider
    /// allows.
    pub max_attempts: Option<u32>,
    /// Filled in by the pipeline as it works, read by the edge afterwards.
    pub progress: Arc<CallProgress>,
    /// The call's trace (the edge's server span): attempts become its
    /// children and carry it upstream in `traceparent`.
    pub trace: opentelemetry::Context,
    /// Who the caller says it is, as its header said it (validated here,
    /// since the ledger keeps it).
    pub caller: Option<CallerName>,
    /// Set to the cap when the call came with that many already in flight
    /// (`server.max_calls_in_flight`): it is refused before anything else.
    pub over_capacity: Option<usize>,
    /// The budgets the call is held to (`None`: none are configured).
    pub budget: Option<BudgetCheck>,
}

/// The budgets a call is held to, who it is for them, and the prices its
/// reservation is priced at.
#[derive(Debug, Clone)]
pub struct BudgetCheck {
    pub budgets: Arc<crate::budget::Budgets>,
    /// Its caller token's name, else what `x-llm-caller` said, else
    /// `uid:<uid>` of the peer process on a Unix socket.
    pub caller: Option<String>,
    /// The request's `metadata`.
    pub tags: std::collections::BTreeMap<String, String>,
    pub pricing: Arc<crate::ledger::Pricing>,
}

/// What the caller's headers (or request) said about the call's time and
/// attempts; see the fields of [`CallContext`] of the same names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallLimits {
    pub deadline: Option<Instant>,
    pub first_byte_deadline: Option<Instant>,
    pub max_attempts: Option<u32>,
}

/// A caller's name and the header that carried it (`x-llm-caller` unless
/// `ledger.caller_header` says otherwise).
#[derive(Debug, Clone)]
pub struct CallerName {
    pub header: http::HeaderName,
    pub name: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderState<'a> {
    pub name: &'a str,
    pub circuit: CircuitState,
    pub in_flight: usize,
    pub queued: usize,
}

/// An answer together with who gave it and how many tries it took.
#[derive(Debug)]
pub struct Served<T> {
    pub provider: Arc<str>,
    pub attempts: u32,
    pub value: T,
    /// The serving attempt's span, still open: the edge records the answer
    /// (model, finish reasons, usage) on it once it has seen all of it.
    pub trace: TraceContext,
    /// The upstream's rate-limit, retry and request-id headers.
    pub upstream_headers: PassedHeaders,
}

#[derive(Debug)]
pub struct Pipeline {
    router: Router,
    providers: Vec<ProviderSlot>,
    retry: RetryPolicy,
    /// Spans and metrics of attempts; `None` records nothing (tests, tools).
    telemetry: Option<Arc<Telemetry>>,
    /// Cancelled when a stop's grace period is over: the calls still in
    /// flight end with UNAVAILABLE. Shared by the pipelines a reload makes.
    stop: CancellationToken,
    /// Every provider's secrets, for the edges' last scrub of what they
    /// send out.
    scrubber: Arc<Scrubber>,
    /// Which streams are resumed when cut, and where.
    resume: resume::ResumeSettings,
    /// The fleet's shared limits store (`[shared]`), if configured.
    store: Option<Arc<SharedStore>>,
}

impl Pipeline {
    /// Reads the TLS files the configuration names: a missing or broken one
    /// is an error naming it, and nothing is built.
    pub fn new(config: &Config, env: Env<'_>) -> Result<Pipeline, ClientError> {
        let clients = UpstreamClients::new(config, env)?;
        // Only with a `[shared]` table: no client, connection or task else.
        let store = SharedStore::for_config(config, env)?;
        let mut providers = config
            .providers
            .iter()
            .map(|provider| ProviderSlot {
                fleet: None,
                provider: Provider::new(
                    provider,
                    &config.upstream,
                    clients.for_provider(&provider.name),
                    env,
                ),
                max_attempts: provider.max_attempts,
                timeouts: provider.timeouts.over(config.timeouts),
                limit: provider.limit.map(|limit| {
                    ConcurrencyLimit::new(
                        limit.max_in_flight,
                        limit.max_queue,
                        limit.max_queue_wait,
                    )
                }),
                rate: RateLimits::new(
                    provider.requests_per_minute,
                    provider.tokens_per_minute,
                    provider.max_queue_wait,
                ),
                circuit: CircuitBreaker::new(provider.circuit_failures, provider.circuit_cooldown),
                in_flight: InFlight::default(),
                budget: RetryBudget::new(
                    config.retry.budget_ratio,
                    config.retry.budget_floor,
                    BUDGET_WINDOW,
                ),
            })
            .collect::<Vec<_>>();
        if let Some(store) = &store {
            for (slot, provider) in providers.iter_mut().zip(&config.providers) {
                slot.fleet = FleetRate::new(store, provider, slot.provider.key_ring());
                if let (Some(fleet), Some(ring)) = (&slot.fleet, slot.provider.key_ring()) {
                    store.share_benches(ring, fleet);
                }
            }
        }
        let scrubber = Arc::new(Scrubber::union(
            providers
                .iter()
                .map(|slot| slot.provider.scrubber().as_ref()),
        ));
        Ok(Pipeline {
            resume: resume::ResumeSettings::new(config),
            router: Router::new(config),
            scrubber,
            providers,
            retry: RetryPolicy::from(&config.retry),
            telemetry: None,
            stop: CancellationToken::new(),
            store,
        })
    }

    /// This pipeline with provider `name`'s HTTP exchanges following
    /// `script` (test builds): everything else about its slot stays.
    #[cfg(test)]
    pub(crate) fn with_scripted(
        mut self,
        name: &str,
        script: Arc<crate::upstream::scripted::ScriptedUpstream>,
    ) -> Pipeline {
        let slot = self
            .providers
            .iter_mut()
            .find(|slot| &*slot.provider.name == name)
            .expect("the provider is configured");
        slot.provider = Provider::scripted(name, script);
        self
    }

    /// Calls end with [`Error::ShuttingDown`] once `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Pipeline {
        self.stop = stop;
        self
    }

    /// Records a span per attempt and the pipeline's metrics in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Pipeline {
        if let Some(store) = &self.store {
            store.set_metrics(telemetry.metrics().clone());
        }
        self.telemetry = Some(telemetry);
        self
    }

    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.telemetry.as_ref()
    }

    /// Which provider a call for `model` would go to first, and how the
    /// name matched (`exact`, `alias`, `pattern`, or `default` for the
    /// default provider); `None` when nothing serves it.
    pub fn served_by(&self, model: &str) -> Option<(&str, &'static str)> {
        // What a call would refuse is not served: a name over the bound,
        // a route that leaves no model, a provider that knows all its
        // models and not this one.
        if model.len() > validate::MAX_MODEL_BYTES {
            return None;
        }
        let resolved = self.router.resolve(model).ok()?;
        let provider = &self.providers[resolved.provider].provider;
        if resolved.upstream_model.is_empty()
            || provider
                .catalog()
                .is_some_and(|models| !models.contains(&resolved.upstream_model.as_str()))
        {
            return None;
        }
        let provider = &*provider.name;
        let kind = self
            .routes()
            .iter()
            .find(|route| route.model == *resolved.route)
            .map_or("default", |route| route.kind.as_str());
        Some((provider, kind))
    }

    /// The concrete names of the providers that know all their models,
    /// with their provider, where the routing table sends them there (the
    /// mock's `mock/echo` behind `mock/*`): names a model picker can offer.
    pub fn known_models(&self) -> Vec<(&'static str, &str)> {
        self.providers
            .iter()
            .filter_map(|slot| slot.provider.catalog())
            .flatten()
            .filter_map(|&model| {
                let (provider, _) = self.served_by(model)?;
                Some((model, provider))
            })
            .collect()
    }

    /// The fleet's shared store (`[shared]`), when configured.
    pub fn shared_store(&self) -> Option<&Arc<SharedStore>> {
        self.store.as_ref()
    }

    pub fn routes(&self) -> &[RouteInfo] {
        self.router.table()
    }

    /// The secrets of all its providers (keys as loaded for this pipeline,
    /// secret header values): what the edges scrub from what they send.
    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
    }

    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter().map(|slot| &slot.provider)
    }

    /// Each provider's circuit state and
    /// the calls waiting in its queue, for health and admin views.
    pub fn provider_states(&self) -> impl Iterator<Item = ProviderState<'_>> {
        self.providers.iter().map(|slot| ProviderState {
            name: &slot.provider.name,
            circuit: slot.circuit.state(),
            in_flight: slot.in_flight.count(),
            queued: slot.limit.as_ref().map_or(0, ConcurrencyLimit::queued),
        })
    }

    pub async fn complete(
        &self,
        mut request: ChatRequest,
        call: &CallContext,
    ) -> Result<Served<ChatResponse>, Error> {
        request.stream = false;
        let targets = self.route(&request, call)?;
        let total = targets[0].timeouts.unary_total;
        self.reserve_budget(&request, &targets[0], call, total)
            .await?;
        let bounds = Bounds::new(
            Instant::now(),
            call.deadline,
            targets[0].timeouts.unary_total,
        );
        self.until_stopped(serve(&targets, request, Unary(bounds, call)))
            .await
    }

    /// Returns once the first chunk has arrived, so every failure before it
    /// (every retry, every fallback) happens before the caller saw anything.
    pub async fn stream(
        self: &Arc<Self>,
        mut request: ChatRequest,
        call: &CallContext,
    ) -> Result<Served<ChunkStream>, Error> {
        request.stream = true;
        let targets = self.route(&request, call)?;
        let total = targets[0].timeouts.stream_total;
        self.reserve_budget(&request, &targets[0], call, total)
            .await?;
        let bounds = Bounds::new(
            Instant::now(),
            call.deadline,
            targets[0].timeouts.stream_total,
        );
        let resume = resume::Plan::new(self, &request, call, bounds);
        // Past the first chunk, the stream itself watches `stop`.
        let served = self
            .until_stopped(serve(&targets, request, Streaming(bounds, call)))
            .await?;
        Ok(resume::Plan::wrap(resume, served))
    }

    /// Reserves what the call may cost on the budgets it falls under (in
    /// the fleet's store when there is one): the prompt's estimate plus its
    /// `max_tokens`, priced as the route's first target's model. Once per
    /// call: a resumed stream's continuation is routed again, not reserved.
    /// In the fleet's store the hold lives twice the call's `total` (a
    /// resumed stream's continuation has bounds of its own) and a minute
    /// more, then is released should the call never settle it (its pod
    /// killed).
    async fn reserve_budget(
        &self,
        request: &ChatRequest,
        first: &Routed<'_>,
        call: &CallContext,
        total: Duration,
    ) -> Result<(), Error> {
        let Some(check) = &call.budget else {
            return Ok(());
        };
        let prompt = estimate_prompt_tokens(request);
        // Past u32 it is held at u32's most, not dropped (the upstream
        // refuses what no model can write anyway); absent, the prompt's
        // estimate is all that can be held.
        let output = match request.max_tokens() {
            Some(cap) => u32::try_from(cap.max(0)).unwrap_or(u32::MAX),
            // A cap past any whole number (1e30): held as no cap at all.
            None if request.max_tokens_unreadable() => u32::MAX,
            None => 0,
        };
        let usage = crate::model::Usage {
            prompt_tokens: prompt,
            completion_tokens: output,
            total_tokens: prompt.saturating_add(output),
            ..crate::model::Usage::default()
        };
        let usd = check
            .pricing
            .cost(&first.upstream_model, &usage)
            .or_else(|| check.pricing.cost(&request.model, &usage));
        let subject = crate::budget::Subject {
            caller: check.caller.as_deref(),
            tags: &check.tags,
            provider: &first.slot.provider.name,
        };
        let charge = crate::budget::Charge {
            tokens: u64::from(usage.total_tokens),
            usd,
        };
        let (reservation, remaining) = match &self.store {
            Some(store) => {
                let hold_for = total.saturating_mul(2) + Duration::from_secs(60);
                check
                    .budgets
                    .reserve_shared(store, subject, charge, hold_for)
                    .await?
            }
            None => check
                .budgets
                .reserve(subject, charge)
                .map_err(Error::BudgetExceeded)?,
        };
        call.progress.hold_budget(reservation, remaining);
        Ok(())
    }

    /// Runs `work` unless the shutdown grace ends first.
    async fn until_stopped<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::select! {
            biased;
            result = work => result,
            () = self.stop.cancelled() => Err(Error::ShuttingDown),
        }
    }

    /// The primary target and its fallbacks, in the order to try them.
    fn route(&self, request: &ChatRequest, call: &CallContext) -> Result<Vec<Routed<'_>>, Error> {
        if let Some(limit) = call.over_capacity {
            return Err(Error::TooManyCalls { limit });
        }
        validate(request)?;
        if let Some(caller) = &call.caller {
            check_caller(caller.header.as_str(), Some(&caller.name))?;
        }
        let route = self.router.resolve(&request.model)?;
        call.progress.routed(&route.route);
        let target = |provider: usize, upstream_model: String| {
            let slot = &self.providers[provider];
            let allowed = route
                .max_attempts
                .or(slot.max_attempts)
                .unwrap_or(self.retry.max_attempts);
            // A caller may ask for fewer attempts, never for more.
            let max_attempts = call
                .max_attempts
                .map_or(allowed, |attempts| attempts.clamp(1, allowed.max(1)));
            Routed {
                slot,
                policy: RetryPolicy {
                    max_attempts,
                    ..self.retry
                },
                timeouts: route.timeouts.over(slot.timeouts),
                upstream_model,
                trace: AttemptTrace::new(self.telemetry.as_deref()),
                stop: &self.stop,
                has_next: false,
            }
        };
        let mut targets = vec![target(route.provider, route.upstream_model.clone())];
        for fallback in &route.fallbacks {
            targets.push(target(fallback.provider, fallback.upstream_model.clone()));
        }
        let last = targets.len() - 1;
        for target in &mut targets[..last] {
            target.has_next = true;
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests;

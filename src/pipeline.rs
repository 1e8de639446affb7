//! The one way every call goes, whichever edge it came in by:
//! validate → route → (retry → call the provider), all bounded by the
//! caller's deadline.
//!
//! Retries happen only before anything reached the caller: a unary call is
//! retried whole; a stream is retried until its first chunk arrives, never
//! after, so no token is ever sent twice. Limits and per-attempt timeouts
//! slot in around the provider call; nothing else talks to providers.

mod attempt_trace;
mod bounded_stream;
mod bounds;
mod circuit;
mod handle;
mod in_flight;
mod limit;
mod progress;
mod rate;
mod retry;
mod retry_budget;

pub use bounded_stream::BoundedStream;
pub use bounds::Bounds;
pub use circuit::{CircuitBreaker, CircuitState};
pub use handle::PipelineHandle;
pub use in_flight::{InFlight, InFlightGuard};
pub use limit::{ConcurrencyLimit, Permit};
pub use progress::{CallProgress, ProgressSnapshot};
pub use rate::{RateLimits, estimate_prompt_tokens};
pub use retry::{Next, RetryPolicy};
pub use retry_budget::RetryBudget;

use attempt_trace::AttemptTrace;

use crate::config::{Config, Env, Timeouts};
use crate::error::{Error, TimeoutKind, classify};
use crate::model::{ChatRequest, ChatResponse};
use crate::routing::{RouteInfo, Router};
use crate::secret::Scrubber;
use crate::telemetry::Telemetry;
use crate::upstream::{ChunkStream, ClientError, PassedHeaders, Provider, Reply, UpstreamClients};
use crate::validate::{check_caller, validate};
use futures::StreamExt;
use opentelemetry::Context as TraceContext;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The window over which a provider's retry budget is counted.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// What the edge knows about the call that the pipeline must honour.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the caller stops waiting (its `grpc-timeout`).
    pub deadline: Option<Instant>,
    /// The caller's own cap on attempts (0 or 1: no retries, for callers
    /// that retry themselves).
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
}

/// A provider with its retry settings and budget.
#[derive(Debug)]
struct ProviderSlot {
    provider: Provider,
    max_attempts: Option<u32>,
    /// The global timeouts with this provider's changes.
    timeouts: Timeouts,
    budget: RetryBudget,
    limit: Option<ConcurrencyLimit>,
    rate: Option<RateLimits>,
    circuit: CircuitBreaker,
    in_flight: InFlight,
}

/// One routed call, ready to be attempted.
struct Routed<'a> {
    slot: &'a ProviderSlot,
    policy: RetryPolicy,
    timeouts: Timeouts,
    upstream_model: String,
    trace: AttemptTrace<'a>,
    stop: &'a CancellationToken,
}

/// A target's failure and the attempts it made.
type Failed = (Error, u32);

/// A target's answer, the attempts it took and the serving attempt's span.
type Won<T> = (Reply<T>, u32, TraceContext);

impl Pipeline {
    /// Reads the TLS files the configuration names: a missing or broken one
    /// is an error naming it, and nothing is built.
    pub fn new(config: &Config, env: Env<'_>) -> Result<Pipeline, ClientError> {
        let clients = UpstreamClients::new(config, env)?;
        let providers = config
            .providers
            .iter()
            .map(|provider| ProviderSlot {
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
        let scrubber = Arc::new(Scrubber::union(
            providers
                .iter()
                .map(|slot| slot.provider.scrubber().as_ref()),
        ));
        Ok(Pipeline {
            router: Router::new(config),
            scrubber,
            providers,
            retry: RetryPolicy::from(&config.retry),
            telemetry: None,
            stop: CancellationToken::new(),
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
        self.telemetry = Some(telemetry);
        self
    }

    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.telemetry.as_ref()
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
        &self,
        mut request: ChatRequest,
        call: &CallContext,
    ) -> Result<Served<ChunkStream>, Error> {
        request.stream = true;
        let targets = self.route(&request, call)?;
        let bounds = Bounds::new(
            Instant::now(),
            call.deadline,
            targets[0].timeouts.stream_total,
        );
        // Past the first chunk, the stream itself watches `stop`.
        self.until_stopped(serve(&targets, request, Streaming(bounds, call)))
            .await
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
            let max_attempts = call
                .max_attempts
                .map(|attempts| attempts.max(1))
                .or(route.max_attempts)
                .or(slot.max_attempts)
                .unwrap_or(self.retry.max_attempts);
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
            }
        };
        let mut targets = vec![target(route.provider, route.upstream_model.clone())];
        for fallback in &route.fallbacks {
            targets.push(target(fallback.provider, fallback.upstream_model.clone()));
        }
        Ok(targets)
    }
}

/// Tries each target in turn (the primary, then its fallbacks) with the
/// request's model set to the target's, until one serves the call or a
/// failure is not worth passing on to the next.
async fn serve<C: CallTarget>(
    targets: &[Routed<'_>],
    mut request: ChatRequest,
    call: C,
) -> Result<Served<C::Output>, Error> {
    let mut attempts_before = 0;
    for (index, target) in targets.iter().enumerate() {
        request.model.clone_from(&target.upstream_model);
        match call.call(target, &request).await {
            Ok((reply, attempts, trace)) => {
                return Ok(Served {
                    provider: target.slot.provider.name.clone(),
                    attempts: attempts_before + attempts,
                    value: reply.value,
                    trace,
                    upstream_headers: reply.headers,
                });
            }
            Err((error, attempts)) if index + 1 < targets.len() && falls_back(&error) => {
                attempts_before += attempts;
                let reason = classify(&error).reason;
                let next = &targets[index + 1].slot.provider;
                tracing::info!(from = %target.slot.provider.name, to = %next.name, reason, "falling back");
                target
                    .trace
                    .fell_back(call.context(), &target.slot.provider, next, &error);
            }
            Err((error, _)) => return Err(error),
        }
    }
    Err(Error::Internal("a route without targets".to_owned()))
}

/// One way of calling a target: a unary answer or a stream. (A trait rather
/// than an async closure, whose futures cannot yet be shown to be `Send`.)
trait CallTarget {
    type Output;
    fn call<'a>(
        &'a self,
        target: &'a Routed<'a>,
        request: &'a ChatRequest,
    ) -> impl Future<Output = Result<Won<Self::Output>, Failed>> + Send + 'a;
    fn context(&self) -> &CallContext;
}

struct Unary<'c>(Bounds, &'c CallContext);
struct Streaming<'c>(Bounds, &'c CallContext);

impl CallTarget for Unary<'_> {
    type Output = ChatResponse;
    fn call<'a>(
        &'a self,
        target: &'a Routed<'a>,
        request: &'a ChatRequest,
    ) -> impl Future<Output = Result<Won<ChatResponse>, Failed>> + Send + 'a {
        target.complete(request, self.0, self.1)
    }
    fn context(&self) -> &CallContext {
        self.1
    }
}

impl CallTarget for Streaming<'_> {
    type Output = ChunkStream;
    fn call<'a>(
        &'a self,
        target: &'a Routed<'a>,
        request: &'a ChatRequest,
    ) -> impl Future<Output = Result<Won<ChunkStream>, Failed>> + Send + 'a {
        target.stream(request, self.0, self.1)
    }
    fn context(&self) -> &CallContext {
        self.1
    }
}

/// Whether the next target of a route may still succeed where this one
/// failed: the provider is unwell or we are holding it back, not the
/// request being wrong.
fn falls_back(error: &Error) -> bool {
    error.is_provider_failure()
        || matches!(
            error,
            Error::CircuitOpen { .. }
                | Error::Overloaded { .. }
                | Error::RetryBudgetExhausted { .. }
                | Error::ProviderNotReady { .. }
        )
}

impl ProviderSlot {
    /// Rate quota (if the provider has rates) for one request, then a slot
    /// under its concurrency limit (if it has one).
    async fn acquire(
        &self,
        bounds: Bounds,
        request: &ChatRequest,
        call: &CallContext,
        (trace, attempt): (AttemptTrace<'_>, &TraceContext),
    ) -> Result<Permit, Error> {
        if self.rate.is_none() && self.limit.is_none() {
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
        if let Some(rate) = &self.rate {
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

impl Routed<'_> {
    async fn complete(
        &self,
        request: &ChatRequest,
        bounds: Bounds,
        call: &CallContext,
    ) -> Result<Won<ChatResponse>, Failed> {
        let provider = &self.slot.provider;
        let progress = &*call.progress;
        self.attempt(
            bounds,
            call,
            request,
            "waiting for the answer",
            |trace| async move {
                let _slot = self
                    .slot
                    .acquire(bounds, request, call, (self.trace, &trace))
                    .await?;
                let _in_flight = self.slot.in_flight.enter();
                let sent = Instant::now();
                let answer = provider.complete(request, &trace).await;
                progress.add_upstream(sent.elapsed());
                answer
            },
        )
        .await
    }

    async fn stream(
        &self,
        request: &ChatRequest,
        bounds: Bounds,
        call: &CallContext,
    ) -> Result<Won<ChunkStream>, Failed> {
        let provider = &self.slot.provider;
        let timeouts = self.timeouts;
        let progress = &*call.progress;
        let first_chunk = |trace: &TraceContext| {
            let trace = trace.clone();
            async move {
                let Reply {
                    value: mut stream,
                    headers,
                } = provider.stream(request, timeouts.headers, &trace).await?;
                match stream.next().await {
                    Some(Ok(first)) => Ok((Some(first), stream, headers)),
                    Some(Err(error)) => Err(error),
                    // Complete and empty: [DONE] straight away.
                    None => Ok((None, stream, headers)),
                }
            }
        };
        let (opened, attempts, trace) = self
            .attempt(
                bounds,
                call,
                request,
                "waiting for the first chunk",
                |trace| async move {
                    // The slot is held for as long as the stream lives.
                    let slot = self
                        .slot
                        .acquire(bounds, request, call, (self.trace, &trace))
                        .await?;
                    let in_flight = self.slot.in_flight.enter();
                    let sent = Instant::now();
                    let first =
                        tokio::time::timeout(timeouts.first_chunk, first_chunk(&trace)).await;
                    let waited = sent.elapsed();
                    progress.add_upstream(waited);
                    let (first, rest, headers) = first.unwrap_or_else(|_| {
                        Err(Error::Timeout {
                            provider: provider.name.to_string(),
                            kind: TimeoutKind::FirstChunk,
                            after: timeouts.first_chunk,
                        })
                    })?;
                    self.trace.first_chunk(&trace, waited);
                    Ok(Reply {
                        value: (first, rest, (slot, in_flight)),
                        headers,
                    })
                },
            )
            .await?;
        let (first, rest, slot) = opened.value;
        let stream: ChunkStream = match first {
            Some(first) => Box::pin(futures::stream::once(async { Ok(first) }).chain(rest)),
            None => rest,
        };
        let bounded = BoundedStream::new(
            stream,
            provider.name.clone(),
            bounds,
            timeouts.idle,
            Some(slot),
        )
        .stopped_by(self.stop);
        let reply = Reply {
            value: Box::pin(bounded) as ChunkStream,
            headers: opened.headers,
        };
        Ok((reply, attempts, trace))
    }

    /// Runs `work` until it succeeds or the policy, the budget or the
    /// caller's deadline says stop; returns the value and the attempts made.
    async fn attempt<T, F, Fut>(
        &self,
        bounds: Bounds,
        call: &CallContext,
        request: &ChatRequest,
        stage: &'static str,
        mut work: F,
    ) -> Result<Won<T>, Failed>
    where
        F: FnMut(TraceContext) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Error>>,
    {
        let slot = self.slot;
        slot.budget.deposit();
        let mut attempts = 0;
        loop {
            if let Err(wait) = slot.circuit.allow() {
                let error = Error::CircuitOpen {
                    provider: slot.provider.name.to_string(),
                    retry_after: wait,
                };
                return Err((error, attempts));
            }
            attempts += 1;
            call.progress.attempt_started(&slot.provider.name);
            let trace = self.trace.start(call, request, &slot.provider);
            let error = match self.within(bounds, stage, work(trace.clone())).await {
                Ok(value) => {
                    if slot.circuit.on_success() {
                        tracing::info!(provider = %slot.provider.name, "circuit closed: the provider answers again");
                    }
                    self.trace.answered(&slot.provider);
                    return Ok((value, attempts, trace));
                }
                Err(error) => error,
            };
            self.trace.failed(&trace, &slot.provider, &error);
            if error.is_provider_failure() && slot.circuit.on_failure() {
                tracing::warn!(provider = %slot.provider.name, reason = classify(&error).reason, "circuit opened: skipping the provider for a while");
            }
            let next = self.policy.next(
                &error,
                attempts,
                Instant::now(),
                Some(bounds.end()),
                fastrand::f64(),
            );
            let Next::RetryAfter(wait) = next else {
                return Err((error, attempts));
            };
            if !slot.budget.try_withdraw() {
                let exhausted = Error::RetryBudgetExhausted {
                    provider: slot.provider.name.to_string(),
                    last: error.to_string(),
                    retry_after: error.retry_after(),
                };
                return Err((exhausted, attempts));
            }
            self.trace
                .retrying(call, &slot.provider, attempts + 1, wait, &error);
            tracing::debug!(
                provider = %slot.provider.name,
                attempt = attempts,
                reason = classify(&error).reason,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            let sleeping = Instant::now();
            tokio::time::sleep(wait).await;
            call.progress.add_backoff(sleeping.elapsed());
        }
    }
}

impl Routed<'_> {
    /// Runs `work` until the call's bounds end; past them the work is
    /// dropped, which closes any upstream request it had open.
    async fn within<T>(
        &self,
        bounds: Bounds,
        stage: &'static str,
        work: impl Future<Output = Result<Reply<T>, Error>>,
    ) -> Result<Reply<T>, Error> {
        match tokio::time::timeout_at(bounds.end(), work).await {
            Ok(result) => result,
            Err(_) => Err(bounds.expired(&self.slot.provider.name, stage)),
        }
    }
}

#[cfg(test)]
mod tests;

//! Every call, whichever edge it came in by, is watched the same way: a
//! request id and a record begin when it arrives; the pipeline's progress,
//! the answer or the stream's chunks fill the record in; and when the call
//! ends — answered, failed, cut, or abandoned by the caller — the record
//! goes to the ledger, the metrics and the request log line. An
//! [`Observation`] that is dropped unfinished (the caller went away) is
//! recorded as cancelled, so no call escapes the books.

mod call_slots;
mod call_trace;
mod finish;
mod stream_watch;
mod tally;

pub use stream_watch::{StreamEnd, WatchedStream};

use crate::budget::Budgets;
use crate::call_record::{CallRecord, Caller, Edge, Outcome};
use crate::config::Config;
use crate::config::budgets::BudgetConfig;
use crate::error::Error;
use crate::ledger::{Ledger, PriceEntry, Pricing};
use crate::model::{ChatRequest, ChatResponse};
use crate::pipeline::validate::{MAX_CALLER_BYTES, MAX_MODEL_BYTES, bounded_tags, truncated};
use crate::pipeline::{
    CallContext, CallLimits, CallProgress, CallerName, RetryStop, Served, estimate_prompt_tokens,
};
use crate::secret::Scrubber;
use crate::telemetry::{self, Telemetry, spans};
use crate::upstream::ChunkStream;
use arc_swap::ArcSwap;
use http::HeaderMap;
use opentelemetry::trace::TraceContextExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The edges' shared view of what to do with a finished call.
#[derive(Debug)]
pub struct Observer {
    /// `None` when the ledger is switched off.
    ledger: Option<Ledger>,
    /// What the config says about recording calls; swapped by a reload.
    rules: ArcSwap<Rules>,
    /// Spans and metrics; `None` records none (tests, tools).
    telemetry: Option<Arc<Telemetry>>,
    /// The pipeline's secrets, scrubbed from the span messages of the call;
    /// swapped with the pipeline.
    scrubber: ArcSwap<Scrubber>,
    /// The cap on calls in flight over every edge.
    slots: call_slots::CallSlots,
    /// `[[budgets]]` and their spend, kept over reloads.
    budgets: Arc<Budgets>,
}

/// The config's part in recording a call.
#[derive(Debug)]
pub struct Rules {
    pricing: Arc<Pricing>,
    budgets: Vec<BudgetConfig>,
    caller_header: http::HeaderName,
    /// Providers whose abandoned streams are read to the end in the
    /// background, so their true usage is recorded.
    drain_on_cancel: HashSet<String>,
}

/// Where a call came from.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub edge: Edge,
    /// The server span's name: the gRPC method in full
    /// (`llmsidecar.v1.ChatService/Complete`) or `POST /v1/chat/completions`.
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    /// The peer process on a Unix socket: (uid, pid).
    pub peer: Option<(u32, Option<i32>)>,
    /// The name of the caller token the call came with (`crate::auth`):
    /// the caller, whatever the caller header claims.
    pub authenticated: Option<&'a str>,
    /// The id the edge already gave the call; else one is chosen here.
    pub request_id: Option<&'a str>,
}

impl Observer {
    pub fn new(config: &Config, ledger: Option<Ledger>) -> Result<Observer, String> {
        let rules = Rules::new(config)?;
        Ok(Observer {
            ledger,
            budgets: Arc::new(Budgets::new(&rules.budgets)),
            rules: ArcSwap::from_pointee(rules),
            telemetry: None,
            scrubber: ArcSwap::default(),
            slots: call_slots::CallSlots::new(usize::MAX),
        })
    }

    /// At most `limit` calls in flight at once over every edge; more are
    /// refused at once (`Error::TooManyCalls`).
    pub fn with_call_limit(mut self, limit: usize) -> Observer {
        self.slots = call_slots::CallSlots::new(limit);
        self
    }

    /// Calls that finish from now on scrub their spans of `scrubber`'s
    /// secrets (the pipeline's, set with each pipeline).
    pub fn set_scrubber(&self, scrubber: Arc<Scrubber>) {
        self.scrubber.store(scrubber);
    }

    /// The secrets of the pipeline in force.
    pub fn scrubber(&self) -> Arc<Scrubber> {
        self.scrubber.load_full()
    }

    /// Calls that finish from now on are recorded by `rules` (prices, the
    /// caller header, draining). Returns the names of the budgets that
    /// were not there before (see [`Budgets::configure`]).
    pub fn set_rules(&self, rules: Rules) -> Vec<String> {
        let added = self.budgets.configure(&rules.budgets);
        self.rules.store(Arc::new(rules));
        added
    }

    /// The budgets and their spend.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    /// Spans and metrics for every call in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Observer {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// Starts watching a call; `request` is as the caller sent it. The
    /// call takes a slot among those in flight; one that finds none free
    /// is watched too, so its refusal is recorded, and the pipeline
    /// refuses it at once ([`CallContext::over_capacity`]).
    pub fn begin(self: &Arc<Self>, arrival: Arrival<'_>, request: &ChatRequest) -> Observation {
        crate::heap::note_activity();
        let slot = self.slots.take();
        let caller_header = self.rules.load().caller_header.clone();
        let claimed = arrival
            .headers
            .get(&caller_header)
            .and_then(|value| value.to_str().ok())
            .map(|name| CallerName {
                header: caller_header,
                name: Arc::from(name),
            });
        // What is kept is bounded even for a request validation will
        // refuse: the refusal is recorded too.
        let claimed_name = claimed
            .as_ref()
            .map(|claimed| truncated(&claimed.name, MAX_CALLER_BYTES).to_owned());
        let (name, claimed_beside) = match arrival.authenticated {
            Some(token_name) => (Some(token_name.to_owned()), claimed_name),
            None => (claimed_name, None),
        };
        let caller = Caller {
            name,
            claimed: claimed_beside,
            uid: arrival.peer.map(|(uid, _)| uid),
            pid: arrival.peer.and_then(|(_, pid)| pid),
        };
        let request_id = arrival
            .request_id
            .map_or_else(|| request_id(arrival.headers), str::to_owned);
        // The caller's trace (W3C `traceparent`), joined by our server span.
        let parent = telemetry::extract(arrival.headers);
        let trace = match &self.telemetry {
            Some(telemetry) => {
                telemetry.metrics().in_flight_add(1);
                spans::server_span(telemetry.tracer(), arrival.edge, arrival.method, &parent)
            }
            None => parent,
        };
        let log_span = log_span(&request_id, &trace);
        let record = CallRecord {
            request_id,
            started_at: SystemTime::now(),
            edge: arrival.edge,
            stream: request.stream,
            caller,
            tags: bounded_tags(&request.metadata),
            requested_model: truncated(&request.model, MAX_MODEL_BYTES).to_owned(),
            route: None,
            served_model: None,
            provider: None,
            outcome: Outcome::Ok,
            attempts: 0,
            queue_wait: Duration::ZERO,
            latency: Duration::ZERO,
            time_to_first_chunk: None,
            usage: None,
            usage_estimated: false,
            cost_usd: None,
            resumed: false,
        };
        Observation {
            observer: self.clone(),
            record: Some(record),
            began: Instant::now(),
            progress: Arc::default(),
            trace,
            attempt: None,
            log_span,
            prompt_estimate: estimate_prompt_tokens(request),
            caller: claimed,
            slot,
        }
    }

    fn capture_limit(&self) -> Option<usize> {
        self.telemetry.as_ref()?.capture_limit()
    }
}

impl Rules {
    /// The rules `config` gives, checked (prices, the caller header).
    pub fn new(config: &Config) -> Result<Rules, String> {
        let pricing = Pricing::new(
            config
                .prices
                .iter()
                .map(|price| PriceEntry {
                    model: price.model.clone(),
                    input_per_million: price.input_per_million,
                    output_per_million: price.output_per_million,
                    cached_input_per_million: price.cached_input_per_million,
                    cache_write_per_million: price.cache_write_per_million,
                })
                .collect(),
        )?;
        let caller_header = http::HeaderName::from_bytes(config.ledger.caller_header.as_bytes())
            .map_err(|error| format!("ledger.caller_header: {error}"))?;
        Ok(Rules {
            pricing: Arc::new(pricing),
            budgets: config.budgets.clone(),
            caller_header,
            drain_on_cancel: config
                .providers
                .iter()
                .filter(|provider| provider.drain_on_cancel)
                .map(|provider| provider.name.clone())
                .collect(),
        })
    }
}

/// The span every log line of the call is written in, so each carries the
/// request id and the trace id (the key into the tracing backend).
fn log_span(request_id: &str, trace: &opentelemetry::Context) -> tracing::Span {
    let span = trace.span();
    let context = span.span_context();
    if context.is_valid() {
        tracing::info_span!(target: "llm_sidecar::request", "call", request_id, trace_id = %context.trace_id())
    } else {
        tracing::info_span!(target: "llm_sidecar::request", "call", request_id)
    }
}

/// A caller's `x-request-id` when it is a sane token (so it can go into
/// logs and headers as it is), else a fresh UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// One call being watched. Finish it with one of the `finish_*` methods or
/// hand its stream to [`Observation::watch`]; dropped unfinished, it is
/// recorded as cancelled.
#[derive(Debug)]
pub struct Observation {
    observer: Arc<Observer>,
    record: Option<CallRecord>,
    began: Instant,
    progress: Arc<CallProgress>,
    /// The server span (or, without telemetry, the caller's context).
    trace: opentelemetry::Context,
    /// The serving attempt's span, once the pipeline has served the call.
    attempt: Option<opentelemetry::Context>,
    log_span: tracing::Span,
    /// For the usage estimate when the upstream reports none.
    prompt_estimate: u32,
    /// The caller's name as sent, for the pipeline's validation.
    caller: Option<CallerName>,
    /// The call's slot among those in flight, given back when the
    /// observation ends; `Err(limit)` when none was free.
    slot: Result<tokio::sync::OwnedSemaphorePermit, usize>,
}

/// What the edge tells the caller about a finished call.
#[derive(Debug, Clone)]
pub struct Finished {
    pub request_id: String,
    /// The time the sidecar itself added (not upstream, queue or backoff).
    pub overhead: Duration,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Upstream attempts made, retries and fallbacks included.
    pub attempts: u32,
    /// Why the last failure was not retried although it could have been.
    pub retry_stop: Option<RetryStop>,
    /// When the caller stops waiting, if it said: a retry after it is no
    /// use to the caller.
    pub deadline: Option<Instant>,
    /// A cut stream was resumed: the cut's reason (`x-llm-resumed`).
    pub resumed: Option<&'static str>,
}

impl Observation {
    pub fn request_id(&self) -> &str {
        self.record
            .as_ref()
            .map_or("", |record| record.request_id.as_str())
    }

    /// Log lines written while the call is served belong in this span; see
    /// [`tracing::Instrument`].
    pub fn log_span(&self) -> &tracing::Span {
        &self.log_span
    }

    /// The time the sidecar has added so far; once a stream's first chunk
    /// is in hand, that is all it will add before the caller reads it.
    pub fn overhead_so_far(&self) -> Duration {
        self.progress.snapshot().overhead(self.began.elapsed())
    }

    /// The pipeline's view of the call, sharing this observation's progress;
    /// `limits` are what the caller's headers said.
    /// The budgets the call is held to, with who it is for them; `None`
    /// when none are configured (nothing is copied then).
    fn budget_check(&self) -> Option<crate::pipeline::BudgetCheck> {
        let budgets = &self.observer.budgets;
        if budgets.is_empty() {
            return None;
        }
        let record = self.record.as_ref()?;
        Some(crate::pipeline::BudgetCheck {
            budgets: Arc::clone(budgets),
            // As the ledger's usage groups callers: the name, else the
            // peer process's uid on a Unix socket.
            caller: record
                .caller
                .name
                .clone()
                .or_else(|| record.caller.uid.map(|uid| format!("uid:{uid}"))),
            tags: record.tags.clone(),
            pricing: Arc::clone(&self.observer.rules.load().pricing),
        })
    }

    pub fn call_context(&self, limits: CallLimits) -> CallContext {
        if let Some(deadline) = limits.deadline {
            self.progress.set_deadline(deadline);
        }
        CallContext {
            deadline: limits.deadline,
            first_byte_deadline: limits.first_byte_deadline,
            max_attempts: limits.max_attempts,
            progress: self.progress.clone(),
            trace: self.trace.clone(),
            caller: self.caller.clone(),
            over_capacity: self.slot.as_ref().err().copied(),
            budget: self.budget_check(),
        }
    }

    pub fn finish_unary(self, result: &Result<Served<ChatResponse>, Error>) -> Finished {
        match result {
            Ok(served) => self.finish_answered(served),
            Err(error) => self.finish_error(error),
        }
    }

    /// A unary call answered and delivered.
    pub fn finish_answered(mut self, served: &Served<ChatResponse>) -> Finished {
        if let Some(limit) = self.observer.capture_limit() {
            spans::record_output_messages(&served.trace, &served.value, limit);
        }
        self.attempt = Some(served.trace.clone());
        self.finish(Outcome::Ok, &answer_tally(&served.value), None)
    }

    /// An answer the upstream gave (and billed) that the edge could not
    /// deliver: recorded as failed, with the answer's usage.
    pub fn finish_undelivered(mut self, served: &Served<ChatResponse>, error: &Error) -> Finished {
        self.attempt = Some(served.trace.clone());
        let outcome = Outcome::Error {
            code: code_of(error),
        };
        self.finish(outcome, &answer_tally(&served.value), Some(error))
    }

    /// A call that failed before the pipeline served anything.
    pub fn finish_error(mut self, error: &Error) -> Finished {
        self.finish_failed(error)
    }

    fn finish_failed(&mut self, error: &Error) -> Finished {
        let outcome = Outcome::Error {
            code: code_of(error),
        };
        self.finish(outcome, &tally::Tally::default(), Some(error))
    }

    /// Watches a served stream to its end (or its abandonment).
    pub fn watch(mut self, served: Served<ChunkStream>) -> WatchedStream {
        let drain = self
            .observer
            .rules
            .load()
            .drain_on_cancel
            .contains(&*served.provider);
        let mut tally = tally::Tally::capturing(self.observer.capture_limit());
        // The pipeline returned with the first chunk in hand.
        tally.overhead_at_first_chunk = Some(self.overhead_so_far());
        self.attempt = Some(served.trace);
        WatchedStream::new(served.value, self, tally, drain)
    }

    fn finish(
        &mut self,
        outcome: Outcome,
        tally: &tally::Tally,
        error: Option<&Error>,
    ) -> Finished {
        let Some(record) = self.record.take() else {
            return Finished {
                request_id: String::new(),
                overhead: Duration::ZERO,
                provider: None,
                model: None,
                attempts: 0,
                retry_stop: None,
                deadline: None,
                resumed: None,
            };
        };
        crate::heap::note_activity();
        finish::complete(self, record, outcome, tally, error)
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.finish(
                Outcome::Cancelled { partial: false },
                &tally::Tally::default(),
                None,
            );
        }
    }
}

/// The stable short reason for an outcome, e.g. `rate_limited`.
fn code_of(error: &Error) -> String {
    crate::error::classify(error).reason.to_ascii_lowercase()
}

/// What a whole answer showed, as a stream's tally would.
fn answer_tally(answer: &ChatResponse) -> tally::Tally {
    tally::Tally {
        served_model: Some(answer.model.clone()).filter(|model| !model.is_empty()),
        response_id: Some(answer.id.clone()).filter(|id| !id.is_empty()),
        finish_reasons: answer.finish_reasons.clone(),
        usage: answer.usage,
        output_bytes: answer.output_bytes,
        ..tally::Tally::default()
    }
}

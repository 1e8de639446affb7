//! The instruments: the GenAI client metrics of the semantic conventions
//! (with the spec's bucket boundaries, so dashboards built for any GenAI
//! client work on ours) and the sidecar's own (`llm_sidecar.*`).
//!
//! Most GenAI figures are recorded once per call from the finished
//! [`CallRecord`], the same record the ledger writes, so metrics and ledger
//! can never disagree about a call. Recording is a few atomic updates on
//! pre-aggregated instruments; nothing here blocks or does I/O.

use super::genai::{
    ERROR_TYPE, GEN_AI_OPERATION_NAME, GEN_AI_PROVIDER_NAME, GEN_AI_TOKEN_TYPE,
    HTTP_RESPONSE_STATUS_CODE, OPERATION_CHAT, TOKEN_TYPE_INPUT, TOKEN_TYPE_OUTPUT,
};
use crate::call_record::{CallRecord, Outcome};
use crate::pipeline::routing::UNROUTED;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use std::sync::Arc;
use std::time::Duration;

pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
pub const TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.operation.time_per_output_chunk";
pub const REQUESTS_IN_FLIGHT: &str = "llm_sidecar.requests.in_flight";
pub const QUEUE_WAIT: &str = "llm_sidecar.queue.wait";
pub const QUEUE_DEPTH: &str = "llm_sidecar.queue.depth";
pub const CIRCUIT_STATE: &str = "llm_sidecar.circuit.state";
pub const RETRIES: &str = "llm_sidecar.retries";
pub const UPSTREAM_RESPONSES: &str = "llm_sidecar.upstream.responses";
pub const LEDGER_DROPPED: &str = "llm_sidecar.ledger.dropped";
pub const LEDGER_REOPENED: &str = "llm_sidecar.ledger.reopened";
pub const SHARED_STORE_OUTAGES: &str = "llm_sidecar.shared_store.outages";
pub const SHARED_STORE_FALLBACKS: &str = "llm_sidecar.shared_store.fallbacks";
pub const LEDGER_FORWARDED: &str = "llm_sidecar.ledger.forwarded";
pub const LEDGER_SPOOLED: &str = "llm_sidecar.ledger.spooled";
pub const LEDGER_SPOOL_DROPPED: &str = "llm_sidecar.ledger.spool_dropped";
pub const BUDGET_TOKENS_USED: &str = "llm_sidecar.budget.tokens.used";
pub const BUDGET_TOKENS_LIMIT: &str = "llm_sidecar.budget.tokens.limit";
pub const BUDGET_USD_USED: &str = "llm_sidecar.budget.usd.used";
pub const BUDGET_USD_LIMIT: &str = "llm_sidecar.budget.usd.limit";
/// The budget a `llm_sidecar.budget.*` figure is of (its configured name:
/// series bounded by the configuration), and its window.
pub const BUDGET: &str = "llm_sidecar.budget";
pub const BUDGET_WINDOW: &str = "llm_sidecar.budget.window";

/// The label naming a call's route as configured (alias, exact model,
/// pattern, `*` for the default provider, or `unrouted`). It stands where
/// the conventions put `gen_ai.request.model` / `gen_ai.response.model`:
/// those are the caller's and the upstream's strings, and a label taken
/// from them would let any caller add series (and memory) without bound.
/// The spans and the ledger keep the models themselves.
pub const ROUTE: &str = "llm_sidecar.route";

/// `error.type` of a call the caller abandoned.
pub const ERROR_TYPE_CANCELLED: &str = "cancelled";

/// The spec's boundaries for `gen_ai.client.operation.duration` and
/// `time_to_first_chunk`, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The spec's boundaries for `gen_ai.client.token.usage`.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// The spec's boundaries for `time_per_output_chunk`, in seconds.
pub const CHUNK_INTERVAL_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// What the integrator's provider callback reports per provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderState {
    pub provider: String,
    /// Calls waiting for a concurrency slot.
    pub queued: u64,
    /// 0 closed, 1 half-open, 2 open.
    pub circuit: u64,
}

/// The instruments, cheap to clone (each is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    operation_duration: Histogram<f64>,
    token_usage: Histogram<u64>,
    time_to_first_chunk: Histogram<f64>,
    time_per_output_chunk: Histogram<f64>,
    in_flight: UpDownCounter<i64>,
    queue_wait: Histogram<f64>,
    retries: Counter<u64>,
    upstream_responses: Counter<u64>,
    shared_store_outages: Counter<u64>,
    shared_store_fallbacks: Counter<u64>,
}

impl Metrics {
    pub fn new(meter: &Meter) -> Metrics {
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Metrics {
            operation_duration: seconds(
                OPERATION_DURATION,
                "GenAI operation duration.",
                &DURATION_BUCKETS,
            ),
            time_to_first_chunk: seconds(
                TIME_TO_FIRST_CHUNK,
                "Time to receive the first chunk of a streamed answer.",
                &DURATION_BUCKETS,
            ),
            time_per_output_chunk: seconds(
                TIME_PER_OUTPUT_CHUNK,
                "Time between chunks of a streamed answer, after the first.",
                &CHUNK_INTERVAL_BUCKETS,
            ),
            queue_wait: seconds(
                QUEUE_WAIT,
                "Time a call waited for a concurrency slot or a rate quota.",
                &DURATION_BUCKETS,
            ),
            token_usage: meter
                .u64_histogram(TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            in_flight: meter
                .i64_up_down_counter(REQUESTS_IN_FLIGHT)
                .with_unit("{request}")
                .with_description("Calls being served now.")
                .build(),
            retries: meter
                .u64_counter(RETRIES)
                .with_unit("{retry}")
                .with_description("Upstream attempts after the first, by reason.")
                .build(),
            upstream_responses: meter
                .u64_counter(UPSTREAM_RESPONSES)
                .with_unit("{response}")
                .with_description("Upstream HTTP responses, by status code.")
                .build(),
            shared_store_outages: meter
                .u64_counter(SHARED_STORE_OUTAGES)
                .with_unit("{outage}")
                .with_description("Times the shared limits store (Redis) became unreachable.")
                .build(),
            shared_store_fallbacks: meter
                .u64_counter(SHARED_STORE_FALLBACKS)
                .with_unit("{call}")
                .with_description(
                    "Calls decided without the shared limits store, by mode \
                     (local: under this pod's share; closed: refused).",
                )
                .build(),
        }
    }

    /// Duration, tokens and (for streams) time to first chunk of one
    /// finished call. Estimated usage counts too: a cancelled stream still
    /// used tokens, and leaving it out would under-report.
    pub fn record_call(&self, record: &CallRecord) {
        self.record(record, None);
    }

    /// [`record_call`](Self::record_call), plus the mean time per output
    /// chunk after the first, for a stream that sent `output_chunks`.
    pub fn record_call_with_chunks(&self, record: &CallRecord, output_chunks: u64) {
        self.record(record, Some(output_chunks));
    }

    fn record(&self, record: &CallRecord, output_chunks: Option<u64>) {
        let mut attributes = call_attributes(record);
        self.operation_duration
            .record(record.latency.as_secs_f64(), &attributes);
        if record.stream
            && let Some(first) = record.time_to_first_chunk
        {
            self.time_to_first_chunk
                .record(first.as_secs_f64(), &attributes);
            if let Some(per_chunk) = time_per_chunk(record.latency, first, output_chunks) {
                self.time_per_output_chunk
                    .record(per_chunk.as_secs_f64(), &attributes);
            }
        }
        if let Some(usage) = &record.usage {
            attributes.push(KeyValue::new(GEN_AI_TOKEN_TYPE, TOKEN_TYPE_INPUT));
            self.token_usage
                .record(u64::from(usage.prompt_tokens), &attributes);
            attributes.pop();
            attributes.push(KeyValue::new(GEN_AI_TOKEN_TYPE, TOKEN_TYPE_OUTPUT));
            self.token_usage
                .record(u64::from(usage.completion_tokens), &attributes);
        }
    }

    /// One more attempt at `provider` because of `reason` (the error table's
    /// short code: `rate_limited`, `http_503`, `connect`…).
    pub fn retry(&self, provider: &str, reason: &str) {
        self.retries.add(
            1,
            &[
                KeyValue::new(GEN_AI_PROVIDER_NAME, provider.to_owned()),
                KeyValue::new(ERROR_TYPE, reason.to_owned()),
            ],
        );
    }

    pub fn upstream_response(&self, provider: &str, status: u16) {
        self.upstream_responses.add(
            1,
            &[
                KeyValue::new(GEN_AI_PROVIDER_NAME, provider.to_owned()),
                KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)),
            ],
        );
    }

    /// The shared limits store became unreachable (once per outage).
    pub fn shared_store_outage(&self) {
        self.shared_store_outages.add(1, &[]);
    }

    /// A call to `provider` decided without the shared store; `mode` is
    /// `local` or `closed`.
    pub fn shared_store_fallback(&self, provider: &str, mode: &'static str) {
        self.shared_store_fallbacks.add(
            1,
            &[
                KeyValue::new(GEN_AI_PROVIDER_NAME, provider.to_owned()),
                KeyValue::new("llm_sidecar.shared_store.mode", mode),
            ],
        );
    }

    pub fn queue_wait(&self, provider: &str, wait: Duration) {
        self.queue_wait.record(
            wait.as_secs_f64(),
            &[KeyValue::new(GEN_AI_PROVIDER_NAME, provider.to_owned())],
        );
    }

    /// +1 when a call starts, -1 when it ends (however it ends).
    pub fn in_flight_add(&self, delta: i64) {
        self.in_flight.add(delta, &[]);
    }

    /// Registers `llm_sidecar.ledger.dropped`, read from `dropped` (the
    /// ledger's own running count of records it could not queue or write)
    /// at each collection, so the metric and the ledger never disagree.
    /// Call once per meter.
    pub fn observe_ledger_dropped<F>(&self, meter: &Meter, dropped: F)
    where
        F: Fn() -> u64 + Send + Sync + 'static,
    {
        meter
            .u64_observable_counter(LEDGER_DROPPED)
            .with_unit("{record}")
            .with_description("Usage records that could not be queued or written to the ledger.")
            .with_callback(move |observer| observer.observe(dropped(), &[]))
            .build();
    }

    /// Registers the budgets' gauges, read from `budgets` at each
    /// collection: `llm_sidecar.budget.tokens.used` / `.limit` ({token})
    /// and `llm_sidecar.budget.usd.used` / `.limit` ({USD}), per budget
    /// and window (spent plus held by calls in flight, the fleet's as the
    /// store last told this pod with `[shared]`; a limit only where one is
    /// set), for alerts before a budget refuses. Call once per meter.
    pub fn observe_budgets(&self, meter: &Meter, budgets: Arc<crate::budget::Budgets>) {
        fn labels(budget: &crate::budget::BudgetUse) -> [KeyValue; 2] {
            [
                KeyValue::new(BUDGET, budget.name.clone()),
                KeyValue::new(BUDGET_WINDOW, budget.window),
            ]
        }
        let tokens = Arc::clone(&budgets);
        meter
            .u64_observable_gauge(BUDGET_TOKENS_USED)
            .with_unit("{token}")
            .with_description("Tokens spent and held in each budget's window.")
            .with_callback(move |observer| {
                for budget in tokens.used() {
                    observer.observe(budget.tokens, &labels(&budget));
                }
            })
            .build();
        let tokens = Arc::clone(&budgets);
        meter
            .u64_observable_gauge(BUDGET_TOKENS_LIMIT)
            .with_unit("{token}")
            .with_description("Each budget's tokens per window.")
            .with_callback(move |observer| {
                for budget in tokens.used() {
                    if let Some(limit) = budget.tokens_limit {
                        observer.observe(limit, &labels(&budget));
                    }
                }
            })
            .build();
        let usd = Arc::clone(&budgets);
        meter
            .f64_observable_gauge(BUDGET_USD_USED)
            .with_unit("{USD}")
            .with_description("US dollars spent and held in each budget's window.")
            .with_callback(move |observer| {
                for budget in usd.used() {
                    observer.observe(budget.usd, &labels(&budget));
                }
            })
            .build();
        meter
            .f64_observable_gauge(BUDGET_USD_LIMIT)
            .with_unit("{USD}")
            .with_description("Each budget's US dollars per window.")
            .with_callback(move |observer| {
                for budget in budgets.used() {
                    if let Some(limit) = budget.usd_limit {
                        observer.observe(limit, &labels(&budget));
                    }
                }
            })
            .build();
    }

    /// Registers `llm_sidecar.ledger.reopened`, read from `reopened` (the
    /// times the ledger opened its path again after the file under it was
    /// deleted or replaced) at each collection. Call once per meter.
    pub fn observe_ledger_reopened<F>(&self, meter: &Meter, reopened: F)
    where
        F: Fn() -> u64 + Send + Sync + 'static,
    {
        meter
            .u64_observable_counter(LEDGER_REOPENED)
            .with_unit("{reopen}")
            .with_description(
                "Times the ledger file was opened again after it was deleted or replaced.",
            )
            .with_callback(move |observer| observer.observe(reopened(), &[]))
            .build();
    }

    /// Registers the fleet ledger's `llm_sidecar.ledger.forwarded` (rows
    /// PostgreSQL committed), `llm_sidecar.ledger.spooled` (rows waiting in
    /// the file) and `llm_sidecar.ledger.spool_dropped` (rows given up over
    /// the spool's bound), read from `status` — `(forwarded, spooled,
    /// spool_dropped)` — at each collection. Call once per meter, only
    /// when a fleet ledger is configured.
    pub fn observe_ledger_forwarding<F>(&self, meter: &Meter, status: F)
    where
        F: Fn() -> (u64, u64, u64) + Send + Sync + 'static,
    {
        let status = Arc::new(status);
        let forwarded = Arc::clone(&status);
        meter
            .u64_observable_counter(LEDGER_FORWARDED)
            .with_unit("{record}")
            .with_description("Ledger rows PostgreSQL committed from this pod.")
            .with_callback(move |observer| observer.observe(forwarded().0, &[]))
            .build();
        let spooled = Arc::clone(&status);
        meter
            .u64_observable_gauge(LEDGER_SPOOLED)
            .with_unit("{record}")
            .with_description("Ledger rows in the local file not yet in PostgreSQL.")
            .with_callback(move |observer| observer.observe(spooled().1, &[]))
            .build();
        meter
            .u64_observable_counter(LEDGER_SPOOL_DROPPED)
            .with_unit("{record}")
            .with_description(
                "Ledger rows never forwarded to PostgreSQL: the spool was over spool_max_rows.",
            )
            .with_callback(move |observer| observer.observe(status().2, &[]))
            .build();
    }

    /// Registers `llm_sidecar.queue.depth` and `llm_sidecar.circuit.state`,
    /// read from `providers` whenever metrics are collected (a scrape or a
    /// periodic export), so the pipeline keeps no gauge up to date itself.
    /// Call once per meter: each call adds another pair of callbacks.
    pub fn observe_providers<F>(&self, meter: &Meter, providers: F)
    where
        F: Fn() -> Vec<ProviderState> + Send + Sync + 'static,
    {
        let providers = Arc::new(providers);
        let for_depth = Arc::clone(&providers);
        meter
            .u64_observable_gauge(QUEUE_DEPTH)
            .with_unit("{request}")
            .with_description("Calls waiting for a concurrency slot, per provider.")
            .with_callback(move |observer| {
                for state in for_depth() {
                    observer.observe(state.queued, &[provider_attribute(state.provider)]);
                }
            })
            .build();
        meter
            .u64_observable_gauge(CIRCUIT_STATE)
            .with_description("Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.")
            .with_callback(move |observer| {
                for state in providers() {
                    observer.observe(state.circuit, &[provider_attribute(state.provider)]);
                }
            })
            .build();
    }
}

fn provider_attribute(provider: String) -> KeyValue {
    KeyValue::new(GEN_AI_PROVIDER_NAME, provider)
}

/// The attributes every GenAI metric of a call carries.
fn call_attributes(record: &CallRecord) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(5);
    attributes.push(KeyValue::new(GEN_AI_OPERATION_NAME, OPERATION_CHAT));
    let route = match &record.route {
        Some(route) => opentelemetry::StringValue::from(route.clone()),
        None => opentelemetry::StringValue::from(UNROUTED),
    };
    attributes.push(KeyValue::new(ROUTE, route));
    if let Some(provider) = &record.provider {
        attributes.push(KeyValue::new(GEN_AI_PROVIDER_NAME, provider.clone()));
    }
    if let Some(error_type) = error_type(&record.outcome) {
        attributes.push(KeyValue::new(ERROR_TYPE, error_type.to_owned()));
    }
    attributes
}

/// `error.type` of an outcome: the error table's code, `cancelled`, or
/// none for a success.
pub fn error_type(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Ok => None,
        Outcome::Error { code } | Outcome::Partial { code } => Some(code),
        Outcome::Cancelled { .. } => Some(ERROR_TYPE_CANCELLED),
    }
}

/// `(latency - ttfc) / (chunks - 1)`: needs two chunks to measure a gap.
fn time_per_chunk(latency: Duration, first: Duration, chunks: Option<u64>) -> Option<Duration> {
    let gaps = chunks?.checked_sub(1).filter(|&gaps| gaps > 0)?;
    let gaps = u32::try_from(gaps).unwrap_or(u32::MAX);
    Some(latency.saturating_sub(first) / gaps)
}

#[cfg(test)]
mod tests;

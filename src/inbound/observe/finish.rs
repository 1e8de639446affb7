//! The end of every call: the record completed from the pipeline's
//! progress and the answer's tally, priced, logged in one line, and handed
//! to the ledger (which never blocks).

use super::tally::Tally;
use super::{Finished, Observation};
use crate::call_record::{CallRecord, Outcome};
use crate::error::Error;
use crate::pipeline::validate::{MAX_MODEL_BYTES, truncated};

pub(super) fn complete(
    observation: &Observation,
    mut record: CallRecord,
    outcome: Outcome,
    tally: &Tally,
    error: Option<&Error>,
) -> Finished {
    let progress = observation.progress.snapshot();
    let latency = observation.began.elapsed();
    let (usage, usage_estimated) = tally.usage_or_estimate(observation.prompt_estimate);
    let outcome = match outcome {
        // A cancelled stream that had already delivered output.
        Outcome::Cancelled { .. } => Outcome::Cancelled {
            partial: tally.chunks > 0,
        },
        other => other,
    };
    record.provider = progress.provider.as_deref().map(str::to_owned);
    record.route = progress.route.clone();
    record.attempts = progress.attempts;
    record.queue_wait = progress.queue_wait;
    record.latency = latency;
    record.time_to_first_chunk = tally.time_to_first_chunk;
    // The upstream's words, kept within the caller's bound.
    record.served_model = tally
        .served_model
        .as_deref()
        .map(|model| truncated(model, MAX_MODEL_BYTES).to_owned());
    record.usage = usage;
    // A resumed stream's usage holds the cut attempt's, estimated when it
    // reported none.
    record.usage_estimated =
        usage_estimated || (progress.resumed.is_some() && progress.resumed_usage_estimated);
    record.resumed = progress.resumed.is_some();
    record.cost_usd = usage.and_then(|usage| {
        let rules = observation.observer.rules.load();
        let pricing = &rules.pricing;
        record
            .served_model
            .as_deref()
            .and_then(|model| pricing.cost(model, &usage))
            .or_else(|| pricing.cost(&record.requested_model, &usage))
            // No configured price: the upstream's own figure (OpenRouter).
            .or(usage.cost_usd)
    });
    record.outcome = outcome;
    // Without budgets nothing was reserved: no lock to take. (A reload
    // that removed every budget leaves nothing to settle into; a hold in
    // the shared store expires.)
    let budgets = observation.observer.budgets();
    if !budgets.is_empty()
        && let Some(reservation) = observation.progress.take_budget()
    {
        budgets.settle(
            reservation,
            crate::budget::Charge {
                tokens: usage.map_or(0, |usage| {
                    u64::from(usage.total_tokens)
                        .max(u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens))
                }),
                usd: record.cost_usd,
            },
        );
    }
    // A stream's own time is the caller's reading pace; what the sidecar
    // added is in the wait for the first chunk.
    let overhead = tally
        .overhead_at_first_chunk
        .unwrap_or_else(|| progress.overhead(tally.time_to_first_chunk.unwrap_or(latency)));
    if let Some(telemetry) = &observation.observer.telemetry {
        super::call_trace::end(telemetry, observation, &record, tally, error);
    }
    observation
        .log_span
        .in_scope(|| log_line(&record, overhead));
    let finished = Finished {
        request_id: record.request_id.clone(),
        overhead,
        provider: record.provider.clone(),
        model: record.served_model.clone(),
        attempts: record.attempts,
        retry_stop: progress.retry_stop,
        deadline: progress.deadline,
        resumed: progress.resumed,
    };
    if let Some(ledger) = &observation.observer.ledger {
        ledger.record(record);
    }
    finished
}

/// One concise line per call at info; failures at warn so they stand out.
/// The request id and trace id come from the `call` span it is written in.
/// The caller's strings (its name, the model it asked for) and the
/// upstream's (the served model) are string fields, never `%` (Display):
/// the text format writes those quoted with control characters escaped,
/// the JSON format as JSON strings, so a name holding a line break or a
/// terminal escape cannot forge or recolour a log line.
fn log_line(record: &CallRecord, overhead: std::time::Duration) {
    let usage = record.usage.unwrap_or_default();
    let outcome = record.outcome.label();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "llm_sidecar::request",
                edge = record.edge.as_str(),
                caller = record.caller.name.as_deref().unwrap_or(""),
                caller_uid = record.caller.uid,
                model = record.requested_model.as_str(),
                served_model = record.served_model.as_deref().unwrap_or(""),
                provider = record.provider.as_deref().unwrap_or(""),
                stream = record.stream,
                outcome = %outcome,
                attempts = record.attempts,
                latency_ms = record.latency.as_secs_f64() * 1e3,
                overhead_us = u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX),
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                usage_estimated = record.usage_estimated,
                resumed = record.resumed,
                "request"
            )
        };
    }
    match record.outcome {
        Outcome::Ok | Outcome::Cancelled { .. } => line!(info),
        Outcome::Error { .. } | Outcome::Partial { .. } => line!(warn),
    }
}

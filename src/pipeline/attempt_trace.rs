//! The pipeline's share of telemetry: a CLIENT span per upstream attempt,
//! child of the call's server span; events on the call for each retry,
//! queue wait and fallback; the retry, queue-wait and upstream-response
//! metrics. Without telemetry an attempt carries the call's own context,
//! so a caller's `traceparent` still reaches the upstream.

use super::CallContext;
use crate::error::{Error, classify};
use crate::model::ChatRequest;
use crate::telemetry::{Telemetry, spans};
use crate::upstream::Provider;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use std::time::Duration;

pub(super) const EVENT_FALLBACK: &str = "fallback";

/// Waits shorter than this are not worth an event (the metric has them).
const QUEUE_EVENT_THRESHOLD: Duration = Duration::from_micros(100);

#[derive(Debug, Clone, Copy)]
pub(super) struct AttemptTrace<'a> {
    telemetry: Option<&'a Telemetry>,
}

impl<'a> AttemptTrace<'a> {
    pub(super) fn new(telemetry: Option<&'a Telemetry>) -> Self {
        AttemptTrace { telemetry }
    }

    /// The attempt's span (`chat {model}`, CLIENT). The request's content
    /// is recorded only when the operator opted in.
    pub(super) fn start(
        self,
        call: &CallContext,
        request: &ChatRequest,
        provider: &Provider,
    ) -> Context {
        let Some(telemetry) = self.telemetry else {
            return call.trace.clone();
        };
        let attempt = spans::client_span(
            telemetry.tracer(),
            &call.trace,
            request,
            &provider.name,
            &provider.address,
            provider.port,
        );
        if let Some(limit) = telemetry.capture_limit() {
            spans::record_input_messages(&attempt, request, limit);
        }
        attempt
    }

    /// The attempt got its answer (or first chunk); its span stays open
    /// until the edge has seen the whole answer and its usage.
    pub(super) fn answered(self, provider: &Provider) {
        if let Some(telemetry) = self.telemetry {
            telemetry.metrics().upstream_response(&provider.name, 200);
        }
    }

    /// The first chunk came `after` the attempt's request went out.
    pub(super) fn first_chunk(self, attempt: &Context, after: Duration) {
        if self.telemetry.is_some() {
            spans::record_time_to_first_chunk(attempt, after);
        }
    }

    /// Ends the attempt's span as failed.
    pub(super) fn failed(self, attempt: &Context, provider: &Provider, error: &Error) {
        let Some(telemetry) = self.telemetry else {
            return;
        };
        if let Error::Upstream(upstream) = error
            && !upstream.in_band
        {
            telemetry
                .metrics()
                .upstream_response(&provider.name, upstream.status);
        }
        if attempt.span().is_recording() {
            // Scrubbed where the provider made the error; again here, as
            // every edge does, so a text added later cannot slip out.
            let message = error.to_string();
            let message = provider.scrubber().scrub(&message).into_owned();
            spans::end_error(attempt, &reason(error), message);
        } else {
            spans::end_ok(attempt);
        }
    }

    /// Attempt `next` follows after `wait` because of `error`.
    pub(super) fn retrying(
        self,
        call: &CallContext,
        provider: &Provider,
        next: u32,
        wait: Duration,
        error: &Error,
    ) {
        if let Some(telemetry) = self.telemetry {
            let reason = reason(error);
            spans::retry_event(&call.trace, next, wait, &reason);
            telemetry.metrics().retry(&provider.name, &reason);
        }
    }

    /// The attempt waited `wait` for a rate quota or a concurrency slot.
    pub(super) fn queued(self, attempt: &Context, provider: &Provider, wait: Duration) {
        if let Some(telemetry) = self.telemetry {
            telemetry.metrics().queue_wait(&provider.name, wait);
            if wait >= QUEUE_EVENT_THRESHOLD {
                spans::queue_wait_event(attempt, wait);
            }
        }
    }

    /// The route moves from `from` to its next target because of `error`.
    pub(super) fn fell_back(
        self,
        call: &CallContext,
        from: &Provider,
        to: &Provider,
        error: &Error,
    ) {
        if self.telemetry.is_some() && call.trace.span().is_recording() {
            spans::add_event(
                &call.trace,
                EVENT_FALLBACK,
                vec![
                    KeyValue::new("from", from.name.to_string()),
                    KeyValue::new("to", to.name.to_string()),
                    KeyValue::new("reason", reason(error)),
                ],
            );
        }
    }
}

/// `error.type`: the error table's stable reason, as the ledger spells it.
fn reason(error: &Error) -> String {
    classify(error).reason.to_ascii_lowercase()
}

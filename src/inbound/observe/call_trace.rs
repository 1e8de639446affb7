//! The telemetry end of a call: the serving attempt's span gets the answer
//! (id, served model, finish reasons, usage, opted-in content), the
//! server span gets the status the caller saw, both end, and the call's
//! metrics are recorded. Runs from the observation's finish, whichever way
//! the call ended — so a cancelled call still counts, with the context it
//! had rather than whatever task happens to drop it.

use super::Observation;
use super::tally::Tally;
use crate::call_record::{CallRecord, Edge, Outcome};
use crate::error::{Error, classify};
use crate::model::ChatResponse;
use crate::telemetry::metrics::error_type;
use crate::telemetry::{Telemetry, spans};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use serde_json::json;

/// HTTP's "client closed request", the facade's status for a call the
/// caller abandoned.
const CLIENT_CLOSED: u16 = 499;

const CANCELLED_MESSAGE: &str = "the caller went away before the answer was complete";

pub(super) fn end(
    telemetry: &Telemetry,
    observation: &Observation,
    record: &CallRecord,
    tally: &Tally,
    error: Option<&Error>,
) {
    // Scrubbed where the error was made; again here, so a text added
    // later cannot slip out.
    let message = error.map(|error| {
        let text = error.to_string();
        observation.observer.scrubber().scrub(&text).into_owned()
    });
    if let Some(attempt) = &observation.attempt {
        end_attempt(telemetry, attempt, record, tally, message.as_deref());
    }
    end_server(&observation.trace, record, error, message.as_deref());
    let metrics = telemetry.metrics();
    if record.stream {
        metrics.record_call_with_chunks(record, tally.chunks);
    } else {
        metrics.record_call(record);
    }
    metrics.in_flight_add(-1);
}

/// The serving attempt: what it answered, then its end.
fn end_attempt(
    telemetry: &Telemetry,
    attempt: &Context,
    record: &CallRecord,
    tally: &Tally,
    message: Option<&str>,
) {
    if attempt.span().is_recording() {
        // An estimate is the ledger's business (flagged there); the span
        // reports only what the provider said.
        let usage = tally.usage.as_ref();
        spans::record_response(
            attempt,
            tally.response_id.as_deref().unwrap_or(""),
            record.served_model.as_deref().unwrap_or(""),
            &tally.finish_reasons,
            usage,
        );
        if let (Some(limit), Some(text)) = (telemetry.capture_limit(), &tally.captured) {
            spans::record_output_messages(attempt, &streamed_answer(text, tally), limit);
        }
    }
    end_span(attempt, record, message);
}

/// The inbound call: the status its caller saw, then its end.
fn end_server(server: &Context, record: &CallRecord, error: Option<&Error>, message: Option<&str>) {
    let (code, http_status) = match (&record.outcome, error) {
        (Outcome::Ok, _) => (tonic::Code::Ok, 200),
        (Outcome::Cancelled { .. }, _) => (tonic::Code::Cancelled, CLIENT_CLOSED),
        (_, Some(error)) => {
            let class = classify(error);
            (class.code, class.http_status)
        }
        (_, None) => (tonic::Code::Unknown, 500),
    };
    match record.edge {
        Edge::Grpc => spans::record_grpc_status(server, code),
        Edge::Http => spans::record_http_status(server, http_status),
    }
    end_span(server, record, message);
}

/// `message`: the error's, scrubbed.
fn end_span(span: &Context, record: &CallRecord, message: Option<&str>) {
    match error_type(&record.outcome) {
        None => spans::end_ok(span),
        Some(error_type) => {
            let message = match (&record.outcome, message) {
                (Outcome::Cancelled { .. }, _) => CANCELLED_MESSAGE.to_owned(),
                (_, None) => error_type.to_owned(),
                (_, Some(message)) => message.to_owned(),
            };
            spans::end_error(span, error_type, message);
        }
    }
}

/// A streamed answer's captured text as one assistant message, for
/// `gen_ai.output.messages`.
fn streamed_answer(text: &str, tally: &Tally) -> ChatResponse {
    let answer = json!({"choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": tally.finish_reasons.first(),
    }]});
    ChatResponse {
        json: answer.to_string().into(),
        ..ChatResponse::default()
    }
}

//! The spans of a call: one SERVER span per inbound request, one CLIENT
//! span (`chat {model}`) per upstream attempt, events for retries and queue
//! waits. Each helper takes and returns an `opentelemetry::Context`, the
//! value the pipeline carries; the span ends when [`end_ok`]/[`end_error`]
//! is called, or when the last clone of its context is dropped (a cancelled
//! call still ends its spans).
//!
//! Attributes are built only when the span records: with no exporter (or a
//! sampled-out trace) a span costs its ids and nothing else.

use super::genai::{
    self, ERROR_TYPE, GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE, RPC_METHOD, RPC_RESPONSE_STATUS_CODE, RPC_SYSTEM_NAME,
};
use crate::call_record::Edge;
use crate::model::{ChatRequest, ChatResponse, Usage};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use std::borrow::Cow;
use std::time::Duration;

pub const EVENT_RETRY: &str = "retry";
pub const EVENT_QUEUE_WAIT: &str = "queue_wait";

/// The span of one inbound call, child of the caller's context (from
/// [`extract`](super::extract)). For gRPC `method` is the full method
/// (`llmsidecar.v1.ChatService/Complete`); for HTTP it is
/// `"{METHOD} {route}"` (`POST /v1/chat/completions`), the HTTP
/// conventions' span name.
pub fn server_span<T>(tracer: &T, edge: Edge, method: &str, parent: &Context) -> Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let mut span = tracer
        .span_builder(method.to_owned())
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, parent);
    if span.is_recording() {
        match edge {
            Edge::Grpc => {
                span.set_attribute(KeyValue::new(RPC_SYSTEM_NAME, "grpc"));
                span.set_attribute(KeyValue::new(RPC_METHOD, method.to_owned()));
            }
            Edge::Http => {
                if let Some((verb, route)) = method.split_once(' ') {
                    span.set_attribute(KeyValue::new(HTTP_REQUEST_METHOD, verb.to_owned()));
                    span.set_attribute(KeyValue::new(HTTP_ROUTE, route.to_owned()));
                }
            }
        }
    }
    parent.with_span(span)
}

/// The span of one upstream attempt: `chat {model}`, kind CLIENT, with the
/// request's GenAI attributes. Inject its context into the upstream
/// request's headers so the provider joins the trace.
pub fn client_span<T>(
    tracer: &T,
    parent: &Context,
    request: &ChatRequest,
    provider: &str,
    server_address: &str,
    server_port: u16,
) -> Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let name = if request.model.is_empty() {
        Cow::Borrowed(genai::OPERATION_CHAT)
    } else {
        Cow::Owned(format!("{} {}", genai::OPERATION_CHAT, request.model))
    };
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .start_with_context(tracer, parent);
    if span.is_recording() {
        span.set_attributes(genai::request_attributes(
            request,
            provider,
            server_address,
            server_port,
        ));
    }
    parent.with_span(span)
}

/// What came back: id, served model, finish reasons, usage.
pub fn record_response<I>(
    cx: &Context,
    id: &str,
    model: &str,
    finish_reasons: I,
    usage: Option<&Usage>,
) where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let span = cx.span();
    if span.is_recording() {
        span.set_attributes(genai::response_attributes(id, model, finish_reasons, usage));
    }
}

/// [`record_response`] from a whole answer.
pub fn record_chat_response(cx: &Context, response: &ChatResponse) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attributes(genai::chat_response_attributes(response));
    }
}

pub fn record_time_to_first_chunk(cx: &Context, elapsed: Duration) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
            elapsed.as_secs_f64(),
        ));
    }
}

/// `gen_ai.input.messages`; call only when the operator opted in
/// ([`Telemetry::capture_limit`](super::Telemetry::capture_limit)).
pub fn record_input_messages(cx: &Context, request: &ChatRequest, max_bytes: usize) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            GEN_AI_INPUT_MESSAGES,
            genai::input_messages_json(request, max_bytes),
        ));
    }
}

/// `gen_ai.output.messages`; same opt-in as [`record_input_messages`].
pub fn record_output_messages(cx: &Context, response: &ChatResponse, max_bytes: usize) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            GEN_AI_OUTPUT_MESSAGES,
            genai::output_messages_json(response, max_bytes),
        ));
    }
}

/// The status the server span answered with: the gRPC code's name
/// (`OK`, `UNAVAILABLE`; see [`grpc_code_name`]) or the HTTP status.
pub fn record_grpc_status(cx: &Context, code: tonic::Code) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            RPC_RESPONSE_STATUS_CODE,
            grpc_code_name(code),
        ));
    }
}

pub fn record_http_status(cx: &Context, status: u16) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
    }
}

/// A retry of this call: which attempt comes next, after how long, why.
pub fn retry_event(cx: &Context, attempt: u32, delay: Duration, reason: &str) {
    let span = cx.span();
    if span.is_recording() {
        span.add_event(
            EVENT_RETRY,
            vec![
                KeyValue::new("attempt", i64::from(attempt)),
                KeyValue::new("delay_ms", millis(delay)),
                KeyValue::new("reason", reason.to_owned()),
            ],
        );
    }
}

/// Time the call waited for a concurrency slot or a rate quota.
pub fn queue_wait_event(cx: &Context, wait: Duration) {
    let span = cx.span();
    if span.is_recording() {
        span.add_event(
            EVENT_QUEUE_WAIT,
            vec![KeyValue::new("wait_ms", millis(wait))],
        );
    }
}

/// Any other event. The attributes are built by the caller; check
/// `cx.span().is_recording()` first where building them costs.
pub fn add_event(cx: &Context, name: &'static str, attributes: Vec<KeyValue>) {
    cx.span().add_event(name, attributes);
}

/// Ends the span. Its status stays unset, as the conventions ask for
/// success.
pub fn end_ok(cx: &Context) {
    cx.span().end();
}

/// Ends the span as failed: `error.type` is the error table's short code,
/// `message` the description. The message must already be scrubbed of
/// secrets (`secret::scrub`): it is exported as it is.
pub fn end_error(cx: &Context, error_type: &str, message: impl Into<Cow<'static, str>>) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(ERROR_TYPE, error_type.to_owned()));
        span.set_status(Status::error(message));
    }
    span.end();
}

/// The gRPC status code as the conventions spell it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;

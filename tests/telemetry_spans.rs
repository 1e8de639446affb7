//! The spans the whole sidecar makes, caught by an in-memory exporter: one
//! SERVER span per inbound call, one CLIENT span per upstream attempt, in
//! the caller's trace, with the GenAI attributes, retry and queue events —
//! and the trace context the fake upstream receives.

mod common;

use common::{Harness, Options, collect, request};
use llm_sidecar::telemetry::Telemetry;
use opentelemetry::Value;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn traced(provider_toml: &str, capture: Option<usize>) -> (Harness, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone()).with_capture_limit(capture);
    let harness = Harness::start_options(Options {
        provider_toml,
        telemetry: Some(Arc::new(telemetry)),
        ..Options::default()
    })
    .await;
    (harness, exporter)
}

/// A request carrying the caller's trace context.
fn in_caller_trace<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    request
}

/// The finished spans, once `count` of them have ended (the server span of
/// a stream ends as the stream's trailers go out, a moment after the
/// client has read them).
async fn spans(exporter: &InMemorySpanExporter, count: usize) -> Vec<SpanData> {
    for _ in 0..200 {
        let spans = exporter.get_finished_spans().unwrap();
        if spans.len() >= count {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spans = exporter.get_finished_spans().unwrap();
    panic!("expected {count} spans, got {}: {spans:#?}", spans.len());
}

fn by_kind(spans: &[SpanData], kind: SpanKind) -> Vec<&SpanData> {
    spans.iter().filter(|span| span.span_kind == kind).collect()
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn string(span: &SpanData, key: &str) -> String {
    match attribute(span, key) {
        Some(value) => value.as_str().into_owned(),
        None => panic!(
            "span `{}` has no `{key}`: {:#?}",
            span.name, span.attributes
        ),
    }
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::I64(value)) => *value,
        other => panic!("span `{}`: `{key}` is {other:?}", span.name),
    }
}

fn float(span: &SpanData, key: &str) -> f64 {
    match attribute(span, key) {
        Some(Value::F64(value)) => *value,
        other => panic!("span `{}`: `{key}` is {other:?}", span.name),
    }
}

fn is_error(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

#[tokio::test]
async fn a_unary_call_is_a_server_span_over_one_client_span_in_the_callers_trace() {
    let (mut harness, exporter) = traced("", None).await;
    let mut message = request(
        "hello there",
        json!({"reply": "general kenobi", "prompt_tokens": 12}),
    );
    message.temperature = Some(0.25);
    message.max_tokens = Some(64);
    message.seed = Some(7);
    message.stop = vec!["END".into()];
    harness
        .client
        .complete(in_caller_trace(message))
        .await
        .expect("the call succeeds");

    let spans = spans(&exporter, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = by_kind(&spans, SpanKind::Server)[0];
    let client = by_kind(&spans, SpanKind::Client)[0];

    assert_eq!(server.name, "llmsidecar.v1.ChatService/Complete");
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex(CALLER_TRACE).unwrap()
    );
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex(CALLER_SPAN).unwrap()
    );
    assert_eq!(string(server, "rpc.system.name"), "grpc");
    assert_eq!(
        string(server, "rpc.method"),
        "llmsidecar.v1.ChatService/Complete"
    );
    assert_eq!(string(server, "rpc.response.status_code"), "OK");
    assert_eq!(server.status, Status::Unset);

    assert_eq!(client.name, "chat fake-model");
    assert_eq!(
        client.span_context.trace_id(),
        server.span_context.trace_id()
    );
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(string(client, "gen_ai.operation.name"), "chat");
    assert_eq!(string(client, "gen_ai.provider.name"), "fake");
    assert_eq!(string(client, "gen_ai.request.model"), "fake-model");
    assert_eq!(float(client, "gen_ai.request.temperature"), 0.25);
    assert_eq!(int(client, "gen_ai.request.max_tokens"), 64);
    assert_eq!(int(client, "gen_ai.request.seed"), 7);
    assert!(string(client, "gen_ai.request.stop_sequences").contains("END"));
    assert_eq!(string(client, "server.address"), "127.0.0.1");
    assert_eq!(
        int(client, "server.port"),
        i64::from(harness.fake.addr().port())
    );
    assert!(!string(client, "gen_ai.response.id").is_empty());
    assert_eq!(string(client, "gen_ai.response.model"), "fake-model");
    assert!(string(client, "gen_ai.response.finish_reasons").contains("stop"));
    assert_eq!(int(client, "gen_ai.usage.input_tokens"), 12);
    assert_eq!(int(client, "gen_ai.usage.output_tokens"), 2);
    // Content is opt-in.
    assert!(attribute(client, "gen_ai.input.messages").is_none());
    assert!(attribute(client, "gen_ai.output.messages").is_none());

    // The upstream joined the trace, as a child of the attempt.
    let upstream = harness.fake.requests();
    let traceparent = upstream[0].header("traceparent").expect("traceparent sent");
    assert_eq!(
        traceparent,
        format!("00-{CALLER_TRACE}-{}-01", client.span_context.span_id())
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_stream_reports_its_first_chunk_and_usage_when_it_ends() {
    let (mut harness, exporter) = traced("", None).await;
    let mut stream = harness
        .client
        .stream_complete(in_caller_trace(request(
            "x",
            json!({"reply": "one two three four", "first_chunk_delay_ms": 20}),
        )))
        .await
        .expect("the stream starts")
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none(), "{status:?}");
    assert!(!chunks.is_empty());

    let spans = spans(&exporter, 2).await;
    let server = by_kind(&spans, SpanKind::Server)[0];
    let client = by_kind(&spans, SpanKind::Client)[0];
    assert_eq!(server.name, "llmsidecar.v1.ChatService/StreamComplete");
    assert_eq!(string(server, "rpc.response.status_code"), "OK");
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(
        attribute(client, "gen_ai.request.stream"),
        Some(&Value::Bool(true))
    );
    assert!(float(client, "gen_ai.response.time_to_first_chunk") >= 0.02);
    assert_eq!(int(client, "gen_ai.usage.output_tokens"), 4);
    assert!(string(client, "gen_ai.response.finish_reasons").contains("stop"));
    harness.stop().await;
}

#[tokio::test]
async fn a_refused_call_ends_both_spans_in_error() {
    let (mut harness, exporter) = traced("", None).await;
    let status = harness
        .client
        .complete(in_caller_trace(request(
            "x",
            json!({"status": 400, "error_message": "messages too long"}),
        )))
        .await
        .expect_err("the upstream refuses");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let spans = spans(&exporter, 2).await;
    let server = by_kind(&spans, SpanKind::Server)[0];
    let client = by_kind(&spans, SpanKind::Client)[0];
    assert_eq!(
        string(server, "rpc.response.status_code"),
        "INVALID_ARGUMENT"
    );
    assert!(is_error(server) && is_error(client), "{spans:#?}");
    assert_eq!(string(server, "error.type"), string(client, "error.type"));
    assert!(!string(client, "error.type").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn each_retry_is_a_client_span_and_an_event_on_the_call() {
    let (mut harness, exporter) = traced("", None).await;
    harness
        .client
        .complete(in_caller_trace(request(
            "x",
            json!({"status": 503, "fail_times": 2, "key": "traced-retries"}),
        )))
        .await
        .expect("the third attempt succeeds");

    let spans = spans(&exporter, 4).await;
    let server = by_kind(&spans, SpanKind::Server)[0];
    let attempts = by_kind(&spans, SpanKind::Client);
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt.parent_span_id == server.span_context.span_id())
    );
    assert_eq!(
        attempts.iter().filter(|attempt| is_error(attempt)).count(),
        2
    );
    let retries: Vec<_> = server
        .events
        .iter()
        .filter(|event| event.name == "retry")
        .collect();
    assert_eq!(retries.len(), 2, "{:#?}", server.events);
    let attempt_numbers: Vec<String> = retries
        .iter()
        .map(|event| {
            event
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "attempt")
                .unwrap()
                .value
                .to_string()
        })
        .collect();
    assert_eq!(attempt_numbers, ["2", "3"]);
    assert!(retries.iter().all(|event| {
        event
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "delay_ms")
    }));
    assert_eq!(server.status, Status::Unset);
    // Each attempt went upstream with its own span id.
    let parents: Vec<String> = harness
        .fake
        .requests()
        .iter()
        .map(|request| request.header("traceparent").unwrap().to_owned())
        .collect();
    assert_eq!(parents.len(), 3);
    assert_eq!(
        parents
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_call_that_waited_for_a_slot_says_how_long() {
    let (harness, exporter) = traced("max_in_flight = 1\nmax_queue = 4", None).await;
    let slow = |key: &str| {
        let mut client = harness.client.clone();
        let message = request("x", json!({"latency_ms": 150, "key": key}));
        async move { client.complete(message).await.map(|_| ()) }
    };
    let (first, second) = tokio::join!(slow("a"), slow("b"));
    first.unwrap();
    second.unwrap();

    let spans = spans(&exporter, 4).await;
    let waits: Vec<_> = by_kind(&spans, SpanKind::Client)
        .into_iter()
        .flat_map(|span| span.events.iter())
        .filter(|event| event.name == "queue_wait")
        .collect();
    assert_eq!(waits.len(), 1, "{spans:#?}");
    harness.stop().await;
}

#[tokio::test]
async fn a_cancelled_stream_still_ends_its_spans() {
    let (mut harness, exporter) = traced("", None).await;
    let mut stream = harness
        .client
        .stream_complete(request(
            "x",
            json!({"reply": "a b c d e f g h", "chunk_delay_ms": 200}),
        ))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first chunk");
    drop(stream);

    let spans = spans(&exporter, 2).await;
    let server = by_kind(&spans, SpanKind::Server)[0];
    assert_eq!(string(server, "rpc.response.status_code"), "CANCELLED");
    assert_eq!(string(server, "error.type"), "cancelled");
    assert!(is_error(by_kind(&spans, SpanKind::Client)[0]));
    harness.stop().await;
}

#[tokio::test]
async fn the_http_facade_joins_the_callers_trace_too() {
    let (harness, exporter) = traced("", None).await;
    let response = common::http_client()
        .post(format!("{}/chat/completions", harness.http_base()))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let spans = spans(&exporter, 2).await;
    let server = by_kind(&spans, SpanKind::Server)[0];
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex(CALLER_SPAN).unwrap()
    );
    assert_eq!(int(server, "http.response.status_code"), 200);
    assert_eq!(string(server, "http.route"), "/v1/chat/completions");
    let client = by_kind(&spans, SpanKind::Client)[0];
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    harness.stop().await;
}

#[tokio::test]
async fn content_is_captured_only_when_asked_and_capped() {
    let (mut harness, exporter) = traced("", Some(200)).await;
    harness
        .client
        .complete(request(
            "what is the capital of France?",
            json!({"reply": "Paris"}),
        ))
        .await
        .unwrap();
    let mut stream = harness
        .client
        .stream_complete(request("x", json!({"reply": "word ".repeat(200)})))
        .await
        .unwrap()
        .into_inner();
    let (_, status) = collect(&mut stream).await;
    assert!(status.is_none());

    let spans = spans(&exporter, 4).await;
    let clients = by_kind(&spans, SpanKind::Client);
    let unary = clients
        .iter()
        .find(|span| attribute(span, "gen_ai.request.stream") == Some(&Value::Bool(false)))
        .unwrap();
    assert!(string(unary, "gen_ai.input.messages").contains("capital of France"));
    assert!(string(unary, "gen_ai.output.messages").contains("Paris"));
    let streamed = clients
        .iter()
        .find(|span| attribute(span, "gen_ai.request.stream") == Some(&Value::Bool(true)))
        .unwrap();
    let output = string(streamed, "gen_ai.output.messages");
    assert!(output.contains("word word"), "{output}");
    assert!(
        output.len() <= 200 + "…[truncated]".len(),
        "{}",
        output.len()
    );
    harness.stop().await;
}

#[tokio::test]
async fn without_an_exporter_the_callers_trace_still_reaches_the_upstream() {
    // Telemetry as `serve` sets it up with no OTLP endpoint: nothing is
    // exported, yet the attempt gets a span id in the caller's trace and
    // keeps its sampled flag.
    let mut harness = Harness::start().await;
    harness
        .client
        .complete(in_caller_trace(request("hi", json!({}))))
        .await
        .unwrap();
    let traceparent = harness.fake.requests()[0]
        .header("traceparent")
        .expect("traceparent sent")
        .to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], CALLER_TRACE);
    assert_ne!(parts[2], CALLER_SPAN, "the attempt is its own span");
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01", "the caller's sampling decision passes on");
    harness.stop().await;
}

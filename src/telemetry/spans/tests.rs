use super::*;
use crate::model::ChatRequest;
use crate::telemetry::{Telemetry, extract};
use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::Value;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde_json::json;

fn request() -> ChatRequest {
    let mut request = ChatRequest::new(
        "gpt-4o-mini",
        vec![json!({"role": "user", "content": "hi"})],
    );
    request.body.insert("temperature".into(), json!(0.3));
    request
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn finished(exporter: &InMemorySpanExporter, name: &str) -> SpanData {
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span named {name}"))
}

#[test]
fn server_and_client_spans_nest_under_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone());
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let parent = extract(&headers);

    let server = server_span(
        telemetry.tracer(),
        Edge::Grpc,
        "llmsidecar.v1.ChatService/Complete",
        &parent,
    );
    let client = client_span(
        telemetry.tracer(),
        &server,
        &request(),
        "openai",
        "api.openai.com",
        443,
    );
    retry_event(&client, 2, Duration::from_millis(250), "rate_limited");
    record_response(&client, "chatcmpl-1", "gpt-4o-mini-2024", ["stop"], None);
    record_time_to_first_chunk(&client, Duration::from_millis(120));
    end_ok(&client);
    record_grpc_status(&server, tonic::Code::Ok);
    end_ok(&server);

    let server = finished(&exporter, "llmsidecar.v1.ChatService/Complete");
    let client = finished(&exporter, "chat gpt-4o-mini");
    let caller_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    assert_eq!(server.span_context.trace_id(), caller_trace);
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        attribute(&server, RPC_SYSTEM_NAME),
        Some(&Value::from("grpc"))
    );
    assert_eq!(
        attribute(&server, RPC_METHOD),
        Some(&Value::from("llmsidecar.v1.ChatService/Complete"))
    );
    assert_eq!(
        attribute(&server, RPC_RESPONSE_STATUS_CODE),
        Some(&Value::from("OK"))
    );

    assert_eq!(client.span_context.trace_id(), caller_trace);
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(client.status, Status::Unset);
    assert_eq!(
        attribute(&client, genai::GEN_AI_REQUEST_MODEL),
        Some(&Value::from("gpt-4o-mini"))
    );
    assert_eq!(
        attribute(&client, genai::GEN_AI_REQUEST_TEMPERATURE),
        Some(&Value::F64(0.3))
    );
    assert_eq!(
        attribute(&client, genai::GEN_AI_RESPONSE_MODEL),
        Some(&Value::from("gpt-4o-mini-2024"))
    );
    assert_eq!(
        attribute(&client, GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        Some(&Value::F64(0.12))
    );
    let retry = &client.events.events[0];
    assert_eq!(retry.name, EVENT_RETRY);
    assert!(
        retry
            .attributes
            .contains(&KeyValue::new("delay_ms", 250_i64))
    );
    assert!(retry.attributes.contains(&KeyValue::new("attempt", 2_i64)));
}

#[test]
fn http_server_spans_carry_method_and_route() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone());
    let server = server_span(
        telemetry.tracer(),
        Edge::Http,
        "POST /v1/chat/completions",
        &Context::new(),
    );
    record_http_status(&server, 200);
    end_ok(&server);
    let span = finished(&exporter, "POST /v1/chat/completions");
    assert_eq!(
        attribute(&span, HTTP_REQUEST_METHOD),
        Some(&Value::from("POST"))
    );
    assert_eq!(
        attribute(&span, HTTP_ROUTE),
        Some(&Value::from("/v1/chat/completions"))
    );
    assert_eq!(
        attribute(&span, HTTP_RESPONSE_STATUS_CODE),
        Some(&Value::I64(200))
    );
    assert_eq!(span.parent_span_id, SpanId::INVALID);
}

#[test]
fn end_error_sets_error_type_and_status() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone());
    let client = client_span(
        telemetry.tracer(),
        &Context::new(),
        &request(),
        "openai",
        "",
        0,
    );
    queue_wait_event(&client, Duration::from_millis(40));
    end_error(&client, "rate_limited", "upstream said 429");
    let span = finished(&exporter, "chat gpt-4o-mini");
    assert_eq!(
        attribute(&span, ERROR_TYPE),
        Some(&Value::from("rate_limited"))
    );
    assert_eq!(span.status, Status::error("upstream said 429"));
    assert_eq!(span.events.events[0].name, EVENT_QUEUE_WAIT);
}

#[test]
fn content_is_recorded_only_when_asked() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone());
    let client = client_span(
        telemetry.tracer(),
        &Context::new(),
        &request(),
        "openai",
        "",
        0,
    );
    record_input_messages(&client, &request(), 1024);
    end_ok(&client);
    let span = finished(&exporter, "chat gpt-4o-mini");
    let Some(Value::String(text)) = attribute(&span, GEN_AI_INPUT_MESSAGES) else {
        panic!("no input messages");
    };
    assert!(text.as_str().contains("\"content\":\"hi\""));
    assert!(attribute(&span, GEN_AI_OUTPUT_MESSAGES).is_none());
}

#[test]
fn dropping_the_context_ends_the_span() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone());
    let client = client_span(
        telemetry.tracer(),
        &Context::new(),
        &request(),
        "openai",
        "",
        0,
    );
    drop(client);
    finished(&exporter, "chat gpt-4o-mini");
}

#[test]
fn without_an_exporter_our_traces_are_unsampled_and_a_callers_sampled_one_stays_sampled() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let telemetry = Telemetry::init(&crate::telemetry::TelemetryConfig::default()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let server = server_span(telemetry.tracer(), Edge::Grpc, "m", &extract(&headers));
    let client = client_span(telemetry.tracer(), &server, &request(), "openai", "", 0);
    let span = client.span();
    // Sampled by the caller: sampled through us, though nothing exports it.
    assert!(span.span_context().is_sampled());
    let span_context = span.span_context();
    assert!(span_context.is_valid());
    assert_eq!(
        span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_ne!(
        span_context.span_id(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    let mut upstream = HeaderMap::new();
    crate::telemetry::inject(&client, &mut upstream);
    assert!(
        upstream["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
    assert!(upstream["traceparent"].to_str().unwrap().ends_with("-01"));

    // Our own root trace: ids to pass on, nothing recorded.
    let root = server_span(telemetry.tracer(), Edge::Grpc, "m", &Context::new());
    let span = root.span();
    assert!(!span.is_recording());
    assert!(span.span_context().is_valid());
    assert!(!span.span_context().is_sampled());
    telemetry.shutdown_within(Duration::from_secs(2)).unwrap();
}

#[test]
fn grpc_code_names_are_the_conventions_spelling() {
    assert_eq!(
        grpc_code_name(tonic::Code::DeadlineExceeded),
        "DEADLINE_EXCEEDED"
    );
    assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
}

//! Telemetry against real OTLP receivers on loopback: a tonic collector for
//! OTLP/gRPC and an axum one for OTLP/HTTP (protobuf). Each test starts its
//! receiver on port 0, exports through `Telemetry::init`, flushes with a
//! bounded shutdown and reads what arrived. Every wait has a timeout.
//! The last tests run the whole sidecar, configured by the standard
//! `OTEL_*` variables only, and read the spans of a real call.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use common::{Harness, Options};
use llm_sidecar::call_record::Edge;
use llm_sidecar::model::{ChatRequest, Usage};
use llm_sidecar::telemetry::{
    OtlpHeaders, OtlpTarget, Protocol, Telemetry, TelemetryConfig, spans,
};
use opentelemetry::Context;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const TEST_LIMIT: Duration = Duration::from_secs(30);
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// What a receiver got: spans, metric names, and the `x-api-key` header.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
    api_keys: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn add_traces(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }

    fn add_metrics(&self, request: ExportMetricsServiceRequest) {
        let mut names = self.metric_names.lock().unwrap();
        for resource in request.resource_metrics {
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|metric| metric.name));
            }
        }
    }

    fn add_api_key(&self, key: Option<&str>) {
        if let Some(key) = key {
            self.api_keys.lock().unwrap().push(key.to_owned());
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    fn metric_names(&self) -> Vec<String> {
        self.metric_names.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add_api_key(
            request
                .metadata()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok()),
        );
        self.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn grpc_receiver() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Received::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .add_service(MetricsServiceServer::new(received.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    (address, received)
}

async fn http_receiver() -> (SocketAddr, Received) {
    async fn traces(
        State(received): State<Received>,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Vec<u8> {
        received.add_api_key(headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        received.add_traces(ExportTraceServiceRequest::decode(body).unwrap());
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    async fn metrics(State(received): State<Received>, body: Bytes) -> Vec<u8> {
        received.add_metrics(ExportMetricsServiceRequest::decode(body).unwrap());
        ExportMetricsServiceResponse::default().encode_to_vec()
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .route("/v1/metrics", axum::routing::post(metrics))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

fn config(traces: &str, metrics: &str, protocol: Protocol) -> TelemetryConfig {
    TelemetryConfig {
        traces: Some(OtlpTarget {
            endpoint: traces.to_owned(),
            protocol,
        }),
        metrics: Some(OtlpTarget {
            endpoint: metrics.to_owned(),
            protocol,
        }),
        headers: OtlpHeaders(vec![("x-api-key".into(), "collector-token".into())]),
        export_timeout: Duration::from_secs(2),
        ..TelemetryConfig::default()
    }
}

fn request() -> ChatRequest {
    let mut request = ChatRequest::new(
        "gpt-4o-mini",
        vec![serde_json::json!({"role": "user", "content": "hi"})],
    );
    request
        .body
        .insert("temperature".into(), serde_json::json!(0.5));
    request.max_output_tokens = Some(64);
    request
}

/// One call's spans through the helpers: a gRPC server span under a remote
/// parent, and a failed-then-retried client span under it.
fn emit_call(telemetry: &Telemetry) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let parent = llm_sidecar::telemetry::extract(&headers);
    let server = spans::server_span(
        telemetry.tracer(),
        Edge::Grpc,
        "llmsidecar.v1.ChatService/Complete",
        &parent,
    );
    let client = spans::client_span(
        telemetry.tracer(),
        &server,
        &request(),
        "openai",
        "127.0.0.1",
        8080,
    );
    spans::retry_event(&client, 2, Duration::from_millis(100), "http_503");
    let usage = Usage {
        prompt_tokens: 9,
        completion_tokens: 3,
        total_tokens: 12,
        ..Usage::default()
    };
    spans::record_response(
        &client,
        "chatcmpl-1",
        "gpt-4o-mini-2024",
        ["stop"],
        Some(&usage),
    );
    spans::end_ok(&client);
    spans::record_grpc_status(&server, tonic::Code::Ok);
    spans::end_ok(&server);
    telemetry.metrics().retry("openai", "http_503");
}

fn string_attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(value) => Some(value.clone()),
            _ => None,
        })
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        })
}

fn assert_exported_call(received: &Received) {
    let spans = received.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans
        .iter()
        .find(|span| span.name == "llmsidecar.v1.ChatService/Complete")
        .expect("the server span");
    let client = spans
        .iter()
        .find(|span| span.name == "chat gpt-4o-mini")
        .expect("the client span");

    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(client.kind, SpanKind::Client as i32);
    let caller_trace = hex("4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.trace_id, caller_trace);
    assert_eq!(client.trace_id, caller_trace);
    assert_eq!(server.parent_span_id, hex("00f067aa0ba902b7"));
    assert_eq!(client.parent_span_id, server.span_id);

    assert_eq!(
        string_attribute(server, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attribute(server, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert_eq!(
        string_attribute(client, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        string_attribute(client, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        string_attribute(client, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        string_attribute(client, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini-2024")
    );
    assert_eq!(
        string_attribute(client, "gen_ai.response.id").as_deref(),
        Some("chatcmpl-1")
    );
    assert_eq!(
        string_attribute(client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(int_attribute(client, "server.port"), Some(8080));
    assert_eq!(int_attribute(client, "gen_ai.request.max_tokens"), Some(64));
    assert_eq!(int_attribute(client, "gen_ai.usage.input_tokens"), Some(9));
    assert_eq!(int_attribute(client, "gen_ai.usage.output_tokens"), Some(3));
    assert_eq!(client.events.len(), 1);
    assert_eq!(client.events[0].name, "retry");

    let api_keys = received.api_keys.lock().unwrap().clone();
    assert!(
        !api_keys.is_empty(),
        "the configured header reached the collector"
    );
    assert!(api_keys.iter().all(|key| key == "collector-token"));

    let metric_names = received.metric_names();
    assert!(
        metric_names
            .iter()
            .any(|name| name == "llm_sidecar.retries"),
        "{metric_names:?}"
    );
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_grpc_collector() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (address, received) = grpc_receiver().await;
        let endpoint = format!("http://{address}");
        let telemetry = Telemetry::init(&config(&endpoint, &endpoint, Protocol::Grpc)).unwrap();
        emit_call(&telemetry);
        telemetry.shutdown_within(SHUTDOWN_LIMIT).unwrap();
        assert_exported_call(&received);
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_http_collector() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (address, received) = http_receiver().await;
        let telemetry = Telemetry::init(&config(
            &format!("http://{address}/v1/traces"),
            &format!("http://{address}/v1/metrics"),
            Protocol::HttpProtobuf,
        ))
        .unwrap();
        emit_call(&telemetry);
        telemetry.shutdown_within(SHUTDOWN_LIMIT).unwrap();
        assert_exported_call(&received);
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_exports_nothing_and_shuts_down_at_once() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (_, received) = grpc_receiver().await;
        let telemetry = Telemetry::init(&TelemetryConfig::default()).unwrap();
        emit_call(&telemetry);
        // `/metrics` works without an exporter.
        assert!(
            telemetry
                .prometheus_text()
                .contains("llm_sidecar_retries_total")
        );
        let started = Instant::now();
        telemetry.shutdown_within(SHUTDOWN_LIMIT).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(received.spans().is_empty());
        assert!(received.metric_names().is_empty());
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_collector_does_not_hold_shutdown_up() {
    tokio::time::timeout(TEST_LIMIT, async {
        // A port that was free a moment ago: nothing listens there now.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let telemetry = Telemetry::init(&config(&endpoint, &endpoint, Protocol::Grpc)).unwrap();
        emit_call(&telemetry);
        let started = Instant::now();
        let _ = telemetry.shutdown_within(Duration::from_secs(2));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "shutdown took {:?}",
            started.elapsed()
        );
        // A second call returns at once.
        telemetry.shutdown_within(Duration::from_secs(2)).unwrap();
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_wait_on_a_stalled_collector() {
    tokio::time::timeout(TEST_LIMIT, async {
        // Accepts connections but never answers: exports hang until their
        // timeout, and the spans of requests must not.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let telemetry = Telemetry::init(&config(&endpoint, &endpoint, Protocol::Grpc)).unwrap();
        let started = Instant::now();
        for _ in 0..2000 {
            let client = spans::client_span(
                telemetry.tracer(),
                &Context::new(),
                &request(),
                "openai",
                "",
                0,
            );
            spans::end_ok(&client);
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "2000 spans took {:?}",
            started.elapsed()
        );
        let _ = telemetry.shutdown_within(Duration::from_secs(2));
        drop(listener);
    })
    .await
    .expect("the test finished in time");
}

/// The running sidecar, configured by the standard variables alone, sends
/// a call's spans (and its metrics, flushed at shutdown) to the collector.
async fn sidecar_exports_a_call(protocol: &str, address: SocketAddr, received: &Received) {
    let mut harness = Harness::start_options(Options {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{address}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=collector-token".to_owned(),
            ),
            ("OTEL_SERVICE_NAME", "checkout-llm-sidecar".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let mut stream = harness
        .client
        .stream_complete(common::request("hello", json!({"reply": "a b c"})))
        .await
        .expect("the stream starts")
        .into_inner();
    while stream
        .message()
        .await
        .expect("the stream completes")
        .is_some()
    {}
    harness.stop().await;

    let spans = received.spans();
    let server = spans
        .iter()
        .find(|span| span.name == "llmsidecar.v1.ChatService/StreamComplete")
        .unwrap_or_else(|| panic!("no server span among {spans:#?}"));
    let client = spans
        .iter()
        .find(|span| span.name == "chat fake-model")
        .unwrap_or_else(|| panic!("no client span among {spans:#?}"));
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(client.kind, SpanKind::Client as i32);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(int_attribute(client, "gen_ai.usage.output_tokens"), Some(3));
    assert!(
        received
            .metric_names()
            .iter()
            .any(|name| name == "gen_ai.client.operation.duration"),
        "{:?}",
        received.metric_names()
    );
    assert!(
        received
            .api_keys
            .lock()
            .unwrap()
            .iter()
            .all(|key| key == "collector-token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_sidecar_exports_over_otlp_grpc() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (address, received) = grpc_receiver().await;
        sidecar_exports_a_call("grpc", address, &received).await;
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_sidecar_exports_over_otlp_http() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (address, received) = http_receiver().await;
        sidecar_exports_a_call("http/protobuf", address, &received).await;
    })
    .await
    .expect("the test finished in time");
}

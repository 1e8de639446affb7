//! A recognisable upstream key and a caller's bearer token go through
//! successful, retried, refused and key-rejected calls on both edges, with
//! content capture on and logs at debug. Then every span, event and
//! status, the metrics, the admin views, every log line and every error
//! the callers saw are searched for either secret.
//!
//! Also checked from the same log: each call's log lines carry its trace id.

mod common;

use common::{CALLER_TOKEN, Harness, Options, UPSTREAM_KEY, collect, request};
use llm_sidecar::telemetry::Telemetry;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// The log, as written: JSON lines in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Logs as the sidecar writes them with `logging.format = "json"`.
fn capture_logs() -> LogBuffer {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();
    buffer
}

fn assert_clean(place: &str, text: &str) {
    for secret in [UPSTREAM_KEY, CALLER_TOKEN, &UPSTREAM_KEY[8..]] {
        assert!(
            !text.contains(secret),
            "a secret leaked into {place}:\n{text}"
        );
    }
}

#[tokio::test]
async fn no_secret_reaches_spans_metrics_logs_or_errors() {
    let logs = capture_logs();
    let exporter = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(exporter.clone()).with_capture_limit(Some(64 * 1024));
    let mut harness = Harness::start_options(Options {
        telemetry: Some(Arc::new(telemetry)),
        ..Options::default()
    })
    .await;
    let mut errors = Vec::new();

    let mut traced = tonic::Request::new(request("hello", json!({})));
    traced.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    traced.metadata_mut().insert(
        "authorization",
        format!("Bearer {CALLER_TOKEN}").parse().unwrap(),
    );
    let answer = harness.client.complete(traced).await.expect("answered");
    errors.push(format!("{:?}", answer.metadata()));

    let mut stream = harness
        .client
        .stream_complete(request("stream me", json!({})))
        .await
        .unwrap()
        .into_inner();
    assert!(collect(&mut stream).await.1.is_none());
    harness
        .client
        .complete(request(
            "x",
            json!({"status": 429, "fail_times": 1, "key": "hyg"}),
        ))
        .await
        .expect("the retry succeeds");
    // Providers echo the key they rejected, as OpenAI does.
    let rejected = format!("Incorrect API key provided: {UPSTREAM_KEY}. Find your key at ...");
    for status in [401, 400, 500] {
        let refused = harness
            .client
            .complete(request(
                "x",
                json!({"status": status, "error_message": rejected}),
            ))
            .await
            .expect_err("refused");
        errors.push(format!("{refused:?}"));
    }
    let facade = common::http_client();
    for scenario in [json!({}), json!({"status": 401, "error_message": rejected})] {
        let response = facade
            .post(format!("{}/chat/completions", harness.http_base()))
            .bearer_auth(CALLER_TOKEN)
            .json(&json!({
                "model": "fake-model",
                "messages": [{"role": "user", "content": "hi"}],
                "fake": scenario,
            }))
            .send()
            .await
            .unwrap();
        errors.push(format!("{:?}", response.headers()));
        errors.push(response.text().await.unwrap());
    }

    let admin = harness.admin_base();
    let mut views = Vec::new();
    for path in [
        "/metrics",
        "/admin/requests",
        "/admin/logs",
        "/admin/usage",
        "/admin/providers",
    ] {
        let body = reqwest::get(format!("{admin}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        views.push((path, body));
    }
    // Read before the stop: shutting the exporter down empties it.
    let spans = exporter.get_finished_spans().unwrap();
    harness.stop().await;

    assert!(spans.len() >= 10, "the calls were traced: {}", spans.len());
    assert_clean("the spans", &format!("{spans:#?}"));
    for (path, body) in &views {
        assert!(!body.is_empty(), "{path} answered");
        assert_clean(path, body);
    }
    assert_clean("the errors callers saw", &errors.join("\n"));
    let log = logs.text();
    assert_clean("the log", &log);

    // The caller's trace id is on its call's log lines.
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let request_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "request")
        .collect();
    assert_eq!(request_lines.len(), 8, "one line per call:\n{log}");
    assert!(
        request_lines
            .iter()
            .any(|line| line["span"]["trace_id"] == CALLER_TRACE),
        "{log}"
    );
    assert!(
        request_lines.iter().all(|line| line["span"]["trace_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
            && line["span"]["request_id"].is_string()),
        "{log}"
    );
}

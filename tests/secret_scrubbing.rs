//! No secret reaches a caller or an operator. The real binary is given
//! recognisable secrets: a key read from a file, a second key from the
//! environment (used in turn), a header secret by its name (`X-Api-Key`)
//! and one marked `secret = true` (`X-Tenant`, read from the environment). The fake upstream then
//! echoes them back through every error path: 401, 403, 429 (its headers
//! echoing them too), a 502 HTML page, an in-band error (an error object in
//! a 200 answer, an `{"error": ...}` event mid-stream), `finish_reason:
//! "error"` and a timeout, on both edges, unary and streamed. Every byte
//! the callers received (gRPC: status message, metadata, trailers, the
//! details raw and decoded; HTTP: status, every header, the body) is
//! searched for each secret, its head and its tail. The key file is then
//! changed and the new key goes through the same paths. Last, the
//! sidecar's log and what its OTLP exporter sent (spans and metrics) are
//! searched too. A plain header (`X-Title`) still reads as it was.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use common::process::{Sidecar, free_port};
use common::{collect, request};
use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::proto::v1 as pb;
use pb::chat_service_client::ChatServiceClient;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// The key file's first content, and what it is changed to.
const KEY_FILE_OLD: &str = "sk-fileA-7f3c9e21b4d8a6f0";
const KEY_FILE_NEW: &str = "rotated-2d6a8c4e0f1b3579";
/// The second key (no `sk-` shape: only the configured value can find it).
const KEY_ENV: &str = "azure-91e4b7a2c5d8f036c";
/// `X-Api-Key`: secret by its name.
const HEADER_BY_NAME: &str = "hdrkey-5b8e1d4a7c0f2e93";
/// `X-Tenant`: secret because the config says so.
const HEADER_MARKED: &str = "tenant-3c7f0a9d2e5b8146";
/// `X-Title`: plain, stays readable.
const TITLE: &str = "my-app-title";

const ALL_SECRETS: [&str; 5] = [
    KEY_FILE_OLD,
    KEY_FILE_NEW,
    KEY_ENV,
    HEADER_BY_NAME,
    HEADER_MARKED,
];

/// Every way a secret can show: whole, or its first or last 12 characters.
fn probes(secret: &str) -> [&str; 3] {
    [secret, &secret[..12], &secret[secret.len() - 12..]]
}

/// Which probes of `secrets` occur in `text`.
fn leaks(text: &[u8], secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        for probe in probes(secret) {
            if text
                .windows(probe.len())
                .any(|window| window == probe.as_bytes())
            {
                found.push(probe.to_owned());
            }
        }
    }
    found
}

/// What a proxy in front of the provider echoes: the request's
/// credentials as it received them, and a plain header.
fn echo(key: &str) -> String {
    format!(
        "Authorization: Bearer {key}; other key {KEY_ENV}; bare {key}; \
         x-api-key: {HEADER_BY_NAME}; x-tenant: {HEADER_MARKED}; x-title: {TITLE}"
    )
}

/// An OpenAI-style error object with the secrets in every member.
fn error_object(key: &str) -> Value {
    json!({
        "message": format!("Incorrect API key provided. {}", echo(key)),
        "type": key,
        "code": HEADER_BY_NAME,
        "param": HEADER_MARKED,
        "metadata": {"raw": echo(key), "provider_key": KEY_ENV, (key): "as a member name"},
    })
}

fn chunk(content: &str) -> Value {
    json!({
        "id": "chatcmpl-scrub", "object": "chat.completion.chunk", "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": null}],
    })
}

/// One error path: its name, the scenario for unary calls and the one for
/// streams (`None`: the path has no such form).
struct ErrorPath {
    name: &'static str,
    unary: Option<Value>,
    stream: Option<Value>,
}

fn paths(key: &str) -> Vec<ErrorPath> {
    let both = |name, scenario: Value| ErrorPath {
        name,
        unary: Some(scenario.clone()),
        stream: Some(scenario),
    };
    vec![
        both(
            "401",
            json!({"status": 401, "error_body": {"error": error_object(key)}}),
        ),
        both(
            "403",
            json!({"status": 403, "error_body": {"error": error_object(key)}}),
        ),
        both(
            "429",
            json!({
                "status": 429,
                "error_body": {"error": error_object(key)},
                "headers": {
                    "x-ratelimit-remaining-requests": KEY_ENV,
                    "x-ratelimit-reset-tokens": format!("Bearer {key}"),
                    "x-request-id": HEADER_BY_NAME,
                    "ratelimit-policy": HEADER_MARKED,
                    "retry-after": key,
                },
            }),
        ),
        both(
            "502 page",
            json!({
                "status": 502,
                "error_html": format!(
                    "<html><body><h1>502 Bad Gateway</h1><pre>{}</pre></body></html>",
                    echo(key)
                ),
            }),
        ),
        ErrorPath {
            name: "in band",
            unary: Some(json!({"raw_body": {"error": error_object(key)}})),
            stream: Some(json!({"raw_events": [chunk("partial"), {"error": error_object(key)}]})),
        },
        ErrorPath {
            name: "finish error",
            unary: None,
            stream: Some(json!({"raw_events": [chunk("partial"), {
                "id": "chatcmpl-scrub", "object": "chat.completion.chunk", "created": 0,
                "model": "fake-model",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "error",
                             "native_finish_reason": echo(key)}],
            }]})),
        },
        both("timeout", json!({"hang": true})),
    ]
}

/// Everything a gRPC status carries: code, message, metadata (headers and
/// trailers), the details as sent and as decoded.
fn describe_status(out: &mut String, status: &tonic::Status) {
    let _ = writeln!(out, "code {:?}: {}", status.code(), status.message());
    describe_metadata(out, status.metadata());
    let _ = writeln!(out, "details {}", String::from_utf8_lossy(status.details()));
    let _ = writeln!(out, "decoded {:?}", status.get_error_details());
}

fn describe_metadata(out: &mut String, metadata: &tonic::metadata::MetadataMap) {
    for (name, value) in metadata.clone().into_headers().iter() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
}

async fn grpc_unary(client: &mut ChatServiceClient<Channel>, scenario: &Value) -> String {
    let mut out = String::new();
    match client.complete(request("hello", scenario.clone())).await {
        Ok(answer) => {
            describe_metadata(&mut out, answer.metadata());
            let _ = writeln!(out, "{:?}", answer.get_ref());
        }
        Err(status) => describe_status(&mut out, &status),
    }
    out
}

async fn grpc_stream(client: &mut ChatServiceClient<Channel>, scenario: &Value) -> String {
    let mut out = String::new();
    match client
        .stream_complete(request("hello", scenario.clone()))
        .await
    {
        Ok(response) => {
            describe_metadata(&mut out, response.metadata());
            let mut stream = response.into_inner();
            let (chunks, status) = collect(&mut stream).await;
            let _ = writeln!(out, "{chunks:?}");
            if let Some(status) = status {
                describe_status(&mut out, &status);
            }
            if let Ok(Some(trailers)) = stream.trailers().await {
                describe_metadata(&mut out, &trailers);
            }
        }
        Err(status) => describe_status(&mut out, &status),
    }
    out
}

/// Status, every header and the whole body of a facade call.
async fn http(base: &str, scenario: &Value, stream: bool) -> String {
    let response = common::http_client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "fake-model",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": stream,
            "fake": scenario,
        }))
        .send()
        .await
        .expect("the facade answers");
    let mut out = format!("{}\n", response.status());
    for (name, value) in response.headers() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    out.push_str(&response.text().await.unwrap_or_default());
    out
}

/// Sends every error path through both edges, unary and streamed, and
/// checks each answer for `secrets`. Returns all the callers saw.
async fn every_path(
    client: &mut ChatServiceClient<Channel>,
    http_base: &str,
    key: &str,
    secrets: &[&str],
) -> String {
    let mut everything = String::new();
    for path in paths(key) {
        let mut answers = Vec::new();
        if let Some(scenario) = &path.unary {
            answers.push(("gRPC unary", grpc_unary(client, scenario).await));
            answers.push(("HTTP unary", http(http_base, scenario, false).await));
        }
        if let Some(scenario) = &path.stream {
            answers.push(("gRPC stream", grpc_stream(client, scenario).await));
            answers.push(("HTTP stream", http(http_base, scenario, true).await));
        }
        for (edge, answer) in answers {
            let found = leaks(answer.as_bytes(), secrets);
            assert!(
                found.is_empty(),
                "{} via {edge} leaked {found:?}:\n{answer}",
                path.name
            );
            let _ = writeln!(everything, "== {} via {edge}\n{answer}", path.name);
        }
    }
    everything
}

/// An OTLP/HTTP collector that keeps every body it is sent, as sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Collector {
    async fn start() -> (u16, Collector) {
        async fn keep(
            State(collector): State<Collector>,
            uri: http::Uri,
            body: Bytes,
        ) -> &'static [u8] {
            collector
                .0
                .lock()
                .unwrap()
                .push((uri.path().to_owned(), body));
            // An empty Export*ServiceResponse.
            b""
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let collector = Collector::default();
        let app = axum::Router::new()
            .fallback(axum::routing::post(keep))
            .with_state(collector.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, collector)
    }

    fn bodies(&self, path: &str) -> Vec<u8> {
        let received = self.0.lock().unwrap();
        received
            .iter()
            .filter(|(at, _)| at == path)
            .flat_map(|(_, body)| body.to_vec())
            .collect()
    }
}

fn config(dir: &Path, base_url: &str) -> String {
    format!(
        r#"default_provider = "fake"
[server]
uds = "/nonexistent/unused.sock"
watch_interval_ms = 100
[retry]
max_attempts = 1
[providers.fake]
base_url = "{base_url}"
api_key_file = "{key_file}"
api_keys = [{{ env = "SCRUB_KEY_ENV" }}]
circuit_failures = 0
timeouts = {{ headers_ms = 400, first_chunk_ms = 400, unary_total_ms = 800 }}
headers = {{ "X-Api-Key" = "{HEADER_BY_NAME}", "X-Tenant" = {{ env = "SCRUB_TENANT", secret = true }}, "X-Title" = "{TITLE}" }}
"#,
        key_file = dir.join("key").display(),
    )
}

/// Calls until the upstream has seen `key` as a bearer token (10 s at most).
async fn until_upstream_uses(
    client: &mut ChatServiceClient<Channel>,
    upstream: &FakeUpstream,
    key: &str,
) -> bool {
    let wanted = format!("Bearer {key}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let _ = client.complete(request("hello", json!({}))).await;
        if upstream
            .requests()
            .iter()
            .any(|request| request.header("authorization") == Some(wanted.as_str()))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_caller_a_log_or_a_span() {
    let upstream = FakeUpstream::start().await.unwrap();
    let (otlp_port, collector) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), format!("{KEY_FILE_OLD}\n")).unwrap();
    let http_port = free_port();
    let config_file = dir.path().join("sidecar.toml");
    std::fs::write(&config_file, config(dir.path(), &upstream.base_url())).unwrap();
    let socket = dir.path().join("sidecar.sock");
    let http_addr = format!("127.0.0.1:{http_port}");
    let otlp = format!("http://127.0.0.1:{otlp_port}");
    let sidecar = Sidecar::serve_env(
        &[
            "--config",
            config_file.to_str().unwrap(),
            "--uds",
            socket.to_str().unwrap(),
            "--tcp",
            "",
            "--http",
            &http_addr,
            "--admin",
            "",
            "--ledger",
            "",
        ],
        Some("debug"),
        &[
            ("SCRUB_KEY_ENV", KEY_ENV),
            ("SCRUB_TENANT", HEADER_MARKED),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
        &socket,
        &dir.path().join("sidecar.log"),
    );
    sidecar.wait_for_port(http_port);
    let mut client = chat_client(connect_uds(&socket).await.unwrap(), 1 << 20);
    let http_base = format!("http://{http_addr}");

    // Both keys are in use, and every header reaches the upstream as set.
    assert!(until_upstream_uses(&mut client, &upstream, KEY_ENV).await);
    assert!(until_upstream_uses(&mut client, &upstream, KEY_FILE_OLD).await);
    let sent = upstream.requests().last().cloned().unwrap();
    assert_eq!(sent.header("x-api-key"), Some(HEADER_BY_NAME));
    assert_eq!(sent.header("x-tenant"), Some(HEADER_MARKED));
    assert_eq!(sent.header("x-title"), Some(TITLE));

    let before = [KEY_FILE_OLD, KEY_ENV, HEADER_BY_NAME, HEADER_MARKED];
    let seen = every_path(&mut client, &http_base, KEY_FILE_OLD, &before).await;
    // The echoes arrived, scrubbed, with the plain header still readable.
    assert!(seen.contains("<redacted>"), "{seen}");
    assert!(seen.contains(&format!("x-title: {TITLE}")), "{seen}");

    // The key file changes: the reloaded pipeline scrubs the new key.
    std::fs::write(dir.path().join("key"), format!("{KEY_FILE_NEW}\n")).unwrap();
    assert!(
        until_upstream_uses(&mut client, &upstream, KEY_FILE_NEW).await,
        "the new key was not picked up:\n{}",
        sidecar.log()
    );
    let seen = every_path(&mut client, &http_base, KEY_FILE_NEW, &ALL_SECRETS).await;
    assert!(seen.contains("<redacted>"), "{seen}");

    // The log and the telemetry, once the sidecar has stopped and flushed.
    sidecar.signal("TERM");
    let mut sidecar = sidecar;
    let started = Instant::now();
    while sidecar.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sidecar did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = sidecar.log();
    assert!(log.contains("config reloaded"), "{log}");
    let found = leaks(log.as_bytes(), &ALL_SECRETS);
    assert!(found.is_empty(), "the log leaked {found:?}:\n{log}");
    let spans = collector.bodies("/v1/traces");
    let span_name = b"chat fake-model";
    assert!(
        spans.windows(span_name.len()).any(|w| w == span_name),
        "no spans were exported"
    );
    let found = leaks(&spans, &ALL_SECRETS);
    assert!(found.is_empty(), "the spans leaked {found:?}");
    let found = leaks(&collector.bodies("/v1/metrics"), &ALL_SECRETS);
    assert!(found.is_empty(), "the metrics leaked {found:?}");
}

//! Memory is bounded by construction, whatever the callers do: streams
//! read slowly or not at all, clients that advertise huge HTTP/2 windows
//! and then stop reading, more calls than the sidecar may hold, answers
//! larger than a caller can receive. Each test runs the real binary in a
//! child process against the fake upstream and reads the child's RSS from
//! /proc, against the bound ARCHITECTURE.md states.

// Reads the ledger file as any SQLite client would, not through the
// sidecar's own connection code.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "memory_bounds/h2_client.rs"]
mod h2_client;
#[path = "memory_bounds/process_memory.rs"]
mod process_memory;

use common::process::{Sidecar, free_port};
use fake_upstream::FakeUpstream;
use h2_client::{Connection, HUGE, Windows};
use llm_sidecar::proto::v1 as pb;
use process_memory::{peak_rss_bytes, rss_bytes, wait_until_quiet};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt as _;

const MIB: u64 = 1024 * 1024;

/// What one stream may hold at most, as ARCHITECTURE.md states it ("Memory
/// per call"), in bytes.
const PER_STREAM_BOUND: u64 = llm_sidecar::server::memory_limit::PER_CALL_BOUND_BYTES;

/// Allowed beyond the streams' bounds: the allocator's own keeping, the
/// runtime's and the connections' state.
const SLACK: u64 = 24 * MIB;

/// Streams per HTTP/2 connection, within the sidecar's per-connection limit.
const STREAMS_PER_CONNECTION: usize = 100;

/// A sidecar in a child process, with its ports.
struct Child {
    process: Sidecar,
    socket: PathBuf,
    tcp: u16,
    http: u16,
    admin: u16,
    health: u16,
    _dir: tempfile::TempDir,
}

impl Child {
    /// The sidecar in front of `fake`, with `server` added to its
    /// `[server]` table.
    fn start(fake: &FakeUpstream, server: &str) -> Child {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sidecar.sock");
        let (tcp, http, admin, health) = (free_port(), free_port(), free_port(), free_port());
        let config = dir.path().join("sidecar.toml");
        std::fs::write(
            &config,
            format!(
                r#"default_provider = "fake"
mock = false
[server]
uds = "{socket}"
tcp = "127.0.0.1:{tcp}"
http = "127.0.0.1:{http}"
admin = "127.0.0.1:{admin}"
health = "127.0.0.1:{health}"
{server}
# Generous: 500 calls at once on a busy machine are slow to start, and
# unread streams stay open.
[timeouts]
headers_ms = 240000
first_chunk_ms = 240000
idle_ms = 300000
stream_total_ms = 600000
[providers.fake]
base_url = "{base}"
circuit_failures = 0
max_attempts = 1
[ledger]
path = "{ledger}"
"#,
                socket = socket.display(),
                base = fake.base_url(),
                ledger = dir.path().join("ledger.sqlite3").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("sidecar.log");
        let process = Sidecar::serve_env(
            &["--config", config.to_str().unwrap()],
            Some("warn"),
            &[("LLM_SIDECAR_TOKEN", common::CALLER_TOKEN)],
            &socket,
            &log,
        );
        for port in [tcp, http, admin, health] {
            process.wait_for_port(port);
        }
        Child {
            process,
            socket,
            tcp,
            http,
            admin,
            health,
            _dir: dir,
        }
    }

    async fn grpc(&self) -> pb::chat_service_client::ChatServiceClient<tonic::transport::Channel> {
        let channel = llm_sidecar::client::connect_uds(&self.socket)
            .await
            .unwrap();
        llm_sidecar::client::chat_client(channel, 64 * 1024 * 1024)
    }

    /// `POST /v1/chat/completions` with `body` on the facade.
    async fn post(&self, body: &Value) -> reqwest::Response {
        common::http_client()
            .post(format!(
                "http://127.0.0.1:{}/v1/chat/completions",
                self.http
            ))
            .json(body)
            .send()
            .await
            .expect("the facade answers")
    }

    /// The ledger's rows of calls that ended with `outcome`, once `count`
    /// of them are written (read through the admin port).
    async fn rows_with(&self, outcome: &str, count: usize) -> Vec<Value> {
        let url = format!(
            "http://127.0.0.1:{}/admin/requests?outcome={outcome}",
            self.admin
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            let rows = answer["requests"].as_array().cloned().unwrap_or_default();
            let matching: Vec<Value> = rows
                .into_iter()
                .filter(|row| row["outcome"] == outcome)
                .collect();
            if matching.len() >= count {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "{count} rows with {outcome} were not written: {matching:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.process.child.id()
    }

    fn rss(&self) -> u64 {
        rss_bytes(self.pid())
    }
}

/// A streaming request whose answer is `bytes` of text in `chunks` events,
/// sent by the upstream as fast as it can be taken.
fn big_stream(bytes: usize, chunks: usize) -> pb::ChatRequest {
    common::request(
        "hi",
        serde_json::json!({ "reply": "x".repeat(64), "repeat": bytes / 64, "chunks": chunks }),
    )
}

/// How streams are read in a run.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// The client takes the sidecar's data off the socket (up to its
    /// windows) but the application never reads a stream.
    Slow,
    /// The client stops reading its socket once the streams are sent.
    Stopped,
}

/// Opens `streams` streams of `request` over `socket` that are never read,
/// and waits until the sidecar holds all it will hold for them. The
/// connections (which keep the streams open) are returned.
async fn open_unread_streams(
    child: &Child,
    fake: &FakeUpstream,
    request: &pb::ChatRequest,
    streams: usize,
    windows: Windows,
    reading: Reading,
) -> (Vec<Connection>, Vec<h2::client::ResponseFuture>) {
    let before = fake.requests().len();
    let mut connections = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..streams.div_ceil(STREAMS_PER_CONNECTION) {
        let io = tokio::net::UnixStream::connect(&child.socket)
            .await
            .unwrap();
        let mut connection = Connection::open(io, windows).await;
        if let Reading::Stopped = reading {
            connection.stop_reading();
        }
        let on_this = STREAMS_PER_CONNECTION.min(streams - responses.len());
        for _ in 0..on_this {
            responses.push(connection.stream_complete(request).await);
        }
        connections.push(connection);
    }
    // Every call has reached the upstream...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while fake.requests().len() < before + streams {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {streams} calls reached the upstream: {}",
            fake.requests().len() - before,
            child.process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and every stream is blocked where it holds the most it can.
    wait_until_quiet(
        child.pid(),
        || fake.frames_sent(),
        Duration::from_secs(2),
        Duration::from_secs(120),
    )
    .await;
    (connections, responses)
}

/// The sidecar's RSS once warm (one call served) and idle.
async fn idle_rss(child: &Child) -> u64 {
    let mut warm = child
        .grpc()
        .await
        .stream_complete(common::request("warm up", serde_json::json!({})))
        .await
        .expect("a first call")
        .into_inner();
    let (_, status) = common::collect(&mut warm).await;
    assert!(status.is_none(), "{status:?}");
    child.rss()
}

/// How much the sidecar grew for `streams` unread streams of 1 MiB each.
async fn growth_for_unread_streams(
    streams: usize,
    windows: Windows,
    reading: Reading,
) -> (u64, u64) {
    let fake = FakeUpstream::start().await.unwrap();
    let child = Child::start(&fake, "");
    let idle = idle_rss(&child).await;
    let request = big_stream(1 << 20, 256);
    let (connections, responses) =
        open_unread_streams(&child, &fake, &request, streams, windows, reading).await;
    let loaded = child.rss();
    drop((connections, responses));
    (idle, loaded)
}

/// Writes the figures of a run (for BENCHMARKS.md) to stderr.
fn report(what: &str, streams: usize, (idle, loaded): (u64, u64)) {
    eprintln!(
        "{what}: {streams} streams, RSS idle {:.1} MiB, loaded {:.1} MiB, {} KiB a stream",
        idle as f64 / MIB as f64,
        loaded as f64 / MIB as f64,
        loaded.saturating_sub(idle) / 1024 / streams as u64
    );
}

fn assert_bounded(what: &str, streams: usize, (idle, loaded): (u64, u64)) {
    report(what, streams, (idle, loaded));
    let grown = loaded.saturating_sub(idle);
    let allowed = streams as u64 * PER_STREAM_BOUND + SLACK;
    assert!(
        grown <= allowed,
        "{what}: {streams} streams grew the sidecar by {} MiB, more than {} MiB",
        grown / MIB,
        allowed / MIB
    );
}

/// Clients as gRPC libraries make them (64 KiB stream windows), whose
/// applications read nothing: the sidecar holds at most its bound a
/// stream, and the upstream waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_unread_streams_stay_within_the_bound() {
    let windows = Windows {
        stream: 64 * 1024,
        connection: HUGE,
    };
    let measured = growth_for_unread_streams(500, windows, Reading::Slow).await;
    assert_bounded("slow readers", 500, measured);
}

/// A client that advertises the largest windows HTTP/2 allows and then
/// stops reading its socket: the sidecar's send buffers, not the window,
/// bound what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_windows_and_a_client_that_stops_reading_stay_within_the_bound() {
    let windows = Windows {
        stream: HUGE,
        connection: HUGE,
    };
    let measured = growth_for_unread_streams(500, windows, Reading::Stopped).await;
    assert_bounded("huge windows, socket unread", 500, measured);
}

/// The figures for BENCHMARKS.md, on the binary this test was built with
/// (`cargo test --release --test memory_bounds -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it on the release build"]
async fn measure_unread_streams() {
    let slow = Windows {
        stream: 64 * 1024,
        connection: HUGE,
    };
    let huge = Windows {
        stream: HUGE,
        connection: HUGE,
    };
    for streams in [150, 500] {
        let measured = growth_for_unread_streams(streams, slow, Reading::Slow).await;
        report("slow readers", streams, measured);
        let measured = growth_for_unread_streams(streams, huge, Reading::Stopped).await;
        report("huge windows, socket unread", streams, measured);
    }
    let fake = FakeUpstream::start().await.unwrap();
    let child = Child::start(&fake, "");
    let idle = idle_rss(&child).await;
    let answer = child
        .grpc()
        .await
        .complete(common::request(
            "big",
            json!({ "reply": "x".repeat(100), "repeat": 600_000 }),
        ))
        .await;
    eprintln!(
        "a 60 MB unary answer ({:?}): RSS idle {:.1} MiB, peak {:.1} MiB",
        answer.map(drop).map_err(|status| status.code()),
        idle as f64 / MIB as f64,
        peak_rss_bytes(child.pid()) as f64 / MIB as f64
    );
}

/// Every listener tells its clients how many streams one connection may
/// open, as `[server] max_concurrent_streams` says.
#[tokio::test]
async fn every_listener_limits_the_streams_of_a_connection() {
    let fake = FakeUpstream::start().await.unwrap();
    let child = Child::start(&fake, "max_concurrent_streams = 77");
    let windows = Windows {
        stream: 65_535,
        connection: 65_535,
    };
    let uds = tokio::net::UnixStream::connect(&child.socket)
        .await
        .unwrap();
    assert_eq!(Connection::open(uds, windows).await.max_streams(), 77);
    for (listener, port) in [
        ("gRPC TCP", child.tcp),
        ("HTTP facade", child.http),
        ("admin port", child.admin),
        ("health port", child.health),
    ] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let connection = Connection::open(tcp, windows).await;
        assert_eq!(connection.max_streams(), 77, "{listener}");
    }
}

/// A streaming request the upstream answers only when the caller has
/// gone: the call stays in flight.
fn hanging(stream: bool) -> Value {
    json!({
        "model": "fake-model",
        "stream": stream,
        "messages": [{"role": "user", "content": "wait"}],
        "fake": {"hang": true},
    })
}

/// With `max_calls_in_flight` calls open, the next is refused at once on
/// either edge, and the refusal is a ledger row of its own; when a call
/// ends its slot serves the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_cap_are_refused_at_once_and_recorded() {
    let fake = FakeUpstream::start().await.unwrap();
    let child = Child::start(&fake, "max_calls_in_flight = 3");
    // Three calls in flight: two gRPC streams and one facade call.
    let mut client = child.grpc().await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = client.clone();
        open.push(tokio::spawn(async move {
            client
                .stream_complete(common::request("wait", json!({"hang": true})))
                .await
        }));
    }
    let facade = {
        let http = child.http;
        tokio::spawn(async move {
            common::http_client()
                .post(format!("http://127.0.0.1:{http}/v1/chat/completions"))
                .json(&hanging(false))
                .send()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests().len() < 3 {
        assert!(Instant::now() < deadline, "the three calls did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let began = Instant::now();
    let refused = client
        .complete(common::request("one more", json!({})))
        .await
        .expect_err("a fourth call is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("3 calls in flight")
            && refused.message().contains("max_calls_in_flight"),
        "{}",
        refused.message()
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CALLS_IN_FLIGHT_LIMIT");

    let answer = child.post(&hanging(true)).await;
    assert_eq!(answer.status(), 429);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "calls_in_flight_limit", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_calls_in_flight"),
        "{body}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "refused at once, not queued: {:?}",
        began.elapsed()
    );
    assert_eq!(fake.requests().len(), 3, "nothing refused went upstream");

    let rows = child.rows_with("error:calls_in_flight_limit", 2).await;
    let mut edges: Vec<&str> = rows
        .iter()
        .map(|row| row["edge"].as_str().unwrap())
        .collect();
    edges.sort_unstable();
    assert_eq!(
        edges,
        ["grpc", "http"],
        "one row per refused call: {rows:?}"
    );

    // One call ends: its slot takes the next call.
    facade.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .complete(common::request("after one ended", json!({})))
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "no slot came back: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    for call in open {
        call.abort();
    }
}

/// A unary answer of 60 MB, over what a caller can receive (16 MiB): each
/// edge refuses it, with the limit and the size in its words and in the
/// ledger, without the sidecar ever holding it. `split` sends it with no
/// `Content-Length`.
async fn too_large_answers_are_refused(split: bool) {
    const SIZE: usize = 60_000_000;
    let fake = FakeUpstream::start().await.unwrap();
    let child = Child::start(&fake, "");
    let idle = idle_rss(&child).await;
    let mut scenario = json!({ "reply": "x".repeat(100), "repeat": SIZE / 100 });
    if split {
        scenario["split_bytes"] = json!(64 * 1024);
    }
    let mut client = child.grpc().await;
    let refused = client
        .complete(common::request("big", scenario.clone()))
        .await
        .expect_err("the answer is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("16777216 bytes"),
        "the limit: {}",
        refused.message()
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "RESPONSE_TOO_LARGE");

    let mut body = json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": "big"}],
        "fake": scenario,
    });
    let answer = child.post(&body).await;
    assert_eq!(answer.status(), 502);
    body = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "response_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("16777216 bytes"), "{message}");
    if !split {
        // The size is the upstream's Content-Length: the text and a
        // few hundred bytes of JSON around it.
        for said in [refused.message(), message] {
            assert!(
                said.contains("answered with 600") && said.contains(" bytes, more than the"),
                "{said}"
            );
        }
    }

    if split {
        // Both reads stopped at the limit and closed their connection.
        assert!(
            fake.wait_for_disconnects(2, Duration::from_secs(10)).await,
            "the upstream saw {} of 2 answers abandoned",
            fake.client_disconnects()
        );
    }
    let rows = child.rows_with("error:response_too_large", 2).await;
    for row in &rows {
        assert_eq!(row["prompt_tokens"], Value::Null, "usage unknown: {row}");
        assert_eq!(
            row["completion_tokens"],
            Value::Null,
            "usage unknown: {row}"
        );
    }
    let grown = child.rss().saturating_sub(idle);
    let allowed = if split { 16 * MIB + SLACK } else { SLACK };
    assert!(
        grown < allowed,
        "the sidecar grew by {} MiB for a refused answer",
        grown / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_length_is_over_the_limit_is_refused_unread() {
    too_large_answers_are_refused(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_length_is_refused_once_past_the_limit() {
    too_large_answers_are_refused(true).await;
}

//! The real binary stopped by SIGTERM with 50 streams open: each stream
//! completes if it can within the grace period, or ends with UNAVAILABLE
//! when the grace is over; none hangs; the process exits 0 and removes its
//! socket.

mod common;

use common::process::{Sidecar, free_port};
use common::{collect, request};
use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_uds};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const STREAMS: usize = 50;

fn start(dir: &Path, upstream: &FakeUpstream, grace_ms: u64, health: u16) -> Sidecar {
    let socket = dir.join("sidecar.sock");
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"default_provider = "fake"
[server]
uds = "{socket}"
shutdown_grace_ms = {grace_ms}
health = "127.0.0.1:{health}"
[providers.fake]
base_url = "{base}"
[ledger]
path = "{ledger}"
"#,
            socket = socket.display(),
            base = upstream.base_url(),
            ledger = dir.join("ledger.sqlite3").display(),
        ),
    )
    .unwrap();
    Sidecar::serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--tcp",
            "",
            "--http",
            "",
            "--admin",
            "",
        ],
        Some("warn"),
        &socket,
        &dir.join("sidecar.log"),
    )
}

/// How one stream ended, and how long after the SIGTERM.
#[derive(Debug)]
struct Ended {
    code: Option<tonic::Code>,
    chunks: usize,
    after_signal: Duration,
}

/// Opens `STREAMS` streams, reads the first chunk of each, sends SIGTERM,
/// then reads every stream to its end.
/// The health-only port's answer for the whole sidecar (""): 1 SERVING,
/// 2 NOT_SERVING.
async fn overall_health(port: u16) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(reply.into_inner().status)
}

/// Each stream's end, the exit code, whether the socket file was left
/// behind, and what the health port said while the calls drained.
type Stopped = (Vec<Ended>, i32, bool, Result<i32, tonic::Status>);

async fn stop_during_streams(grace_ms: u64, scenario: serde_json::Value) -> Stopped {
    let upstream = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let health = free_port();
    let mut sidecar = start(dir.path(), &upstream, grace_ms, health);
    sidecar.wait_for_port(health);
    assert_eq!(
        overall_health(health).await.unwrap(),
        1,
        "SERVING before the stop"
    );
    let socket = dir.path().join("sidecar.sock");
    let client = chat_client(connect_uds(&socket).await.unwrap(), 1 << 20);

    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut client = client.clone();
        let mut stream = client
            .stream_complete(request("x", scenario.clone()))
            .await
            .expect("the stream starts")
            .into_inner();
        stream.message().await.unwrap().expect("a first chunk");
        streams.push(stream);
    }
    let signalled = Instant::now();
    sidecar.signal("TERM");
    // The first answer that is no longer SERVING (bounded): NOT_SERVING is
    // what the probes must see while the calls drain.
    let health_while_draining = loop {
        let seen = overall_health(health).await;
        if !matches!(seen, Ok(1)) || signalled.elapsed() > Duration::from_secs(5) {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let readers = streams.into_iter().map(|mut stream| async move {
        let (chunks, status) = collect(&mut stream).await;
        Ended {
            code: status.map(|status| status.code()),
            chunks: chunks.len() + 1,
            after_signal: signalled.elapsed(),
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(readers))
        .await
        .expect("no stream hangs");

    let exit = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            if let Some(status) = sidecar.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the sidecar did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    (ended, exit, socket.exists(), health_while_draining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_fit_in_the_grace_period_complete() {
    let (ended, exit, socket_left, health) = stop_during_streams(
        10_000,
        json!({"reply": "a b c d e f g h i j", "chunk_delay_ms": 50}),
    )
    .await;
    assert!(
        ended
            .iter()
            .all(|end| end.code.is_none() && end.chunks >= 10),
        "{ended:#?}"
    );
    assert_eq!(exit, 0);
    assert!(!socket_left, "the socket file is removed");
    assert_eq!(health.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_still_open_when_the_grace_ends_get_unavailable() {
    let grace = Duration::from_millis(1000);
    let long = "w ".repeat(60);
    let (ended, exit, socket_left, health) = stop_during_streams(
        grace.as_millis() as u64,
        json!({"reply": long, "chunk_delay_ms": 100}),
    )
    .await;
    // Probes are answered, NOT_SERVING, while the calls drain.
    assert_eq!(health.unwrap(), 2);
    for end in &ended {
        assert_eq!(end.code, Some(tonic::Code::Unavailable), "{end:?}");
        assert!(end.chunks > 1 && end.chunks < 60, "{end:?}");
        // Ended at the grace, not at the stream's own end (6 s).
        assert!(end.after_signal >= grace, "{end:?}");
        assert!(end.after_signal < grace + Duration::from_secs(3), "{end:?}");
    }
    assert_eq!(exit, 0);
    assert!(!socket_left, "the socket file is removed");
}

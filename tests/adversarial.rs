//! A bounded hostile and careless workload against the real binary — bad
//! input on both edges, oversized tags, long model names, callers without
//! a token or with a foreign Host, slow readers of fast streams, silent and
//! half-open connections — after which the process must be healthy and
//! back near where it started: RSS within idle + 8 MiB and file
//! descriptors within idle + 2, five seconds after the workload ends.

mod common;

use common::process::{Sidecar, free_port};
use fake_upstream::FakeUpstream;
use futures::StreamExt as _;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::proto::v1 as pb;
use serde_json::json;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "llm-sidecar-adversarial-token-0123456789";
/// Quiet connections are closed after this long (idle, silent, half-sent).
const QUIET_MS: u64 = 1000;

struct Ports {
    tcp: u16,
    http: u16,
}

fn start(dir: &Path, upstream: &str) -> (Sidecar, Ports) {
    let socket = dir.join("grpc.sock");
    let ports = Ports {
        tcp: free_port(),
        http: free_port(),
    };
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"default_provider = "fake"
[server]
uds = "{socket}"
tcp = "127.0.0.1:{tcp}"
http = "127.0.0.1:{http}"
admin = ""
idle_timeout_ms = {QUIET_MS}
grpc_idle_timeout_ms = {QUIET_MS}
body_read_timeout_ms = {QUIET_MS}
# Upstream connections the slow readers opened are not kept for the
# default 90 s: the measurement is of what the sidecar holds on its own.
[upstream]
pool_idle_timeout_ms = {QUIET_MS}
[ledger]
path = "{ledger}"
[providers.fake]
base_url = "{upstream}"
max_attempts = 1
"#,
            socket = socket.display(),
            tcp = ports.tcp,
            http = ports.http,
            ledger = dir.join("ledger.sqlite3").display(),
        ),
    )
    .unwrap();
    let sidecar = Sidecar::serve_env(
        &["--config", config.to_str().unwrap()],
        Some("warn"),
        &[("LLM_SIDECAR_TOKEN", TOKEN)],
        &socket,
        &dir.join("sidecar.log"),
    );
    sidecar.wait_for_port(ports.http);
    (sidecar, ports)
}

/// Resident memory in KiB and open descriptors of `pid`.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

fn chat(model: String, scenario: serde_json::Value) -> pb::ChatRequest {
    pb::ChatRequest {
        model,
        ..common::request("hi", scenario)
    }
}

/// One normal call on each edge: the process as it serves.
async fn healthy(socket: &Path, http: u16) {
    let mut client = chat_client(connect_uds(socket).await.unwrap(), 1 << 24);
    let answer = client
        .complete(chat("fake-model".to_owned(), json!({})))
        .await
        .expect("gRPC still answers")
        .into_inner();
    assert_eq!(answer.choices[0].content.as_deref(), Some("hi"));
    let response = common::plain_http_client()
        .post(format!("http://127.0.0.1:{http}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the facade still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_hostile_workload_the_process_is_healthy_and_back_near_idle() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, ports) = start(dir.path(), &fake.base_url());
    let pid = sidecar.child.id();
    let socket = dir.path().join("grpc.sock");
    // Idle: after a first call on each edge (lazy set-up done) and the
    // sidecar's own release of what that freed.
    healthy(&socket, ports.http).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (idle_rss, idle_fds) = footprint(pid);

    let began = Instant::now();
    let http = common::plain_http_client();
    let facade = format!("http://127.0.0.1:{}/v1/chat/completions", ports.http);
    let mut client = chat_client(connect_uds(&socket).await.unwrap(), 1 << 24);

    // Bad input on both edges: each refused with a clear error.
    for body in [
        "{not json".to_owned(),
        json!({"model": 7, "messages": []}).to_string(),
        json!({"model": "fake-model", "messages": "hi"}).to_string(),
        json!({"model": "fake-model", "messages": [], "stream": "yes"}).to_string(),
        json!({"model": "fake-model", "messages": [], "metadata": [1]}).to_string(),
    ] {
        for _ in 0..10 {
            let response = http
                .post(&facade)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{body}");
        }
    }
    for _ in 0..20 {
        let empty = pb::ChatRequest {
            model: "fake-model".to_owned(),
            ..pb::ChatRequest::default()
        };
        let refused = client.complete(empty).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    // Long model names and oversized tags: refused, nothing kept.
    for _ in 0..20 {
        let refused = client
            .complete(chat("m".repeat(1 << 20), json!({})))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let mut tagged = chat("fake-model".to_owned(), json!({}));
        tagged.metadata = (0..200)
            .map(|index| (format!("key-{index}"), "v".repeat(16 * 1024)))
            .collect();
        let refused = client.complete(tagged).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    // Strangers: no token, a wrong token, a rebinding Host, a browser.
    for _ in 0..20 {
        let statuses = [
            http.post(&facade)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status(),
            http.post(&facade)
                .bearer_auth("guess")
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status(),
            http.post(&facade)
                .bearer_auth(TOKEN)
                .header("host", "evil.example")
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status(),
            http.post(&facade)
                .bearer_auth(TOKEN)
                .header("content-type", "text/plain")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status(),
        ];
        assert_eq!(statuses.map(|status| status.as_u16()), [401, 401, 403, 415]);
    }

    // Silent and half-open connections on every TCP listener, left for the
    // sidecar to close.
    let mut quiet: Vec<TcpStream> = Vec::new();
    for port in [ports.http, ports.tcp] {
        for at in 0..20 {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            if at % 2 == 1 {
                let _ = stream.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: local");
            }
            quiet.push(stream);
        }
    }

    // Slow readers: streams from a fast upstream read one message, then
    // held unread, then dropped.
    // Ten streams per connection, as an app spreads its calls: h2 >= 0.4.20
    // (tonic's client) closes a connection on which it holds too many small
    // unread DATA frames (ENHANCE_YOUR_CALM), whichever server sent them.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(chat_client(connect_uds(&socket).await.unwrap(), 1 << 24));
    }
    let mut readers = Vec::new();
    for at in 0..100 {
        let mut client = channels[at % channels.len()].clone();
        let scenario = json!({"reply": "word ".repeat(20_000), "chunks": 2_000});
        let request = chat("fake-model".to_owned(), scenario);
        readers.push(tokio::spawn(async move {
            let mut stream = client.stream_complete(request).await.unwrap().into_inner();
            let first = stream.next().await;
            assert!(matches!(first, Some(Ok(_))), "{first:?}");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            drop(stream);
        }));
    }
    let (_, busy_fds) = footprint(pid);
    for reader in readers {
        reader.await.unwrap();
    }
    let (loaded_rss, _) = footprint(pid);
    // The quiet connections stay open on our side: the sidecar must close
    // them itself.
    drop(client);
    drop(channels);
    drop(http);
    let ended = began.elapsed();

    // Within five seconds: back near idle (quiet connections closed, the
    // freed heap given back), and healthy.
    let near_idle = |(rss, fds): (u64, usize)| rss <= idle_rss + 8 * 1024 && fds <= idle_fds + 2;
    let settling = Instant::now();
    let (rss, fds) = loop {
        let now = footprint(pid);
        if near_idle(now) || settling.elapsed() > Duration::from_secs(5) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = sidecar.log();
    assert!(
        rss <= idle_rss + 8 * 1024,
        "RSS {rss} KiB, idle {idle_rss} KiB, {loaded_rss} KiB under load (workload {ended:?})"
    );
    assert!(
        fds <= idle_fds + 2,
        "{fds} descriptors, idle {idle_fds}, {busy_fds} during the workload\n{log}"
    );
    assert!(busy_fds > idle_fds + 20, "the workload held connections");
    healthy(&socket, ports.http).await;
    assert!(!log.contains("panicked"), "{log}");
    drop(quiet);
    eprintln!(
        "idle {idle_rss} KiB / {idle_fds} fds; under load {loaded_rss} KiB / {busy_fds} fds; \
         {:?} after {rss} KiB / {fds} fds",
        settling.elapsed()
    );
}

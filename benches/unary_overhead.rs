//! What the sidecar adds to a unary call: the same request, in the same run,
//! sent straight to the fake upstream (its own process) over HTTP and
//! through the real `llm-sidecar` binary over its Unix socket. Also the sidecar's RSS idle and
//! after the load. Run with `cargo bench --bench unary_overhead`.
//!
//! Figures are reported as differences and ratios against the direct call
//! measured in the same run: absolute numbers on a shared machine mean
//! little.

use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::proto::v1 as pb;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARMUP: usize = 200;
const CALLS: usize = 3000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Set in the child this bench starts to play the upstream: the address
/// the fake upstream listens on.
const SERVE_UPSTREAM_ENV: &str = "UNARY_OVERHEAD_SERVE_UPSTREAM";

fn main() {
    if let Ok(listen) = std::env::var(SERVE_UPSTREAM_ENV) {
        serve_upstream(listen.parse().expect("a socket address"));
        return;
    }
    // `cargo bench` passes --bench; test runners listing or running every
    // target must not start a three-second load run.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

/// The fake upstream, in this bench's child process, until it is killed.
fn serve_upstream(listen: std::net::SocketAddr) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let _fake = fake_upstream::FakeUpstream::start_with(listen, Default::default())
            .await
            .unwrap();
        std::future::pending::<()>().await
    })
}

async fn bench() {
    // The upstream runs in its own process, as a real one would: an
    // in-process fake would share the client's runtime and flatter the
    // direct baseline. The process is this bench again, started with
    // SERVE_UPSTREAM_ENV (the fake-upstream binary belongs to another
    // package, which `cargo bench` does not build).
    // BENCH_UPSTREAM=http://host:port/v1 picks another upstream.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut upstream = Command::new(std::env::current_exe().unwrap())
        .env(SERVE_UPSTREAM_ENV, format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let base_url =
        std::env::var("BENCH_UPSTREAM").unwrap_or_else(|_| format!("http://127.0.0.1:{port}/v1"));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "default_provider = \"fake\"\n[server]\nuds = \"{}\"\n[providers.fake]\nbase_url = \"{}\"\n",
            socket.display(),
            base_url
        ),
    )
    .unwrap();
    let mut sidecar = Command::new(env!("CARGO_BIN_EXE_llm-sidecar"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("LLM_SIDECAR_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_kib(sidecar.id());

    let body = serde_json::json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": "measure the overhead of one call"}],
    });
    // The baseline's own client straight to the fake, not an upstream one.
    #[allow(clippy::disallowed_methods)]
    let http = reqwest::Client::new();
    let url = format!("{base_url}/chat/completions");
    let direct = measure(|| async {
        let response = http.post(&url).json(&body).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
    })
    .await;

    let client = chat_client(connect_uds(&socket).await.unwrap(), 1 << 24);
    let request = pb::ChatRequest {
        model: "fake-model".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            content: Some("measure the overhead of one call".into()),
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    };
    let through = measure(|| {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            client.complete(request).await.unwrap();
        }
    })
    .await;
    // The gRPC leg alone: the built-in mock answers without any upstream.
    let mut mock_request = request.clone();
    mock_request.model = "mock/echo".into();
    let grpc_only = measure(|| {
        let mut client = client.clone();
        let request = mock_request.clone();
        async move {
            client.complete(request).await.unwrap();
        }
    })
    .await;
    let loaded_rss = rss_kib(sidecar.id());
    for child in [&mut sidecar, &mut upstream] {
        let _ = child.kill();
        let _ = child.wait();
    }

    println!("unary call, {CALLS} sequential calls after {WARMUP} warm-up, same run:");
    for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        let d = percentile(&direct, p);
        let t = percentile(&through, p);
        println!(
            "  {name}: direct {:>7.1} µs   through sidecar {:>7.1} µs   added {:>6.1} µs   ratio {:.2}",
            d.as_secs_f64() * 1e6,
            t.as_secs_f64() * 1e6,
            (t.as_secs_f64() - d.as_secs_f64()) * 1e6,
            t.as_secs_f64() / d.as_secs_f64()
        );
    }
    println!(
        "  gRPC leg alone (mock/echo, no upstream): p50 {:.1} µs, p99 {:.1} µs",
        percentile(&grpc_only, 0.5).as_secs_f64() * 1e6,
        percentile(&grpc_only, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "sidecar RSS: idle {} KiB, after the load {} KiB",
        idle_rss, loaded_rss
    );
}

async fn measure<F, Fut>(mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..WARMUP {
        call().await;
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    times
}

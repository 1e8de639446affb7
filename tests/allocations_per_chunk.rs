//! Heap allocations the sidecar makes per streamed chunk, on the gRPC and
//! the facade paths, counted by a global allocator that counts only on the
//! sidecar's own runtime threads (the fake upstream and the client run on
//! runtimes of their own). A stream of many chunks and one of few are
//! compared, so what each call costs once (routing, the record, the
//! connection) falls out and what is left is the cost of a chunk.
//!
//! The allocator is this file's own rather than a crate's: the counting
//! crates install themselves as the global allocator of every test binary
//! that links them, and only this binary should count.

#![allow(unsafe_code)] // the counting allocator below, nothing else

mod common;

use common::{CALLER_TOKEN, UPSTREAM_KEY};
use fake_upstream::FakeUpstream;
use futures::StreamExt as _;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::config::from_toml;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

thread_local! {
    /// Set on the sidecar's runtime threads: only they count.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count() {
    // `try_with`: a thread being torn down has no thread-locals left.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counting touches only a const-initialised thread-local and an atomic,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(pointer, layout, new_size) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Chunks per stream in the short and the long run.
const FEW: usize = 20;
const MANY: usize = 420;

/// Allocations per chunk at most, on either edge: never one per chunk,
/// only what comes once per upstream read or per frame sent (a read
/// buffer, a new 8 KiB block), whose count per chunk depends on how the
/// chunks fell into reads: 0.015-0.065 in repeated runs. One allocation
/// per chunk would read 1.0. (On gRPC each event is decoded into a message
/// used before, `inbound/grpc/recycle.rs`.)
const PER_CHUNK_LIMIT: f64 = 0.1;

struct Sidecar {
    socket: std::path::PathBuf,
    http: std::net::SocketAddr,
    _fake: FakeUpstream,
    _dir: tempfile::TempDir,
    _running: llm_sidecar::server::Running,
    _runtime: tokio::runtime::Runtime,
    _fake_runtime: tokio::runtime::Runtime,
}

/// The fake upstream on its own runtime and the sidecar on a runtime whose
/// threads count.
fn sidecar() -> Sidecar {
    let fake_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = fake_runtime.block_on(FakeUpstream::start()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|counted| counted.set(true)))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    let toml = format!(
        "default_provider = \"fake\"\n[server]\nuds = \"{}\"\nhttp = \"127.0.0.1:0\"\n\
         [ledger]\npath = \"{}\"\n[providers.fake]\nbase_url = \"{}\"\napi_key_env = \"FAKE_KEY\"\n",
        socket.display(),
        dir.path().join("ledger.sqlite3").display(),
        fake.base_url(),
    );
    let config = from_toml(&toml, "test.toml").unwrap();
    let env = |name: &str| match name {
        "FAKE_KEY" => Some(UPSTREAM_KEY.to_owned()),
        "LLM_SIDECAR_TOKEN" => Some(CALLER_TOKEN.to_owned()),
        _ => None,
    };
    let running = runtime
        .block_on(llm_sidecar::server::start(&config, &env))
        .unwrap();
    Sidecar {
        socket,
        http: running.http.unwrap(),
        _fake: fake,
        _dir: dir,
        _running: running,
        _runtime: runtime,
        _fake_runtime: fake_runtime,
    }
}

/// Allocations on the sidecar's threads while `stream` runs.
async fn counted(stream: impl Future<Output = usize>) -> (u64, usize) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let chunks = stream.await;
    // The record is written after the last chunk went out; let the call end.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    (ALLOCATIONS.load(Ordering::Relaxed) - before, chunks)
}

/// Runs of each length: the fewest allocations of them count, since a
/// background task of the sidecar (the config watcher's tick, every 2 s)
/// may land in any one run.
const RUNS: usize = 3;

/// Allocations per chunk on `edge`: `stream_of(n)` runs one stream of `n`
/// chunks and returns the chunks seen; a warm-up stream first
/// (connections, pools and first-use caches), then short and long ones.
async fn per_chunk(edge: &str, mut stream_of: impl AsyncFnMut(usize) -> usize) -> f64 {
    stream_of(FEW).await;
    let (mut few, mut many) = ((u64::MAX, 0), (u64::MAX, 0));
    for _ in 0..RUNS {
        few = few.min(counted(stream_of(FEW)).await);
        many = many.min(counted(stream_of(MANY)).await);
    }
    assert!(
        many.1 > few.1 + 300,
        "chunks seen: {} and {}",
        few.1,
        many.1
    );
    let cost = (many.0 as f64 - few.0 as f64) / (many.1 - few.1) as f64;
    eprintln!(
        "{edge}: {} allocations for {} chunks, {} for {}: {cost:.3} per chunk",
        few.0, few.1, many.0, many.1
    );
    cost
}

fn scenario(chunks: usize) -> serde_json::Value {
    serde_json::json!({"chunks": chunks, "reply": "word ".repeat(chunks)})
}

#[test]
fn a_grpc_stream_allocates_nothing_per_chunk() {
    let sidecar = sidecar();
    let client_runtime = tokio::runtime::Runtime::new().unwrap();
    client_runtime.block_on(async {
        let mut client = chat_client(connect_uds(&sidecar.socket).await.unwrap(), 1 << 24);
        let stream_of = async |chunks: usize| {
            let request = common::request("allocations", scenario(chunks));
            let mut stream = client.stream_complete(request).await.unwrap().into_inner();
            let mut seen = 0;
            while let Some(chunk) = stream.next().await {
                chunk.expect("a chunk");
                seen += 1;
            }
            seen
        };
        let cost = per_chunk("gRPC", stream_of).await;
        assert!(cost <= PER_CHUNK_LIMIT, "{cost:.3} allocations per chunk");
    });
}

#[test]
fn a_facade_stream_allocates_nothing_per_chunk() {
    let sidecar = sidecar();
    let client_runtime = tokio::runtime::Runtime::new().unwrap();
    client_runtime.block_on(async {
        let http = common::http_client();
        let url = format!("http://{}/v1/chat/completions", sidecar.http);
        let stream_of = async |chunks: usize| {
            let body = serde_json::json!({
                "model": "fake-model", "stream": true,
                "messages": [{"role": "user", "content": "allocations"}],
                "fake": scenario(chunks),
            });
            let mut response = http
                .post(&url)
                .bearer_auth(CALLER_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
            let mut text = Vec::new();
            while let Some(bytes) = response.chunk().await.unwrap() {
                text.extend_from_slice(&bytes);
            }
            let text = String::from_utf8(text).unwrap();
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            text.matches("data: {").count()
        };
        let cost = per_chunk("facade", stream_of).await;
        assert!(cost <= PER_CHUNK_LIMIT, "{cost:.3} allocations per chunk");
    });
}

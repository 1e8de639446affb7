//! The ledger keeps its rows through what happens to a process and its
//! files: the real binary killed outright (SIGKILL) in the middle of a
//! steady stream of calls loses only the last few milliseconds of rows,
//! and a ledger file deleted or rotated away while open is made again at
//! its path, with the next rows in it.

// Reads the ledger file as any SQLite client would, not through the
// sidecar's own connection code.
#![allow(clippy::disallowed_methods)]

mod common;

use common::process::{SOCKET_ONLY, Sidecar};
use common::user;
use llm_sidecar::call_record::{CallRecord, Caller, Edge, Outcome};
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::ledger::{Ledger, LedgerConfig, RecentQuery};
use llm_sidecar::proto::v1 as pb;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The most a SIGKILL may cost: rows of calls that completed longer ago
/// than this must be in the file.
const LOSS_BOUND: Duration = Duration::from_millis(10);

fn record(id: &str) -> CallRecord {
    CallRecord {
        request_id: id.to_owned(),
        started_at: SystemTime::now(),
        edge: Edge::Grpc,
        stream: false,
        caller: Caller::default(),
        tags: Default::default(),
        requested_model: "m".to_owned(),
        route: None,
        served_model: None,
        provider: None,
        outcome: Outcome::Ok,
        attempts: 1,
        queue_wait: Duration::ZERO,
        latency: Duration::from_millis(1),
        time_to_first_chunk: None,
        usage: None,
        usage_estimated: false,
        cost_usd: None,
        resumed: false,
    }
}

/// The request ids in the SQLite file at `path`, oldest first, read by a
/// connection of its own (as `sqlite3` would).
fn ids_in(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut query = conn
        .prepare("SELECT request_id FROM requests ORDER BY id")
        .unwrap();
    query
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn recent_ids(ledger: &Ledger) -> Vec<String> {
    ledger
        .recent(RecentQuery {
            limit: 10,
            ..RecentQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.request_id)
        .collect()
}

fn open(path: &Path) -> Ledger {
    Ledger::open(&LedgerConfig {
        path: path.to_owned(),
        ..LedgerConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_deleted_ledger_file_is_made_again_and_takes_the_next_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let ledger = open(&path);
    ledger.record(record("before"));
    ledger.flush().await;
    assert_eq!(ids_in(&path), ["before"]);

    // As `rm` does: the file goes, its -wal and -shm stay.
    std::fs::remove_file(&path).unwrap();
    ledger.record(record("after"));
    ledger.flush().await;

    assert_eq!(ledger.reopened(), 1);
    assert_eq!(ledger.dropped(), 0);
    assert_eq!(ids_in(&path), ["after"], "a new file with its schema");
    assert_eq!(recent_ids(&ledger).await, ["after"], "queries read it too");
    ledger.close().await;
}

#[tokio::test]
async fn a_rotated_ledger_file_keeps_its_rows_and_the_new_one_takes_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let rotated = dir.path().join("ledger.sqlite3.1");
    let ledger = open(&path);
    ledger.record(record("before"));
    ledger.flush().await;

    // logrotate's `create`: the file moved aside, an empty one in its place.
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::File::create(&path).unwrap();
    ledger.record(record("after"));
    ledger.record(record("later"));
    ledger.flush().await;

    assert_eq!(ledger.reopened(), 1);
    assert_eq!(ids_in(&path), ["after", "later"]);
    // The old file got its last commits (its WAL checkpointed into it, not
    // left at the path for the new file to read as its own).
    assert_eq!(ids_in(&rotated), ["before"]);
    assert!(!dir.path().join("ledger.sqlite3.1-wal").exists());
    assert_eq!(recent_ids(&ledger).await, ["later", "after"]);

    // Nothing changes while the file stays: no second reopening.
    ledger.record(record("again"));
    ledger.flush().await;
    assert_eq!(ledger.reopened(), 1);
    assert_eq!(ids_in(&path), ["after", "later", "again"]);
    ledger.close().await;
}

/// Clients calling one call at a time each.
const CLIENTS: usize = 4;

/// Calls completed by the client: request id and when its answer arrived.
type Completed = Arc<Mutex<Vec<(String, Instant)>>>;

/// What one SIGKILL cost.
#[derive(Debug)]
struct KillRun {
    completed: usize,
    rows: usize,
    /// Calls that completed within `LOSS_BOUND` before the kill and have
    /// no row.
    lost_recent: usize,
    /// Calls that completed earlier and have no row: the bound broken.
    lost_older: Vec<Duration>,
}

fn start(dir: &Path) -> Sidecar {
    let socket = dir.join("sidecar.sock");
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nuds = \"{}\"\n[ledger]\npath = \"{}\"\n",
            socket.display(),
            dir.join("ledger.sqlite3").display()
        ),
    )
    .unwrap();
    Sidecar::serve(
        &[&["--config", config.to_str().unwrap()], &SOCKET_ONLY[..]].concat(),
        Some("warn"),
        &socket,
        &dir.join("sidecar.log"),
    )
}

/// Unary calls to the built-in `mock/echo` model, one after another, until
/// the sidecar is gone.
async fn drive(socket: std::path::PathBuf, completed: Completed) {
    let Ok(channel) = connect_uds(&socket).await else {
        return;
    };
    let mut client = chat_client(channel, 1 << 20);
    loop {
        let request = pb::ChatRequest {
            model: "mock/echo".to_owned(),
            messages: vec![user("steady")],
            ..pb::ChatRequest::default()
        };
        let Ok(response) = client.complete(request).await else {
            return;
        };
        let done = Instant::now();
        let id = response
            .metadata()
            .get("x-request-id")
            .expect("a request id")
            .to_str()
            .unwrap()
            .to_owned();
        completed.lock().unwrap().push((id, done));
    }
}

async fn kill_during_calls() -> KillRun {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = start(dir.path());
    let completed: Completed = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(drive(dir.path().join("sidecar.sock"), completed.clone())))
        .collect();
    // A steady stream: wait until calls have been completing for a while.
    let started = Instant::now();
    while completed.lock().unwrap().len() < 2000 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    sidecar.child.kill().unwrap(); // SIGKILL
    sidecar.child.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let ids = ids_in(&dir.path().join("ledger.sqlite3"));
    let rows: HashSet<&String> = ids.iter().collect();
    let completed = completed.lock().unwrap();
    let mut run = KillRun {
        completed: completed.len(),
        rows: ids.len(),
        lost_recent: 0,
        lost_older: Vec::new(),
    };
    for (id, done) in completed.iter() {
        if rows.contains(id) {
            continue;
        }
        let age = killed_at.saturating_duration_since(*done);
        if age > LOSS_BOUND {
            run.lost_older.push(age);
        } else {
            run.lost_recent += 1;
        }
    }
    run
}

/// `LEDGER_KILL_RUNS` (default 1) kills in a row, each reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_loses_at_most_the_last_10_ms_of_rows() {
    let runs: usize = std::env::var("LEDGER_KILL_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(1);
    for number in 1..=runs {
        let run = kill_during_calls().await;
        eprintln!("kill {number}: {run:?}");
        assert!(run.completed >= 100, "too few calls to judge: {run:?}");
        // A row per call: those completed, and at most one in flight per
        // client.
        assert!(run.rows <= run.completed + CLIENTS, "{run:?}");
        assert!(
            run.lost_older.is_empty(),
            "rows of calls completed more than {LOSS_BOUND:?} before the kill are missing: {run:?}"
        );
    }
}

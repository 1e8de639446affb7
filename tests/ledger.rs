//! The usage ledger through its public API, on real SQLite files in
//! temporary directories: what goes in comes back exactly, survives a
//! restart and a burst, a full queue drops and counts instead of blocking,
//! the queries add up, retention holds, and bad files are refused by name.

// Reads the ledger file as any SQLite client would, not through the
// sidecar's own connection code.
#![allow(clippy::disallowed_methods)]

use llm_sidecar::call_record::{CallRecord, Caller, Edge, Outcome};
use llm_sidecar::ledger::{
    GroupBy, Ledger, LedgerConfig, LedgerError, LedgerRow, OutcomeFilter, RecentQuery,
    SummaryQuery, SummaryRow,
};
use llm_sidecar::model::Usage;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// 2023-11-14T22:13:20Z: a fixed start, so expected timestamps are known.
const T0_MS: u64 = 1_700_000_000_000;

fn at(offset_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(T0_MS + offset_ms)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn call(request_id: &str, started_at: SystemTime) -> CallRecord {
    CallRecord {
        request_id: request_id.to_owned(),
        started_at,
        edge: Edge::Grpc,
        stream: false,
        caller: Caller::default(),
        tags: BTreeMap::new(),
        requested_model: "gpt-4o".to_owned(),
        route: None,
        served_model: Some("gpt-4o".to_owned()),
        provider: Some("openai".to_owned()),
        outcome: Outcome::Ok,
        attempts: 1,
        queue_wait: Duration::ZERO,
        latency: ms(100),
        time_to_first_chunk: None,
        usage: None,
        usage_estimated: false,
        cost_usd: None,
        resumed: false,
    }
}

fn usage(prompt: u32, completion: u32, cached: u32, reasoning: u32) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cache_read_tokens: Some(cached),
        reasoning_tokens: Some(reasoning),
        ..Usage::default()
    })
}

fn named(name: &str) -> Caller {
    Caller {
        name: Some(name.to_owned()),
        ..Caller::default()
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn config(dir: &TempDir) -> LedgerConfig {
    LedgerConfig {
        path: dir.path().join("ledger.sqlite3"),
        ..LedgerConfig::default()
    }
}

fn open(dir: &TempDir) -> Ledger {
    Ledger::open(&config(dir)).expect("the ledger opens")
}

fn everything() -> RecentQuery {
    RecentQuery {
        limit: 1000,
        ..RecentQuery::default()
    }
}

fn request_ids(rows: &[LedgerRow]) -> Vec<&str> {
    rows.iter().map(|row| row.request_id.as_str()).collect()
}

/// Counts rows with a connection of our own, past the ledger's API.
fn count_rows(path: &Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn every_outcome_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let ok = CallRecord {
        edge: Edge::Http,
        stream: true,
        caller: Caller {
            name: Some("indexer".to_owned()),
            claimed: Some("nightly-job".to_owned()),
            uid: Some(1000),
            pid: Some(4242),
        },
        tags: tags(&[("team", "search"), ("job", "nightly")]),
        requested_model: "fast".to_owned(),
        served_model: Some("gpt-4o-mini-2024-07-18".to_owned()),
        attempts: 2,
        queue_wait: Duration::from_micros(2_500),
        latency: ms(1234),
        time_to_first_chunk: Some(ms(321)),
        usage: usage(1200, 340, 1024, 128),
        cost_usd: Some(0.000_657),
        ..call("ok", at(123))
    };
    let error = CallRecord {
        outcome: Outcome::Error {
            code: "rate_limited".to_owned(),
        },
        attempts: 3,
        ..call("error", at(1_000))
    };
    let cancelled = CallRecord {
        outcome: Outcome::Cancelled { partial: true },
        stream: true,
        usage: usage(50, 7, 0, 0),
        usage_estimated: true,
        cost_usd: Some(0.000_2),
        ..call("cancelled", at(2_000))
    };
    let partial = CallRecord {
        outcome: Outcome::Partial {
            code: "upstream_reset".to_owned(),
        },
        stream: true,
        provider: Some("local".to_owned()),
        served_model: None,
        requested_model: "llama".to_owned(),
        usage: usage(10, 3, 0, 0),
        usage_estimated: true,
        ..call("partial", at(3_000))
    };
    for record in [&ok, &error, &cancelled, &partial] {
        ledger.record(record.clone());
    }
    ledger.flush().await;
    assert_eq!((ledger.written(), ledger.dropped()), (4, 0));

    let rows = ledger.recent(everything()).await.unwrap();
    assert_eq!(request_ids(&rows), ["partial", "cancelled", "error", "ok"]);
    assert_eq!(
        rows[3],
        LedgerRow {
            request_id: "ok".to_owned(),
            started_at_ms: 1_700_000_000_123,
            started_at: "2023-11-14T22:13:20.123Z".to_owned(),
            edge: "http".to_owned(),
            stream: true,
            caller_name: Some("indexer".to_owned()),
            caller_claimed: Some("nightly-job".to_owned()),
            caller_uid: Some(1000),
            caller_pid: Some(4242),
            tags: tags(&[("job", "nightly"), ("team", "search")]),
            requested_model: "fast".to_owned(),
            served_model: Some("gpt-4o-mini-2024-07-18".to_owned()),
            provider: Some("openai".to_owned()),
            outcome: "ok".to_owned(),
            attempts: 2,
            queue_wait_ms: 2.5,
            latency_ms: 1234.0,
            time_to_first_chunk_ms: Some(321.0),
            prompt_tokens: Some(1200),
            completion_tokens: Some(340),
            total_tokens: Some(1540),
            cached_prompt_tokens: Some(1024),
            reasoning_tokens: Some(128),
            cache_write_tokens: Some(0),
            usage_estimated: false,
            cost_usd: Some(0.000_657),
            resumed: false,
            pod: None,
        }
    );

    let error_row = &rows[2];
    assert_eq!(error_row.outcome, "error:rate_limited");
    assert_eq!(error_row.attempts, 3);
    assert_eq!(error_row.prompt_tokens, None, "no usage is not zero usage");
    assert_eq!(error_row.cost_usd, None);
    assert!(!error_row.usage_estimated);

    let cancelled_row = &rows[1];
    assert_eq!(cancelled_row.outcome, "cancelled");
    assert_eq!(
        (cancelled_row.prompt_tokens, cancelled_row.completion_tokens),
        (Some(50), Some(7))
    );
    assert!(cancelled_row.usage_estimated);
    assert_eq!(cancelled_row.cost_usd, Some(0.000_2));

    let partial_row = &rows[0];
    assert_eq!(partial_row.outcome, "partial:upstream_reset");
    assert_eq!(partial_row.served_model, None);
    assert_eq!(partial_row.provider.as_deref(), Some("local"));
    assert_eq!(
        (partial_row.prompt_tokens, partial_row.completion_tokens),
        (Some(10), Some(3))
    );
    assert!(partial_row.usage_estimated);
    assert_eq!(partial_row.cost_usd, None, "unpriced, not free");
    ledger.close().await;
}

#[tokio::test]
async fn rows_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    ledger.record(call("before", at(0)));
    ledger.close().await;
    assert_eq!(ledger.written(), 1);

    let reopened = open(&dir);
    reopened.record(call("after", at(1)));
    reopened.flush().await;
    let rows = reopened.recent(everything()).await.unwrap();
    assert_eq!(request_ids(&rows), ["after", "before"]);
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_from_many_concurrent_tasks_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let tasks: Vec<_> = (0..50)
        .map(|task| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let id = format!("{task}-{i}-{}", uuid::Uuid::new_v4());
                    ledger.record(call(&id, at(i)));
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    ledger.flush().await;

    assert_eq!(ledger.written(), 5000);
    assert_eq!(ledger.dropped(), 0);
    let path = config(&dir).path;
    assert_eq!(
        count_rows(&path, "SELECT COUNT(DISTINCT request_id) FROM requests"),
        5000
    );
    assert_eq!(count_rows(&path, "SELECT COUNT(*) FROM requests"), 5000);
    ledger.close().await;
}

#[tokio::test]
async fn a_full_queue_counts_drops_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        queue_capacity: 1,
        batch_max: 1,
        ..config(&dir)
    };
    let ledger = Ledger::open(&config).unwrap();
    // Another connection holds the write lock: the writer stalls on its
    // first commit, as it would on a very slow disk.
    let blocker = Connection::open(&config.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let sent = 1000;
    let started = Instant::now();
    for i in 0..sent {
        ledger.record(call(&format!("r{i}"), at(i)));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "record() waited for the writer: {:?}",
        started.elapsed()
    );
    // One record in the writer's hands and one in the queue, at most.
    assert!(ledger.dropped() >= sent - 2, "dropped {}", ledger.dropped());

    // A flush must not be dropped like a record: it waits for room.
    let flush = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.flush().await }
    });
    tokio::time::sleep(ms(50)).await;
    assert!(
        !flush.is_finished(),
        "flush returned while the writer was stuck"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    flush.await.unwrap();

    assert_eq!(ledger.written() + ledger.dropped(), sent);
    assert!(ledger.written() >= 1);
    let rows = count_rows(&config.path, "SELECT COUNT(*) FROM requests");
    assert_eq!(rows as u64, ledger.written());
    ledger.close().await;
}

#[tokio::test]
async fn a_failed_write_is_counted_and_the_writer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir).path;
    let ledger = open(&dir);
    ledger.record(call("before", at(0)));
    ledger.flush().await;

    // The table vanishing under the writer stands in for a deleted or
    // broken file: the batch fails.
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("ALTER TABLE requests RENAME TO moved_away")
        .unwrap();
    ledger.record(call("lost-1", at(1)));
    ledger.record(call("lost-2", at(2)));
    ledger.flush().await;
    assert_eq!((ledger.written(), ledger.dropped()), (1, 2));

    other
        .execute_batch("ALTER TABLE moved_away RENAME TO requests")
        .unwrap();
    ledger.record(call("after", at(3)));
    ledger.flush().await;
    assert_eq!((ledger.written(), ledger.dropped()), (2, 2));
    let rows = ledger.recent(everything()).await.unwrap();
    assert_eq!(request_ids(&rows), ["after", "before"]);
    ledger.close().await;
}

/// Six calls in the window and one before it, chosen so that every group
/// differs in some total.
fn summary_fixture() -> Vec<CallRecord> {
    vec![
        CallRecord {
            caller: named("alice"),
            tags: tags(&[("team", "search")]),
            latency: ms(10),
            usage: usage(100, 10, 20, 0),
            cost_usd: Some(0.001),
            ..call("a1", at(1_000))
        },
        CallRecord {
            caller: named("alice"),
            tags: tags(&[("team", "search")]),
            latency: ms(20),
            usage: usage(200, 20, 0, 5),
            cost_usd: Some(0.002),
            ..call("a2", at(2_000))
        },
        CallRecord {
            caller: named("bob"),
            tags: tags(&[("team", "ads")]),
            outcome: Outcome::Error {
                code: "rate_limited".to_owned(),
            },
            latency: ms(30),
            ..call("b1", at(3_000))
        },
        // No model answered: grouped under the requested one.
        CallRecord {
            caller: named("bob"),
            served_model: None,
            outcome: Outcome::Cancelled { partial: true },
            latency: ms(40),
            usage: usage(50, 5, 0, 0),
            usage_estimated: true,
            cost_usd: Some(0.0005),
            ..call("b2", at(4_000))
        },
        CallRecord {
            tags: tags(&[("team", "search")]),
            requested_model: "llama".to_owned(),
            served_model: Some("llama-3".to_owned()),
            provider: Some("local".to_owned()),
            outcome: Outcome::Partial {
                code: "upstream_reset".to_owned(),
            },
            latency: ms(50),
            usage: usage(10, 1, 0, 0),
            usage_estimated: true,
            ..call("n1", at(5_000))
        },
        CallRecord {
            requested_model: "llama".to_owned(),
            served_model: Some("llama-3".to_owned()),
            provider: Some("local".to_owned()),
            latency: ms(60),
            usage: usage(10, 2, 0, 0),
            ..call("n2", at(6_000))
        },
        // Before the window: counted nowhere.
        CallRecord {
            caller: named("alice"),
            latency: ms(9_999),
            usage: usage(1_000_000, 0, 0, 0),
            cost_usd: Some(100.0),
            ..call("early", at(0))
        },
    ]
}

async fn summarize(ledger: &Ledger, group_by: GroupBy) -> Vec<SummaryRow> {
    ledger
        .summary(SummaryQuery {
            since: at(500),
            until: at(60_000),
            group_by,
        })
        .await
        .unwrap()
}

/// `(key, requests, errors, cancelled)`
fn counts(rows: &[SummaryRow]) -> Vec<(&str, u64, u64, u64)> {
    rows.iter()
        .map(|row| (row.key.as_str(), row.requests, row.errors, row.cancelled))
        .collect()
}

fn assert_cost(row: &SummaryRow, expected: f64) {
    assert!(
        (row.cost_usd - expected).abs() < 1e-12,
        "{}: cost {} is not {expected}",
        row.key,
        row.cost_usd
    );
}

#[tokio::test]
async fn summary_totals_each_group_over_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    for record in summary_fixture() {
        ledger.record(record);
    }
    ledger.flush().await;

    let by_model = summarize(&ledger, GroupBy::Model).await;
    assert_eq!(
        counts(&by_model),
        [("gpt-4o", 4, 1, 1), ("llama-3", 2, 1, 0)]
    );
    let gpt = &by_model[0];
    assert_eq!(
        (
            gpt.prompt_tokens,
            gpt.completion_tokens,
            gpt.cached_prompt_tokens,
            gpt.reasoning_tokens
        ),
        (350, 35, 20, 5)
    );
    assert_eq!((gpt.estimated_requests, gpt.unpriced_requests), (1, 0));
    assert_cost(gpt, 0.0035);
    // Latencies 10, 20, 30, 40: nearest rank 2 of 4 and 4 of 4.
    assert_eq!((gpt.p50_latency_ms, gpt.p95_latency_ms), (20.0, 40.0));
    let llama = &by_model[1];
    assert_eq!((llama.prompt_tokens, llama.completion_tokens), (20, 3));
    assert_eq!((llama.estimated_requests, llama.unpriced_requests), (1, 2));
    assert_cost(llama, 0.0);
    assert_eq!((llama.p50_latency_ms, llama.p95_latency_ms), (50.0, 60.0));

    let by_provider = summarize(&ledger, GroupBy::Provider).await;
    assert_eq!(
        counts(&by_provider),
        [("openai", 4, 1, 1), ("local", 2, 1, 0)]
    );

    let by_caller = summarize(&ledger, GroupBy::Caller).await;
    assert_eq!(
        counts(&by_caller),
        [("", 2, 1, 0), ("alice", 2, 0, 0), ("bob", 2, 1, 1)]
    );
    assert_eq!(by_caller[0].display_key(), "(none)");
    assert_cost(&by_caller[1], 0.003);
    assert_eq!(by_caller[1].prompt_tokens, 300, "the early call is outside");
    assert_eq!(
        (by_caller[2].p50_latency_ms, by_caller[2].p95_latency_ms),
        (30.0, 40.0)
    );

    let by_team = summarize(&ledger, GroupBy::Tag("team".to_owned())).await;
    assert_eq!(
        counts(&by_team),
        [("search", 3, 1, 0), ("", 2, 0, 1), ("ads", 1, 1, 0)]
    );
    let search = &by_team[0];
    assert_eq!(search.prompt_tokens, 310);
    assert_eq!(search.unpriced_requests, 1);
    assert_cost(search, 0.003);
    assert_eq!((search.p50_latency_ms, search.p95_latency_ms), (20.0, 50.0));
    ledger.close().await;
}

#[tokio::test]
async fn summary_groups_unnamed_callers_by_uid() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let peer = Caller {
        uid: Some(1000),
        pid: Some(7),
        ..Caller::default()
    };
    ledger.record(CallRecord {
        caller: peer,
        ..call("peer", at(1_000))
    });
    ledger.flush().await;
    let by_caller = summarize(&ledger, GroupBy::Caller).await;
    assert_eq!(counts(&by_caller), [("uid:1000", 1, 0, 0)]);
    // The group's key finds its calls.
    let found = ledger
        .recent(RecentQuery {
            limit: 10,
            caller: Some("uid:1000".to_owned()),
            ..RecentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(request_ids(&found), ["peer"]);
}

#[tokio::test]
async fn recent_filters_newest_first_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    for record in summary_fixture() {
        ledger.record(record);
    }
    ledger.flush().await;
    let recent = |query: RecentQuery| {
        let ledger = ledger.clone();
        async move {
            let rows = ledger.recent(query).await.unwrap();
            request_ids(&rows)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(
        recent(everything()).await,
        ["n2", "n1", "b2", "b1", "a2", "a1", "early"]
    );
    let limited = RecentQuery {
        limit: 2,
        ..everything()
    };
    assert_eq!(recent(limited).await, ["n2", "n1"]);
    let since = RecentQuery {
        since: Some(at(4_000)),
        ..everything()
    };
    assert_eq!(recent(since).await, ["n2", "n1", "b2"]);
    // Either the served or the requested model matches.
    let served = RecentQuery {
        model: Some("llama-3".to_owned()),
        ..everything()
    };
    assert_eq!(recent(served).await, ["n2", "n1"]);
    let requested = RecentQuery {
        model: Some("llama".to_owned()),
        ..everything()
    };
    assert_eq!(recent(requested).await, ["n2", "n1"]);
    let provider = RecentQuery {
        provider: Some("openai".to_owned()),
        limit: 3,
        ..everything()
    };
    assert_eq!(recent(provider).await, ["b2", "b1", "a2"]);
    let caller = RecentQuery {
        caller: Some("alice".to_owned()),
        ..everything()
    };
    assert_eq!(recent(caller).await, ["a2", "a1", "early"]);
    let ok = RecentQuery {
        outcome: Some(OutcomeFilter::Ok),
        ..everything()
    };
    assert_eq!(recent(ok).await, ["n2", "a2", "a1", "early"]);
    let failed = RecentQuery {
        outcome: Some(OutcomeFilter::Error),
        ..everything()
    };
    assert_eq!(recent(failed).await, ["n1", "b2", "b1"]);
    let cancelled = RecentQuery {
        outcome: Some(OutcomeFilter::Label("cancelled".to_owned())),
        ..everything()
    };
    assert_eq!(recent(cancelled).await, ["b2"]);
    let combined = RecentQuery {
        caller: Some("bob".to_owned()),
        outcome: Some("error:rate_limited".parse().unwrap()),
        ..everything()
    };
    assert_eq!(recent(combined).await, ["b1"]);
    ledger.close().await;
}

#[tokio::test]
async fn recent_returns_at_most_a_thousand_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    for i in 0..1005 {
        ledger.record(call(&format!("r{i}"), at(i)));
    }
    ledger.flush().await;
    let rows = ledger
        .recent(RecentQuery {
            limit: usize::MAX,
            ..RecentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[0].request_id, "r1004");
}

#[tokio::test]
async fn retention_at_open_keeps_the_newest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    for i in 0..10 {
        ledger.record(call(&format!("r{i}"), at(i * 1000)));
    }
    ledger.close().await;

    let config = LedgerConfig {
        retention_max_rows: Some(3),
        ..config(&dir)
    };
    let ledger = Ledger::open(&config).unwrap();
    let rows = ledger.recent(everything()).await.unwrap();
    assert_eq!(request_ids(&rows), ["r9", "r8", "r7"]);
    ledger.close().await;
}

#[tokio::test]
async fn retention_at_open_deletes_rows_past_the_age() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    ledger.record(call("three-hours", now - 3 * hour));
    ledger.record(call("two-hours", now - 2 * hour));
    ledger.record(call("ten-minutes", now - Duration::from_secs(600)));
    ledger.record(call("now", now));
    ledger.close().await;

    let config = LedgerConfig {
        retention_max_age: Some(hour),
        ..config(&dir)
    };
    let ledger = Ledger::open(&config).unwrap();
    let rows = ledger.recent(everything()).await.unwrap();
    assert_eq!(request_ids(&rows), ["now", "ten-minutes"]);
    ledger.close().await;
}

#[tokio::test]
async fn the_writer_applies_retention_as_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        batch_max: 1,
        retention_max_rows: Some(10),
        ..config(&dir)
    };
    let ledger = Ledger::open(&config).unwrap();
    // One batch per record; the writer checks retention every 100 batches.
    for i in 0..300 {
        ledger.record(call(&format!("r{i}"), at(i)));
        ledger.flush().await;
    }
    assert_eq!(ledger.written(), 300);
    let rows = ledger.recent(everything()).await.unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0].request_id, "r299");
    assert_eq!(rows[9].request_id, "r290");
    ledger.close().await;
}

fn open_error(path: &Path) -> LedgerError {
    let config = LedgerConfig {
        path: path.to_owned(),
        ..LedgerConfig::default()
    };
    match Ledger::open(&config) {
        Ok(_) => panic!("{} opened as a ledger", path.display()),
        Err(error) => error,
    }
}

fn assert_names_path(error: &LedgerError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name {}",
        path.display()
    );
}

/// Deterministic noise (xorshift), so a failure can be reproduced.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn a_file_of_random_bytes_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    std::fs::write(&path, noise(64 * 1024)).unwrap();
    let error = open_error(&path);
    assert!(matches!(error, LedgerError::NotADatabase { .. }), "{error}");
    assert_names_path(&error, &path);
    assert!(error.to_string().contains("move it aside"), "{error}");
}

#[tokio::test]
async fn a_damaged_ledger_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(&dir).path;
    let ledger = open(&dir);
    ledger.record(call("r", at(0)));
    ledger.close().await;
    drop(ledger);
    // Keep SQLite's 100-byte header, scramble the schema and the rows.
    let mut bytes = std::fs::read(&path).unwrap();
    let body = bytes.len() - 100;
    bytes[100..].copy_from_slice(&noise(body));
    std::fs::write(&path, bytes).unwrap();

    let error = open_error(&path);
    assert!(
        matches!(
            error,
            LedgerError::Corrupt { .. } | LedgerError::NotADatabase { .. }
        ),
        "{error}"
    );
    assert_names_path(&error, &path);
}

#[test]
fn an_unwritable_location_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: fails even for root.
    let not_a_directory = dir.path().join("not-a-directory");
    std::fs::write(&not_a_directory, b"").unwrap();
    let under_a_file: PathBuf = not_a_directory.join("ledger.sqlite3");
    let error = open_error(&under_a_file);
    assert!(matches!(error, LedgerError::CannotOpen { .. }), "{error}");
    assert_names_path(&error, &under_a_file);

    let missing = dir.path().join("missing").join("ledger.sqlite3");
    let error = open_error(&missing);
    assert_names_path(&error, &missing);
    assert!(error.to_string().contains("directory"), "{error}");
}

#[test]
fn a_ledger_from_a_newer_version_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let future = Connection::open(&path).unwrap();
    future
        .execute_batch("CREATE TABLE requests (id INTEGER PRIMARY KEY); PRAGMA user_version = 99;")
        .unwrap();
    drop(future);

    let error = open_error(&path);
    assert!(
        matches!(error, LedgerError::NewerSchema { found: 99, .. }),
        "{error}"
    );
    assert_names_path(&error, &path);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 99, "the file was changed");
}

#[tokio::test]
async fn after_close_records_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    ledger.record(call("kept", at(0)));
    ledger.close().await;
    ledger.record(call("late", at(1)));
    ledger.flush().await;
    assert_eq!((ledger.written(), ledger.dropped()), (1, 1));
    // Reading still works after the writer stopped.
    let rows = ledger.recent(everything()).await.unwrap();
    assert_eq!(request_ids(&rows), ["kept"]);
}

#[tokio::test]
async fn an_unavailable_ledger_counts_every_record_as_dropped() {
    let ledger = Ledger::unavailable("the ledger is off in the configuration");
    ledger.record(call("a", at(0)));
    ledger.record(call("b", at(1)));
    ledger.flush().await;
    ledger.close().await;
    assert_eq!((ledger.written(), ledger.dropped()), (0, 2));
    let error = ledger.recent(everything()).await.unwrap_err();
    assert!(
        error.to_string().contains("off in the configuration"),
        "{error}"
    );
}

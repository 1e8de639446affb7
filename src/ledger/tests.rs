//! The ledger's pure parts (pricing, percentiles, timestamps, parsing) and
//! the SQL helpers against a real file. The whole ledger, through its
//! public API, is tested in `tests/ledger.rs`.

use super::pricing::{PriceEntry, Pricing};
use super::retention::{RetentionPolicy, enforce};
use super::summary::nearest_rank;
use super::*;
use crate::call_record::{Caller, Edge, Outcome};
use crate::model::Usage;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

fn price(model: &str, input: f64, output: f64, cached: Option<f64>) -> PriceEntry {
    PriceEntry {
        model: model.to_owned(),
        input_per_million: input,
        output_per_million: output,
        cached_input_per_million: cached,
        cache_write_per_million: None,
    }
}

fn usage(prompt: u32, completion: u32, cached: u32) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cache_read_tokens: Some(cached),
        ..Usage::default()
    }
}

fn assert_close(actual: Option<f64>, expected: f64) {
    let actual = actual.expect("a cost");
    assert!(
        (actual - expected).abs() < 1e-12,
        "cost {actual} is not {expected}"
    );
}

#[test]
fn an_exact_price_beats_a_glob_listed_before_it() {
    let pricing = Pricing::new(vec![
        price("openai/*", 1.0, 1.0, None),
        price("openai/gpt-4o", 2.0, 8.0, None),
    ])
    .unwrap();
    assert_close(
        pricing.cost("openai/gpt-4o", &usage(1_000_000, 1_000_000, 0)),
        10.0,
    );
    assert_close(
        pricing.cost("openai/gpt-4o-mini", &usage(1_000_000, 1_000_000, 0)),
        2.0,
    );
}

#[test]
fn the_first_matching_glob_wins() {
    let pricing = Pricing::new(vec![
        price("openai/gpt-4o*", 2.5, 10.0, None),
        price("openai/*", 100.0, 100.0, None),
    ])
    .unwrap();
    assert_close(
        pricing.cost("openai/gpt-4o-mini", &usage(1_000_000, 0, 0)),
        2.5,
    );
    assert_close(pricing.cost("openai/o3", &usage(1_000_000, 0, 0)), 100.0);
}

#[test]
fn cached_prompt_tokens_are_billed_at_the_cached_price() {
    let pricing = Pricing::new(vec![
        price("m", 2.0, 8.0, Some(0.5)),
        price("no-cache-price", 2.0, 8.0, None),
    ])
    .unwrap();
    // 600k uncached × $2 + 400k cached × $0.5 + 100k completion × $8.
    assert_close(pricing.cost("m", &usage(1_000_000, 100_000, 400_000)), 2.2);
    assert_close(
        pricing.cost("no-cache-price", &usage(1_000_000, 100_000, 400_000)),
        2.8,
    );
}

#[test]
fn an_unknown_model_has_no_cost_rather_than_zero() {
    let pricing = Pricing::new(vec![price("openai/*", 1.0, 1.0, None)]).unwrap();
    assert_eq!(pricing.cost("anthropic/claude", &usage(10, 10, 0)), None);
    assert_eq!(
        Pricing::new(Vec::new()).unwrap().cost("m", &usage(1, 1, 0)),
        None
    );
    assert!(Pricing::new(Vec::new()).unwrap().is_empty());
    assert!(!pricing.is_empty());
}

#[test]
fn a_bad_pattern_or_price_is_refused_by_name() {
    let error = Pricing::new(vec![price("openai/[gpt", 1.0, 1.0, None)]).unwrap_err();
    assert!(error.contains("openai/[gpt"), "{error}");
    let error = Pricing::new(vec![price("m", -1.0, 1.0, None)]).unwrap_err();
    assert!(
        error.contains("\"m\"") && error.contains("input"),
        "{error}"
    );
    let error = Pricing::new(vec![price("m", 1.0, 1.0, Some(f64::NAN))]).unwrap_err();
    assert!(error.contains("cached input"), "{error}");
}

#[test]
fn nearest_rank_percentiles() {
    let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
    assert_eq!(nearest_rank(&twenty, 50), 10.0);
    assert_eq!(nearest_rank(&twenty, 95), 19.0);
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(nearest_rank(&hundred, 50), 50.0);
    assert_eq!(nearest_rank(&hundred, 95), 95.0);
    assert_eq!(nearest_rank(&[7.0], 50), 7.0);
    assert_eq!(nearest_rank(&[7.0], 95), 7.0);
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 95), 3.0);
    assert_eq!(nearest_rank(&[], 50), 0.0);
}

#[test]
fn timestamps_in_rfc3339() {
    assert_eq!(timestamp::rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        timestamp::rfc3339(1_700_000_000_123),
        "2023-11-14T22:13:20.123Z"
    );
    assert_eq!(
        timestamp::rfc3339(1_709_164_800_000),
        "2024-02-29T00:00:00.000Z"
    );
    assert_eq!(
        timestamp::rfc3339(951_868_799_999),
        "2000-02-29T23:59:59.999Z"
    );
    assert_eq!(timestamp::rfc3339(-1), "1969-12-31T23:59:59.999Z");
    let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(timestamp::unix_ms(time), 1_700_000_000_123);
    assert_eq!(
        timestamp::unix_ms(UNIX_EPOCH - Duration::from_millis(5)),
        -5
    );
}

#[test]
fn group_by_parses_its_choices_and_lists_them_on_error() {
    assert_eq!("model".parse(), Ok(GroupBy::Model));
    assert_eq!("provider".parse(), Ok(GroupBy::Provider));
    assert_eq!("caller".parse(), Ok(GroupBy::Caller));
    assert_eq!("tag:team".parse(), Ok(GroupBy::Tag("team".to_owned())));
    assert_eq!(GroupBy::Tag("team".to_owned()).to_string(), "tag:team");
    for bad in ["tag:", "region", ""] {
        let error = bad.parse::<GroupBy>().unwrap_err();
        assert!(
            error.contains("model, provider, caller or tag:<key>"),
            "{error}"
        );
    }
}

#[test]
fn outcome_filter_parses() {
    assert_eq!("ok".parse(), Ok(OutcomeFilter::Ok));
    assert_eq!("error".parse(), Ok(OutcomeFilter::Error));
    assert_eq!(
        "error:rate_limited".parse(),
        Ok(OutcomeFilter::Label("error:rate_limited".to_owned()))
    );
    assert!("".parse::<OutcomeFilter>().is_err());
}

pub(super) fn record_at(id: usize, started_at_ms: u64) -> CallRecord {
    CallRecord {
        request_id: format!("req-{id}"),
        started_at: UNIX_EPOCH + Duration::from_millis(started_at_ms),
        edge: Edge::Grpc,
        stream: false,
        caller: Caller::default(),
        tags: BTreeMap::new(),
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

fn ids(conn: &Connection) -> Vec<String> {
    let mut statement = conn
        .prepare("SELECT request_id FROM requests ORDER BY started_at_ms")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn retention_deletes_in_chunks_until_both_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let conn = schema::open_writer(&dir.path().join("ledger.sqlite3")).unwrap();
    {
        let mut insert = conn.prepare(row::INSERT).unwrap();
        // Shuffled start times: retention goes by start time, not insertion order.
        for (id, second) in [
            (3, 3),
            (0, 0),
            (9, 9),
            (5, 5),
            (1, 1),
            (7, 7),
            (2, 2),
            (8, 8),
            (4, 4),
            (6, 6),
        ] {
            row::insert(&mut insert, &record_at(id, second * 1000)).unwrap();
        }
    }
    let now = UNIX_EPOCH + Duration::from_secs(10);

    // Age first: rows started before second 2 go, in chunks of one row.
    let by_age = RetentionPolicy {
        max_age: Some(Duration::from_secs(8)),
        max_rows: None,
        ..RetentionPolicy::default()
    };
    assert_eq!(enforce(&conn, &by_age, now, 1).unwrap(), 2);
    assert_eq!(ids(&conn).len(), 8);

    // Then rows: the newest five stay, in chunks of two.
    let by_rows = RetentionPolicy {
        max_age: Some(Duration::from_secs(8)),
        max_rows: Some(5),
        ..RetentionPolicy::default()
    };
    assert_eq!(enforce(&conn, &by_rows, now, 2).unwrap(), 3);
    assert_eq!(ids(&conn), ["req-5", "req-6", "req-7", "req-8", "req-9"]);

    // Nothing more to do: a second run deletes nothing.
    assert_eq!(enforce(&conn, &by_rows, now, 2).unwrap(), 0);
    let unlimited = RetentionPolicy::default();
    assert_eq!(enforce(&conn, &unlimited, now, 2).unwrap(), 0);
}

#[test]
fn retention_spares_rows_not_yet_forwarded_and_the_newest_row() {
    let dir = tempfile::tempdir().unwrap();
    let conn = schema::open_writer(&dir.path().join("ledger.sqlite3")).unwrap();
    {
        let mut insert = conn.prepare(row::INSERT).unwrap();
        for id in 0..10 {
            row::insert(&mut insert, &record_at(id, id as u64 * 1000)).unwrap();
        }
    }
    let now = UNIX_EPOCH + Duration::from_secs(100);
    let everything = RetentionPolicy {
        max_age: Some(Duration::from_secs(1)),
        max_rows: Some(1),
        keep_unforwarded: true,
    };
    // Nothing forwarded: nothing goes, however old.
    assert_eq!(enforce(&conn, &everything, now, 3).unwrap(), 0);
    // The first four forwarded (row ids 1 to 4): those go.
    conn.execute(
        "INSERT INTO ledger_meta (key, value) VALUES ('forwarded_through', '4')",
        [],
    )
    .unwrap();
    assert_eq!(enforce(&conn, &everything, now, 3).unwrap(), 4);
    assert_eq!(ids(&conn).len(), 6);
    // All forwarded: the newest row stays, so row ids never begin again.
    conn.execute(
        "UPDATE ledger_meta SET value = '10' WHERE key = 'forwarded_through'",
        [],
    )
    .unwrap();
    assert_eq!(enforce(&conn, &everything, now, 3).unwrap(), 5);
    assert_eq!(ids(&conn), ["req-9"]);
}

#[test]
fn opening_migrates_once_and_records_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    for _ in 0..2 {
        let conn = schema::open_writer(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, schema::SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    // Made readable by this uid only, its write-ahead log too.
    use std::os::unix::fs::PermissionsExt as _;
    let _open = schema::open_writer(&path).unwrap();
    for file in [path.clone(), path.with_extension("sqlite3-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[test]
fn the_reader_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    drop(schema::open_writer(&path).unwrap());
    let reader = schema::open_reader(&path).unwrap();
    assert!(reader.execute("DELETE FROM requests", []).is_err());
}

#[test]
fn cache_writes_are_billed_at_their_own_price_and_each_token_once() {
    let pricing = Pricing::new(vec![PriceEntry {
        cache_write_per_million: Some(1.25),
        ..price("claude-*", 1.0, 5.0, Some(0.1))
    }])
    .unwrap();
    let usage = Usage {
        prompt_tokens: 1000,
        completion_tokens: 10,
        total_tokens: 1010,
        cache_read_tokens: Some(800),
        cache_write_tokens: Some(150),
        ..Usage::default()
    };
    assert_close(
        pricing.cost("claude-sonnet", &usage),
        (50.0 * 1.0 + 800.0 * 0.1 + 150.0 * 1.25 + 10.0 * 5.0) / 1e6,
    );
    // Counts that overrun the prompt never bill a token twice.
    let odd = Usage {
        cache_write_tokens: Some(5000),
        ..usage
    };
    assert_close(
        pricing.cost("claude-sonnet", &odd),
        (800.0 * 0.1 + 200.0 * 1.25 + 10.0 * 5.0) / 1e6,
    );
}

#[test]
fn a_file_from_before_cache_writes_gains_the_column_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    {
        // The file as the first schema left it, with one row.
        // A second connection of its own, to hold the file's lock.
        #[allow(clippy::disallowed_methods)]
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::V1_REQUESTS).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO requests (request_id, started_at_ms, edge, stream, tags,
                requested_model, outcome, attempts, queue_wait_ms, latency_ms, usage_estimated)
             VALUES ('old', 1, 'grpc', 0, '{}', 'm', 'ok', 1, 0, 1, 0)",
            [],
        )
        .unwrap();
    }
    let conn = schema::open_writer(&path).unwrap();
    row::insert(&mut conn.prepare(row::INSERT).unwrap(), &record_at(1, 2)).unwrap();
    let writes: Vec<Option<u32>> = conn
        .prepare("SELECT cache_write_tokens FROM requests ORDER BY started_at_ms")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0], None, "unknown in an old row, not zero");
}

#[test]
fn rows_from_before_the_limits_are_read_within_them() {
    let dir = tempfile::tempdir().unwrap();
    let conn = schema::open_writer(&dir.path().join("ledger.sqlite3")).unwrap();
    let huge = "x".repeat(1 << 20);
    {
        let mut insert = conn.prepare(row::INSERT).unwrap();
        for id in 0..8 {
            let record = CallRecord {
                requested_model: huge.clone(),
                served_model: Some(huge.clone()),
                caller: Caller {
                    name: Some(huge.clone()),
                    ..Caller::default()
                },
                tags: [("k".to_owned(), huge.clone())].into(),
                ..record_at(id, id as u64 * 1000)
            };
            row::insert(&mut insert, &record).unwrap();
        }
    }
    let rows = recent::recent(
        &conn,
        &RecentQuery {
            limit: 8,
            ..RecentQuery::default()
        },
    )
    .unwrap();
    assert_eq!(rows.len(), 8);
    for row in &rows {
        assert_eq!(
            row.requested_model.len(),
            crate::pipeline::validate::MAX_MODEL_BYTES
        );
        assert_eq!(
            row.served_model.as_ref().unwrap().len(),
            crate::pipeline::validate::MAX_MODEL_BYTES
        );
        assert_eq!(
            row.caller_name.as_ref().unwrap().len(),
            crate::pipeline::validate::MAX_CALLER_BYTES
        );
        assert!(
            row.tags.is_empty(),
            "a legacy tag set over the bound reads as none"
        );
    }
    // The SQL's literal bounds are the validation's.
    for bound in [
        format!(
            "substr(requested_model, 1, {})",
            crate::pipeline::validate::MAX_MODEL_BYTES
        ),
        format!(
            "substr(caller_name, 1, {})",
            crate::pipeline::validate::MAX_CALLER_BYTES
        ),
        format!("octet_length(tags) <= {}", MAX_READ_TAGS_BYTES),
    ] {
        assert!(row::SELECT_COLUMNS.contains(&bound), "{bound}");
    }
}

#[test]
fn one_answer_holds_at_most_its_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let conn = schema::open_writer(&dir.path().join("ledger.sqlite3")).unwrap();
    let tags: BTreeMap<String, String> = (0..crate::pipeline::validate::MAX_TAGS)
        .map(|index| (format!("{index:0>128}"), "v".repeat(1024)))
        .collect();
    {
        let mut insert = conn.prepare(row::INSERT).unwrap();
        for id in 0..100 {
            let record = CallRecord {
                tags: tags.clone(),
                ..record_at(id, id as u64 * 1000)
            };
            row::insert(&mut insert, &record).unwrap();
        }
    }
    let rows = recent::recent(
        &conn,
        &RecentQuery {
            limit: RECENT_LIMIT_MAX,
            ..RecentQuery::default()
        },
    )
    .unwrap();
    let bytes: usize = rows.iter().map(LedgerRow::approximate_size).sum();
    assert!(rows.len() < 100 && !rows.is_empty(), "{} rows", rows.len());
    assert!(bytes <= RECENT_BYTES_MAX, "{bytes} bytes");
    assert_eq!(
        rows[0].tags.len(),
        crate::pipeline::validate::MAX_TAGS,
        "tags at the limits are kept"
    );
}

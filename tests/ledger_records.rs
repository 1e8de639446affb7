//! One ledger row per caller request, whatever became of it — answered,
//! refused, cut mid-stream or abandoned by the caller — with the tokens
//! the upstream reported (or a flagged estimate) and their cost.

mod common;

use common::{Harness, collect, request};
use llm_sidecar::ledger::LedgerRow;
use serde_json::json;
use std::time::Duration;

/// $1 per million prompt tokens, $2 per million completion tokens, $0.5
/// per million cached ones.
const PRICES: &str = r#"
[[prices]]
model = "fake-*"
input = 1.0
output = 2.0
cached_input = 0.5
"#;

fn tagged(
    mut request: llm_sidecar::proto::v1::ChatRequest,
) -> tonic::Request<llm_sidecar::proto::v1::ChatRequest> {
    request.metadata.insert("team".into(), "search".into());
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("x-llm-caller", "billing-svc".parse().unwrap());
    request
}

async fn only_row(harness: &Harness) -> LedgerRow {
    let rows = harness.ledger_rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    rows.into_iter().next().unwrap()
}

#[tokio::test]
async fn an_answered_call_is_recorded_with_its_tokens_cost_and_caller() {
    let mut harness = Harness::start_full("", PRICES).await;
    let response = harness
        .client
        .complete(tagged(request(
            "hi",
            json!({"reply": "a b c", "prompt_tokens": 1000, "cached_tokens": 400}),
        )))
        .await
        .expect("the call succeeds");
    let request_id = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(response.metadata().get("x-llm-overhead-us").is_some());
    let row = only_row(&harness).await;
    assert_eq!(row.request_id, request_id);
    assert_eq!(row.outcome, "ok");
    assert_eq!(row.edge, "grpc");
    assert_eq!(row.provider.as_deref(), Some("fake"));
    assert_eq!(row.requested_model, "fake-model");
    assert_eq!(row.served_model.as_deref(), Some("fake-model"));
    assert_eq!(row.caller_name.as_deref(), Some("billing-svc"));
    assert_eq!(row.caller_uid, Some(own_uid()));
    assert_eq!(row.tags.get("team").map(String::as_str), Some("search"));
    assert_eq!(row.prompt_tokens, Some(1000));
    assert_eq!(row.cached_prompt_tokens, Some(400));
    assert_eq!(row.completion_tokens, Some(3));
    assert!(!row.usage_estimated);
    assert_eq!(row.attempts, 1);
    // 600 × $1 + 400 × $0.5 + 3 × $2, per million.
    let cost = row.cost_usd.expect("the model has a price");
    assert!((cost - 806.0 / 1e6).abs() < 1e-12, "{cost}");
    harness.stop().await;
}

/// The uid the tests run as: the Unix socket peer the sidecar sees.
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[tokio::test]
async fn a_refused_call_is_recorded_as_an_error_without_usage() {
    let mut harness = Harness::start_full("", PRICES).await;
    let status = harness
        .client
        .complete(request("hi", json!({"status": 400})))
        .await
        .expect_err("the upstream refuses");
    assert!(status.metadata().get("x-request-id").is_some());
    let row = only_row(&harness).await;
    assert!(row.outcome.starts_with("error:"), "{}", row.outcome);
    assert_eq!(row.prompt_tokens, None);
    assert_eq!(row.cost_usd, None);
    harness.stop().await;
}

#[tokio::test]
async fn an_invalid_request_is_recorded_too() {
    let mut harness = Harness::start().await;
    let mut invalid = request("hi", json!({}));
    invalid.messages.clear();
    harness
        .client
        .complete(invalid)
        .await
        .expect_err("no messages");
    let row = only_row(&harness).await;
    assert_eq!(row.outcome, "error:invalid_request");
    harness.stop().await;
}

#[tokio::test]
async fn a_completed_stream_records_the_upstream_usage_and_ends_with_cost_trailers() {
    let mut harness = Harness::start_full("", PRICES).await;
    let mut stream = harness
        .client
        .stream_complete(request("hi", json!({"chunks": 4, "prompt_tokens": 10})))
        .await
        .unwrap()
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none(), "{status:?}");
    assert!(!chunks.is_empty());
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert!(trailers.get("x-llm-overhead-us").is_some(), "{trailers:?}");
    assert_eq!(trailers.get("x-llm-prompt-tokens").unwrap(), "10");
    let row = only_row(&harness).await;
    assert_eq!(row.outcome, "ok");
    assert!(row.stream);
    assert_eq!(row.prompt_tokens, Some(10));
    assert!(!row.usage_estimated);
    assert!(row.time_to_first_chunk_ms.is_some());
    assert!(row.cost_usd.is_some());
    harness.stop().await;
}

#[tokio::test]
async fn a_stream_cut_midway_is_recorded_as_partial_with_an_estimate() {
    let mut harness = Harness::start_full("", PRICES).await;
    let mut stream = harness
        .client
        .stream_complete(request(
            "one two three four",
            json!({"cut_after": 2, "prompt_tokens": 10}),
        ))
        .await
        .unwrap()
        .into_inner();
    let (_, status) = collect(&mut stream).await;
    assert!(status.is_some(), "a cut stream is never OK");
    let row = only_row(&harness).await;
    assert!(row.outcome.starts_with("partial:"), "{}", row.outcome);
    assert!(row.usage_estimated);
    assert!(row.completion_tokens.unwrap() > 0);
    assert!(row.cost_usd.unwrap() > 0.0, "an estimate is still priced");
    harness.stop().await;
}

#[tokio::test]
async fn an_abandoned_stream_is_recorded_as_cancelled_with_what_was_seen() {
    let mut harness = Harness::start().await;
    let mut stream = harness
        .client
        .stream_complete(request(
            "hi",
            json!({"chunks": 50, "chunk_delay_ms": 50, "prompt_tokens": 10}),
        ))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first chunk");
    drop(stream);
    assert!(
        harness.upstream_closed().await,
        "cancelling stops the upstream"
    );
    let row = wait_for_row(&harness).await;
    assert_eq!(row.outcome, "cancelled");
    assert!(row.usage_estimated, "no usage came: it is estimated");
    assert!(row.completion_tokens.unwrap() >= 1);
    harness.stop().await;
}

#[tokio::test]
async fn with_drain_on_cancel_an_abandoned_stream_records_the_true_usage() {
    let mut harness = Harness::start_with("drain_on_cancel = true").await;
    let scenario = json!({"reply": "a b c d e f", "chunk_delay_ms": 20, "prompt_tokens": 10});
    // The same answer read to the end, for the usage the upstream reports.
    let mut whole = harness
        .client
        .stream_complete(request("hi", scenario.clone()))
        .await
        .unwrap()
        .into_inner();
    let (chunks, _) = collect(&mut whole).await;
    let reported = chunks
        .iter()
        .find_map(|chunk| chunk.usage.clone())
        .expect("usage");

    let mut stream = harness
        .client
        .stream_complete(request("hi", scenario))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first chunk");
    drop(stream);
    let mut row = wait_for_row(&harness).await;
    for _ in 0..100 {
        if row.outcome == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        row = harness.ledger_rows().await.remove(0);
    }
    assert_eq!(row.outcome, "cancelled");
    assert!(!row.usage_estimated, "the drained stream carried the usage");
    assert_eq!(row.prompt_tokens, Some(10));
    assert_eq!(row.completion_tokens, Some(reported.completion_tokens));
    harness.stop().await;
}

/// A cancelled call is recorded when the server notices; poll briefly.
async fn wait_for_row(harness: &Harness) -> LedgerRow {
    for _ in 0..100 {
        let rows = harness.ledger_rows().await;
        if let Some(row) = rows.into_iter().next() {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no ledger row within 2 s");
}

#[tokio::test]
async fn a_burst_of_concurrent_calls_loses_no_row() {
    const CALLS: usize = 2000;
    let harness = Harness::start().await;
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..CALLS {
        let mut client = harness.client.clone();
        calls.spawn(async move {
            client
                .complete(request(&format!("call {index}"), json!({})))
                .await
                .map(|_| ())
        });
    }
    let mut ok = 0;
    while let Some(result) = calls.join_next().await {
        if result.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, CALLS);
    let rows = harness.ledger_rows().await;
    // `recent` caps at 1000 rows: count them all through the summary.
    assert_eq!(rows.len(), 1000);
    let running = harness.running.as_ref().unwrap();
    let ledger = running.observer.ledger().unwrap();
    assert_eq!(ledger.dropped(), 0);
    assert_eq!(ledger.written(), CALLS as u64);
    let summary = ledger
        .summary(llm_sidecar::ledger::SummaryQuery {
            since: std::time::SystemTime::UNIX_EPOCH,
            until: std::time::SystemTime::now() + Duration::from_secs(60),
            group_by: llm_sidecar::ledger::GroupBy::Provider,
        })
        .await
        .unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].requests, CALLS as u64);
    harness.stop().await;
}

#[tokio::test]
async fn the_ledger_survives_a_restart() {
    let mut harness = Harness::start().await;
    harness
        .client
        .complete(request("hi", json!({})))
        .await
        .unwrap();
    let path = harness.dir.path().join("ledger.sqlite3");
    let dir = std::mem::replace(&mut harness.dir, tempfile::tempdir().unwrap());
    harness.stop().await;
    let reopened = llm_sidecar::ledger::Ledger::open(&llm_sidecar::ledger::LedgerConfig {
        path,
        ..llm_sidecar::ledger::LedgerConfig::default()
    })
    .expect("the file opens again");
    let rows = reopened
        .recent(llm_sidecar::ledger::RecentQuery::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "ok");
    reopened.close().await;
    drop(dir);
}

#[tokio::test]
async fn calls_through_the_http_facade_are_recorded_the_same_way() {
    let harness = Harness::start_full("", PRICES).await;
    let client = common::http_client();
    let response = client
        .post(format!("{}/chat/completions", harness.http_base()))
        .header("x-llm-caller", "sdk-user")
        .json(&json!({
            "model": "fake-model",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "metadata": {"team": "web"},
            "fake": {"chunks": 3, "prompt_tokens": 5},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let overhead: u64 = response.headers()["x-llm-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead < 1_000_000, "{overhead} µs");
    let body = response.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    let bad = client
        .post(format!("{}/chat/completions", harness.http_base()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let rows = harness.ledger_rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(rows[0].outcome.starts_with("error:"), "{}", rows[0].outcome);
    let row = &rows[1];
    assert_eq!(row.request_id, request_id);
    assert_eq!(row.edge, "http");
    assert_eq!(row.outcome, "ok");
    // The caller token names the caller; what the caller says it is
    // is kept beside it.
    assert_eq!(row.caller_name.as_deref(), Some("app"));
    assert_eq!(row.caller_claimed.as_deref(), Some("sdk-user"));
    assert_eq!(row.tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(row.prompt_tokens, Some(5));
    assert!(row.cost_usd.is_some());
    harness.stop().await;
}

//! Each of our timeouts is its own error, on a silent, a slow-to-start, a
//! trickling and a slow upstream; each closes the upstream request.

mod common;

use common::{Harness, collect, request};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

const TIMEOUTS: &str = "[timeouts]\nheaders_ms = 300\nfirst_chunk_ms = 600\nidle_ms = 300\nunary_total_ms = 500\nstream_total_ms = 1500\n";

async fn harness() -> Harness {
    Harness::start_full("max_attempts = 1", TIMEOUTS).await
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().unwrap().reason
}

async fn stream_error(harness: &mut Harness, scenario: serde_json::Value) -> tonic::Status {
    match harness
        .client
        .stream_complete(request("a b c d e f", scenario))
        .await
    {
        Err(status) => status,
        Ok(response) => collect(&mut response.into_inner())
            .await
            .1
            .expect("an error status"),
    }
}

#[tokio::test]
async fn a_silent_upstream_hits_the_headers_timeout() {
    let mut harness = harness().await;
    let status = stream_error(&mut harness, json!({"hang": true})).await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "UPSTREAM_HEADERS_TIMEOUT");
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn a_slow_to_start_upstream_hits_the_first_chunk_timeout() {
    let mut harness = harness().await;
    let status = stream_error(&mut harness, json!({"first_chunk_delay_ms": 2000})).await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "UPSTREAM_FIRST_CHUNK_TIMEOUT");
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn a_trickling_upstream_hits_the_idle_timeout_after_its_first_chunk() {
    let mut harness = harness().await;
    let response = harness
        .client
        .stream_complete(request("a b c d e f", json!({"chunk_delay_ms": 1000})))
        .await
        .expect("the first chunk comes at once");
    let (chunks, status) = collect(&mut response.into_inner()).await;
    assert_eq!(chunks.len(), 1);
    let status = status.expect("an error status, not OK");
    assert_eq!(reason(&status), "UPSTREAM_IDLE_TIMEOUT");
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn a_stream_that_keeps_trickling_hits_the_total() {
    let mut harness = harness().await;
    // Each gap (250 ms) is under the idle limit; the whole is over the total.
    let status = stream_error(
        &mut harness,
        json!({"chunk_delay_ms": 250, "reply": "a b c d e f g h i j k l"}),
    )
    .await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "TOTAL_TIMEOUT");
    harness.stop().await;
}

#[tokio::test]
async fn a_slow_unary_answer_hits_the_unary_total() {
    let mut harness = harness().await;
    let status = harness
        .client
        .complete(request("x", json!({"latency_ms": 3000})))
        .await
        .expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "TOTAL_TIMEOUT");
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn a_callers_shorter_deadline_wins_over_our_total() {
    let mut harness = harness().await;
    let mut call = tonic::Request::new(request("x", json!({"latency_ms": 3000})));
    call.set_timeout(std::time::Duration::from_millis(200));
    let status = harness.client.complete(call).await.expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "DEADLINE_EXCEEDED");
    harness.stop().await;
}

#[tokio::test]
async fn a_first_chunk_timeout_is_retried() {
    let mut harness = Harness::start_full(
        "max_attempts = 2",
        &format!("{TIMEOUTS}[retry]\nbase_delay_ms = 1\nmax_delay_ms = 2\n"),
    )
    .await;
    let status = stream_error(&mut harness, json!({"first_chunk_delay_ms": 2000})).await;
    assert_eq!(reason(&status), "UPSTREAM_FIRST_CHUNK_TIMEOUT");
    assert_eq!(harness.fake.requests().len(), 2);
    harness.stop().await;
}

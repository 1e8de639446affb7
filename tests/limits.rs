//! A provider's concurrency limit and its bounded queue, over the socket.

mod common;

use common::{Harness, collect, request};
use serde_json::json;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// Waits (5 s at most) until `n` calls wait in the fake provider's queue.
async fn wait_until_queued(harness: &Harness, n: usize) {
    let pipeline = harness.running.as_ref().unwrap().pipeline.clone();
    let began = std::time::Instant::now();
    let queued = || {
        pipeline
            .current()
            .provider_states()
            .find(|state| state.name == "fake")
            .map_or(0, |state| state.queued)
    };
    while queued() < n {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{n} calls never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once_and_queued_calls_go_in_order() {
    let mut harness =
        Harness::start_with("max_in_flight = 1\nmax_queue = 1\nmax_queue_wait_ms = 10000").await;
    // One stream holds the only slot while it trickles.
    let mut holder = harness
        .client
        .stream_complete(request("a b c", json!({"chunk_delay_ms": 300})))
        .await
        .unwrap()
        .into_inner();
    // One call waits in the queue.
    let mut queued_client = harness.client.clone();
    let queued =
        tokio::spawn(async move { queued_client.complete(request("queued", json!({}))).await });
    wait_until_queued(&harness, 1).await;
    // The next finds the queue full and is refused with RetryInfo.
    let refused = harness
        .client
        .complete(request("refused", json!({})))
        .await
        .expect_err("queue full");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "QUEUE_FULL"
    );
    assert!(refused.get_details_retry_info().is_some());
    // When the holder finishes, the queued call runs.
    let (_, status) = collect(&mut holder).await;
    assert!(status.is_none());
    let answer = queued
        .await
        .unwrap()
        .expect("the queued call ran")
        .into_inner();
    assert_eq!(answer.choices[0].content.as_deref(), Some("queued"));
    // The refused call never reached the upstream.
    assert_eq!(harness.fake.requests().len(), 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_queue_wait_that_runs_out_is_resource_exhausted() {
    let mut harness =
        Harness::start_with("max_in_flight = 1\nmax_queue = 4\nmax_queue_wait_ms = 200").await;
    let mut holder = harness
        .client
        .stream_complete(request("a b c d", json!({"chunk_delay_ms": 300})))
        .await
        .unwrap()
        .into_inner();
    let error = harness
        .client
        .complete(request("late", json!({})))
        .await
        .expect_err("waited too long");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(
        error.get_details_error_info().unwrap().reason,
        "QUEUE_WAIT_EXPIRED"
    );
    drop(holder.message().await);
    harness.stop().await;
}

#[tokio::test]
async fn requests_over_the_per_minute_rate_are_refused_with_retry_info() {
    let mut harness = Harness::start_with("requests_per_minute = 2\nmax_queue_wait_ms = 100").await;
    for _ in 0..2 {
        harness
            .client
            .complete(request("x", json!({})))
            .await
            .unwrap();
    }
    let error = harness
        .client
        .complete(request("x", json!({})))
        .await
        .expect_err("over the rate");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(
        error.get_details_error_info().unwrap().reason,
        "LOCAL_RATE_LIMIT"
    );
    let retry = error.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry > Duration::from_secs(10), "{retry:?}");
    assert_eq!(harness.fake.requests().len(), 2);
    harness.stop().await;
}

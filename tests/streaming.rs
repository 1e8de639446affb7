//! Streams that go wrong upstream end the RPC with an error, never OK; a
//! cancelled or timed-out call closes the upstream request at once.

mod common;

use common::{Harness, collect, request, text_of};
use serde_json::json;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

async fn stream_outcome(
    harness: &mut Harness,
    scenario: serde_json::Value,
) -> (String, Option<tonic::Status>) {
    let mut stream = harness
        .client
        .stream_complete(request("one two three four five", scenario))
        .await
        .expect("the stream starts")
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    (text_of(&chunks), status)
}

#[tokio::test]
async fn a_mid_stream_error_frame_ends_the_rpc_with_an_error() {
    let mut harness = Harness::start().await;
    let (text, status) = stream_outcome(&mut harness, json!({"error_frame_after": 2})).await;
    assert_eq!(text, "one two ");
    let status = status.expect("an error status, not OK");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["provider"],
        "fake"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_cut_stream_is_never_reported_complete() {
    let mut harness = Harness::start().await;
    let (text, status) = stream_outcome(&mut harness, json!({"cut_after": 3})).await;
    assert_eq!(text, "one two three ");
    let status = status.expect("an error status, not OK");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("ended before completing"),
        "{}",
        status.message()
    );
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "UPSTREAM_STREAM_INCOMPLETE"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_malformed_frame_ends_the_rpc_with_internal() {
    let mut harness = Harness::start().await;
    let (text, status) = stream_outcome(&mut harness, json!({"malformed_after": 1})).await;
    assert_eq!(text, "one ");
    assert_eq!(status.expect("an error status").code(), Code::Internal);
    harness.stop().await;
}

#[tokio::test]
async fn finish_reason_error_is_an_error() {
    let mut harness = Harness::start().await;
    let (_, status) = stream_outcome(&mut harness, json!({"finish_error": true})).await;
    assert_eq!(status.expect("an error status").code(), Code::Unavailable);
    harness.stop().await;
}

#[tokio::test]
async fn a_finished_stream_without_done_is_complete() {
    let mut harness = Harness::start().await;
    let (text, status) = stream_outcome(&mut harness, json!({"no_done": true})).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(text, "one two three four five");
    harness.stop().await;
}

#[tokio::test]
async fn cancelling_a_stream_closes_the_upstream_request() {
    let mut harness = Harness::start().await;
    let mut stream = harness
        .client
        .stream_complete(request(
            "a b c d e f g h i j",
            json!({"chunk_delay_ms": 200}),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first chunk");
    assert_eq!(first.choices[0].content, "a ");
    drop(stream); // the caller goes away mid-answer
    assert!(
        harness.upstream_closed().await,
        "the upstream request stayed open after the caller cancelled"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_cancelled_unary_call_closes_the_upstream_request() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let call =
        tokio::spawn(async move { client.complete(request("hi", json!({"hang": true}))).await });
    // Wait until the upstream has the request, then abandon the call.
    for _ in 0..100 {
        if !harness.fake.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn the_callers_deadline_ends_a_stream_and_closes_the_upstream() {
    let mut harness = Harness::start().await;
    let mut call = tonic::Request::new(request("a b c d e f g h", json!({"chunk_delay_ms": 300})));
    call.set_timeout(Duration::from_millis(700));
    let mut stream = harness
        .client
        .stream_complete(call)
        .await
        .unwrap()
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(
        !chunks.is_empty() && chunks.len() < 8,
        "{} chunks",
        chunks.len()
    );
    assert_eq!(
        status.expect("deadline status").code(),
        Code::DeadlineExceeded
    );
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn the_callers_deadline_bounds_a_silent_upstream() {
    let mut harness = Harness::start().await;
    let mut call = tonic::Request::new(request("hi", json!({"hang": true})));
    call.set_timeout(Duration::from_millis(300));
    let error = harness.client.complete(call).await.expect_err("deadline");
    assert_eq!(error.code(), Code::DeadlineExceeded);
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn a_slow_reader_holds_back_the_upstream_read() {
    let mut harness = Harness::start().await;
    // 40 MiB of answer in 1 KiB frames: several times what the buffers
    // between the fake upstream and the client hold (on loopback mostly the
    // kernel's autotuned TCP buffers, ~10 MiB, plus HTTP/2 windows).
    let frames = 40 * 1024;
    let scenario = json!({"reply": "x".repeat(1024), "repeat": frames, "chunks": frames});
    let mut stream = harness
        .client
        .stream_complete(request("hi", scenario))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first chunk");
    // The caller stops reading; the upstream must stop being read soon after.
    let mut sent = harness.fake.frames_sent();
    let mut unchanged = 0;
    while unchanged < 3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = harness.fake.frames_sent();
        unchanged = if now == sent { unchanged + 1 } else { 0 };
        sent = now;
    }
    eprintln!("frames pulled from the upstream while the reader stalled: {sent} of {frames}");
    assert!(
        sent < frames / 2,
        "{sent} of {frames} frames were pulled for a reader that stopped"
    );
    // Reading resumes and everything arrives, complete.
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none(), "{status:?}");
    let total: usize = chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .map(|choice| choice.content.len())
        .sum();
    assert_eq!(total + first.choices[0].content.len(), 1024 * frames);
    harness.stop().await;
}

#[tokio::test]
async fn a_stream_cut_after_output_says_it_is_partial() {
    let mut harness = Harness::start().await;
    let (text, status) = stream_outcome(&mut harness, json!({"cut_after": 2})).await;
    assert_eq!(text, "one two ");
    let status = status.expect("an error status");
    assert_eq!(status.metadata().get("x-llm-partial").unwrap(), "true");
    assert_eq!(status.metadata().get("x-llm-chunks-sent").unwrap(), "2");
    harness.stop().await;
}

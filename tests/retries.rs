//! Retries: only what may pass, never past the caller, never after the
//! first chunk, and never more than the budget allows.

mod common;

use common::{Harness, collect, request, text_of};
use serde_json::json;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// Short waits so the suite stays fast; the backoff itself is unit-tested.
const FAST_RETRIES: &str = "[retry]\nbase_delay_ms = 1\nmax_delay_ms = 5\n";

async fn fast() -> Harness {
    Harness::start_full("", FAST_RETRIES).await
}

fn attempts_of<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-llm-attempts")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    // 16 retries for 8 calls: more than the default budget allows.
    let tables = format!("{FAST_RETRIES}budget_floor = 100\n");
    let mut harness = Harness::start_full("", &tables).await;
    for status in [429, 500, 502, 503, 504, 529, 408, 409] {
        let key = format!("transient-{status}");
        let scenario = json!({"status": status, "fail_times": 2, "key": key});
        let response = harness
            .client
            .complete(request("hello", scenario))
            .await
            .unwrap_or_else(|e| panic!("{status}: {e:?}"));
        assert_eq!(attempts_of(&response), "3", "{status}");
        assert_eq!(response.metadata().get("x-llm-provider").unwrap(), "fake");
        assert_eq!(
            response.into_inner().choices[0].content.as_deref(),
            Some("hello")
        );
    }
    assert_eq!(harness.fake.requests().len(), 8 * 3);
    harness.stop().await;
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let mut harness = fast().await;
    for status in [400, 401, 403, 404, 422] {
        let scenario = json!({"status": status, "fail_times": 1, "key": format!("never-{status}")});
        harness
            .client
            .complete(request("x", scenario))
            .await
            .expect_err("fails");
    }
    let quota =
        json!({"status": 429, "error_code": "insufficient_quota", "fail_times": 1, "key": "quota"});
    let error = harness
        .client
        .complete(request("x", quota))
        .await
        .expect_err("fails");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(harness.fake.requests().len(), 6, "each was sent once");
    harness.stop().await;
}

#[tokio::test]
async fn callers_that_retry_themselves_can_turn_retries_off() {
    let mut harness = fast().await;
    let mut chat = request("x", json!({"status": 503, "fail_times": 5, "key": "field"}));
    chat.max_attempts = Some(0);
    harness.client.complete(chat).await.expect_err("fails");
    assert_eq!(harness.fake.requests().len(), 1);

    let mut call = tonic::Request::new(request(
        "x",
        json!({"status": 503, "fail_times": 5, "key": "header"}),
    ));
    call.metadata_mut()
        .insert("x-llm-max-attempts", "1".parse().unwrap());
    harness.client.complete(call).await.expect_err("fails");
    assert_eq!(harness.fake.requests().len(), 2);
    harness.stop().await;
}

#[tokio::test]
async fn max_attempts_comes_from_the_provider_config() {
    let mut harness = Harness::start_full("max_attempts = 5", FAST_RETRIES).await;
    let response = harness
        .client
        .complete(request(
            "x",
            json!({"status": 503, "fail_times": 4, "key": "five"}),
        ))
        .await
        .unwrap();
    assert_eq!(attempts_of(&response), "5");
    harness.stop().await;
}

#[tokio::test]
async fn a_call_that_fails_after_its_retries_says_how_many_attempts_it_made() {
    let mut harness = Harness::start_full("max_attempts = 3", FAST_RETRIES).await;
    let status = harness
        .client
        .complete(request(
            "x",
            json!({"status": 503, "fail_times": 9, "key": "spent"}),
        ))
        .await
        .expect_err("every attempt fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.metadata().get("x-llm-attempts").unwrap(), "3");
    harness.stop().await;
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_fails_now_with_retry_info() {
    let mut harness = fast().await;
    let mut call = tonic::Request::new(request(
        "x",
        json!({"status": 429, "retry_after": "30", "fail_times": 1, "key": "late"}),
    ));
    call.set_timeout(Duration::from_secs(5));
    let error = harness.client.complete(call).await.expect_err("fails");
    // Not DEADLINE_EXCEEDED: we did not sit out a wait the caller could not
    // afford; it gets the upstream's answer and when to come back.
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(
        error.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(30))
    );
    assert_eq!(harness.fake.requests().len(), 1);
    harness.stop().await;
}

#[tokio::test]
async fn a_short_retry_after_is_honoured() {
    let mut harness = fast().await;
    let started = std::time::Instant::now();
    let response = harness
        .client
        .complete(request(
            "x",
            json!({"status": 429, "retry_after_ms": 300, "fail_times": 1, "key": "short"}),
        ))
        .await
        .unwrap();
    assert_eq!(attempts_of(&response), "2");
    // The backoff alone would be at most 5 ms; the upstream asked for 300.
    assert!(started.elapsed() >= Duration::from_millis(300));
    harness.stop().await;
}

#[tokio::test]
async fn streams_are_retried_before_the_first_chunk() {
    let mut harness = fast().await;
    let response = harness
        .client
        .stream_complete(request(
            "one two",
            json!({"status": 503, "fail_times": 1, "key": "stream"}),
        ))
        .await
        .unwrap();
    assert_eq!(attempts_of(&response), "2");
    let (chunks, status) = collect(&mut response.into_inner()).await;
    assert!(status.is_none());
    assert_eq!(text_of(&chunks), "one two");

    // An in-band error before any chunk is retried too.
    let error = harness
        .client
        .stream_complete(request("one two", json!({"error_frame_after": 0})))
        .await
        .expect_err("every attempt fails");
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(harness.fake.requests().len(), 2 + 3);
    harness.stop().await;
}

#[tokio::test]
async fn streams_are_never_retried_after_the_first_chunk() {
    let mut harness = fast().await;
    let mut stream = harness
        .client
        .stream_complete(request("one two three", json!({"cut_after": 2})))
        .await
        .unwrap()
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert_eq!(text_of(&chunks), "one two ", "no token twice");
    assert_eq!(status.expect("an error, not OK").code(), Code::Unavailable);
    assert_eq!(harness.fake.requests().len(), 1);
    harness.stop().await;
}

/// 100 caller requests against a provider that answers 503 to everything.
async fn outage_load(tables: &str) -> (usize, usize) {
    let mut harness = Harness::start_full("", tables).await;
    let mut budget_refusals = 0;
    for _ in 0..100 {
        let error = harness
            .client
            .complete(request("x", json!({"status": 503})))
            .await
            .expect_err("outage");
        // The upstream's own failure, whether retried or not ...
        assert_eq!(error.code(), Code::Unavailable);
        let info = error.get_details_error_info().unwrap();
        assert_eq!(info.reason, "UPSTREAM_UNAVAILABLE");
        // ... with the budget's refusal told beside it, and the caller's
        // own retry policy asked to hold back too.
        if info.metadata.get("retry_stopped").map(String::as_str) == Some("RETRY_BUDGET_EXHAUSTED")
        {
            budget_refusals += 1;
            assert_eq!(
                error.metadata().get("grpc-retry-pushback-ms").unwrap(),
                "-1"
            );
            let attempts = error.metadata().get("x-llm-attempts").unwrap();
            assert!(
                ["1", "2"].contains(&attempts.to_str().unwrap()),
                "{attempts:?}"
            );
        }
    }
    let upstream_requests = harness.fake.requests().len();
    harness.stop().await;
    (upstream_requests, budget_refusals)
}

#[tokio::test]
async fn the_retry_budget_keeps_an_outage_from_multiplying_load() {
    let (with_budget, refusals) = outage_load(
        "[retry]\nbase_delay_ms = 1\nmax_delay_ms = 2\nbudget_ratio = 0.2\nbudget_floor = 10\n",
    )
    .await;
    let (without_budget, _) = outage_load(
        "[retry]\nbase_delay_ms = 1\nmax_delay_ms = 2\nbudget_ratio = 10\nbudget_floor = 1000\n",
    )
    .await;
    eprintln!(
        "upstream requests per 100 caller requests in an outage: {with_budget} with the budget, {without_budget} without"
    );
    assert_eq!(
        without_budget, 300,
        "3 attempts each when nothing limits retries"
    );
    assert!(with_budget <= 100 + 10 + 20, "{with_budget}");
    assert!(refusals >= 70, "{refusals} calls failed fast on the budget");
}

#[tokio::test]
async fn keys_are_used_in_turn_and_a_rate_limited_key_is_set_aside() {
    use common::{UPSTREAM_KEY, UPSTREAM_KEY_2};
    let mut harness =
        Harness::start_full("api_keys = [{ env = \"FAKE_KEY_2\" }]", FAST_RETRIES).await;
    let auth = |index: usize, harness: &Harness| {
        harness.fake.requests()[index]
            .header("authorization")
            .unwrap()
            .to_owned()
    };
    // In turn.
    for _ in 0..2 {
        harness
            .client
            .complete(request("x", json!({})))
            .await
            .unwrap();
    }
    assert_ne!(auth(0, &harness), auth(1, &harness));
    // A 429 sets the key aside; the retry goes out with the other key.
    let response = harness
        .client
        .complete(request(
            "x",
            json!({"status": 429, "fail_times": 1, "key": "rotate"}),
        ))
        .await
        .unwrap();
    assert_eq!(attempts_of(&response), "2");
    let limited = auth(2, &harness);
    assert_ne!(auth(3, &harness), limited);
    // While it cools down, every call uses the other key.
    for _ in 0..3 {
        harness
            .client
            .complete(request("x", json!({})))
            .await
            .unwrap();
    }
    for index in 4..7 {
        assert_ne!(auth(index, &harness), limited);
    }
    let keys = [
        format!("Bearer {UPSTREAM_KEY}"),
        format!("Bearer {UPSTREAM_KEY_2}"),
    ];
    assert!(keys.contains(&limited));
    harness.stop().await;
}

//! Upstream failures become the documented gRPC codes with details, and
//! bad requests fail before anything is sent upstream.

mod common;

use common::{Harness, UPSTREAM_KEY, request, sidecar_from, user};
use llm_sidecar::inbound::grpc::json_to_struct;
use llm_sidecar::proto::v1 as pb;
use serde_json::json;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// One attempt only: these tests are about mapping, not retrying.
fn once(text: &str, scenario: serde_json::Value) -> pb::ChatRequest {
    let mut chat = request(text, scenario);
    chat.max_attempts = Some(1);
    chat
}

async fn unary_status(harness: &mut Harness, scenario: serde_json::Value) -> tonic::Status {
    harness
        .client
        .complete(once("hi", scenario))
        .await
        .expect_err("the call fails")
}

#[tokio::test]
async fn upstream_statuses_map_to_codes_with_error_info() {
    let mut harness = Harness::start().await;
    let cases = [
        (400, Code::InvalidArgument),
        (422, Code::InvalidArgument),
        (401, Code::FailedPrecondition),
        (403, Code::FailedPrecondition),
        (404, Code::NotFound),
        (429, Code::ResourceExhausted),
        (500, Code::Unavailable),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (529, Code::Unavailable),
        (504, Code::DeadlineExceeded),
    ];
    for (status, code) in cases {
        let error = unary_status(
            &mut harness,
            json!({"status": status, "error_message": "upstream says no"}),
        )
        .await;
        assert_eq!(error.code(), code, "upstream {status}: {error:?}");
        assert!(
            error.message().contains("upstream says no"),
            "{}",
            error.message()
        );
        let info = error
            .get_details_error_info()
            .expect("ErrorInfo is attached");
        assert_eq!(info.domain, "llm-sidecar");
        assert_eq!(info.metadata["provider"], "fake");
        assert_eq!(info.metadata["upstream_status"], status.to_string());
    }
    harness.stop().await;
}

#[tokio::test]
async fn retry_after_becomes_retry_info() {
    let mut harness = Harness::start().await;
    let error = unary_status(&mut harness, json!({"status": 429, "retry_after": "7"})).await;
    assert_eq!(error.code(), Code::ResourceExhausted);
    let retry = error
        .get_details_retry_info()
        .expect("RetryInfo is attached");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));

    let error = unary_status(&mut harness, json!({"status": 503, "retry_after_ms": 1500})).await;
    let retry = error
        .get_details_retry_info()
        .expect("RetryInfo is attached");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));

    let error = unary_status(&mut harness, json!({"status": 503})).await;
    assert!(error.get_details_retry_info().is_none());
    harness.stop().await;
}

#[tokio::test]
async fn streaming_calls_map_errors_before_the_first_chunk_to_the_status() {
    let mut harness = Harness::start().await;
    let error = harness
        .client
        .stream_complete(once("hi", json!({"status": 429, "retry_after": "2"})))
        .await
        .expect_err("the stream is refused");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert!(error.get_details_retry_info().is_some());
    harness.stop().await;
}

#[tokio::test]
async fn a_key_echoed_by_the_upstream_never_reaches_the_caller() {
    let mut harness = Harness::start().await;
    let message = format!("Incorrect API key provided: {UPSTREAM_KEY}. Bearer {UPSTREAM_KEY}");
    let error = unary_status(
        &mut harness,
        json!({"status": 401, "error_message": message, "error_code": "invalid_api_key"}),
    )
    .await;
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        !error.message().contains(UPSTREAM_KEY),
        "{}",
        error.message()
    );
    assert!(!format!("{error:?}").contains("0123456789abcdef"));
    let info = error.get_details_error_info().unwrap();
    assert_eq!(info.reason, "UPSTREAM_AUTH_FAILED");
    assert_eq!(info.metadata["upstream_error_code"], "invalid_api_key");
    harness.stop().await;
}

#[tokio::test]
async fn invalid_requests_fail_before_any_upstream_call() {
    let mut harness = Harness::start().await;
    let no_model = pb::ChatRequest {
        messages: vec![user("hi")],
        ..pb::ChatRequest::default()
    };
    let no_messages = pb::ChatRequest {
        model: "fake-model".into(),
        ..pb::ChatRequest::default()
    };
    let unset_role = pb::ChatRequest {
        model: "fake-model".into(),
        messages: vec![pb::Message {
            content: Some("hi".into()),
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    };
    let empty_part = pb::ChatRequest {
        model: "fake-model".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            parts: vec![pb::ContentPart::default()],
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    };
    let mut repeated = request("hi", json!({}));
    repeated.temperature = Some(0.5);
    repeated.extra.get_or_insert_default().fields.insert(
        "temperature".into(),
        json_to_struct(json!({"t": 1.0}).as_object().unwrap()).fields["t"].clone(),
    );
    let cases = [
        (no_model, "`model` is required"),
        (no_messages, "`messages` is empty"),
        (unset_role, "messages[0]: `role` is not set"),
        (empty_part, "messages[0]: parts[0]: the part is empty"),
        (repeated, "`extra.temperature` repeats a typed field"),
    ];
    for (chat, expected) in cases {
        let error = harness
            .client
            .complete(chat.clone())
            .await
            .expect_err("rejected");
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(
            error.message().contains(expected),
            "{} should say {expected}",
            error.message()
        );
        let error = harness
            .client
            .stream_complete(chat)
            .await
            .expect_err("rejected");
        assert_eq!(error.code(), Code::InvalidArgument);
    }
    assert!(
        harness.fake.requests().is_empty(),
        "the upstream saw {:?}",
        harness.fake.requests()
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_unroutable_model_is_not_found_before_any_upstream_call() {
    let fake = fake_upstream::FakeUpstream::start().await.unwrap();
    let toml = format!(
        "[server]\nuds = \"{{socket}}\"\n[providers.fake]\nbase_url = \"{}\"\n[[routes]]\nmodel = \"gpt-*\"\nprovider = \"fake\"\n",
        fake.base_url()
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    let mut chat = request("hi", json!({}));
    chat.model = "llama-3-70b".into();
    let error = client.complete(chat).await.expect_err("not routable");
    assert_eq!(error.code(), Code::NotFound);
    assert!(
        error.message().contains("llama-3-70b") && error.message().contains("gpt-*"),
        "{}",
        error.message()
    );
    assert!(fake.requests().is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn a_provider_without_its_key_fails_with_failed_precondition() {
    let fake = fake_upstream::FakeUpstream::start().await.unwrap();
    let toml = format!(
        "default_provider = \"fake\"\n[server]\nuds = \"{{socket}}\"\n[providers.fake]\nbase_url = \"{}\"\napi_key_env = \"MISSING_KEY\"\n",
        fake.base_url()
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    let error = client
        .complete(request("hi", json!({})))
        .await
        .expect_err("no key");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("MISSING_KEY"),
        "{}",
        error.message()
    );
    assert!(fake.requests().is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    // A port nobody listens on: bind, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!(
        "default_provider = \"down\"\n[server]\nuds = \"{{socket}}\"\n[providers.down]\nbase_url = \"http://127.0.0.1:{port}/v1\"\n"
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    let error = client
        .complete(once("hi", json!({})))
        .await
        .expect_err("unreachable");
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(
        error.get_details_error_info().unwrap().reason,
        "UPSTREAM_UNREACHABLE"
    );
    running.shutdown().await;
}

//! Fallbacks and circuit breaking across two upstreams, each a fake whose
//! default behaviour is set at start.

mod common;

use common::{collect, sidecar_from, text_of, user};
use fake_upstream::{FakeUpstream, Scenario};
use llm_sidecar::proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

async fn fake(scenario: Scenario) -> FakeUpstream {
    FakeUpstream::start_with("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
}

fn failing(status: u16) -> Scenario {
    Scenario {
        status: Some(status),
        ..Scenario::default()
    }
}

fn chat(model: &str) -> pb::ChatRequest {
    pb::ChatRequest {
        model: model.to_owned(),
        messages: vec![user("hello backup")],
        ..pb::ChatRequest::default()
    }
}

fn config(
    primary: &FakeUpstream,
    backup: &FakeUpstream,
    primary_extra: &str,
    route: &str,
) -> String {
    format!(
        "[server]\nuds = \"{{socket}}\"\n[retry]\nbase_delay_ms = 1\nmax_delay_ms = 2\n\
         [providers.primary]\nbase_url = \"{}\"\n{primary_extra}\n\
         [providers.backup]\nbase_url = \"{}\"\n\
         [[routes]]\nmodel = \"backup-model\"\nprovider = \"backup\"\n\
         [[routes]]\nmodel = \"main\"\nprovider = \"primary\"\nmax_attempts = 1\n{route}\n",
        primary.base_url(),
        backup.base_url()
    )
}

#[tokio::test]
async fn a_failing_primary_falls_back_to_the_next_provider() {
    let (primary, backup) = (fake(failing(503)).await, fake(Scenario::default()).await);
    let toml = config(
        &primary,
        &backup,
        "",
        "fallbacks = [{ provider = \"backup\" }]",
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    let response = client.complete(chat("main")).await.unwrap();
    assert_eq!(response.metadata().get("x-llm-provider").unwrap(), "backup");
    assert_eq!(response.metadata().get("x-llm-attempts").unwrap(), "2");
    let answer = response.into_inner();
    assert_eq!(answer.provider, "backup");
    assert_eq!(answer.choices[0].content.as_deref(), Some("hello backup"));
    assert_eq!(
        backup.requests()[0].body["model"],
        "main",
        "same model, other provider"
    );

    let response = client.stream_complete(chat("main")).await.unwrap();
    assert_eq!(response.metadata().get("x-llm-provider").unwrap(), "backup");
    let (chunks, status) = collect(&mut response.into_inner()).await;
    assert!(status.is_none());
    assert_eq!(text_of(&chunks), "hello backup");
    running.shutdown().await;
}

#[tokio::test]
async fn a_fallback_model_is_routed_like_a_request() {
    let (primary, backup) = (fake(failing(529)).await, fake(Scenario::default()).await);
    let toml = config(
        &primary,
        &backup,
        "",
        "fallbacks = [{ model = \"backup-model\" }]",
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    let answer = client.complete(chat("main")).await.unwrap().into_inner();
    assert_eq!(answer.provider, "backup");
    assert_eq!(answer.model, "backup-model");
    running.shutdown().await;
}

#[tokio::test]
async fn a_bad_request_does_not_fall_back() {
    let (primary, backup) = (fake(failing(400)).await, fake(Scenario::default()).await);
    let toml = config(
        &primary,
        &backup,
        "",
        "fallbacks = [{ provider = \"backup\" }]",
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    let error = client
        .complete(chat("main"))
        .await
        .expect_err("the request is wrong everywhere");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(backup.requests().is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn the_circuit_opens_and_then_the_primary_is_skipped() {
    let (primary, backup) = (fake(failing(502)).await, fake(Scenario::default()).await);
    let toml = config(
        &primary,
        &backup,
        "circuit_failures = 2\ncircuit_cooldown_ms = 60000",
        "",
    );
    let (running, mut client, dir) = sidecar_from(&toml).await;
    for _ in 0..2 {
        let error = client.complete(chat("main")).await.expect_err("failing");
        assert_eq!(error.code(), Code::Unavailable);
    }
    let error = client
        .complete(chat("main"))
        .await
        .expect_err("circuit open");
    assert_eq!(
        error.get_details_error_info().unwrap().reason,
        "CIRCUIT_OPEN"
    );
    assert!(error.get_details_retry_info().is_some());
    assert_eq!(primary.requests().len(), 2, "the open circuit sent nothing");

    // The health service shows the provider as not serving.
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let socket = dir.path().join("sidecar.sock");
    let mut health = HealthClient::new(llm_sidecar::client::connect_uds(&socket).await.unwrap());
    let check = HealthCheckRequest {
        service: "llmsidecar.provider.primary".into(),
    };
    let mut status = ServingStatus::Unknown;
    for _ in 0..40 {
        if let Ok(reply) = health.check(check.clone()).await {
            status = reply.into_inner().status();
        }
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing);
    running.shutdown().await;
}

#[tokio::test]
async fn an_open_circuit_falls_back_at_once() {
    let (primary, backup) = (fake(failing(503)).await, fake(Scenario::default()).await);
    let toml = config(
        &primary,
        &backup,
        "circuit_failures = 1\ncircuit_cooldown_ms = 60000",
        "fallbacks = [{ provider = \"backup\" }]",
    );
    let (running, mut client, _dir) = sidecar_from(&toml).await;
    for _ in 0..3 {
        let answer = client.complete(chat("main")).await.unwrap().into_inner();
        assert_eq!(answer.provider, "backup");
    }
    assert_eq!(
        primary.requests().len(),
        1,
        "only the call that opened the circuit"
    );
    assert_eq!(backup.requests().len(), 3);
    running.shutdown().await;
}

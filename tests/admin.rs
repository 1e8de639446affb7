//! The admin port: usage summaries and recent requests from the ledger, as
//! JSON and over gRPC, checked against calls whose numbers we know; and the
//! `AdminService` kept off the application's socket unless configured.

mod common;

use common::{Harness, request};
use llm_sidecar::proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use serde_json::{Value, json};

const PRICES: &str = r#"
[[prices]]
model = "fake-model"
input = 2.0
output = 10.0
"#;

/// Three answered calls from two callers and one refused call.
async fn known_calls(harness: &mut Harness) {
    for (caller, prompt, team) in [("a", 100, "x"), ("a", 200, "x"), ("b", 300, "y")] {
        let mut message = request("hi", json!({"reply": "one two", "prompt_tokens": prompt}));
        message.metadata.insert("team".into(), team.into());
        let mut call = tonic::Request::new(message);
        call.metadata_mut()
            .insert("x-llm-caller", caller.parse().unwrap());
        harness.client.complete(call).await.expect("answered");
    }
    let mut refused = tonic::Request::new(request("hi", json!({"status": 400})));
    refused
        .metadata_mut()
        .insert("x-llm-caller", "b".parse().unwrap());
    harness.client.complete(refused).await.expect_err("refused");
    harness.ledger_rows().await; // flushed
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("the admin port answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn usage_by_caller_matches_the_calls_made() {
    let mut harness = Harness::start_full("", PRICES).await;
    known_calls(&mut harness).await;
    let (status, body) = get_json(&format!(
        "{}/admin/usage?group_by=caller&since=1h",
        harness.admin_base()
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let groups = body["groups"].as_array().unwrap();
    let group = |key: &str| {
        groups
            .iter()
            .find(|group| group["key"] == key)
            .unwrap()
            .clone()
    };
    let a = group("a");
    assert_eq!(a["requests"], 2);
    assert_eq!(a["errors"], 0);
    assert_eq!(a["prompt_tokens"], 300);
    assert_eq!(a["completion_tokens"], 4);
    // 300 × $2 + 4 × $10, per million.
    assert!((a["cost_usd"].as_f64().unwrap() - 640.0 / 1e6).abs() < 1e-12);
    let b = group("b");
    assert_eq!(b["requests"], 2);
    assert_eq!(b["errors"], 1);
    assert_eq!(b["prompt_tokens"], 300);
    // Biggest spend first: a's $640 per million beats b's $620.
    assert!((b["cost_usd"].as_f64().unwrap() - 620.0 / 1e6).abs() < 1e-12);
    assert_eq!(groups[0]["key"], "a");

    let (_, by_tag) = get_json(&format!(
        "{}/admin/usage?group_by=tag:team",
        harness.admin_base()
    ))
    .await;
    let keys: Vec<&str> = by_tag["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys.len(),
        3,
        "x, y, and the refused call with no tag: {by_tag}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn recent_requests_filter_and_show_no_content() {
    let mut harness = Harness::start_full("", PRICES).await;
    known_calls(&mut harness).await;
    let base = harness.admin_base();
    let (_, all) = get_json(&format!("{base}/admin/requests")).await;
    assert_eq!(all["requests"].as_array().unwrap().len(), 4);
    assert!(
        !all.to_string().contains("\"hi\""),
        "no prompt content: {all}"
    );
    let (_, errors) = get_json(&format!("{base}/admin/logs?outcome=error")).await;
    let errors = errors["requests"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["caller_name"], "b");
    let (_, two) = get_json(&format!("{base}/admin/requests?caller=a&limit=1")).await;
    assert_eq!(two["requests"].as_array().unwrap().len(), 1);
    let (status, bad) = get_json(&format!("{base}/admin/requests?since=yesterday")).await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("15m"), "{bad}");
    let (status, bad) = get_json(&format!("{base}/admin/usage?group_by=colour")).await;
    assert_eq!(status, 400);
    assert!(
        bad["error"].as_str().unwrap().contains("tag:<key>"),
        "{bad}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn provider_health_lists_every_provider() {
    let harness = Harness::start().await;
    let (status, body) = get_json(&format!("{}/admin/providers", harness.admin_base())).await;
    assert_eq!(status, 200);
    let fake = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|provider| provider["name"] == "fake")
        .unwrap()
        .clone();
    assert_eq!(fake["circuit"], "closed");
    assert_eq!(fake["in_flight"], 0);
    harness.stop().await;
}

#[tokio::test]
async fn the_admin_service_speaks_grpc_on_the_admin_port_only() {
    let mut harness = Harness::start_full("", PRICES).await;
    known_calls(&mut harness).await;
    let mut admin = AdminServiceClient::connect(harness.admin_base())
        .await
        .expect("gRPC on the admin port");
    let groups = admin
        .get_usage_summary(pb::GetUsageSummaryRequest {
            group_by: "provider".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].key, "fake");
    assert_eq!(groups[0].requests, 4);
    assert_eq!(groups[0].prompt_tokens, 600);
    let recent = admin
        .list_recent_requests(pb::ListRecentRequestsRequest {
            outcome: "ok".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(recent.len(), 3);
    assert!(recent.iter().all(|record| record.cost_usd.is_some()));
    let health = admin
        .get_provider_health(pb::GetProviderHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        health
            .providers
            .iter()
            .any(|provider| provider.name == "fake")
    );

    // The application's socket does not serve it.
    let channel = llm_sidecar::client::connect_uds(&harness.dir.path().join("sidecar.sock"))
        .await
        .unwrap();
    let status = AdminServiceClient::new(channel)
        .get_provider_health(pb::GetProviderHealthRequest {})
        .await
        .expect_err("not on the app socket");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    harness.stop().await;
}

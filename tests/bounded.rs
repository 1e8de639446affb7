//! What a caller sends cannot grow the process: an over-long model name,
//! too many or too large tags and an over-long caller name are refused on
//! both edges with the field and the limit named; a refused call leaves no
//! label of its own in `/metrics` and a bounded ledger row; and
//! `/admin/requests` answers at most its most rows, whatever is asked.

mod common;

use common::{Harness, request};
use llm_sidecar::call_record::{CallRecord, Caller, Edge, Outcome};
use llm_sidecar::ledger::RECENT_LIMIT_MAX;
use llm_sidecar::pipeline::validate::{
    MAX_CALLER_BYTES, MAX_MODEL_BYTES, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES, MAX_TAGS,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A model name of 1 MiB, a marker easy to search for.
fn huge_model() -> String {
    "q".repeat(1 << 20)
}

fn facade_body(model: &str, metadata: Value) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": metadata,
    })
}

/// `count` tags with keys of `key_bytes` and values of `value_bytes`.
fn tags(count: usize, key_bytes: usize, value_bytes: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|index| (format!("{index:0>key_bytes$}"), "v".repeat(value_bytes)))
        .collect()
}

async fn refused_by_facade(harness: &Harness, body: &Value) -> Value {
    let response = harness.post_facade(body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("an OpenAI error object");
    body["error"].clone()
}

async fn metrics_text(harness: &Harness) -> String {
    let response = reqwest::get(format!("{}/metrics", harness.admin_base()))
        .await
        .expect("the admin port answers");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_huge_model_name_is_refused_on_both_edges_and_labels_nothing() {
    let mut harness = Harness::start().await;
    // One routed call first, so the metrics have a family to look in.
    harness
        .client
        .complete(request("hi", json!({})))
        .await
        .expect("answered");

    let mut message = request("hi", json!({}));
    message.model = huge_model();
    let status = harness
        .client
        .complete(message.clone())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("`model` is 1048576 bytes long: a model name is at most 256 bytes"),
        "{}",
        status.message()
    );
    let mut stream = harness.client.stream_complete(message).await;
    assert_eq!(
        stream.as_mut().map(|_| ()).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let error = refused_by_facade(&harness, &facade_body(&huge_model(), json!({}))).await;
    assert_eq!(error["param"], "model", "{error}");
    assert_eq!(error["type"], "invalid_request_error", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("at most 256 bytes"),
        "{error}"
    );

    let text = metrics_text(&harness).await;
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    assert!(!text.contains("qqqq"), "a requested model became a label");
    assert!(text.contains("llm_sidecar_route=\"unrouted\""), "{text}");
    assert!(
        !text.contains("gen_ai_request_model") && !text.contains("gen_ai_response_model"),
        "{text}"
    );

    // The refusals are in the ledger, at a bounded cost.
    let rows = harness.ledger_rows().await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|row| row.outcome == "error:invalid_request")
        .collect();
    assert_eq!(refused.len(), 3, "{rows:?}");
    assert!(
        refused
            .iter()
            .all(|row| row.requested_model.len() == MAX_MODEL_BYTES)
    );
    harness.stop().await;
}

#[tokio::test]
async fn tags_over_a_limit_are_refused_on_both_edges_and_at_the_limit_accepted() {
    let mut harness = Harness::start().await;
    let over = [
        (
            tags(MAX_TAGS + 1, 8, 8),
            "has 65 tags: at most 64 are accepted",
        ),
        (
            tags(1, MAX_TAG_KEY_BYTES + 1, 8),
            "a tag key is at most 128 bytes",
        ),
        (
            tags(1, 8, MAX_TAG_VALUE_BYTES + 1),
            "a tag value is at most 1024 bytes",
        ),
    ];
    for (tags, expected) in &over {
        let mut message = request("hi", json!({}));
        message.metadata = tags.clone().into_iter().collect();
        let status = harness.client.complete(message).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("`metadata`"), "{status:?}");
        assert!(status.message().contains(expected), "{status:?}");

        let error = refused_by_facade(&harness, &facade_body("fake-model", json!(tags))).await;
        assert_eq!(error["param"], "metadata", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(expected),
            "{error}"
        );
    }

    let at_limit = tags(MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES);
    let mut message = request("hi", json!({}));
    message.metadata = at_limit.clone().into_iter().collect();
    harness
        .client
        .complete(message)
        .await
        .expect("tags at the limits are accepted");
    let response = harness
        .post_facade(&facade_body("fake-model", json!(at_limit)))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let rows = harness.ledger_rows().await;
    assert_eq!(
        rows.iter().filter(|row| row.tags == at_limit).count(),
        2,
        "both accepted calls keep their tags whole"
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_over_long_caller_name_is_refused_on_both_edges() {
    let mut harness = Harness::start().await;
    let name = "c".repeat(MAX_CALLER_BYTES + 1);
    let mut call = tonic::Request::new(request("hi", json!({})));
    call.metadata_mut()
        .insert("x-llm-caller", name.parse().unwrap());
    let status = harness.client.complete(call).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("`x-llm-caller` header is 257 bytes long"),
        "{status:?}"
    );

    let response = common::http_client()
        .post(format!("{}/chat/completions", harness.http_base()))
        .header("x-llm-caller", &name)
        .json(&facade_body("fake-model", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "x-llm-caller", "{body}");

    let mut call = tonic::Request::new(request("hi", json!({})));
    call.metadata_mut().insert(
        "x-llm-caller",
        "c".repeat(MAX_CALLER_BYTES).parse().unwrap(),
    );
    harness
        .client
        .complete(call)
        .await
        .expect("a name at the limit is accepted");
    let rows = harness.ledger_rows().await;
    assert!(rows.iter().all(|row| {
        row.caller_name
            .as_ref()
            .is_none_or(|name| name.len() <= MAX_CALLER_BYTES)
    }));
    harness.stop().await;
}

#[tokio::test]
async fn recent_requests_above_the_most_return_the_most() {
    let harness = Harness::start().await;
    let ledger = harness
        .running
        .as_ref()
        .unwrap()
        .observer
        .ledger()
        .expect("the harness keeps a ledger");
    let started = SystemTime::now() - Duration::from_secs(60);
    for index in 0..=RECENT_LIMIT_MAX {
        ledger.record(CallRecord {
            request_id: format!("r{index}"),
            started_at: started + Duration::from_millis(index as u64),
            edge: Edge::Grpc,
            stream: false,
            caller: Caller::default(),
            tags: BTreeMap::new(),
            requested_model: "fake-model".to_owned(),
            route: None,
            served_model: None,
            provider: Some("fake".to_owned()),
            outcome: Outcome::Ok,
            attempts: 1,
            queue_wait: Duration::ZERO,
            latency: Duration::from_millis(1),
            time_to_first_chunk: None,
            usage: None,
            usage_estimated: false,
            cost_usd: None,
            resumed: false,
        });
    }
    ledger.flush().await;
    let get = |query: &'static str| {
        let url = format!("{}/admin/requests{query}", harness.admin_base());
        async move {
            let response = reqwest::get(url).await.expect("the admin port answers");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            body["requests"].as_array().unwrap().len()
        }
    };
    assert_eq!(get("?limit=1000000").await, RECENT_LIMIT_MAX);
    assert_eq!(get("").await, 100, "the default");
    assert_eq!(get("?limit=7").await, 7);
    harness.stop().await;
}

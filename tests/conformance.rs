//! The conformance corpus (`tests/conformance/corpus`, recorded in the
//! shapes real providers send) through the whole sidecar, both edges:
//! - a facade caller receives what the upstream sent, JSON-equal, apart
//!   from the documented edits (`tests/conformance/README.md`);
//! - a gRPC caller loses nothing: the typed fields and the `extra`
//!   carriers together hold every member the upstream sent;
//! - the upstream receives what the caller sent, on both edges, but for
//!   the members the sidecar owns;
//! - usage is read in every provider's spelling, for the gRPC caller and
//!   for the ledger.

mod common;

use common::corpus::{self, Case};
use common::wire_json::{chunk_json, lost, normalized, request_proto, response_json, struct_json};
use common::{Harness, collect};
use llm_sidecar::inbound::grpc::json_to_struct;
use serde_json::{Map, Value, json};

/// What typed fields read under another spelling: OpenRouter's and
/// Ollama's `reasoning` is the API's `reasoning_content`.
const RENAMES: &[(&str, &str)] = &[(".reasoning", ".reasoning_content")];

fn is_stream(case: &Case) -> bool {
    case.events.is_some()
}

/// The body a facade caller sends: the case's request, scripted, with the
/// caller's `include_usage` choice.
fn facade_body(case: &Case, include_usage: bool) -> Value {
    let mut body = case.request.clone();
    body["fake"] = corpus::scenario(case);
    if is_stream(case) {
        body["stream"] = json!(true);
        let options = body
            .as_object_mut()
            .unwrap()
            .entry("stream_options")
            .or_insert_with(|| json!({}));
        options["include_usage"] = json!(include_usage);
    } else {
        body.as_object_mut().unwrap().shift_remove("stream");
    }
    body
}

/// What the upstream must receive for `sent`: the same, but for the
/// members the sidecar owns (`stream`, `stream_options.include_usage`).
fn upstream_body(sent: &Value, stream: bool) -> Value {
    let mut expected = sent.clone();
    let fields = expected.as_object_mut().unwrap();
    fields.shift_remove("stream");
    if stream {
        fields.insert("stream".into(), json!(true));
        let options = fields.entry("stream_options").or_insert_with(|| json!({}));
        options["include_usage"] = json!(true);
    }
    expected
}

fn last_upstream_body(harness: &Harness) -> Value {
    harness.last_upstream_body()
}

async fn post(harness: &Harness, body: &Value) -> (u16, String) {
    let response = harness.post_facade(body).await;
    let status = response.status().as_u16();
    (status, response.text().await.expect("a whole body"))
}

/// The case's expected usage count `key`, if it lists one.
fn expected_count(case: &Case, key: &str) -> Option<u32> {
    case.expect["usage"][key].as_u64().map(|n| n as u32)
}

#[tokio::test]
async fn a_facade_caller_receives_what_the_upstream_sent() {
    let harness = Harness::start_with("max_attempts = 1").await;
    for case in corpus::load_all() {
        let asks: &[bool] = if is_stream(&case) {
            &[false, true]
        } else {
            &[false]
        };
        for &include_usage in asks {
            let sent = facade_body(&case, include_usage);
            let (status, text) = post(&harness, &sent).await;
            let name = format!("{} (include_usage: {include_usage})", case.name);
            assert_eq!(status, 200, "{name}: {text}");
            match &case.events {
                None => {
                    let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
                    assert_eq!(&answer, case.response.as_ref().unwrap(), "{name}");
                }
                Some(_) => {
                    let expected = corpus::expected_stream_events(&case, include_usage);
                    assert_eq!(common::sse_data(&text), expected, "{name}");
                }
            }
            assert_eq!(
                last_upstream_body(&harness),
                upstream_body(&sent, is_stream(&case)),
                "{name}: the upstream must receive what the caller sent"
            );
            let row = harness.ledger_rows().await.remove(0);
            assert_eq!(row.outcome, "ok", "{name}");
            for (column, key) in [
                (row.prompt_tokens, "prompt_tokens"),
                (row.completion_tokens, "completion_tokens"),
                (row.cached_prompt_tokens, "cache_read_tokens"),
                (row.reasoning_tokens, "reasoning_tokens"),
            ] {
                if let Some(count) = expected_count(&case, key) {
                    assert_eq!(column, Some(count), "{name}: ledger {key}");
                }
            }
        }
    }
    harness.stop().await;
}

/// The case's request as a gRPC caller would send it, scripted.
fn grpc_request(case: &Case) -> llm_sidecar::proto::v1::ChatRequest {
    let mut request = request_proto(&case.request);
    let mut extra: Map<String, Value> = request.extra.as_ref().map(struct_json).unwrap_or_default();
    extra.insert("fake".into(), corpus::scenario(case));
    request.extra = Some(json_to_struct(&extra));
    request
}

/// The upstream receives over gRPC what the case's caller sends over HTTP
/// (numbers compared as numbers: a Struct holds doubles).
fn assert_same_upstream_body(harness: &Harness, case: &Case) {
    let mut sent = case.request.clone();
    sent["fake"] = corpus::scenario(case);
    assert_eq!(
        normalized(&last_upstream_body(harness)),
        normalized(&upstream_body(&sent, is_stream(case))),
        "{}: the upstream must receive what the gRPC caller set",
        case.name
    );
}

fn assert_typed_usage(case: &Case, usage: Option<&llm_sidecar::proto::v1::Usage>) {
    let Some(usage) = usage else {
        assert!(
            case.expect["usage"].as_object().is_none_or(Map::is_empty),
            "{}: no usage reached the gRPC caller",
            case.name
        );
        return;
    };
    for (typed, key) in [
        (usage.prompt_tokens, "prompt_tokens"),
        (usage.completion_tokens, "completion_tokens"),
        (usage.cached_prompt_tokens, "cache_read_tokens"),
        (usage.cache_write_tokens, "cache_write_tokens"),
        (usage.reasoning_tokens, "reasoning_tokens"),
    ] {
        if let Some(count) = expected_count(case, key) {
            assert_eq!(typed, count, "{}: typed usage {key}", case.name);
        }
    }
}

#[tokio::test]
async fn a_grpc_caller_loses_nothing_either_way() {
    let mut harness = Harness::start_with("max_attempts = 1").await;
    for case in corpus::load_all() {
        let request = grpc_request(&case);
        match &case.events {
            None => {
                let answer = harness
                    .client
                    .complete(request)
                    .await
                    .unwrap_or_else(|status| panic!("{}: {status:?}", case.name))
                    .into_inner();
                let received = response_json(&answer);
                let missing = lost(case.response.as_ref().unwrap(), &received, RENAMES);
                assert!(missing.is_empty(), "{}: lost {missing:#?}", case.name);
                assert_typed_usage(&case, answer.usage.as_ref());
            }
            Some(_) => {
                let mut stream = harness
                    .client
                    .stream_complete(request)
                    .await
                    .unwrap_or_else(|status| panic!("{}: {status:?}", case.name))
                    .into_inner();
                let (chunks, status) = collect(&mut stream).await;
                assert!(status.is_none(), "{}: {status:?}", case.name);
                let expected: Vec<Value> = corpus::expected_stream_events(&case, true)
                    .into_iter()
                    .filter(Value::is_object)
                    .collect();
                assert_eq!(chunks.len(), expected.len(), "{}", case.name);
                for (at, (chunk, event)) in chunks.iter().zip(&expected).enumerate() {
                    let missing = lost(event, &chunk_json(chunk), RENAMES);
                    assert!(
                        missing.is_empty(),
                        "{} chunk {at}: lost {missing:#?}",
                        case.name
                    );
                }
                let usage = chunks.iter().rev().find_map(|chunk| chunk.usage.as_ref());
                assert_typed_usage(&case, usage);
            }
        }
        assert_same_upstream_body(&harness, &case);
    }
    harness.stop().await;
}

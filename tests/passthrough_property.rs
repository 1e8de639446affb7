//! Property: members the sidecar does not own survive it, at any depth,
//! in requests and in answers and stream events, on both edges. Arbitrary
//! extra members (names drawn partly from the typed fields of other levels,
//! so "model" inside a message or "usage" inside a delta must pass too)
//! are put into messages, content parts, tools, tool calls, choices,
//! deltas, usage and the top level; the test compares the body the
//! upstream received with the one sent, and what the caller received with
//! what the upstream sent.

mod common;

use common::Harness;
use common::wire_json::{chunk_json, lost, normalized, request_proto, response_json, struct_json};
use llm_sidecar::inbound::grpc::json_to_struct;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// One runtime and one sidecar for every generated case.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
});
static HARNESS: LazyLock<tokio::sync::Mutex<Harness>> = LazyLock::new(|| {
    tokio::sync::Mutex::new(RUNTIME.block_on(Harness::start_with("max_attempts = 1")))
});

/// Names typed somewhere in the OpenAI shapes, plus free ones.
const NAMES: &[&str] = &[
    "model",
    "usage",
    "index",
    "id",
    "type",
    "content",
    "role",
    "choices",
    "delta",
    "message",
    "stream",
    "metadata",
    "finish_reason",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "prompt_tokens",
    "logprobs",
    "x_vendor",
    "cache_control",
    "extra_content",
    "ünïcode key",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e12..1.0e12f64).prop_map(Value::from),
        "[ -~é\\n\"\\\\]{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(NAMES).prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ]
}

/// Extra members for one level, none named like `reserved` (the members
/// that level means something by).
fn extras(reserved: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::vec((key(), json_value()), 0..3).prop_map(move |members| {
        members
            .into_iter()
            .filter(|(name, _)| !reserved.contains(&name.as_str()))
            .collect()
    })
}

fn with(mut base: Value, extra: Map<String, Value>) -> Value {
    base.as_object_mut().expect("an object").extend(extra);
    base
}

/// Levels of a request and what each means by its own members.
const TOP: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "metadata",
    "messages",
    "tools",
    "fake",
    "n",
];
const MESSAGE: &[&str] = &["role", "content", "tool_calls", "tool_call_id", "name"];
const PART: &[&str] = &["type", "text"];
const TOOL: &[&str] = &["type", "function"];
const CALL: &[&str] = &["id", "type", "function", "index"];

fn request_with_extras() -> impl Strategy<Value = Value> {
    (
        extras(TOP),
        extras(MESSAGE),
        extras(PART),
        extras(TOOL),
        extras(CALL),
    )
        .prop_map(|(top, message, part, tool, call)| {
            let call = with(
                json!({"id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}),
                call,
            );
            with(
                json!({
                    "model": "fake-model",
                    "messages": [
                        with(json!({"role": "user", "content": [
                            with(json!({"type": "text", "text": "hi"}), part),
                        ]}), message),
                        {"role": "assistant", "content": null, "tool_calls": [call]},
                        {"role": "tool", "tool_call_id": "call_1", "content": ""},
                    ],
                    "tools": [with(json!({"type": "function", "function": {"name": "f"}}), tool)],
                }),
                top,
            )
        })
}

const ANSWER: &[&str] = &["choices", "usage", "error", "x_groq", "object"];
const CHOICE: &[&str] = &["index", "finish_reason", "message", "delta", "logprobs"];
const GENERATED: &[&str] = &[
    "role",
    "content",
    "refusal",
    "reasoning",
    "reasoning_content",
    "tool_calls",
];
const USAGE: &[&str] = &[
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "prompt_cache_hit_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "cost",
];

/// One answer, and the stream of the same answer, each with extras.
fn answers_with_extras() -> impl Strategy<Value = (Value, Vec<Value>)> {
    (
        (extras(ANSWER), extras(CHOICE), extras(GENERATED), extras(CALL), extras(USAGE)),
        (extras(ANSWER), extras(CHOICE), extras(GENERATED), extras(CALL), extras(USAGE)),
    )
        .prop_map(|(unary, streamed)| {
            let (top, choice, message, call, usage) = unary;
            let usage = with(json!({"prompt_tokens": 3, "completion_tokens": 2}), usage);
            let call = with(
                json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}),
                call,
            );
            let answer = with(
                json!({
                    "id": "r1", "object": "chat.completion", "model": "m", "created": 1,
                    "choices": [with(json!({
                        "index": 0,
                        "message": with(json!({"role": "assistant", "content": "hi",
                            "tool_calls": [call]}), message),
                        "finish_reason": "stop",
                    }), choice)],
                    "usage": usage,
                }),
                top,
            );
            let (top, choice, delta, call, usage) = streamed;
            let piece = with(
                json!({"index": 0, "id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}),
                call,
            );
            let events = vec![
                with(
                    json!({"id": "r1", "object": "chat.completion.chunk", "model": "m",
                        "choices": [with(json!({"index": 0,
                            "delta": with(json!({"role": "assistant", "content": "hi",
                                "tool_calls": [piece]}), delta),
                            "finish_reason": null}), choice)]}),
                    top.clone(),
                ),
                with(
                    json!({"id": "r1", "model": "m", "choices": [
                        {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                    top.clone(),
                ),
                with(
                    json!({"id": "r1", "model": "m", "choices": [],
                        "usage": with(json!({"prompt_tokens": 3, "completion_tokens": 2}), usage)}),
                    top,
                ),
                json!("[DONE]"),
            ];
            (answer, events)
        })
}

async fn post(harness: &Harness, body: &Value) -> String {
    let response = harness.post_facade(body).await;
    let status = response.status();
    let text = response.text().await.expect("a body");
    assert_eq!(status, 200, "{text}");
    text
}

fn last_upstream_body(harness: &Harness) -> Value {
    harness.last_upstream_body()
}

fn scripted(mut request: Value, scenario: Value) -> Value {
    request["fake"] = scenario;
    request
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn request_members_reach_the_upstream(request in request_with_extras()) {
        // Started outside `block_on`: starting it blocks on the runtime.
        let shared = &*HARNESS;
        RUNTIME.block_on(async {
            let mut harness = shared.lock().await;
            let answer = json!({"raw_body": {"choices": [{"index": 0,
                "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}});
            let sent = scripted(request, answer);
            post(&harness, &sent).await;
            assert_eq!(last_upstream_body(&harness), sent, "facade");

            let grpc = request_proto(&sent);
            harness.client.complete(grpc).await.expect("a gRPC answer");
            assert_eq!(normalized(&last_upstream_body(&harness)), normalized(&sent), "gRPC");
        });
    }

    #[test]
    fn answer_and_event_members_reach_the_caller((answer, events) in answers_with_extras()) {
        // Started outside `block_on`: starting it blocks on the runtime.
        let shared = &*HARNESS;
        RUNTIME.block_on(async {
            let mut harness = shared.lock().await;
            let ask = json!({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]});

            let unary = scripted(ask.clone(), json!({"raw_body": answer}));
            let received: Value = serde_json::from_str(&post(&harness, &unary).await).unwrap();
            assert_eq!(&received, &answer, "facade answer");
            let over_grpc = harness
                .client
                .complete(request_proto(&unary))
                .await
                .expect("a gRPC answer")
                .into_inner();
            let missing = lost(&answer, &response_json(&over_grpc), &[]);
            assert!(missing.is_empty(), "gRPC answer lost {missing:#?}");

            let mut streamed = scripted(ask, json!({"raw_events": events}));
            streamed["stream"] = json!(true);
            streamed["stream_options"] = json!({"include_usage": true});
            let text = post(&harness, &streamed).await;
            let received = common::sse_data(&text);
            assert_eq!(received, events, "facade stream");

            let mut request = request_proto(&streamed);
            let mut extra = request.extra.as_ref().map(struct_json).unwrap_or_default();
            extra.shift_remove("stream_options");
            request.extra = Some(json_to_struct(&extra));
            let mut stream = harness
                .client
                .stream_complete(request)
                .await
                .expect("a gRPC stream")
                .into_inner();
            let (chunks, status) = common::collect(&mut stream).await;
            assert!(status.is_none(), "{status:?}");
            for (chunk, event) in chunks.iter().zip(events.iter().filter(|e| e.is_object())) {
                let missing = lost(event, &chunk_json(chunk), &[]);
                assert!(missing.is_empty(), "gRPC chunk lost {missing:#?}");
            }
        });
    }
}

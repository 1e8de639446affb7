//! The small shapes that gateways commonly lose or refuse, each on both
//! edges: nulls where lists are expected, index-less parallel tool calls,
//! an n=2 stream cut after one choice finished, every provider's cache
//! spelling priced, a thought signature and a reasoning trace sent back on
//! the next turn, cache_control, file and audio parts, an empty tool
//! result, `max_tokens` for models that take only `max_completion_tokens`,
//! and the upstream's rate-limit headers and words on errors.

mod common;

use common::wire_json::{request_proto, struct_json};
use common::{Harness, collect};
use llm_sidecar::inbound::grpc::json_to_struct;
use llm_sidecar::proto::v1 as pb;
use serde_json::{Map, Value, json};
use tonic::Code;

/// $1 per million prompt tokens, $2 per million completion tokens, $0.10
/// per million read from the cache, $1.25 per million written to it.
const PRICES: &str = r#"
[[prices]]
model = "fake-*"
input = 1.0
output = 2.0
cached_input = 0.1
cache_write = 1.25
"#;

fn ask(extra: Value) -> Value {
    let mut body = json!({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap());
    body
}

async fn post(harness: &Harness, body: &Value) -> reqwest::Response {
    harness.post_facade(body).await
}

async fn post_json(harness: &Harness, body: &Value) -> Value {
    let response = post(harness, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON answer")
}

/// The data of each event of a streamed facade answer.
async fn post_events(harness: &Harness, body: &Value) -> Vec<Value> {
    common::sse_data(&post(harness, body).await.text().await.unwrap())
}

fn upstream_body(harness: &Harness) -> Value {
    harness.last_upstream_body()
}

fn one_answer(message: Value, usage: Value) -> Value {
    json!({"id": "r1", "object": "chat.completion", "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage})
}

#[tokio::test]
async fn tool_calls_null_is_an_answer_on_both_edges_and_billed() {
    let mut harness = Harness::start_full("", PRICES).await;
    let answer = one_answer(
        json!({"role": "assistant", "content": "hi", "tool_calls": null, "function_call": null}),
        json!({"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010}),
    );
    let unary = ask(json!({"fake": {"raw_body": answer}}));
    assert_eq!(post_json(&harness, &unary).await, answer);
    let over_grpc = harness
        .client
        .complete(request_proto(&unary))
        .await
        .unwrap();
    assert_eq!(
        over_grpc.get_ref().choices[0].content.as_deref(),
        Some("hi")
    );

    let events = json!([
        {"id": "r1", "model": "fake-model", "choices": [{"index": 0,
            "delta": {"role": "assistant", "content": "hi", "tool_calls": null}, "finish_reason": null}]},
        {"id": "r1", "model": "fake-model", "choices": [{"index": 0,
            "delta": {"tool_calls": null}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010}},
        "[DONE]",
    ]);
    let mut streamed = ask(json!({"stream": true, "fake": {"raw_events": events}}));
    let received = post_events(&harness, &streamed).await;
    assert_eq!(received.last(), Some(&json!("[DONE]")));
    assert_eq!(
        received[0]["choices"][0]["delta"]["tool_calls"],
        Value::Null
    );
    streamed.as_object_mut().unwrap().shift_remove("stream");
    let (chunks, status) = stream_over_grpc(&mut harness, &streamed).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(chunks.len(), 2);

    let rows = harness.ledger_rows().await;
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_eq!(row.outcome, "ok");
        assert_eq!(row.prompt_tokens, Some(1000));
        assert!(!row.usage_estimated);
        let cost = row.cost_usd.expect("priced");
        assert!(
            (cost - (1000.0 * 1.0 + 10.0 * 2.0) / 1e6).abs() < 1e-12,
            "{cost}"
        );
    }
    harness.stop().await;
}

/// A streamed call over gRPC: its chunks, and the status it ended with
/// (`None`: OK).
async fn stream_over_grpc(
    harness: &mut Harness,
    body: &Value,
) -> (Vec<pb::ChatChunk>, Option<tonic::Status>) {
    let mut stream = harness
        .client
        .stream_complete(request_proto(body))
        .await
        .expect("the stream starts")
        .into_inner();
    collect(&mut stream).await
}

async fn grpc_tool_indexes(harness: &mut Harness, body: &Value) -> Vec<(u32, String)> {
    let (chunks, status) = stream_over_grpc(harness, body).await;
    assert!(status.is_none(), "{status:?}");
    chunks
        .iter()
        .flat_map(|chunk| {
            chunk
                .choices
                .iter()
                .flat_map(|choice| choice.tool_calls.iter())
        })
        .map(|call| (call.index, call.name.clone()))
        .collect()
}

#[tokio::test]
async fn index_less_parallel_tool_calls_are_never_merged() {
    let mut harness = Harness::start().await;
    let piece = |id: &str, name: &str, city: &str| {
        json!({"id": id, "type": "function",
            "function": {"name": name, "arguments": format!("{{\"city\":\"{city}\"}}")}})
    };
    let chunk = |calls: Vec<Value>| json!({"model": "fake-model", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]});
    let finish = json!({"model": "fake-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    let separate = vec![
        chunk(vec![piece("a", "get_weather", "Paris")]),
        chunk(vec![piece("b", "get_time", "Oslo")]),
        finish.clone(),
    ];
    let together = vec![
        chunk(vec![
            piece("a", "get_weather", "Paris"),
            piece("b", "get_time", "Oslo"),
        ]),
        finish,
    ];
    for events in [separate, together] {
        let body = ask(json!({"fake": {"raw_events": events}}));
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let received = post_events(&harness, &streamed).await;
        let calls: Vec<(Value, Value)> = received
            .iter()
            .filter_map(|event| event["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .map(|call| (call["index"].clone(), call["function"]["name"].clone()))
            .collect();
        assert_eq!(
            calls,
            [
                (json!(0), json!("get_weather")),
                (json!(1), json!("get_time"))
            ]
        );
        // Completed by its finish reason: the caller still gets [DONE].
        assert_eq!(received.last(), Some(&json!("[DONE]")));
        let calls = grpc_tool_indexes(&mut harness, &body).await;
        assert_eq!(
            calls,
            [(0, "get_weather".to_owned()), (1, "get_time".to_owned())]
        );
    }
    harness.stop().await;
}

#[tokio::test]
async fn an_n2_stream_cut_after_one_choice_finished_is_not_complete() {
    let mut harness = Harness::start_with("max_attempts = 1").await;
    let events = json!([
        {"model": "fake-model", "choices": [
            {"index": 0, "delta": {"content": "a"}, "finish_reason": null},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": null}]},
        {"model": "fake-model", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]);
    let body = ask(json!({"n": 2, "fake": {"raw_events": events}}));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let received = post_events(&harness, &streamed).await;
    assert!(!received.contains(&json!("[DONE]")), "{received:?}");
    let error = &received.last().unwrap()["error"];
    assert_eq!(error["code"], "upstream_stream_incomplete", "{error}");

    let (chunks, status) = stream_over_grpc(&mut harness, &body).await;
    assert_eq!(chunks.len(), 2);
    let status = status.expect("an error status, not OK");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.metadata().get("x-llm-partial").unwrap(), "true");
    for row in harness.ledger_rows().await {
        assert_ne!(row.outcome, "ok");
    }
    harness.stop().await;
}

#[tokio::test]
async fn every_cache_spelling_is_priced_once_on_both_edges() {
    let mut harness = Harness::start_full("", PRICES).await;
    let cases = [
        // DeepSeek: hits are inside prompt_tokens.
        (
            json!({"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
                "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100}),
            100.0 * 1.0 + 900.0 * 0.1 + 10.0 * 2.0,
        ),
        // OpenAI: cached_tokens inside prompt_tokens.
        (
            json!({"prompt_tokens": 1000, "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 900}}),
            100.0 * 1.0 + 900.0 * 0.1 + 10.0 * 2.0,
        ),
        // Anthropic-style: input_tokens leaves out cache reads and writes.
        (
            json!({"input_tokens": 100, "output_tokens": 10,
                "cache_read_input_tokens": 800, "cache_creation_input_tokens": 100}),
            100.0 * 1.0 + 800.0 * 0.1 + 100.0 * 1.25 + 10.0 * 2.0,
        ),
    ];
    for (usage, micro_usd) in cases {
        let answer = one_answer(json!({"role": "assistant", "content": "x"}), usage.clone());
        let body = ask(json!({"fake": {"raw_body": answer}}));
        let received = post_json(&harness, &body).await;
        assert_eq!(
            received["usage"], usage,
            "the caller sees the usage as sent"
        );
        let over_grpc = harness.client.complete(request_proto(&body)).await.unwrap();
        let typed = over_grpc.get_ref().usage.clone().unwrap();
        assert_eq!(
            Value::Object(struct_json(typed.raw.as_ref().unwrap())),
            normalize(&usage)
        );
        for row in harness.ledger_rows().await.into_iter().take(2) {
            let cost = row.cost_usd.expect("priced");
            assert!((cost - micro_usd / 1e6).abs() < 1e-12, "{usage}: {cost}");
        }
    }
    harness.stop().await;
}

/// Numbers as doubles, as a Struct holds them.
fn normalize(value: &Value) -> Value {
    common::wire_json::normalized(value)
}

#[tokio::test]
async fn a_thought_signature_and_a_reasoning_trace_go_back_on_the_next_turn() {
    let mut harness = Harness::start().await;
    let signature = json!({"google": {"thought_signature": "CrICAdHtim8"}});
    let call = json!({"id": "call_1", "type": "function", "extra_content": signature,
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
    let answer = json!({"model": "fake-model", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": null, "reasoning_content": "Paris first.",
            "tool_calls": [call]}}]});
    let turn_one = ask(json!({"fake": {"raw_body": answer}}));

    // Facade: the caller sends the assistant message back as it got it.
    let received = post_json(&harness, &turn_one).await;
    let assistant = received["choices"][0]["message"].clone();
    let mut turn_two = ask(json!({"fake": {"reply": "sunny"}}));
    let messages = turn_two["messages"].as_array_mut().unwrap();
    messages.push(assistant.clone());
    messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}));
    post_json(&harness, &turn_two).await;
    assert_eq!(upstream_body(&harness)["messages"][1], assistant);

    // gRPC: the typed tool call and its carrier go back as received.
    let answer = harness
        .client
        .complete(request_proto(&turn_one))
        .await
        .unwrap()
        .into_inner();
    let choice = &answer.choices[0];
    assert_eq!(choice.reasoning_content, "Paris first.");
    let extra = struct_json(choice.tool_calls[0].extra.as_ref().expect("a carrier"));
    assert_eq!(Value::Object(extra), json!({"extra_content": signature}));
    let mut request = request_proto(&ask(json!({"fake": {"reply": "sunny"}})));
    request.messages.push(pb::Message {
        role: pb::Role::Assistant as i32,
        tool_calls: choice.tool_calls.clone(),
        reasoning_content: Some(choice.reasoning_content.clone()),
        ..pb::Message::default()
    });
    harness.client.complete(request).await.unwrap();
    let sent_back = &upstream_body(&harness)["messages"][1];
    assert_eq!(sent_back["tool_calls"][0]["extra_content"], signature);
    assert_eq!(sent_back["reasoning_content"], "Paris first.");
    harness.stop().await;
}

#[tokio::test]
async fn cache_control_files_audio_and_empty_tool_results_reach_the_upstream() {
    let mut harness = Harness::start().await;
    let ephemeral = json!({"type": "ephemeral"});
    let body = json!({
        "model": "fake-model",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "summarize", "cache_control": ephemeral},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": ""},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}},
            "cache_control": ephemeral}],
    });
    post_json(&harness, &body).await;
    assert_eq!(upstream_body(&harness), body, "facade");

    // gRPC, typed: parts, a carrier on the part and on the tool.
    let request = pb::ChatRequest {
        model: "fake-model".into(),
        messages: vec![
            pb::Message {
                role: pb::Role::User as i32,
                parts: vec![
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::Text("summarize".into())),
                        extra: Some(json_to_struct(
                            json!({"cache_control": ephemeral}).as_object().unwrap(),
                        )),
                    },
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::File(pb::FilePart {
                            filename: "a.pdf".into(),
                            file_data: "data:application/pdf;base64,JVBERi0=".into(),
                            ..pb::FilePart::default()
                        })),
                        extra: None,
                    },
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::InputAudio(pb::InputAudio {
                            data: "UklGRg==".into(),
                            format: "wav".into(),
                        })),
                        extra: None,
                    },
                ],
                ..pb::Message::default()
            },
            pb::Message {
                role: pb::Role::Assistant as i32,
                tool_calls: vec![pb::ToolCall {
                    id: "c".into(),
                    function: Some(pb::FunctionCall {
                        name: "f".into(),
                        arguments: "{}".into(),
                    }),
                    ..pb::ToolCall::default()
                }],
                ..pb::Message::default()
            },
            pb::Message {
                role: pb::Role::Tool as i32,
                content: Some(String::new()),
                tool_call_id: "c".into(),
                ..pb::Message::default()
            },
        ],
        tools: vec![pb::Tool {
            tool: Some(pb::tool::Tool::Function(pb::FunctionTool {
                name: "f".into(),
                parameters: Some(json_to_struct(
                    json!({"type": "object"}).as_object().unwrap(),
                )),
                ..pb::FunctionTool::default()
            })),
            extra: Some(json_to_struct(
                json!({"cache_control": ephemeral}).as_object().unwrap(),
            )),
        }],
        ..pb::ChatRequest::default()
    };
    harness.client.complete(request).await.unwrap();
    assert_eq!(upstream_body(&harness), body, "gRPC");
    harness.stop().await;
}

#[tokio::test]
async fn a_grpc_max_tokens_takes_the_field_the_provider_accepts() {
    for (provider, field) in [
        ("", "max_tokens"),
        (
            "max_tokens_field = \"max_completion_tokens\"",
            "max_completion_tokens",
        ),
    ] {
        let mut harness = Harness::start_with(provider).await;
        let mut request = request_proto(&ask(json!({})));
        request.max_tokens = Some(64);
        harness.client.complete(request).await.unwrap();
        let body = upstream_body(&harness);
        assert_eq!(body[field], 64, "{body}");
        let other = if field == "max_tokens" {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        assert!(body.get(other).is_none(), "{body}");
        harness.stop().await;
    }
}

#[tokio::test]
async fn the_upstreams_headers_reach_both_edges() {
    let mut harness = Harness::start_with("max_attempts = 1").await;
    let headers = json!({"x-ratelimit-remaining-requests": "41", "x-request-id": "req_up_1"});
    let ok = ask(json!({"fake": {"headers": headers}}));
    let response = post(&harness, &ok).await;
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "41");
    assert_eq!(response.headers()["x-upstream-request-id"], "req_up_1");
    assert_ne!(response.headers()["x-request-id"], "req_up_1");
    let answer = harness.client.complete(request_proto(&ok)).await.unwrap();
    assert_eq!(
        answer
            .metadata()
            .get("x-ratelimit-remaining-requests")
            .unwrap(),
        "41"
    );
    assert_eq!(
        answer.metadata().get("x-upstream-request-id").unwrap(),
        "req_up_1"
    );
    let mut streamed = ok.clone();
    streamed["stream"] = json!(true);
    let response = post(&harness, &streamed).await;
    assert_eq!(response.headers()["x-upstream-request-id"], "req_up_1");

    let limited = ask(json!({"fake": {"status": 429, "headers": headers}}));
    let response = post(&harness, &limited).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "41");
    assert_eq!(
        response.headers()["x-llm-error-reason"],
        "UPSTREAM_RATE_LIMITED"
    );
    let status = harness
        .client
        .complete(request_proto(&limited))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("x-upstream-request-id").unwrap(),
        "req_up_1"
    );
    harness.stop().await;
}

#[tokio::test]
async fn errors_keep_the_upstreams_words_and_status() {
    let harness = Harness::start_with("max_attempts = 1").await;
    let overflow = json!({"error": {"message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}});
    let cases = [
        (400, overflow.clone(), 400, "UPSTREAM_CONTEXT_LENGTH"),
        (
            429,
            json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                "param": null, "code": "insufficient_quota"}}),
            429,
            "UPSTREAM_QUOTA_EXHAUSTED",
        ),
        (
            529,
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}}),
            529,
            "UPSTREAM_UNAVAILABLE",
        ),
    ];
    for (status, error_body, expected, reason) in cases {
        let body = ask(json!({"fake": {"status": status, "error_body": error_body}}));
        let response = post(&harness, &body).await;
        assert_eq!(response.status().as_u16(), expected);
        assert_eq!(response.headers()["x-llm-error-reason"], reason);
        let received: Value = response.json().await.unwrap();
        assert_eq!(received, error_body, "the upstream's own words");
    }
    // Our key failing is not the caller's to fix: 502, in our words.
    let body = ask(json!({"fake": {"status": 401}}));
    let response = post(&harness, &body).await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-llm-error-reason"],
        "UPSTREAM_AUTH_FAILED"
    );
    let received: Value = response.json().await.unwrap();
    assert_eq!(received["error"]["code"], "upstream_auth_failed");
    harness.stop().await;
}

/// The carriers a gRPC caller sets reach the upstream at every level.
#[tokio::test]
async fn grpc_carriers_reach_the_upstream() {
    let mut harness = Harness::start().await;
    let mut request = request_proto(&ask(json!({})));
    let carrier = |value: Value| Some(json_to_struct(value.as_object().unwrap()));
    request.extra = carrier(json!({"thinking": {"type": "enabled"}}));
    request.messages[0].extra = carrier(json!({"prefix": true}));
    request.logprobs = Some(true);
    request.top_logprobs = Some(2);
    request.max_completion_tokens = Some(9);
    harness.client.complete(request).await.unwrap();
    let body = upstream_body(&harness);
    let expected: Map<String, Value> = json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi", "prefix": true}],
        "max_completion_tokens": 9, "top_logprobs": 2, "logprobs": true,
        "thinking": {"type": "enabled"},
    })
    .as_object()
    .cloned()
    .unwrap();
    assert_eq!(body, Value::Object(expected));
    harness.stop().await;
}

#[tokio::test]
async fn an_upstream_error_object_passes_whole_and_scrubbed() {
    let harness = Harness::start_with("max_attempts = 1").await;
    let error_body = json!({"error": {"message": "Provider returned error", "code": 400,
        "metadata": {"provider_name": "Foo", "raw": "echo: Bearer sk-live-0123456789abcdef"}}});
    let body = ask(json!({"fake": {"status": 400, "error_body": error_body}}));
    let response = post(&harness, &body).await;
    assert_eq!(response.status(), 400);
    let received: Value = response.json().await.unwrap();
    let error = &received["error"];
    assert_eq!(error["code"], 400, "a numeric code stays a number");
    assert_eq!(error["metadata"]["provider_name"], "Foo");
    let raw = error["metadata"]["raw"].as_str().unwrap();
    assert!(!raw.contains("sk-live"), "{raw}");
    // The members an OpenAI error object always has are there too.
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], Value::Null);
    harness.stop().await;
}

#[tokio::test]
async fn the_upstreams_own_cost_is_used_when_no_price_is_configured() {
    let harness = Harness::start().await;
    let usage =
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.0042});
    let answer = one_answer(json!({"role": "assistant", "content": "x"}), usage);
    post_json(&harness, &ask(json!({"fake": {"raw_body": answer}}))).await;
    let row = harness.ledger_rows().await.remove(0);
    assert_eq!(row.cost_usd, Some(0.0042));
    harness.stop().await;
}

#[tokio::test]
async fn empty_finish_reasons_do_not_complete_a_cut_stream() {
    let mut harness = Harness::start_with("max_attempts = 1").await;
    // Ollama and SGLang send "" on every chunk before the last.
    let events = json!([
        {"model": "fake-model", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": ""}]},
        {"model": "fake-model", "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": ""}]},
    ]);
    let body = ask(json!({"fake": {"raw_events": events}}));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let received = post_events(&harness, &streamed).await;
    assert!(!received.contains(&json!("[DONE]")), "{received:?}");
    assert_eq!(
        received.last().unwrap()["error"]["code"],
        "upstream_stream_incomplete"
    );
    let (_, status) = stream_over_grpc(&mut harness, &body).await;
    assert_eq!(status.expect("not OK").code(), Code::Unavailable);
    harness.stop().await;
}

/// An upstream that answers every request with exactly `body` (bytes no
/// JSON value can hold, so the fake upstream cannot script them).
async fn raw_upstream(body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Headers, then as much body as they announce.
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|line| {
                                line.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|value| value.parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/v1")
}

#[tokio::test]
async fn an_answer_protobuf_cannot_carry_is_an_error_never_an_empty_answer() {
    // Nested deeper than any JSON decoder here reads (128 levels), and a
    // lone surrogate in a member the sidecar does not read.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let answers = [
        (
            format!(
                r#"{{"model":"m","choices":[{{"index":0,"message":{{"content":"hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1}},"deep":{deep}}}"#
            ),
            false,
        ),
        (
            r#"{"model":"m","x_meta":"bad \udc00","choices":[{"index":0,"message":{"content":"IMPORTANT"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#.to_owned(),
            true,
        ),
    ];
    for (answer, deliverable) in answers {
        let base = raw_upstream(answer.clone()).await;
        let toml = format!(
            "[server]\nuds = \"{{socket}}\"\nhttp = \"127.0.0.1:0\"\n[providers.raw]\nbase_url = \"{base}\"\nmax_attempts = 1\n[[routes]]\nmodel = \"m\"\nprovider = \"raw\"\n"
        );
        let (running, mut client, _dir) = common::sidecar_from(&toml).await;
        let mut request = request_proto(&ask(json!({})));
        request.model = "m".into();
        let result = client.complete(request).await;
        if deliverable {
            let answer = result.expect("delivered").into_inner();
            assert_eq!(answer.choices[0].content.as_deref(), Some("IMPORTANT"));
            let extra = struct_json(answer.extra.as_ref().unwrap());
            assert_eq!(extra["x_meta"], "bad \u{fffd}");
        } else {
            let status = result.expect_err("an error, not an empty answer");
            assert_eq!(status.code(), Code::Internal, "{status:?}");
        }
        // The facade forwards the upstream's bytes as they are.
        let http = running.http.expect("the facade");
        let text = common::http_client()
            .post(format!("http://{http}/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(text, answer);
        running.shutdown().await;
    }
}

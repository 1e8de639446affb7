//! Resuming a stream cut mid-answer (`resume = true`), over real sockets
//! against the fake upstream: the caller sees one answer (the exact text,
//! nothing repeated, one id, one role), its usage is the sum over both
//! attempts in the caller's usage and the ledger alike, and the upstream
//! received the text so far as a prefill in the provider's style. What
//! must never be resumed is not.

mod common;

use common::{Harness, Options, collect, http_client, request, sse_data, text_of};
use llm_sidecar::proto::v1 as pb;
use serde_json::{Value, json};

const REPLY: &str = "one two three four five six seven eight";

/// A provider that resumes, continuing in `style`.
fn resuming(style: &str) -> String {
    format!("resume = true\nprefill = \"{style}\"\ntimeouts = {{ idle_ms = 400 }}\n")
}

/// The fake's script: the reply, continued from a prefill, with `fault`.
fn scenario(fault: Value) -> Value {
    let mut scenario = json!({"reply": REPLY, "continue_prefill": true, "prompt_tokens": 10});
    scenario
        .as_object_mut()
        .unwrap()
        .extend(fault.as_object().unwrap().clone());
    scenario
}

/// Streams over gRPC; the chunks, the final status and the trailers.
async fn grpc_stream(
    harness: &mut Harness,
    request: pb::ChatRequest,
) -> (
    Vec<pb::ChatChunk>,
    Option<tonic::Status>,
    Option<tonic::metadata::MetadataMap>,
) {
    let mut stream = harness
        .client
        .stream_complete(request)
        .await
        .expect("the stream starts")
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    let trailers = match status {
        None => stream.trailers().await.expect("trailers"),
        Some(_) => None,
    };
    (chunks, status, trailers)
}

fn roles(chunks: &[pb::ChatChunk]) -> usize {
    chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .filter(|choice| !choice.role.is_empty())
        .count()
}

async fn only_row(harness: &Harness) -> llm_sidecar::ledger::LedgerRow {
    let rows = harness.ledger_rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    rows.into_iter().next().unwrap()
}

/// The prefill the continuation was sent: the last message of the second
/// request the upstream received.
fn prefill_sent(harness: &Harness) -> Value {
    let requests = harness.fake.requests();
    assert_eq!(requests.len(), 2, "the first attempt and the continuation");
    requests[1].body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .cloned()
        .expect("messages")
}

#[tokio::test]
async fn a_cut_a_stall_and_a_corrupt_frame_are_each_resumed_with_the_exact_text_over_grpc() {
    for (fault, reason) in [
        (json!({"cut_after": 3}), "upstream_stream_incomplete"),
        (json!({"stall_after": 3}), "upstream_idle_timeout"),
        (json!({"malformed_after": 3}), "upstream_malformed_response"),
        (json!({"error_frame_after": 3}), "upstream_"),
    ] {
        let mut harness = Harness::start_with(&resuming("trailing_assistant")).await;
        let (chunks, status, trailers) =
            grpc_stream(&mut harness, request("go", scenario(fault.clone()))).await;
        assert!(status.is_none(), "{fault}: {status:?}");
        assert_eq!(
            text_of(&chunks),
            REPLY,
            "{fault}: nothing lost, nothing twice"
        );
        assert_eq!(roles(&chunks), 1, "{fault}: one opening role");
        let first_id = &chunks[0].id;
        assert!(
            chunks.iter().all(|chunk| &chunk.id == first_id),
            "{fault}: one id"
        );
        assert!(
            chunks
                .iter()
                .all(|chunk| chunk.created == chunks[0].created),
            "{fault}: one created"
        );
        let trailers = trailers.expect("an OK stream ends with trailers");
        // What the sidecar added before the first chunk, the continuation's
        // wait not subtracted from it.
        let overhead: u64 = trailers
            .get("x-llm-overhead-us")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .expect("x-llm-overhead-us");
        assert!(overhead > 0, "{fault}: overhead {overhead} µs");
        let resumed = trailers
            .get("x-llm-resumed")
            .map(|value| value.to_str().unwrap());
        assert!(
            resumed.is_some_and(|resumed| resumed.starts_with(reason)),
            "{fault}: {trailers:?}"
        );
        assert_eq!(
            prefill_sent(&harness),
            json!({"role": "assistant", "content": "one two three "}),
            "{fault}"
        );
        assert_eq!(
            trailers
                .get("x-llm-attempts")
                .map(|value| value.to_str().unwrap()),
            Some("2"),
            "{fault}"
        );

        // The usage: the cut attempt's estimate plus the continuation's
        // report, alike in the trailers, the last chunk and the ledger.
        let usage = chunks
            .iter()
            .rev()
            .find_map(|chunk| chunk.usage.clone())
            .expect("the usage chunk");
        let row = only_row(&harness).await;
        assert_eq!(row.outcome, "ok", "{fault}");
        assert!(row.resumed, "{fault}");
        assert_eq!(row.attempts, 2, "{fault}: the continuation counts");
        assert!(
            row.usage_estimated,
            "{fault}: the cut attempt's share is estimated"
        );
        assert_eq!(row.prompt_tokens, Some(usage.prompt_tokens), "{fault}");
        assert_eq!(
            row.completion_tokens,
            Some(usage.completion_tokens),
            "{fault}"
        );
        let trailer = |name: &str| {
            trailers
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        assert_eq!(
            trailer("x-llm-prompt-tokens"),
            Some(usage.prompt_tokens.to_string()),
            "{fault}"
        );
        // The continuation's report (10 prompt tokens, by the scenario; the
        // last five words) plus the cut attempt's estimate ("go": 1 prompt
        // token; "one two three ", 14 bytes: 4 tokens).
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (11, 9, 20),
            "{fault}"
        );
        harness.stop().await;
    }
}

#[tokio::test]
async fn the_facade_shows_one_answer_with_a_comment_at_the_seam() {
    let harness = Harness::start_with(&resuming("trailing_assistant")).await;
    let response = http_client()
        .post(format!("{}/chat/completions", harness.http_base()))
        .json(&json!({
            "model": "fake-model",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "go"}],
            "fake": scenario(json!({"cut_after": 3})),
        }))
        .send()
        .await
        .expect("the facade answers");
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.contains(": x-llm-resumed: upstream_stream_incomplete\n\n"),
        "{body}"
    );
    let events = sse_data(&body);
    assert_eq!(events.last(), Some(&json!("[DONE]")), "{body}");
    let chunks = &events[..events.len() - 1];
    let text: String = chunks
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, REPLY);
    let roles = chunks
        .iter()
        .filter(|event| event["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1, "{body}");
    assert!(chunks.iter().all(|event| event["id"] == chunks[0]["id"]));
    assert!(
        chunks
            .iter()
            .all(|event| event["created"] == chunks[0]["created"])
    );
    let usage = &chunks.last().unwrap()["usage"];
    let row = only_row(&harness).await;
    assert!(row.resumed);
    assert_eq!((row.outcome.as_str(), row.attempts), ("ok", 2));
    assert_eq!(
        row.prompt_tokens.map(u64::from),
        usage["prompt_tokens"].as_u64()
    );
    assert_eq!(
        row.completion_tokens.map(u64::from),
        usage["completion_tokens"].as_u64()
    );
    assert_eq!(
        row.total_tokens.map(u64::from),
        usage["total_tokens"].as_u64()
    );
    harness.stop().await;
}

#[tokio::test]
async fn each_prefill_style_reaches_the_upstream_in_its_own_shape() {
    for style in [
        "trailing_assistant",
        "prefix_flag",
        "continue_final_message",
    ] {
        let mut harness = Harness::start_with(&resuming(style)).await;
        let (chunks, status, _) = grpc_stream(
            &mut harness,
            request("go", scenario(json!({"cut_after": 2}))),
        )
        .await;
        assert!(status.is_none(), "{style}: {status:?}");
        assert_eq!(text_of(&chunks), REPLY, "{style}");
        let mut expected = json!({"role": "assistant", "content": "one two "});
        if style == "prefix_flag" {
            expected["prefix"] = json!(true);
        }
        assert_eq!(prefill_sent(&harness), expected, "{style}");
        let body = &harness.fake.requests()[1].body;
        let vllm = style == "continue_final_message";
        assert_eq!(
            (
                body.get("continue_final_message").cloned(),
                body.get("add_generation_prompt").cloned()
            ),
            if vllm {
                (Some(json!(true)), Some(json!(false)))
            } else {
                (None, None)
            },
            "{style}"
        );
        harness.stop().await;
    }
}

#[tokio::test]
async fn a_refused_prefill_ends_the_call_with_the_original_cut_on_both_edges() {
    let fault = json!({"cut_after": 3, "reject_prefill": true});
    let mut harness = Harness::start_with(&resuming("trailing_assistant")).await;
    let (chunks, status, _) =
        grpc_stream(&mut harness, request("go", scenario(fault.clone()))).await;
    assert_eq!(text_of(&chunks), "one two three ");
    let status = status.expect("the call fails");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("ended before completing"),
        "the cut, not the refusal: {status:?}"
    );
    // The trailers say it was resumed, and what it took, as on OK.
    let trailers = status.metadata();
    assert_eq!(
        trailers.get("x-llm-resumed").unwrap(),
        "upstream_stream_incomplete"
    );
    assert_eq!(trailers.get("x-llm-attempts").unwrap(), "2");
    assert_eq!(trailers.get("x-llm-partial").unwrap(), "true");
    assert_eq!(
        harness.fake.requests().len(),
        2,
        "the continuation was asked"
    );
    let row = only_row(&harness).await;
    assert_eq!(row.outcome, "partial:upstream_stream_incomplete");
    assert!(row.resumed);
    assert_eq!(row.attempts, 2);

    let response = http_client()
        .post(format!("{}/chat/completions", harness.http_base()))
        .json(&json!({
            "model": "fake-model",
            "stream": true,
            "messages": [{"role": "user", "content": "go"}],
            "fake": scenario(fault),
        }))
        .send()
        .await
        .unwrap();
    let events = sse_data(&response.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(
        last["error"]["code"], "upstream_stream_incomplete",
        "{events:?}"
    );
    harness.stop().await;
}

/// The stream's outcome and how many requests the upstream received.
async fn not_resumed(
    provider_toml: &str,
    request: pb::ChatRequest,
) -> (Option<tonic::Status>, usize) {
    let mut harness = Harness::start_with(provider_toml).await;
    let (_, status, _) = grpc_stream(&mut harness, request).await;
    let requests = harness.fake.requests().len();
    let row = only_row(&harness).await;
    assert!(!row.resumed, "{row:?}");
    harness.stop().await;
    (status, requests)
}

#[tokio::test]
async fn a_content_filter_error_is_never_resumed() {
    let events = json!([
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "one two "}, "finish_reason": null}]},
        {"error": {"message": "The response was flagged", "code": "content_filter"}},
    ]);
    let (status, requests) = not_resumed(
        &resuming("trailing_assistant"),
        request("go", scenario(json!({"raw_events": events}))),
    )
    .await;
    assert!(status.is_some());
    assert_eq!(requests, 1, "no continuation after moderation");
}

#[tokio::test]
async fn tool_calls_and_several_choices_are_never_resumed() {
    let (status, requests) = not_resumed(
        &resuming("trailing_assistant"),
        request("go", scenario(json!({"tool_calls": true, "cut_after": 2}))),
    )
    .await;
    assert!(status.is_some());
    assert_eq!(requests, 1, "tool calls");

    let mut two = request("go", scenario(json!({"cut_after": 2})));
    two.n = Some(2);
    let (status, requests) = not_resumed(&resuming("trailing_assistant"), two).await;
    assert!(status.is_some());
    assert_eq!(requests, 1, "n = 2");
}

#[tokio::test]
async fn without_resume_a_cut_stays_a_cut() {
    let (status, requests) = not_resumed(
        "prefill = \"trailing_assistant\"\n",
        request("go", scenario(json!({"cut_after": 3}))),
    )
    .await;
    assert_eq!(
        status.map(|status| status.code()),
        Some(tonic::Code::Unavailable)
    );
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn the_resume_is_an_event_on_the_calls_span_with_the_cuts_reason() {
    use opentelemetry::trace::SpanKind;
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let telemetry = llm_sidecar::telemetry::Telemetry::for_tests(exporter.clone());
    let provider_toml = resuming("trailing_assistant");
    let mut harness = Harness::start_options(Options {
        provider_toml: &provider_toml,
        telemetry: Some(std::sync::Arc::new(telemetry)),
        ..Options::default()
    })
    .await;
    let (_, status, _) = grpc_stream(
        &mut harness,
        request("go", scenario(json!({"cut_after": 3}))),
    )
    .await;
    assert!(status.is_none(), "{status:?}");
    // The server span ends as the trailers go out, a moment after the
    // client read them: wait for it, within a bound.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let server = loop {
        let spans = exporter.get_finished_spans().unwrap();
        if let Some(server) = spans
            .into_iter()
            .find(|span| span.span_kind == SpanKind::Server)
        {
            break server;
        }
        assert!(tokio::time::Instant::now() < deadline, "no server span");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let event = server
        .events
        .iter()
        .find(|event| event.name == "resume")
        .unwrap_or_else(|| panic!("{:#?}", server.events));
    let reason = event
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "error.type")
        .map(|kv| kv.value.as_str().into_owned());
    assert_eq!(reason.as_deref(), Some("upstream_stream_incomplete"));
    let clients = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.span_kind == SpanKind::Client)
        .count();
    assert_eq!(clients, 2, "an attempt span for the continuation too");
    harness.stop().await;
}

#[tokio::test]
async fn a_serving_provider_without_a_prefill_passes_the_continuation_to_the_next_target() {
    let fake = fake_upstream::FakeUpstream::start().await.unwrap();
    let toml = format!(
        r#"[server]
uds = "{{socket}}"
[ledger]
enabled = false
[providers.plain]
base_url = "{base}"
[providers.prefilling]
base_url = "{base}"
prefill = "prefix_flag"
[[routes]]
model = "m"
provider = "plain"
fallbacks = [{{ provider = "prefilling", model = "m-fallback" }}]
resume = true
"#,
        base = fake.base_url()
    );
    let (running, mut client, _dir) = common::sidecar_from(&toml).await;
    let mut ask = request("go", scenario(json!({"cut_after": 2})));
    ask.model = "m".to_owned();
    let mut stream = client.stream_complete(ask).await.unwrap().into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(text_of(&chunks), REPLY);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body["model"], "m");
    assert_eq!(requests[1].body["model"], "m-fallback", "the next target");
    assert_eq!(
        requests[1].body["messages"][1],
        json!({"role": "assistant", "content": "one two ", "prefix": true})
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_stream_its_caller_left_is_drained_for_usage_but_never_resumed() {
    let provider = format!("{}drain_on_cancel = true\n", resuming("trailing_assistant"));
    let mut harness = Harness::start_with(&provider).await;
    let cut_late = scenario(json!({"cut_after": 4, "chunk_delay_ms": 100}));
    let mut stream = harness
        .client
        .stream_complete(request("go", cut_late))
        .await
        .expect("the stream starts")
        .into_inner();
    stream.message().await.unwrap().expect("a first chunk");
    drop(stream); // the caller goes away; the sidecar reads on for usage
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let row = loop {
        if let Some(row) = harness.ledger_rows().await.into_iter().next() {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(!row.resumed, "{row:?}");
    assert_eq!(
        harness.fake.requests().len(),
        1,
        "no continuation nobody reads"
    );
    harness.stop().await;
}

/// A resumed stream is one call to its budgets: the continuation reserves
/// nothing more (a second reservation would not fit in this budget), and
/// the call settles once, to the usage of both attempts.
#[tokio::test]
async fn a_resumed_stream_is_reserved_and_settled_once_on_its_budget() {
    let budget = "[[budgets]]\nprovider = \"fake\"\nwindow = \"day\"\ntokens = 150\n";
    let mut harness = Harness::start_full(&resuming("trailing_assistant"), budget).await;
    let mut ask = request("go", scenario(json!({"cut_after": 3})));
    ask.max_tokens = Some(100);
    let (chunks, status, _) = grpc_stream(&mut harness, ask).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(text_of(&chunks), REPLY);
    let row = only_row(&harness).await;
    let budget = &common::first_budget(&harness.admin_base()).await;
    assert_eq!(budget["tokens_reserved"], 0, "{budget}");
    assert_eq!(
        budget["tokens_spent"],
        u64::from(row.total_tokens.unwrap()),
        "{budget}"
    );
}

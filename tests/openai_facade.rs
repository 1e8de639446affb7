//! The OpenAI-compatible HTTP facade over real sockets: a plain HTTP client
//! (reqwest) against the whole sidecar in-process, in front of the fake
//! upstream. Answers must be OpenAI's wire format to the byte where SDKs
//! care (SSE framing, `[DONE]` only on success), errors OpenAI error objects
//! with the mapped status, and no upstream key may ever show.

mod common;

use common::{Harness, UPSTREAM_KEY, sidecar_from};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::Duration;

fn body(text: &str, scenario: Value) -> Value {
    json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": text}],
        "fake": scenario,
    })
}

fn streamed(text: &str, scenario: Value) -> Value {
    let mut body = body(text, scenario);
    body["stream"] = json!(true);
    body
}

/// One attempt only, so error tests see the mapping, not our retries.
async fn post(harness: &Harness, body: &Value) -> reqwest::Response {
    post_with(harness, body, &[("x-llm-max-attempts", "1")]).await
}

async fn post_with(
    harness: &Harness,
    body: &Value,
    headers: &[(&'static str, &str)],
) -> reqwest::Response {
    post_raw(&harness.http_base(), body.to_string(), headers).await
}

async fn post_raw(base: &str, body: String, headers: &[(&'static str, &str)]) -> reqwest::Response {
    let mut request = common::http_client()
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the facade answers")
}

/// The status, headers and text of a response, checked for the key.
async fn read(response: reqwest::Response) -> (StatusCode, HeaderMap, String) {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a whole body");
    assert_no_key(&headers, &text);
    (status, headers, text)
}

fn assert_no_key(headers: &HeaderMap, text: &str) {
    assert!(
        !text.contains(UPSTREAM_KEY),
        "the key leaked into a body: {text}"
    );
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(!value.contains(UPSTREAM_KEY), "the key leaked into {name}");
    }
}

/// The data of each event of an SSE body, checking the framing.
fn events(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "the body ends mid-event: {text:?}");
    text.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|error| panic!("{error}: {data}"))
}

fn content_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|chunk| chunk["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|choice| choice["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// The OpenAI error object of an error response, after its type checks.
fn error_of(text: &str) -> Value {
    let body = json_of(text);
    let error = &body["error"];
    for field in ["message", "type"] {
        assert!(error[field].is_string(), "error.{field} in {body}");
    }
    for field in ["param", "code"] {
        assert!(error.get(field).is_some(), "error.{field} in {body}");
    }
    error.clone()
}

#[tokio::test]
async fn a_unary_answer_is_a_chat_completion() {
    let harness = Harness::start().await;
    let (status, headers, text) = read(post(&harness, &body("hello there", json!({}))).await).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    let answer = json_of(&text);
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(answer["model"], "fake-model");
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "hello there");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(answer["usage"]["completion_tokens"], 2);

    assert_eq!(headers["x-llm-provider"], "fake");
    assert_eq!(headers["x-llm-attempts"], "1");
    assert_eq!(headers["x-llm-model"], "fake-model");
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    // Unknown fields went upstream; the facade's own did not.
    let sent = &harness.fake.requests()[0];
    assert_eq!(sent.body["fake"], json!({}));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    harness.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_fresh_otherwise() {
    let harness = Harness::start().await;
    let chat = body("hi", json!({}));
    let response = post_with(&harness, &chat, &[("x-request-id", "req-123.abc")]).await;
    assert_eq!(response.headers()["x-request-id"], "req-123.abc");
    let response = post_with(&harness, &chat, &[("x-request-id", "not a token; at all")]).await;
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let first = post(&harness, &chat).await.headers()["x-request-id"].clone();
    let second = post(&harness, &chat).await.headers()["x-request-id"].clone();
    assert_ne!(first, second);
    harness.stop().await;
}

#[tokio::test]
async fn a_stream_is_openai_sse_ending_with_done() {
    let harness = Harness::start().await;
    let mut chat = streamed("one two three four five", json!({}));
    chat["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = read(post(&harness, &chat).await).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(headers["x-llm-provider"], "fake");
    assert_eq!(headers["x-llm-attempts"], "1");
    assert_eq!(headers["x-llm-model"], "fake-model");
    assert!(headers.contains_key("x-request-id"));

    let events = events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|data| json_of(data))
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
    }
    assert_eq!(content_of(&chunks), "one two three four five");
    let content_chunks = chunks
        .iter()
        .filter(|chunk| chunk["choices"][0]["delta"]["content"].is_string())
        .count();
    assert_eq!(content_chunks, 5);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]), "the usage chunk comes last");
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .any(|chunk| chunk["choices"][0]["finish_reason"] == "stop")
    );
    // The caller's stream_options are the facade's: we ask upstream ourselves.
    let sent = &harness.fake.requests()[0].body;
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    harness.stop().await;
}

#[tokio::test]
async fn without_include_usage_the_usage_chunk_is_left_out_but_still_asked_for() {
    let harness = Harness::start().await;
    for options in [json!(null), json!({"include_usage": false})] {
        let mut chat = streamed("one two three", json!({}));
        if !options.is_null() {
            chat["stream_options"] = options;
        }
        let (status, _, text) = read(post(&harness, &chat).await).await;
        assert_eq!(status, StatusCode::OK);
        let events = events(&text);
        assert_eq!(events.last().unwrap(), "[DONE]");
        for data in &events[..events.len() - 1] {
            let chunk = json_of(data);
            assert!(chunk.get("usage").is_none(), "{chunk}");
            assert_ne!(chunk["choices"], json!([]), "{chunk}");
        }
    }
    // Usage is still read upstream, so the call is accounted.
    for request in harness.fake.requests() {
        assert_eq!(request.body["stream_options"]["include_usage"], true);
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event_and_no_done() {
    let harness = Harness::start().await;
    let cases = [
        (json!({"cut_after": 3}), json!("upstream_stream_incomplete")),
        // The upstream's own words, as it sent them in its error frame.
        (json!({"error_frame_after": 3}), json!(502)),
    ];
    for (scenario, code) in cases {
        let chat = streamed("one two three four five", scenario.clone());
        let (status, _, text) = read(post(&harness, &chat).await).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the status went out with the first chunk"
        );
        let events = events(&text);
        assert!(
            !events.iter().any(|data| data == "[DONE]"),
            "{scenario}: {text}"
        );
        let (last, chunks) = events.split_last().unwrap();
        let chunks: Vec<Value> = chunks.iter().map(|data| json_of(data)).collect();
        assert_eq!(content_of(&chunks), "one two three ", "{scenario}");
        let error = error_of(last);
        assert_eq!(error["type"], "server_error", "{scenario}");
        assert_eq!(error["code"], code, "{error}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn bad_requests_are_400_with_what_and_where() {
    let harness = Harness::start().await;
    let base = harness.http_base();
    let cases = [
        (
            r#"{"model": "fake-model", "messages": ["#.to_owned(),
            "not valid JSON",
            None,
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
            "missing field `model`",
            None,
        ),
        (
            json!({"model": "fake-model"}).to_string(),
            "`messages` is required",
            Some("messages"),
        ),
        (
            json!({"model": "fake-model", "messages": []}).to_string(),
            "`messages` is empty",
            Some("messages"),
        ),
        (
            json!({"model": "", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            "`model` is required",
            Some("model"),
        ),
        (
            json!({"model": "m", "messages": "hi"}).to_string(),
            "`messages` must be a list",
            Some("messages"),
        ),
        (
            json!({"model": "m", "messages": [], "stream": "yes"}).to_string(),
            "`stream` must be true or false",
            Some("stream"),
        ),
    ];
    for (request, says, param) in cases {
        let (status, headers, text) = read(post_raw(&base, request.clone(), &[]).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {text}");
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.contains_key("x-request-id"));
        let error = error_of(&text);
        assert_eq!(error["type"], "invalid_request_error");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{request}: {message}");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{request}");
        }
    }
    assert!(harness.fake.requests().is_empty(), "nothing went upstream");

    let (status, _, text) = read(
        post_with(
            &harness,
            &body("hi", json!({})),
            &[("x-llm-max-attempts", "many")],
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("x-llm-max-attempts"), "{text}");
    harness.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let harness = Harness::start().await;
    let huge = "x".repeat(17 * 1024 * 1024);
    let (status, _, text) = read(post(&harness, &body(&huge, json!({}))).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&text)["code"], "request_too_large");
    harness.stop().await;
}

#[tokio::test]
async fn upstream_failures_map_to_statuses_and_error_types() {
    let harness = Harness::start().await;
    let cases = [
        (400, StatusCode::BAD_REQUEST, "invalid_request_error"),
        (401, StatusCode::BAD_GATEWAY, "server_error"),
        (403, StatusCode::BAD_GATEWAY, "server_error"),
        // The fake upstream, like OpenAI, calls an unknown model an
        // invalid request: its type passes on as it said it.
        (404, StatusCode::NOT_FOUND, "invalid_request_error"),
        (429, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        (500, StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        (503, StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        (504, StatusCode::GATEWAY_TIMEOUT, "server_error"),
        (529, StatusCode::from_u16(529).unwrap(), "server_error"),
    ];
    for (upstream, status, kind) in cases {
        for stream in [false, true] {
            let mut chat = body(
                "hi",
                json!({"status": upstream, "error_message": "upstream says no"}),
            );
            chat["stream"] = json!(stream);
            let (got, headers, text) = read(post(&harness, &chat).await).await;
            assert_eq!(
                got, status,
                "upstream {upstream} (stream: {stream}): {text}"
            );
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(headers["x-llm-provider"], "fake");
            let error = error_of(&text);
            assert_eq!(error["type"], kind, "upstream {upstream}");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("upstream says no")
            );
        }
    }
    harness.stop().await;
}

#[tokio::test]
async fn rate_limits_carry_retry_after() {
    let harness = Harness::start().await;
    let (status, headers, text) = read(
        post(
            &harness,
            &body("hi", json!({"status": 429, "retry_after": "7"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(headers["retry-after-ms"], "7000");
    // The upstream's code; the sidecar's own classification beside it.
    assert_eq!(error_of(&text)["code"], "rate_limit_exceeded");
    assert_eq!(headers["x-llm-error-reason"], "UPSTREAM_RATE_LIMITED");

    // Rounded up: never an invitation to come back early.
    let (status, headers, _) = read(
        post(
            &harness,
            &body("hi", json!({"status": 503, "retry_after_ms": 1500})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["retry-after-ms"], "1500");
    harness.stop().await;
}

#[tokio::test]
async fn the_upstream_key_never_shows_even_when_the_upstream_echoes_it() {
    let harness = Harness::start().await;
    let message = format!("Incorrect API key provided: {UPSTREAM_KEY}. Bearer {UPSTREAM_KEY}");
    for stream in [false, true] {
        let mut chat = body("hi", json!({"status": 401, "error_message": message}));
        chat["stream"] = json!(stream);
        let (status, _, text) = read(post(&harness, &chat).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
        assert_eq!(error_of(&text)["code"], "upstream_auth_failed");
    }
    harness.stop().await;
}

#[tokio::test]
async fn retries_show_in_x_llm_attempts_and_the_header_turns_them_off() {
    let harness = Harness::start_full("", "[retry]\nbase_delay_ms = 10\nmax_delay_ms = 20").await;
    let flaky = |key: &str| body("hi", json!({"status": 503, "fail_times": 1, "key": key}));
    let (status, headers, _) = read(post_with(&harness, &flaky("a"), &[]).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-llm-attempts"], "2");
    let (status, _, _) = read(post(&harness, &flaky("b")).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    harness.stop().await;
}

#[tokio::test]
async fn the_callers_timeout_header_is_its_deadline() {
    let harness = Harness::start().await;
    let started = std::time::Instant::now();
    let (status, _, text) = read(
        post_with(
            &harness,
            &body("hi", json!({"hang": true})),
            &[("x-llm-timeout-ms", "300")],
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");
    assert_eq!(error_of(&text)["code"], "deadline_exceeded");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(harness.upstream_closed().await);
    harness.stop().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_stream_closes_the_upstream_request() {
    let harness = Harness::start().await;
    let chat = streamed("a b c d e f g h i j", json!({"chunk_delay_ms": 200}));
    let started = std::time::Instant::now();
    let response = post(&harness, &chat).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut seen = Vec::new();
    while !seen.windows(2).any(|pair| pair == b"\n\n") {
        let bytes = body.next().await.expect("a first event").expect("bytes");
        seen.extend_from_slice(&bytes);
    }
    let first = String::from_utf8(seen).unwrap();
    assert!(first.starts_with("data: {"), "{first}");
    // Each event is sent as it arrives, not when the answer (2 s) is whole.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(body); // the caller goes away mid-answer
    assert!(
        harness.upstream_closed().await,
        "the upstream request stayed open after the caller left"
    );
    harness.stop().await;
}

#[tokio::test]
async fn models_list_names_and_patterns_apart_and_resolve_through_the_router() {
    let harness = Harness::start().await;
    let client = common::http_client();
    let response = client
        .get(format!("{}/models", harness.http_base()))
        .send()
        .await
        .unwrap();
    let (status, headers, text) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("x-request-id"));
    let list = json_of(&text);
    assert_eq!(list["object"], "list");
    // This config routes by patterns only: the one concrete name listed is
    // the one the built-in mock knows.
    let models = list["data"].as_array().unwrap();
    let ids: Vec<&str> = models
        .iter()
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock/echo"]);
    for model in models {
        assert_eq!(model["object"], "model", "{model}");
        assert_eq!(model["created"], 0);
        assert!(model["id"].is_string() && model["owned_by"].is_string());
    }
    // Patterns are not names to send: they are listed apart.
    let patterns = list["patterns"].as_array().unwrap();
    let mock = patterns
        .iter()
        .find(|pattern| pattern["owned_by"] == "mock")
        .expect("the built-in mock pattern is listed");
    assert_eq!(mock["object"], "model_pattern");
    assert_eq!(mock["pattern"], "mock/*");

    // A concrete name a pattern serves is a model the sidecar serves.
    let response = client
        .get(format!("{}/models/mock/echo", harness.http_base()))
        .send()
        .await
        .unwrap();
    let (status, _, text) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let echo = json_of(&text);
    assert_eq!(
        (&echo["id"], &echo["owned_by"], &echo["match"]),
        (&json!("mock/echo"), &json!("mock"), &json!("pattern"))
    );
    // The default provider takes any other name.
    let response = client
        .get(format!("{}/models/nothing-like-this", harness.http_base()))
        .send()
        .await
        .unwrap();
    let (status, _, text) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json_of(&text)["match"], "default");
    harness.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let harness = Harness::start().await;
    let client = common::http_client();
    let base = harness.http_base();
    let response = client
        .post(format!("{base}/completions"))
        .send()
        .await
        .unwrap();
    let (status, headers, text) = read(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(error_of(&text)["type"], "not_found_error");

    let response = client
        .get(format!("{base}/chat/completions"))
        .send()
        .await
        .unwrap();
    let (status, headers, text) = read(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(error_of(&text)["code"], "method_not_allowed");
    harness.stop().await;
}

/// Our own routing: an unroutable model is a 404 before anything is sent,
/// and the built-in mock answers and streams through the facade too.
#[tokio::test]
async fn unroutable_models_are_404_and_the_mock_answers() {
    let (running, _client, _dir) = sidecar_from(
        r#"[server]
uds = "{socket}"
http = "127.0.0.1:0"
"#,
    )
    .await;
    let base = format!("http://{}/v1", running.http.unwrap());
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "messages": [{"role": "user", "content": "hello mock"}],
               "stream": stream})
        .to_string()
    };
    // Without a default provider, a name no route takes is no model.
    let retrieve = |id: &str| {
        common::http_client()
            .get(format!("{base}/models/{id}"))
            .send()
    };
    let (status, _, text) = read(retrieve("no-such-model").await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert_eq!(error_of(&text)["code"], "model_not_found");
    let (status, _, text) = read(retrieve("mock/echo").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json_of(&text)["match"], "pattern");
    // What a call would refuse is no model: a name the mock does not
    // know, a name over the length bound.
    let long = format!("mock/{}", "a".repeat(300));
    for refused in ["mock/foo", long.as_str()] {
        let (status, _, text) = read(retrieve(refused).await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{refused}: {text}");
    }

    let (status, _, text) = read(post_raw(&base, chat("no-such-model", false), &[]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let error = error_of(&text);
    assert_eq!(error["code"], "model_not_routed");
    assert_eq!(error["param"], "model");
    assert!(error["message"].as_str().unwrap().contains("no-such-model"));

    let (status, headers, text) = read(post_raw(&base, chat("mock/echo", false), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["x-llm-provider"], "mock");
    assert_eq!(
        json_of(&text)["choices"][0]["message"]["content"],
        "hello mock"
    );

    let (status, _, text) = read(post_raw(&base, chat("mock/echo", true), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let events = events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    running.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_from_a_unary_call_closes_the_upstream_request() {
    let harness = Harness::start().await;
    let base = harness.http_base();
    let chat = body("hi", json!({"hang": true})).to_string();
    let call = tokio::spawn(async move { post_raw(&base, chat, &[]).await });
    for _ in 0..100 {
        if !harness.fake.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    assert!(
        harness.upstream_closed().await,
        "the upstream request stayed open after the caller left"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_retry_the_budget_refuses_returns_the_upstreams_429_with_the_refusal_beside_it() {
    let harness = Harness::start_full("", "[retry]\nbudget_ratio = 0.0\nbudget_floor = 0\n").await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                      "fake": {"status": 429, "retry_after": "1"}});
    let (status, headers, text) = read(post_with(&harness, &body, &[]).await).await;
    // The rate limit as the upstream said it, not a 503 of the sidecar's.
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(error_of(&text)["type"], "rate_limit_error");
    assert_eq!(headers["x-llm-retry-stopped"], "RETRY_BUDGET_EXHAUSTED");
    // The SDK's retry would add to what the budget holds back.
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(headers["x-llm-attempts"], "1");
    assert_eq!(harness.fake.requests().len(), 1);
    harness.stop().await;
}

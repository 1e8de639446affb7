//! End-to-end tests of the fake over real sockets, plus unit tests of the
//! pure reply/SSE builders.

use std::time::Duration;

use serde_json::{Value, json};

use super::reply::{split_even, split_words};
use super::test_client::{Client, chat, request};
use super::{FakeUpstream, Scenario};

const WAIT: Duration = Duration::from_secs(2);

fn chunks_of(data: &[String]) -> Vec<Value> {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect()
}

fn streamed_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

#[tokio::test]
async fn non_streaming_reply_echoes_and_reports_usage() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"model": "m1", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there friend"}
        ]}),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let body = res.json();
    assert_eq!(body["id"], "chatcmpl-fake-1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m1");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "hi there friend");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 5);
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(usage["total_tokens"], 8);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
}

#[tokio::test]
async fn non_streaming_scripted_reply_reasoning_and_usage() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "part one"}, {"type": "image_url", "image_url": {"url": "x"}}
        ]}], "fake": {"reply": "ok", "reasoning": "thinking hard", "model": "served",
                      "prompt_tokens": 10, "cached_tokens": 4, "reasoning_tokens": 7}}),
    )
    .await;
    let body = res.json();
    assert_eq!(body["model"], "served");
    assert_eq!(body["choices"][0]["message"]["content"], "ok");
    assert_eq!(
        body["choices"][0]["message"]["reasoning_content"],
        "thinking hard"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    assert_eq!(body["usage"]["completion_tokens"], 8);
    assert_eq!(body["usage"]["total_tokens"], 18);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        7
    );

    let res = chat(
        fake.addr(),
        &json!({"messages": [], "fake": {"no_usage": true}}),
    )
    .await;
    let body = res.json();
    assert!(body.get("usage").is_none());
    assert_eq!(body["model"], "fake-model");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the fake upstream."
    );
}

#[tokio::test]
async fn streaming_wire_format_with_usage_and_done() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let text = res.text();
    // Exact OpenAI field order, one frame per event.
    let first = text.split("\n\n").next().unwrap();
    let expected_prefix =
        r#"data: {"id":"chatcmpl-fake-1","object":"chat.completion.chunk","created":"#;
    assert!(first.starts_with(expected_prefix), "{first}");
    assert!(
        first.ends_with(r#","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"one "},"finish_reason":null}]}"#),
        "{first}"
    );
    assert_eq!(res.chunks.len(), 6, "one body frame per event");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let data = res.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks_of(&data);
    // 3 words + finish + usage
    assert_eq!(chunks.len(), 5, "{text}");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-fake-1");
        assert_eq!(c["model"], "m");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "one ");
    assert!(chunks[1]["choices"][0]["delta"].get("role").is_none());
    assert!(chunks[0]["choices"][0]["finish_reason"].is_null());
    assert_eq!(streamed_content(&chunks), "one two three");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks[4]["usage"]["prompt_tokens"], 3);

    // Without include_usage there is no usage chunk.
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"chunks": 2}}),
    )
    .await;
    let chunks = chunks_of(&res.sse_data());
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(streamed_content(&chunks), "Hello from the fake upstream.");
}

#[tokio::test]
async fn error_status_with_retry_after_headers() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"messages": [], "fake": {"status": 429, "retry_after": "2", "retry_after_ms": 1500}}),
    )
    .await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("retry-after"), Some("2"));
    assert_eq!(res.header("retry-after-ms"), Some("1500"));
    let body = res.json();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("429"));

    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"status": 503,
            "error_type": "overloaded", "error_code": "busy", "error_message": "try later"}}),
    )
    .await;
    assert_eq!(res.status, 503);
    assert_eq!(
        res.json(),
        json!({"error": {"message": "try later", "type": "overloaded", "code": "busy"}})
    );
}

#[tokio::test]
async fn fail_times_fails_first_requests_per_key_then_succeeds() {
    let fake = FakeUpstream::start().await.unwrap();
    let req =
        |key: &str| json!({"messages": [], "fake": {"status": 500, "fail_times": 2, "key": key}});
    assert_eq!(chat(fake.addr(), &req("a")).await.status, 500);
    assert_eq!(chat(fake.addr(), &req("b")).await.status, 500);
    assert_eq!(chat(fake.addr(), &req("a")).await.status, 500);
    assert_eq!(chat(fake.addr(), &req("a")).await.status, 200);
    assert_eq!(chat(fake.addr(), &req("a")).await.status, 200);
    assert_eq!(chat(fake.addr(), &req("b")).await.status, 500);
    assert_eq!(chat(fake.addr(), &req("b")).await.status, 200);
}

#[tokio::test]
async fn cut_after_ends_body_cleanly_without_finish_or_done() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "stream_options": {"include_usage": true}, "messages": [],
                "fake": {"reply": "a b c d", "cut_after": 2}}),
    )
    .await;
    assert_eq!(res.status, 200);
    let data = res.sse_data();
    assert!(!data.contains(&"[DONE]".to_owned()));
    let chunks = chunks_of(&data);
    assert_eq!(chunks.len(), 2);
    assert_eq!(streamed_content(&chunks), "a b ");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    // A clean end of body is not a client disconnect.
    assert_eq!(fake.client_disconnects(), 0);
}

#[tokio::test]
async fn malformed_error_frame_finish_error_and_no_done() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a b c", "malformed_after": 1}}),
    )
    .await;
    let data = res.sse_data();
    assert_eq!(data[1], "{not json");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(data.len(), 6);

    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a b c", "error_frame_after": 2}}),
    )
    .await;
    let data = res.sse_data();
    assert_eq!(data.len(), 3);
    let err: Value = serde_json::from_str(&data[2]).unwrap();
    assert_eq!(err["error"]["code"], 502);

    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a", "finish_error": true, "no_done": true}}),
    )
    .await;
    let data = res.sse_data();
    assert!(!data.contains(&"[DONE]".to_owned()));
    let chunks = chunks_of(&data);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "error"
    );
}

#[tokio::test]
async fn comments_crlf_and_reasoning_stream() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "x y", "reasoning": "r1 r2",
                "comments": true, "crlf": true}}),
    )
    .await;
    let text = res.text();
    assert!(
        text.starts_with(": OPENROUTER PROCESSING\r\n\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\n:\r\n\r\n"), "{text}");
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    let chunks = chunks_of(&res.sse_data());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["reasoning_content"], "r1 ");
    assert_eq!(chunks[1]["choices"][0]["delta"]["reasoning_content"], "r2");
    assert!(chunks[2]["choices"][0]["delta"].get("role").is_none());
    assert_eq!(streamed_content(&chunks), "x y");
}

#[tokio::test]
async fn tool_calls_stream_indexed_argument_deltas() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"tool_calls": true}}),
    )
    .await;
    let chunks = chunks_of(&res.sse_data());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut names = Vec::new();
    let mut args = [String::new(), String::new()];
    let mut deltas_per_call = [0, 0];
    for c in &chunks {
        if let Some(calls) = c
            .pointer("/choices/0/delta/tool_calls")
            .and_then(Value::as_array)
        {
            for call in calls {
                let i = call["index"].as_u64().unwrap() as usize;
                deltas_per_call[i] += 1;
                if let Some(n) = call.pointer("/function/name").and_then(Value::as_str) {
                    names.push(n.to_owned());
                    assert!(call["id"].as_str().unwrap().starts_with("call_"));
                }
                args[i].push_str(
                    call.pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap(),
                );
            }
        }
    }
    assert_eq!(names, ["get_weather", "get_time"]);
    assert!(
        deltas_per_call.iter().all(|n| *n >= 3),
        "{deltas_per_call:?}"
    );
    let weather: Value = serde_json::from_str(&args[0]).unwrap();
    assert_eq!(weather["location"], "Paris, France");
    let time: Value = serde_json::from_str(&args[1]).unwrap();
    assert_eq!(time["timezone"], "Europe/Paris");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let res = chat(
        fake.addr(),
        &json!({"messages": [], "fake": {"tool_calls": true}}),
    )
    .await;
    let body = res.json();
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["arguments"].as_str().unwrap(), args[0]);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn split_bytes_sends_small_body_frames_with_same_bytes() {
    let fake = FakeUpstream::start().await.unwrap();
    let req = |split: Option<usize>| json!({"stream": true, "messages": [], "fake": {"reply": "héllo wörld ✓", "split_bytes": split}});
    let whole = chat(fake.addr(), &req(None)).await;
    let split = chat(fake.addr(), &req(Some(5))).await;
    assert!(split.chunks.iter().all(|c| c.len() <= 5));
    assert!(split.chunks.len() > whole.chunks.len());
    // Same bytes apart from the id and created stamp.
    let normalize =
        |r: &super::test_client::Response| r.text().replace("chatcmpl-fake-2", "chatcmpl-fake-1");
    assert_eq!(normalize(&split).len(), normalize(&whole).len());
    assert_eq!(
        streamed_content(&chunks_of(&split.sse_data())),
        "héllo wörld ✓"
    );
}

#[tokio::test]
async fn events_per_write_joins_unpaced_frames_into_one_body_frame() {
    let fake = FakeUpstream::start().await.unwrap();
    let req = |per_write: Option<usize>| json!({"stream": true, "messages": [], "fake": {"reply": "a b c d e f g", "events_per_write": per_write}});
    let one = chat(fake.addr(), &req(None)).await;
    let four = chat(fake.addr(), &req(Some(4))).await;
    // 7 content frames, the finish, [DONE]: 9 frames, one per body frame
    // by default, then 4 + 4 + 1.
    assert_eq!(one.chunks.len(), 9);
    let events = |chunk: &Vec<u8>| chunk.windows(2).filter(|w| w == b"\n\n").count();
    assert_eq!(
        four.chunks.iter().map(events).collect::<Vec<_>>(),
        [4, 4, 1]
    );
    assert_eq!(
        streamed_content(&chunks_of(&four.sse_data())),
        "a b c d e f g"
    );
    let normalize =
        |r: &super::test_client::Response| r.text().replace("chatcmpl-fake-2", "chatcmpl-fake-1");
    assert_eq!(normalize(&four), normalize(&one));
}

#[tokio::test]
async fn events_per_write_starts_a_new_write_after_each_pause_and_splits() {
    let fake = FakeUpstream::start().await.unwrap();
    let paced = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a b c", "chunk_delay_ms": 1, "events_per_write": 4}}),
    )
    .await;
    // Every frame after the first follows a pause: one frame per write.
    assert_eq!(paced.chunks.len(), 5);
    let split = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a b c", "events_per_write": 8, "split_bytes": 16}}),
    )
    .await;
    assert!(split.chunks.iter().all(|c| c.len() <= 16));
    assert_eq!(streamed_content(&chunks_of(&split.sse_data())), "a b c");
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_counted() {
    let fake = FakeUpstream::start().await.unwrap();
    let mut client = Client::connect(fake.addr()).await;
    let body = json!({"stream": true, "messages": [], "fake": {"reply": "a b c d e f", "chunk_delay_ms": 200}});
    client
        .send("POST", "/v1/chat/completions", &[], &body.to_string())
        .await;
    let (status, _) = client.read_head().await;
    assert_eq!(status, 200);
    assert!(client.read_chunk().await.is_some());
    assert_eq!(fake.client_disconnects(), 0);
    drop(client);
    assert!(fake.wait_for_disconnects(1, WAIT).await);
    assert_eq!(fake.client_disconnects(), 1);
}

#[tokio::test]
async fn client_disconnect_while_hanging_or_delaying_is_counted() {
    let fake = FakeUpstream::start().await.unwrap();
    for (n, scenario) in [json!({"hang": true}), json!({"latency_ms": 10_000})]
        .iter()
        .enumerate()
    {
        let mut client = Client::connect(fake.addr()).await;
        let body = json!({"messages": [], "fake": scenario});
        client
            .send("POST", "/v1/chat/completions", &[], &body.to_string())
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fake.requests().len(), n + 1);
        drop(client);
        assert!(
            fake.wait_for_disconnects(n + 1, WAIT).await,
            "scenario {scenario}"
        );
    }
    assert!(
        !fake
            .wait_for_disconnects(3, Duration::from_millis(50))
            .await
    );
}

#[tokio::test]
async fn dropping_the_fake_aborts_hanging_connections() {
    let fake = FakeUpstream::start().await.unwrap();
    let mut client = Client::connect(fake.addr()).await;
    let body = json!({"messages": [], "fake": {"hang": true}});
    client
        .send("POST", "/v1/chat/completions", &[], &body.to_string())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(fake);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut client_stream(client), &mut buf),
    )
    .await;
    assert!(read.is_ok(), "connection still open after drop");
    assert!(buf.is_empty());
}

fn client_stream(client: Client) -> tokio::io::BufReader<tokio::net::TcpStream> {
    client.into_inner()
}

#[tokio::test]
async fn records_requests_with_headers_and_invalid_bodies() {
    let fake = FakeUpstream::start().await.unwrap();
    let body = json!({"model": "rec", "messages": [{"role": "user", "content": "x"}]});
    let res = request(
        fake.addr(),
        "POST",
        "/api/v1/chat/completions",
        &[("Authorization", "Bearer sk-test"), ("X-Custom", "v")],
        &body.to_string(),
    )
    .await;
    assert_eq!(res.status, 200);
    let res = request(fake.addr(), "POST", "/chat/completions", &[], "{nope").await;
    assert_eq!(res.status, 400);
    let res = request(fake.addr(), "GET", "/v1/elsewhere?q=1", &[], "").await;
    assert_eq!(res.status, 404);
    let res = request(fake.addr(), "GET", "/v1/chat/completions", &[], "").await;
    assert_eq!(res.status, 405);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/api/v1/chat/completions");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(reqs[0].header("X-CUSTOM"), Some("v"));
    assert!(reqs[0].headers.iter().any(|(k, _)| k == "x-custom"));
    assert_eq!(reqs[0].body, body);
    assert_eq!(reqs[1].body, Value::Null);
    assert_eq!(reqs[2].path, "/v1/elsewhere");
    assert_eq!(reqs[3].method, "GET");
}

#[tokio::test]
async fn unknown_scenario_key_is_rejected_naming_it() {
    let fake = FakeUpstream::start().await.unwrap();
    let res = chat(
        fake.addr(),
        &json!({"messages": [], "fake": {"statuss": 500}}),
    )
    .await;
    assert_eq!(res.status, 400);
    let msg = res.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("statuss"), "{msg}");

    let res = request(
        fake.addr(),
        "POST",
        "/v1/chat/completions",
        &[("x-fake-scenario", r#"{"bogus":1}"#)],
        r#"{"messages":[]}"#,
    )
    .await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("bogus"));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn header_scenario_and_server_defaults() {
    let defaults = Scenario {
        reply: Some("default reply".into()),
        ..Scenario::default()
    };
    let fake = FakeUpstream::start_with("127.0.0.1:0".parse().unwrap(), defaults)
        .await
        .unwrap();
    let res = chat(fake.addr(), &json!({"messages": []})).await;
    assert_eq!(
        res.json()["choices"][0]["message"]["content"],
        "default reply"
    );
    let res = request(
        fake.addr(),
        "POST",
        "/v1/chat/completions",
        &[("x-fake-scenario", r#"{"status": 418}"#)],
        r#"{"messages":[]}"#,
    )
    .await;
    assert_eq!(res.status, 418);
    // The body's scenario wins over the header.
    let res = request(
        fake.addr(),
        "POST",
        "/v1/chat/completions",
        &[("x-fake-scenario", r#"{"status": 418}"#)],
        r#"{"messages":[],"fake":{"reply":"body"}}"#,
    )
    .await;
    assert_eq!(res.json()["choices"][0]["message"]["content"], "body");
}

#[tokio::test]
async fn model_defaults_apply_to_their_model_only() {
    let defaults = Scenario {
        reply: Some("default reply".into()),
        ..Scenario::default()
    };
    let fast = Scenario {
        reply: Some("fast reply".into()),
        ..Scenario::default()
    };
    let models = [("fast-model".to_owned(), fast)].into();
    let fake = FakeUpstream::start_with_models("127.0.0.1:0".parse().unwrap(), defaults, models)
        .await
        .unwrap();
    let content = |res: super::test_client::Response| {
        res.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ask = |model: &str| json!({"model": model, "messages": []});
    assert_eq!(
        content(chat(fake.addr(), &ask("fast-model")).await),
        "fast reply"
    );
    assert_eq!(
        content(chat(fake.addr(), &ask("other")).await),
        "default reply"
    );
    // A scenario in the request still wins.
    let scripted = json!({"model": "fast-model", "messages": [], "fake": {"reply": "body"}});
    assert_eq!(content(chat(fake.addr(), &scripted).await), "body");
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_and_models_lists_seen() {
    let fake = FakeUpstream::start().await.unwrap();
    assert!(fake.base_url().starts_with("http://127.0.0.1:"));
    assert!(fake.base_url().ends_with("/v1"));
    let mut client = Client::connect(fake.addr()).await;
    for stream in [false, true, false] {
        let body = json!({"model": "seen-model", "stream": stream, "messages": []});
        client
            .send("POST", "/v1/chat/completions", &[], &body.to_string())
            .await;
        assert_eq!(client.read_response().await.status, 200);
    }
    client.send("GET", "/v1/models", &[], "").await;
    let models = client.read_response().await.json();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"seen-model"), "{ids:?}");
    assert_eq!(fake.connections_accepted(), 1);
    let _second = Client::connect(fake.addr()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.connections_accepted(), 2);
    assert_eq!(fake.client_disconnects(), 0);
}

#[tokio::test]
async fn stream_delays_are_applied_between_frames() {
    let fake = FakeUpstream::start().await.unwrap();
    let started = tokio::time::Instant::now();
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a b c", "latency_ms": 50,
                "first_chunk_delay_ms": 50, "chunk_delay_ms": 30}}),
    )
    .await;
    assert_eq!(res.status, 200);
    // latency + first delay + 3 gaps (2 content, 1 finish) at least.
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stamp_replaces_each_text_chunk_with_its_send_time() {
    let fake = FakeUpstream::start().await.unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "a b c", "stamp": true}}),
    )
    .await;
    let chunks = chunks_of(&res.sse_data());
    let stamps: Vec<u128> = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .map(|text| text.parse().expect("a stamp is a number"))
        .collect();
    assert_eq!(stamps.len(), 3, "one stamp per text chunk");
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    assert!(stamps[0] >= before, "{stamps:?}");
}

#[tokio::test]
async fn headers_arrive_before_first_chunk_delay() {
    let fake = FakeUpstream::start().await.unwrap();
    let mut client = Client::connect(fake.addr()).await;
    let body = json!({"stream": true, "messages": [], "fake": {"first_chunk_delay_ms": 1000}});
    client
        .send("POST", "/v1/chat/completions", &[], &body.to_string())
        .await;
    let head = tokio::time::timeout(Duration::from_millis(500), client.read_head()).await;
    assert_eq!(head.expect("headers before the first chunk").0, 200);
}

#[test]
fn split_words_keeps_following_space() {
    assert_eq!(
        split_words("Hello big  world"),
        ["Hello ", "big  ", "world"]
    );
    assert_eq!(split_words(" lead trail "), [" lead ", "trail "]);
    assert_eq!(split_words(""), [""]);
}

#[test]
fn split_even_respects_chars() {
    assert_eq!(split_even("abcdefg", 3), ["abc", "de", "fg"]);
    assert_eq!(split_even("✓✓", 5), ["✓", "✓"]);
    assert_eq!(split_even("", 3), [""]);
    assert_eq!(split_even("ab", 0), ["ab"]);
}

#[tokio::test]
async fn raw_body_is_answered_verbatim() {
    let fake = FakeUpstream::start().await.unwrap();
    let raw = json!({"id": "chatcmpl-rec", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": null},
         "logprobs": null, "finish_reason": "stop"}],
        "system_fingerprint": "fp_1", "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
    let res = chat(
        fake.addr(),
        &json!({"model": "m", "messages": [], "fake": {"raw_body": raw}}),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.text(), raw.to_string(), "compact, nothing added");
    assert_eq!(res.json(), raw);
}

#[tokio::test]
async fn raw_events_are_streamed_as_listed() {
    let fake = FakeUpstream::start().await.unwrap();
    let events = json!([
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]},
        "{not json",
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 2}},
    ]);
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "stream_options": {"include_usage": true}, "messages": [],
                "fake": {"raw_events": events, "crlf": true}}),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let text = res.text();
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    let data = res.sse_data();
    assert_eq!(data.len(), 3, "no [DONE] or usage added: {data:?}");
    assert_eq!(data[0], events[0].to_string());
    assert_eq!(data[1], "{not json");
    assert_eq!(data[2], events[2].to_string());

    // A string event is sent verbatim, so a test scripts its own [DONE].
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [],
                "fake": {"raw_events": [{"x": 1}, "[DONE]"], "split_bytes": 4}}),
    )
    .await;
    assert!(res.chunks.iter().all(|c| c.len() <= 4));
    assert_eq!(res.sse_data(), [r#"{"x":1}"#, "[DONE]"]);
}

#[tokio::test]
async fn error_body_replaces_the_generated_error() {
    let fake = FakeUpstream::start().await.unwrap();
    let raw = json!({"error": {"message": "slow down", "type": "rate_limit_error",
                     "param": null, "code": "rate_limit_exceeded"}, "provider": "x"});
    for stream in [false, true] {
        let res = chat(
            fake.addr(),
            &json!({"stream": stream, "messages": [],
                    "fake": {"status": 429, "error_body": raw, "retry_after": "1"}}),
        )
        .await;
        assert_eq!(res.status, 429);
        assert_eq!(res.header("retry-after"), Some("1"));
        assert_eq!(res.json(), raw);
    }
}

#[tokio::test]
async fn scenario_headers_are_sent_on_every_kind_of_response() {
    let fake = FakeUpstream::start().await.unwrap();
    let headers = json!({"x-request-id": "req_123", "x-ratelimit-remaining-requests": "59"});
    let scenarios = [
        json!({"stream": false, "messages": [], "fake": {"headers": headers}}),
        json!({"stream": true, "messages": [], "fake": {"headers": headers}}),
        json!({"stream": false, "messages": [], "fake": {"headers": headers, "raw_body": {}}}),
        json!({"stream": true, "messages": [], "fake": {"headers": headers, "raw_events": []}}),
        json!({"stream": false, "messages": [], "fake": {"headers": headers, "status": 500}}),
    ];
    for body in &scenarios {
        let res = chat(fake.addr(), body).await;
        assert_eq!(res.header("x-request-id"), Some("req_123"), "{body}");
        assert_eq!(
            res.header("x-ratelimit-remaining-requests"),
            Some("59"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn raw_fields_only_apply_to_their_kind_of_request() {
    let fake = FakeUpstream::start().await.unwrap();
    // A stream request with only `raw_body` gets the generated stream, and a
    // unary one with only `raw_events` the generated completion.
    let res = chat(
        fake.addr(),
        &json!({"stream": true, "messages": [], "fake": {"reply": "x", "raw_body": {"a": 1}}}),
    )
    .await;
    assert_eq!(streamed_content(&chunks_of(&res.sse_data())), "x");
    let res = chat(
        fake.addr(),
        &json!({"messages": [], "fake": {"reply": "y", "raw_events": ["[DONE]"]}}),
    )
    .await;
    assert_eq!(res.json()["choices"][0]["message"]["content"], "y");
}

#[tokio::test]
async fn requests_endpoint_lists_recorded_requests_without_authorization() {
    let fake = FakeUpstream::start().await.unwrap();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    chat(fake.addr(), &json!({"messages": []})).await;
    let res = request(
        fake.addr(),
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer sk-secret"), ("X-Custom", "v")],
        &body.to_string(),
    )
    .await;
    assert_eq!(res.status, 200);
    request(fake.addr(), "GET", "/v1/elsewhere?q=1", &[], "not json").await;

    let res = request(fake.addr(), "GET", "/_fake/requests", &[], "").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert!(!res.text().contains("sk-secret"), "{}", res.text());
    let listed = res.json();
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 3, "the inspection call is not recorded");
    assert_eq!(listed[1]["method"], "POST");
    assert_eq!(listed[1]["path"], "/v1/chat/completions");
    assert_eq!(listed[1]["body"], body);
    assert_eq!(listed[1]["headers"]["x-custom"], "v");
    assert_eq!(listed[1]["headers"]["content-type"], "application/json");
    assert!(listed[1]["headers"].get("authorization").is_none());
    assert_eq!(listed[2]["method"], "GET");
    assert_eq!(listed[2]["path"], "/v1/elsewhere");
    assert_eq!(listed[2]["body"], Value::Null);
    // In-process callers still see the key: only the endpoint hides it.
    assert_eq!(
        fake.requests()[1].header("authorization"),
        Some("Bearer sk-secret")
    );
}

#[tokio::test]
async fn requests_endpoint_delete_clears_the_recording() {
    let fake = FakeUpstream::start().await.unwrap();
    chat(fake.addr(), &json!({"messages": []})).await;
    let res = request(fake.addr(), "DELETE", "/_fake/requests", &[], "").await;
    assert_eq!(res.status, 204);
    assert!(fake.requests().is_empty());
    let res = request(fake.addr(), "GET", "/_fake/requests", &[], "").await;
    assert_eq!(res.json(), json!([]));

    chat(fake.addr(), &json!({"model": "after", "messages": []})).await;
    let res = request(fake.addr(), "GET", "/_fake/requests", &[], "").await;
    let listed = res.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["body"]["model"], "after");
    // Other methods are refused and leave no trace either.
    let res = request(fake.addr(), "POST", "/_fake/requests", &[], "{}").await;
    assert_eq!(res.status, 405);
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn repeated_headers_are_joined_in_the_listing() {
    let recorded = super::RecordedRequest {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![
            ("x-a".into(), "1".into()),
            ("authorization".into(), "Bearer k".into()),
            ("x-a".into(), "2".into()),
        ],
        body: json!({"k": 1}),
    };
    assert_eq!(
        super::inspect::to_json(&recorded),
        json!({"method": "POST", "path": "/v1/chat/completions",
               "headers": {"x-a": "1, 2"}, "body": {"k": 1}})
    );
}

#[tokio::test]
async fn a_prefill_is_continued_in_any_style_and_refused_when_it_is_not_how_the_reply_begins() {
    let fake = FakeUpstream::start().await.unwrap();
    let asking = |prefill: Value, extra: Value| {
        let mut body = json!({"stream": true, "messages": [{"role": "user", "content": "go"}, prefill],
            "fake": {"reply": "a b c d", "continue_prefill": true, "cut_after": 1}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (prefill, extra) in [
        (json!({"role": "assistant", "content": "a b "}), json!({})),
        (
            json!({"role": "assistant", "content": "a b ", "prefix": true}),
            json!({}),
        ),
        (
            json!({"role": "assistant", "content": [{"type": "text", "text": "a b "}]}),
            json!({"continue_final_message": true, "add_generation_prompt": false}),
        ),
    ] {
        let res = chat(fake.addr(), &asking(prefill.clone(), extra)).await;
        assert_eq!(res.status, 200, "{prefill}");
        let data = res.sse_data();
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{prefill}");
        // The rest only, and no cut: a continuation plays whole.
        assert_eq!(streamed_content(&chunks_of(&data)), "c d", "{prefill}");
    }
    let wrong = chat(
        fake.addr(),
        &asking(json!({"role": "assistant", "content": "b c"}), json!({})),
    )
    .await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.text().contains("not how the reply begins"));
}

#[tokio::test]
async fn reject_prefill_refuses_any_prefill_and_nothing_else() {
    let fake = FakeUpstream::start().await.unwrap();
    let body = |messages: Value| json!({"stream": true, "messages": messages, "fake": {"reply": "a b", "reject_prefill": true}});
    let user = json!({"role": "user", "content": "go"});
    let prefilled = chat(
        fake.addr(),
        &body(json!([user, {"role": "assistant", "content": "a "}])),
    )
    .await;
    assert_eq!(prefilled.status, 400);
    let plain = chat(fake.addr(), &body(json!([user]))).await;
    assert_eq!(plain.status, 200);
}

#[tokio::test]
async fn stall_after_holds_the_stream_open_until_the_client_goes_away() {
    let fake = FakeUpstream::start().await.unwrap();
    let mut client = Client::connect(fake.addr()).await;
    let body = json!({"stream": true, "messages": [],
        "fake": {"reply": "a b c", "stall_after": 1}});
    client
        .send("POST", "/v1/chat/completions", &[], &body.to_string())
        .await;
    let (status, _) = client.read_head().await;
    assert_eq!(status, 200);
    let first = client.read_chunk().await.expect("the first frame");
    assert!(String::from_utf8_lossy(&first).contains("\"a \""));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.read_chunk())
            .await
            .is_err(),
        "nothing follows"
    );
    drop(client);
    assert!(fake.wait_for_disconnects(1, WAIT).await);
}

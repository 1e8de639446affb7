//! Unary and streaming chat over the Unix socket against the fake upstream.

mod common;

use common::{Harness, UPSTREAM_KEY, collect, request, text_of};
use llm_sidecar::proto::v1 as pb;
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test]
async fn unary_chat_returns_the_answer_with_usage_and_provider() {
    let mut harness = Harness::start().await;
    let response = harness
        .client
        .complete(request(
            "hello there world",
            json!({"prompt_tokens": 11, "cached_tokens": 4}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.provider, "fake");
    assert_eq!(response.model, "fake-model");
    assert!(!response.id.is_empty());
    let choice = &response.choices[0];
    assert_eq!(choice.content.as_deref(), Some("hello there world"));
    assert_eq!(choice.finish_reason, "stop");
    let usage = response.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 11);
    assert_eq!(usage.cached_prompt_tokens, 4);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let sent = &harness.fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(sent.body["model"], "fake-model");
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "user", "content": "hello there world"})
    );
    assert!(sent.body.get("stream").is_none());
    harness.stop().await;
}

#[tokio::test]
async fn streaming_chat_forwards_every_chunk_and_ends_with_usage() {
    let mut harness = Harness::start().await;
    let mut stream = harness
        .client
        .stream_complete(request(
            "one two three four",
            json!({"comments": true, "crlf": true, "split_bytes": 7}),
        ))
        .await
        .unwrap()
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(text_of(&chunks), "one two three four");
    assert_eq!(chunks[0].choices[0].role, "assistant");
    assert!(chunks.iter().all(|chunk| chunk.provider == "fake"));
    let finish: Vec<&str> = chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .map(|choice| choice.finish_reason.as_str())
        .filter(|reason| !reason.is_empty())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, 4);

    let sent = &harness.fake.requests()[0];
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    harness.stop().await;
}

#[tokio::test]
async fn streamed_tool_call_deltas_reassemble_by_index() {
    let mut harness = Harness::start().await;
    let mut stream = harness
        .client
        .stream_complete(request("weather and time?", json!({"tool_calls": true})))
        .await
        .unwrap()
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none(), "{status:?}");
    let mut calls: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    for delta in chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .flat_map(|choice| &choice.tool_calls)
    {
        let call = calls.entry(delta.index).or_default();
        call.0.push_str(&delta.id);
        call.1.push_str(&delta.name);
        call.2.push_str(&delta.arguments);
    }
    assert_eq!(calls.len(), 2);
    let names: Vec<&str> = calls.values().map(|call| call.1.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    for (id, _, arguments) in calls.values() {
        assert!(!id.is_empty());
        serde_json::from_str::<serde_json::Value>(arguments)
            .expect("the arguments reassemble into JSON");
    }
    let last_reason = chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .map(|choice| choice.finish_reason.as_str())
        .rfind(|reason| !reason.is_empty());
    assert_eq!(last_reason, Some("tool_calls"));
    harness.stop().await;
}

#[tokio::test]
async fn request_fields_reach_the_upstream_and_metadata_does_not() {
    let mut harness = Harness::start().await;
    let mut chat = request("hi", json!({}));
    chat.temperature = Some(0.2);
    chat.max_tokens = Some(50);
    chat.seed = Some(3);
    chat.user = "end-user-7".into();
    chat.metadata.insert("team".into(), "search".into());
    chat.response_format = Some(pb::ResponseFormat {
        format: Some(pb::response_format::Format::JsonObject(
            pb::JsonObjectFormat {},
        )),
    });
    harness.client.complete(chat).await.unwrap();
    let body = &harness.fake.requests()[0].body;
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["seed"], 3);
    assert_eq!(body["user"], "end-user-7");
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert!(body.get("metadata").is_none());
    harness.stop().await;
}

#[tokio::test]
async fn many_calls_share_few_upstream_connections() {
    let mut harness = Harness::start().await;
    for _ in 0..10 {
        harness
            .client
            .complete(request("hi", json!({})))
            .await
            .unwrap();
        let mut stream = harness
            .client
            .stream_complete(request("a b", json!({})))
            .await
            .unwrap()
            .into_inner();
        let (_, status) = collect(&mut stream).await;
        assert!(status.is_none());
    }
    // Sequential calls reuse one pooled connection (give or take a race
    // between a drained stream and the next call).
    assert!(
        harness.fake.connections_accepted() <= 2,
        "{}",
        harness.fake.connections_accepted()
    );
    harness.stop().await;
}

#[tokio::test]
async fn providers_without_stream_options_are_not_sent_them() {
    let mut harness = Harness::start_with("stream_options = false").await;
    let mut stream = harness
        .client
        .stream_complete(request("a b", json!({})))
        .await
        .unwrap()
        .into_inner();
    let (chunks, status) = collect(&mut stream).await;
    assert!(status.is_none());
    assert_eq!(text_of(&chunks), "a b");
    assert!(
        harness.fake.requests()[0]
            .body
            .get("stream_options")
            .is_none()
    );
    harness.stop().await;
}

#[tokio::test]
async fn list_models_shows_the_routes() {
    let mut harness = Harness::start().await;
    let models = harness
        .client
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert!(models.iter().any(|model| model.model == "mock/*"
        && model.provider == "mock"
        && model.r#match == "pattern"));
    harness.stop().await;
}

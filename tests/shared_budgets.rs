//! Budgets held by the fleet (`[[budgets]]` with a `[shared]` store): two
//! sidecars in one process, each with its own configuration and fake
//! upstream, sharing a private redis-server, spend one budget together;
//! with the store away each goes on under its own count, or refuses when
//! the store fails closed.

mod common;

use common::redis::RedisServer;
use common::{ADMIN_TOKEN, Harness, Options, plain_http_client, request};
use serde_json::{Value, json};
use tonic::Code;

/// 100 prompt tokens and three words a call (103); each call reserves its
/// prompt's estimate plus `max_tokens` 50 (about 52) before it is sent.
const BUDGET: &str = "[[budgets]]\nname = \"search\"\ntag = \"team=search\"\n\
                      window = \"day\"\ntokens = 250\n";

async fn sidecar(redis: &RedisServer, shared: &str) -> Harness {
    // A generous round-trip bound: the store's own answers are tested.
    let tables = format!(
        "[shared]\nredis_url = \"{}\"\nexpected_pods = 2\ntimeout_ms = 2000\n{shared}\n{BUDGET}",
        redis.url()
    );
    Harness::start_options(Options {
        tables: &tables,
        ..Options::default()
    })
    .await
}

async fn call(harness: &mut Harness) -> Result<tonic::metadata::MetadataMap, tonic::Status> {
    let mut ask = request(
        "hi",
        json!({"prompt_tokens": 100, "reply": "one two three"}),
    );
    ask.max_tokens = Some(50);
    ask.metadata.insert("team".into(), "search".into());
    let mut ask = tonic::Request::new(ask);
    ask.metadata_mut()
        .insert("x-llm-max-attempts", "1".parse().unwrap());
    harness
        .client
        .complete(ask)
        .await
        .map(|answer| answer.metadata().clone())
}

async fn budget_status(harness: &Harness) -> Value {
    let body: Value = plain_http_client()
        .get(format!("{}/admin/budgets", harness.admin_base()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["budgets"][0].clone()
}

/// Settling runs in the background: waits until nothing is held.
async fn settled(harness: &Harness) -> Value {
    for _ in 0..100 {
        let status = budget_status(harness).await;
        if status["tokens_reserved"] == 0 {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "the holds were never settled: {}",
        budget_status(harness).await
    );
}

#[tokio::test]
async fn two_sidecars_spend_one_budget_together() {
    let redis = RedisServer::start();
    let mut first = sidecar(&redis, "").await;
    let mut second = sidecar(&redis, "").await;

    call(&mut first).await.expect("103 + 52 of 250");
    settled(&first).await;
    let left = call(&mut second)
        .await
        .expect("206 + 52 of 250 would not fit; 103 + 52 does");
    // What is left is the fleet's: 250 less 103 spent and this call's hold.
    let left: u64 = left
        .get("x-llm-budget-remaining-tokens")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((90..100).contains(&left), "{left}");
    settled(&second).await;

    // 206 spent between them: the next call on either is refused.
    for harness in [&mut first, &mut second] {
        let status = call(harness).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("206 of its 250 tokens"),
            "{status:?}"
        );
    }
    for harness in [&first, &second] {
        let status = budget_status(harness).await;
        assert_eq!(status["source"], "shared", "{status}");
        assert_eq!(status["tokens_spent"], 206, "{status}");
    }
    assert_eq!(
        first.fake.requests().len() + second.fake.requests().len(),
        2
    );
}

#[tokio::test]
async fn with_the_store_away_each_sidecar_counts_alone_or_refuses() {
    let mut redis = RedisServer::start();
    let mut local = sidecar(&redis, "on_unavailable = \"local\"").await;
    let mut closed = sidecar(&redis, "on_unavailable = \"closed\"").await;
    call(&mut local).await.unwrap();
    settled(&local).await;
    redis.stop();

    // Its own count knows nothing of the fleet's 103: two calls fit.
    call(&mut local).await.expect("the pod's own count");
    call(&mut local).await.expect("the pod's own count");
    let status = budget_status(&local).await;
    assert_eq!(status["source"], "local", "{status}");
    assert_eq!(status["tokens_spent"], 206, "{status}");

    let status = call(&mut closed).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shared limits store"),
        "{status:?}"
    );
    assert!(closed.fake.requests().is_empty());

    // Back: the fleet's count (103) decides again.
    redis.restart();
    let mut answered = false;
    for _ in 0..50 {
        if call(&mut closed).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(answered, "the shared budget resumes when the store returns");
    let status = settled(&closed).await;
    assert_eq!(status["source"], "shared", "{status}");
}

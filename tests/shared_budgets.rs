//! Budgets held by the fleet (`[[budgets]]` with a `[shared]` store): two
//! sidecars in one process, each with its own configuration and fake
//! upstream, sharing a private redis-server, spend one budget together;
//! with the store away each goes on under its own count, or refuses when
//! the store fails closed.

mod common;

use common::redis::RedisServer;
use common::{Harness, Options};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

/// 100 prompt tokens and three words a call (103); each call reserves its
/// prompt's estimate plus `max_tokens` 50 (about 52) before it is sent.
const BUDGET: &str = "[[budgets]]\nname = \"search\"\ntag = \"team=search\"\n\
                      window = \"day\"\ntokens = 250\n";

async fn sidecar(redis: &RedisServer, shared: &str) -> Harness {
    // A generous round-trip bound: the store's own answers are tested.
    sidecar_at(&redis.url(), &format!("timeout_ms = 2000\n{shared}")).await
}

/// A sidecar with the budget, sharing the store at `url`, with `shared`
/// in its `[shared]` table.
async fn sidecar_at(url: &str, shared: &str) -> Harness {
    let tables = format!("[shared]\nredis_url = \"{url}\"\nexpected_pods = 2\n{shared}\n{BUDGET}");
    Harness::start_options(Options {
        tables: &tables,
        ..Options::default()
    })
    .await
}

async fn call(harness: &mut Harness) -> Result<tonic::metadata::MetadataMap, tonic::Status> {
    harness
        .client
        .complete(common::search_team_call())
        .await
        .map(|answer| answer.metadata().clone())
}

async fn budget_status(harness: &Harness) -> Value {
    common::first_budget(&harness.admin_base()).await
}

/// The budget's status once it is read from the store again (within 5 s):
/// the store answers, and the sidecar's probe has found it.
async fn from_the_store(harness: &Harness) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        last = budget_status(harness).await;
        if last["source"] == "shared" {
            return last;
        }
    }
    panic!("never read from the store again: {last}");
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

/// The budget's status once its spend reaches `tokens` with nothing held
/// (within 2 s: settling and handing over run in the background).
async fn spent_reaches(harness: &Harness, tokens: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = settled(harness).await;
        if last["tokens_spent"] == tokens {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the spend never reached {tokens}: {last}");
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
    // Its gauge shows the fleet's use as the store answered that call (the
    // other pod's 103), with this call's own settle applied (its hold
    // gone, its 103 spent): 206, not this pod's own 103.
    let metrics = reqwest::get(format!("{}/metrics", second.admin_base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let used: u64 = metrics
        .lines()
        .find(|line| line.starts_with("llm_sidecar_budget_tokens_used"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no budget gauge in:\n{metrics}"));
    assert_eq!(used, 206);

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

    // Alone, the pod may spend its share (250 ÷ 2 pods = 125 tokens) of
    // what the fleet had left (250 - 103): one call (103 + 52 held), not
    // two; so an outage cannot let every pod spend the budget again.
    call(&mut local).await.expect("within the pod's share");
    let status = budget_status(&local).await;
    assert_eq!(status["source"], "local", "{status}");
    assert_eq!(status["tokens_spent"], 103, "{status}");
    let refused = call(&mut local).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("the shared store is away")
            && refused.message().contains("125 tokens"),
        "{refused:?}"
    );
    // Come back when the store is tried again, not when the day ends.
    let retry = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a Retry-After");
    assert!(retry <= std::time::Duration::from_secs(2), "{retry:?}");

    let status = call(&mut closed).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shared limits store"),
        "{status:?}"
    );
    common::store_refusal::assert_grpc(&status);
    let refused = common::http_client()
        .post(format!("{}/chat/completions", closed.http_base()))
        .json(&json!({
            "model": "fake-model", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"team": "search"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    common::store_refusal::assert_http(refused).await;
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

/// What a pod spent while it counted alone is added to the fleet's count
/// once the store answers it again: the other pod then sees it.
#[tokio::test]
async fn what_a_pod_spent_alone_reaches_the_store_when_it_returns() {
    let mut redis = RedisServer::start();
    let mut alone = sidecar(&redis, "").await;
    let mut other = sidecar(&redis, "").await;
    redis.stop();
    call(&mut alone).await.expect("counted by the pod alone");
    assert_eq!(settled(&alone).await["tokens_spent"], 103);

    // Back (empty: this test's Redis keeps nothing over a restart). The
    // pod's next call, answered by the store, hands its 103 over.
    redis.restart();
    from_the_store(&alone).await;
    call(&mut alone).await.expect("103 + 52 of 250");
    let fleet = spent_reaches(&other, 206).await;
    assert_eq!(fleet["source"], "shared", "{fleet}");
    let status = call(&mut other).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Handed over once: more calls that reach the store add nothing more.
    let _ = call(&mut alone).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(settled(&other).await["tokens_spent"], 206);
}

/// A reservation whose answer was lost (the store paused past the round
/// trip's bound) is undone: the call is counted by the pod alone, never
/// held in the store until the window ends.
#[tokio::test]
async fn a_reservation_whose_answer_was_lost_is_undone() {
    let redis = RedisServer::start();
    let mut harness = sidecar_at(&redis.url(), "timeout_ms = 50").await;
    call(&mut harness).await.unwrap();
    let before = settled(&harness).await;
    assert_eq!(before["source"], "shared", "{before}");
    redis.command(&["CLIENT", "PAUSE", "400", "ALL"]);
    call(&mut harness).await.expect("counted by the pod alone");
    // Once the store answers again: nothing held, nothing more spent there.
    let last = from_the_store(&harness).await;
    assert_eq!(last["tokens_reserved"], 0, "{last}");
    assert_eq!(last["tokens_spent"], before["tokens_spent"], "{last}");
}

/// A hold nobody settles (its pod killed mid-call) is released when it
/// expires, the next time the window is read or reserved on.
#[tokio::test]
async fn a_hold_nobody_settles_expires() {
    use llm_sidecar::shared::{Reserved, SharedStore, SharedWindow};
    let redis = RedisServer::start();
    let config = llm_sidecar::config::from_toml(
        &format!(
            "[server]\nuds = \"/tmp/unused.sock\"\n[shared]\nredis_url = \"{}\"\nexpected_pods = 1\n\
             timeout_ms = 2000\n",
            redis.url()
        ),
        "test.toml",
    )
    .unwrap();
    let store = SharedStore::for_config(&config, &|_: &str| None)
        .unwrap()
        .expect("a store");
    let window = SharedWindow {
        key: store.budget_key("b", 0),
        tokens_limit: Some(100),
        usd_limit_micros: None,
        start: 0,
        end: 4_000_000_000,
    };
    let windows = [window.clone()];
    let short = std::time::Duration::from_millis(200);
    // A window that does not hold the store's now (yesterday's, by a pod
    // whose clock is a day behind) is turned back, and nothing is held.
    let yesterday = SharedWindow {
        start: 0,
        end: store.now() - 86_400,
        ..window.clone()
    };
    let turned_back = store
        .reserve_budgets(std::slice::from_ref(&yesterday), "late", short, 60, 0)
        .await
        .unwrap();
    assert_eq!(turned_back, Reserved::WindowsMoved);
    assert_eq!(
        store.read_budgets(&[yesterday]).await.unwrap(),
        None,
        "a read of a window that is over is turned back too"
    );
    let held = store
        .reserve_budgets(&windows, "killed", short, 60, 0)
        .await
        .unwrap();
    assert_eq!(held, Reserved::Held(vec![(60, 0)]));
    let refused = store
        .reserve_budgets(&windows, "next", short, 60, 0)
        .await
        .unwrap();
    assert!(
        matches!(refused, Reserved::Refused { used: 60, .. }),
        "{refused:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let read = store
        .read_budgets(std::slice::from_ref(&window))
        .await
        .unwrap();
    assert_eq!(
        read,
        Some(vec![[0, 0, 0, 0]]),
        "the expired hold is released"
    );
    let held = store
        .reserve_budgets(&windows, "next", short, 60, 0)
        .await
        .unwrap();
    assert_eq!(held, Reserved::Held(vec![(60, 0)]));
    // Settled: its hold released and its spend counted, once, however
    // often the settle is sent (its answer lost, it is sent again).
    store.settle_budgets(&windows, "next", 40, 0).await.unwrap();
    store.settle_budgets(&windows, "next", 40, 0).await.unwrap();
    let read = store.read_budgets(&[window]).await.unwrap();
    assert_eq!(read, Some(vec![[40, 0, 0, 0]]));
}

/// A command on the store at `port`, authenticated with `password`.
fn command_as(port: u16, password: &str, args: &[&str]) {
    let client = redis::Client::open(format!("redis://:{password}@127.0.0.1:{port}")).unwrap();
    let mut connection = client.get_connection().unwrap();
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query::<redis::Value>(&mut connection).unwrap();
}

/// A store whose password changed under the sidecar's connection, then
/// changed back, is used again: a failed round trip drops the connection
/// (whose own reconnect failed on the password), and the next probe opens
/// a fresh one.
#[tokio::test]
async fn a_store_whose_password_changed_and_came_back_is_used_again() {
    let redis = RedisServer::start_with_password(Some("pw"));
    let mut harness = sidecar_at(&redis.url(), "timeout_ms = 50").await;
    call(&mut harness).await.unwrap();
    assert_eq!(settled(&harness).await["source"], "shared");
    command_as(redis.port, "pw", &["CONFIG", "SET", "requirepass", "other"]);
    command_as(redis.port, "other", &["CLIENT", "KILL", "TYPE", "normal"]);
    call(&mut harness).await.expect("counted by the pod alone");
    assert_eq!(budget_status(&harness).await["source"], "local");
    command_as(redis.port, "other", &["CONFIG", "SET", "requirepass", "pw"]);
    from_the_store(&harness).await;
}

/// A store that refused the sidecar's password (set only later, or
/// changed) is used again once it takes it: a failed round trip drops the
/// connection, and the next probe opens a fresh one.
#[tokio::test]
async fn a_store_that_refused_the_password_is_used_once_it_takes_it() {
    let redis = RedisServer::start();
    let url = format!("redis://:late-pw@127.0.0.1:{}", redis.port);
    let mut harness = sidecar_at(&url, "timeout_ms = 50").await;
    call(&mut harness).await.expect("counted by the pod alone");
    assert_eq!(budget_status(&harness).await["source"], "local");
    redis.command(&["CONFIG", "SET", "requirepass", "late-pw"]);
    from_the_store(&harness).await;
    call(&mut harness).await.unwrap();
    // This call, and the one the pod counted alone, handed over.
    spent_reaches(&harness, 206).await;
}

//! Budgets through the whole sidecar: the call that would cross a tag's
//! budget is refused on both edges as the OpenAI SDKs and gRPC clients
//! expect (429 / RESOURCE_EXHAUSTED, `BUDGET_EXCEEDED`, the window's reset
//! as Retry-After, `x-should-retry: false`), never reaching the upstream;
//! a cut stream is settled to its recorded usage; what is left rides on
//! each answer; and a restart counts on from what the ledger holds.

mod common;

use common::{ADMIN_TOKEN, CALLER_TOKEN, UPSTREAM_KEY, http_client};
use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::config::from_toml;
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::server::{Running, start};
use serde_json::{Value, json};
use std::path::Path;

/// 100 prompt tokens and three words: 103 tokens a call. A call reserves
/// its prompt's estimate plus `max_tokens` 50: the third call of a team
/// would hold 206 + 52 of 250.
const BUDGET: &str = r#"
[[budgets]]
name = "search-daily"
tag = "team=search"
window = "day"
tokens = 250
"#;

fn scenario() -> Value {
    json!({"prompt_tokens": 100, "reply": "one two three"})
}

async fn sidecar(fake: &FakeUpstream, dir: &Path) -> Running {
    let toml = format!(
        "default_provider = \"fake\"\n[server]\nuds = \"{socket}\"\nhttp = \"127.0.0.1:0\"\n\
         admin = \"127.0.0.1:0\"\n[providers.fake]\nbase_url = \"{base}\"\n\
         api_key_env = \"FAKE_KEY\"\n[ledger]\npath = \"{ledger}\"\n{BUDGET}",
        socket = dir.join("sidecar.sock").display(),
        base = fake.base_url(),
        ledger = dir.join("ledger.sqlite3").display(),
    );
    let config = from_toml(&toml, "test.toml").expect("the test config is valid");
    let env = |name: &str| match name {
        "FAKE_KEY" => Some(UPSTREAM_KEY.to_owned()),
        "LLM_SIDECAR_TOKEN" => Some(CALLER_TOKEN.to_owned()),
        "LLM_SIDECAR_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        _ => None,
    };
    start(&config, &env).await.expect("the sidecar starts")
}

async fn facade_call(running: &Running, team: &str, stream: bool) -> reqwest::Response {
    let body = json!({
        "model": "fake-model", "max_tokens": 50, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"team": team},
        "fake": scenario(),
    });
    http_client()
        .post(format!(
            "http://{}/v1/chat/completions",
            running.http.unwrap()
        ))
        .json(&body)
        .send()
        .await
        .expect("the facade answers")
}

async fn budget_status(running: &Running) -> Value {
    common::first_budget(&format!("http://{}", running.admin.unwrap())).await
}

/// A second budget over the same calls, added by a reload.
const ADDED: &str = "[[budgets]]\nname = \"search-hourly\"\ntag = \"team=search\"\n\
                     window = \"hour\"\ntokens = 10000\n";

/// Budget `name`'s state, as `/admin/budgets` gives it.
async fn budget_named(running: &Running, name: &str) -> Value {
    let admin = format!("http://{}", running.admin.unwrap());
    let body = common::admin_json(&admin, "/admin/budgets").await;
    body["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|budget| budget["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no budget {name}: {body}"))
}

#[tokio::test]
async fn the_call_that_would_cross_a_tag_budget_is_refused_on_both_edges() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = sidecar(&fake, dir.path()).await;

    let first = facade_call(&running, "search", false).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-llm-budget"], "search-daily");
    // 250 less this call's reservation (its prompt's estimate and 50).
    let left: u64 = first.headers()["x-llm-budget-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((190..200).contains(&left), "{left} tokens left");
    assert_eq!(facade_call(&running, "search", false).await.status(), 200);
    let status = budget_status(&running).await;
    assert_eq!(status["tokens_spent"], 206, "{status}");
    assert_eq!(status["tokens_reserved"], 0, "{status}");
    // The same figures as gauges, to alert on before a budget refuses.
    let metrics = common::plain_http_client()
        .get(format!("http://{}/metrics", running.admin.unwrap()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = |name: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with(name) && line.contains("llm_sidecar_budget=\"search-daily\"")
            })
            .unwrap_or_else(|| panic!("no {name} for the budget in:\n{metrics}"))
            .to_owned()
    };
    let used = series("llm_sidecar_budget_tokens_used");
    assert!(used.contains("llm_sidecar_budget_window=\"day\""), "{used}");
    assert!(used.ends_with(" 206"), "{used}");
    assert!(series("llm_sidecar_budget_tokens_limit").ends_with(" 250"));

    let upstream_calls = fake.requests().len();
    let refused = facade_call(&running, "search", false).await;
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(headers["x-llm-error-reason"], "BUDGET_EXCEEDED");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("search-daily"), "{message}");
    assert!(message.contains("206 of its 250 tokens"), "{message}");
    assert_eq!(fake.requests().len(), upstream_calls, "never sent upstream");

    // gRPC: RESOURCE_EXHAUSTED with the same words and advice.
    let mut client = chat_client(
        connect_uds(&dir.path().join("sidecar.sock")).await.unwrap(),
        1 << 20,
    );
    let mut request = common::request("hi", scenario());
    request.max_tokens = Some(50);
    request.metadata.insert("team".into(), "search".into());
    let status = client.complete(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("search-daily"), "{status:?}");
    assert_eq!(status.metadata().get("x-should-retry").unwrap(), "false");

    // Another team's calls are not counted.
    request.metadata.insert("team".into(), "ads".into());
    let answer = client.complete(request).await.unwrap();
    assert!(answer.metadata().get("x-llm-budget").is_none());
    let answer: pb::ChatResponse = answer.into_inner();
    assert_eq!(answer.choices[0].content.as_deref(), Some("one two three"));
    assert_eq!(facade_call(&running, "ads", false).await.status(), 200);

    // Each refusal left its ledger row, its tokens none.
    let rows = running.observer.ledger().unwrap();
    rows.flush().await;
    let rows = rows
        .recent(llm_sidecar::ledger::RecentQuery::default())
        .await
        .unwrap();
    let refusals = rows
        .iter()
        .filter(|row| row.outcome == "error:budget_exceeded")
        .count();
    assert_eq!(refusals, 2);
    running.shutdown().await;
}

#[tokio::test]
async fn a_cut_stream_is_settled_to_its_recorded_usage_and_a_restart_counts_on() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = sidecar(&fake, dir.path()).await;

    // A stream that ends without usage after two chunks: the ledger
    // estimates its usage, and the budget counts the same.
    let body = json!({
        "model": "fake-model", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"team": "search"},
        "fake": {"prompt_tokens": 100, "reply": "one two three four", "chunks": 4,
                 "cut_after": 2, "no_usage": true},
    });
    let response = http_client()
        .post(format!(
            "http://{}/v1/chat/completions",
            running.http.unwrap()
        ))
        .header("x-llm-max-attempts", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("\"code\":\"upstream_stream_incomplete\""),
        "the stream was cut: {text}"
    );
    // A whole one besides.
    assert_eq!(facade_call(&running, "search", true).await.status(), 200);

    let ledger = running.observer.ledger().unwrap();
    ledger.flush().await;
    let rows = ledger
        .recent(llm_sidecar::ledger::RecentQuery::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let recorded: u64 = rows
        .iter()
        .map(|row| u64::from(row.total_tokens.expect("tokens recorded, estimated or not")))
        .sum();
    assert!(rows.iter().any(|row| row.usage_estimated), "{rows:?}");
    let status = budget_status(&running).await;
    assert_eq!(status["tokens_spent"], recorded, "{status}");
    assert_eq!(status["tokens_reserved"], 0, "{status}");
    running.shutdown().await;

    // A new process on the same ledger starts the day from its rows.
    let running = sidecar(&fake, dir.path()).await;
    let status = budget_status(&running).await;
    assert_eq!(status["tokens_spent"], recorded, "{status}");
    running.shutdown().await;
}

/// A caller that names itself nothing is its Unix peer's uid
/// (`uid:<uid>`), as in the ledger's usage by caller; its spend is read
/// back by that uid after a restart.
#[tokio::test]
async fn a_nameless_caller_on_the_socket_is_budgeted_by_its_uid() {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "default_provider = \"fake\"\n[server]\nuds = \"{socket}\"\nadmin = \"127.0.0.1:0\"\n\
         [providers.fake]\nbase_url = \"{base}\"\napi_key_env = \"FAKE_KEY\"\n\
         [ledger]\npath = \"{ledger}\"\n\
         [[budgets]]\ncaller = \"uid:{uid}\"\nwindow = \"hour\"\ntokens = 150\n",
        socket = dir.path().join("sidecar.sock").display(),
        base = fake.base_url(),
        ledger = dir.path().join("ledger.sqlite3").display(),
    );
    let config = from_toml(&toml, "test.toml").unwrap();
    let env = |name: &str| match name {
        "FAKE_KEY" => Some(UPSTREAM_KEY.to_owned()),
        "LLM_SIDECAR_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        _ => None,
    };
    let ask = || {
        let mut request = common::request("hi", scenario());
        request.max_tokens = Some(50);
        request
    };
    for restarted in [false, true] {
        let running = start(&config, &env).await.unwrap();
        let mut client = chat_client(
            connect_uds(&dir.path().join("sidecar.sock")).await.unwrap(),
            1 << 20,
        );
        if !restarted {
            client.complete(ask()).await.expect("103 + 52 of 150");
        }
        let status = client.complete(ask()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains(&format!("uid:{uid}")),
            "{status:?}"
        );
        assert!(status.message().contains("103 of its 150"), "{status:?}");
        running.shutdown().await;
    }
}

/// A reload keeps what a budget has counted when its name, scope and
/// window stay (here its limit is raised).
#[tokio::test]
async fn a_reload_keeps_the_spend_counted_so_far() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = sidecar(&fake, dir.path()).await;
    assert_eq!(facade_call(&running, "search", false).await.status(), 200);
    assert_eq!(budget_status(&running).await["tokens_spent"], 103);

    let toml = format!(
        "default_provider = \"fake\"\n[server]\nuds = \"{socket}\"\nhttp = \"127.0.0.1:0\"\n\
         admin = \"127.0.0.1:0\"\n[providers.fake]\nbase_url = \"{base}\"\n\
         api_key_env = \"FAKE_KEY\"\n[ledger]\npath = \"{ledger}\"\n\
         {raised}",
        socket = dir.path().join("sidecar.sock").display(),
        base = fake.base_url(),
        ledger = dir.path().join("ledger.sqlite3").display(),
        raised = BUDGET.replace("tokens = 250", "tokens = 500") + ADDED,
    );
    let config = from_toml(&toml, "test.toml").unwrap();
    let env = |name: &str| match name {
        "FAKE_KEY" => Some(UPSTREAM_KEY.to_owned()),
        "LLM_SIDECAR_TOKEN" => Some(CALLER_TOKEN.to_owned()),
        "LLM_SIDECAR_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        _ => None,
    };
    running.reload(&config, &env).expect("the reload is taken");
    let status = budget_status(&running).await;
    assert_eq!(status["tokens_limit"], 500, "{status}");
    assert_eq!(
        status["tokens_spent"], 103,
        "kept over the reload: {status}"
    );
    // The budget the reload added counts this hour's call from before it,
    // read back from the ledger in the background.
    let mut added = Value::Null;
    for _ in 0..100 {
        added = budget_named(&running, "search-hourly").await;
        if added["tokens_spent"] == 103 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(added["tokens_spent"], 103, "{added}");
    // Three more fit under the raised limit (309 + 52 <= 500 for the last).
    for _ in 0..3 {
        assert_eq!(facade_call(&running, "search", false).await.status(), 200);
    }
    assert_eq!(budget_status(&running).await["tokens_spent"], 412);
    assert_eq!(
        budget_named(&running, "search-hourly").await["tokens_spent"],
        412,
        "counted once each, the call before the reload included"
    );
    running.shutdown().await;
}

/// A `max_tokens` past any whole number (which an upstream may read as no
/// cap at all) is held as the largest cap: refused as more than the whole
/// budget, never sent with only the prompt's estimate held.
#[tokio::test]
async fn a_max_tokens_past_any_whole_number_is_held_as_no_cap() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = sidecar(&fake, dir.path()).await;
    for cap in [json!(1e30), json!(99_999_999_999_999_999_999_f64)] {
        let refused = http_client()
            .post(format!(
                "http://{}/v1/chat/completions",
                running.http.unwrap()
            ))
            .json(&json!({
                "model": "fake-model", "max_tokens": cap,
                "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"team": "search"},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 429, "max_tokens {cap}");
        let body: Value = refused.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("lower max_tokens"), "{message}");
    }
    assert!(fake.requests().is_empty(), "never sent upstream");
    running.shutdown().await;
}

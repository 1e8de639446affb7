//! The fleet's budget windows follow the store's clock, not a pod's: a
//! sidecar whose clock runs 26 hours ahead (the real binary under
//! libfaketime) and one on the true clock share a private redis-server
//! and spend one daily budget together, in the day Redis says it is.

mod common;

use common::process::{Sidecar, free_port};
use common::redis::RedisServer;
use common::{ADMIN_TOKEN, Harness, Options, UPSTREAM_KEY};
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::proto::v1::chat_service_client::ChatServiceClient;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// 100 prompt tokens and three words a call (103); each call reserves its
/// prompt's estimate plus `max_tokens` 50 (about 52) before it is sent.
const BUDGET: &str = "[[budgets]]\nname = \"search\"\ntag = \"team=search\"\n\
                      window = \"day\"\ntokens = 250\n";

/// How far ahead the skewed sidecar's clock runs: into the next day, and
/// two hours further, so neither its day nor its hour is Redis's.
const SKEW: &str = "+26h";

/// Debian's libfaketime (package `faketime`), which moves the wall clock
/// of the process it is preloaded into.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|arch| arch.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists());
    found.expect("libfaketime is installed (scripts/install-test-servers installs `faketime`)")
}

/// The real binary, its wall clock 26 hours ahead (timers run on the
/// monotonic clock, left alone), in front of the upstream at `base`, with
/// `tables` in its configuration.
struct Skewed {
    sidecar: Sidecar,
    dir: tempfile::TempDir,
    admin_port: u16,
}

impl Skewed {
    fn start(base: &str, tables: &str) -> Skewed {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("skewed.sock");
        let admin_port = free_port();
        let config = dir.path().join("sidecar.toml");
        std::fs::write(
            &config,
            format!(
                "default_provider = \"fake\"\n[server]\nuds = \"{socket}\"\ntcp = \"\"\nhttp = \"\"\n\
                 admin = \"127.0.0.1:{admin_port}\"\n[providers.fake]\nbase_url = \"{base}\"\n\
                 api_key_env = \"FAKE_KEY\"\n[ledger]\npath = \"{ledger}\"\n{tables}",
                socket = socket.display(),
                ledger = dir.path().join("ledger.sqlite3").display(),
            ),
        )
        .unwrap();
        let preload = libfaketime();
        let sidecar = Sidecar::serve_env(
            &["--config", config.to_str().unwrap()],
            Some("warn"),
            &[
                ("LD_PRELOAD", preload.to_str().unwrap()),
                ("FAKETIME", SKEW),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ("FAKE_KEY", UPSTREAM_KEY),
                ("LLM_SIDECAR_ADMIN_TOKEN", ADMIN_TOKEN),
            ],
            &socket,
            &dir.path().join("skewed.log"),
        );
        sidecar.wait_for_port(admin_port);
        Skewed {
            sidecar,
            dir,
            admin_port,
        }
    }

    async fn client(&self) -> ChatServiceClient<Channel> {
        let socket = self.dir.path().join("skewed.sock");
        chat_client(connect_uds(&socket).await.unwrap(), 1 << 20)
    }

    fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn tables(redis: &RedisServer) -> String {
    tables_for(redis, 2)
}

fn tables_for(redis: &RedisServer, pods: u32) -> String {
    format!(
        "[shared]\nredis_url = \"{}\"\nexpected_pods = {pods}\ntimeout_ms = 2000\n{BUDGET}",
        redis.url()
    )
}

#[tokio::test]
async fn a_pod_whose_clock_is_a_day_ahead_counts_in_the_stores_day() {
    let redis = RedisServer::start();
    let mut on_time = Harness::start_options(Options {
        tables: &tables(&redis),
        ..Options::default()
    })
    .await;

    let skewed = Skewed::start(&on_time.fake.base_url(), &tables(&redis));
    let admin_port = skewed.admin_port;
    let mut skewed_client = skewed.client().await;

    // The skew took: the skewed pod's ledger dates its call a day ahead.
    // Its first call is also the one that learns Redis's clock.
    skewed_client
        .complete(common::search_team_call())
        .await
        .unwrap();
    on_time
        .client
        .complete(common::search_team_call())
        .await
        .unwrap();

    // 206 of 250 spent, by the two pods together: the next call (about 52
    // more) crosses the budget, whichever pod sends it. Counted in the
    // skewed pod's own day, its call would pass.
    let refused = skewed_client
        .complete(common::search_team_call())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("206 of its 250 tokens"),
        "{refused:?}"
    );
    // Retry when Redis's day ends, not when the skewed pod's does (two
    // hours apart).
    let now = unix_now();
    let redis_day_ends_in = 86_400 - now.rem_euclid(86_400);
    let retry_after = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("the refusal says when to retry")
        .as_secs();
    let retry_after = i64::try_from(retry_after).unwrap();
    assert!(
        (retry_after - redis_day_ends_in).abs() <= 5,
        "retry after {retry_after} s; Redis's day ends in {redis_day_ends_in} s"
    );
    assert_eq!(
        on_time
            .client
            .complete(common::search_team_call())
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );

    // Both admin views show Redis's day, and the fleet's spend in it.
    let day_start = now - now.rem_euclid(86_400);
    for admin in [
        on_time.admin_base(),
        format!("http://127.0.0.1:{admin_port}"),
    ] {
        let budget = common::first_budget(&admin).await;
        assert_eq!(budget["source"], "shared", "{budget}");
        assert_eq!(budget["window_start"], day_start, "{budget}");
        assert_eq!(budget["tokens_spent"], 206, "{budget}");
    }

    // The skewed pod's clock really was ahead: its own ledger dates its
    // call over a day on (the skew is not a no-op that lets this pass).
    let rows = common::admin_json(&skewed.admin(), "/admin/requests").await;
    let started_ms = rows["requests"][0]["started_at_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("a row: {rows}"));
    let ahead_s = started_ms / 1000 - now;
    assert!(
        (25 * 3600..27 * 3600).contains(&ahead_s),
        "the skewed pod dates its calls {ahead_s} s ahead"
    );
    drop(skewed);
}

/// What a pod whose clock runs a day ahead spent alone while the store was
/// away is handed over into the day Redis is in, and its gauge shows the
/// fleet's figure.
#[tokio::test]
async fn what_a_skewed_pod_spent_alone_reaches_the_stores_day() {
    let mut redis = RedisServer::start();
    let fake = fake_upstream::FakeUpstream::start().await.unwrap();
    let skewed = Skewed::start(&fake.base_url(), &tables_for(&redis, 1));
    let mut client = skewed.client().await;
    client.complete(common::search_team_call()).await.unwrap();
    redis.stop();
    client
        .complete(common::search_team_call())
        .await
        .unwrap_or_else(|status| panic!("counted alone: {status:?}\n{}", skewed.sidecar.log()));

    // Back, empty (no persistence here): the next call hands the 103 spent
    // alone over with its own 103.
    redis.restart();
    let mut budget = serde_json::Value::Null;
    for _ in 0..100 {
        budget = common::first_budget(&skewed.admin()).await;
        if budget["source"] == "shared" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    client.complete(common::search_team_call()).await.unwrap();
    for _ in 0..100 {
        budget = common::first_budget(&skewed.admin()).await;
        if budget["tokens_spent"] == 206 && budget["tokens_reserved"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(budget["source"], "shared", "{budget}");
    assert_eq!(budget["tokens_spent"], 206, "both calls: {budget}");
    let now = unix_now();
    assert_eq!(budget["window_start"], now - now.rem_euclid(86_400));

    let metrics = reqwest::get(format!("{}/metrics", skewed.admin()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = metrics
        .lines()
        .find(|line| line.starts_with("llm_sidecar_budget_tokens_used"))
        .unwrap_or_else(|| panic!("no gauge in:\n{metrics}"));
    assert!(gauge.ends_with(" 206"), "{gauge}");
}

//! The `[shared]` store over TLS (`rediss://`): a private redis-server
//! speaking TLS only, its certificate from a CA made in the test. The
//! fleet's limit and budget hold through it with the CA given as
//! `ca_file` and an ACL user's password in the URL; a certificate from
//! another CA, a missing client certificate and a wrong password are each
//! refused, said in the log, never with the password; TLS files that
//! cannot be used stop the start naming their key.

mod common;

use common::redis::{RedisOptions, RedisServer, RedisTls};
use common::tls::Authority;
use common::{Harness, Options, logs, request};
use serde_json::json;
use std::path::Path;
use tonic::Code;
use tonic_types::StatusExt;

const USER: &str = "sidecar";
const PASSWORD: &str = "acl-password-over-tls-0123456789";

/// 100 prompt tokens and three words a call (103 tokens).
const BUDGET: &str = "[[budgets]]\nname = \"search\"\ntag = \"team=search\"\n\
                      window = \"day\"\ntokens = 250\n";

/// A TLS-only server whose certificate `signer` issued, with the ACL user.
fn tls_server(signer: &Authority, client_ca: Option<&str>) -> RedisServer {
    RedisServer::start_options(RedisOptions {
        user: Some((USER.to_owned(), PASSWORD.to_owned())),
        tls: Some(RedisTls {
            server: signer.server(),
            server_ca: signer.pem.clone(),
            client_ca: client_ca.map(|name| {
                let authority = Authority::new(name);
                let own = authority.client("the test's own");
                (authority, own)
            }),
        }),
        ..RedisOptions::default()
    })
}

/// A sidecar at `url` with `shared` in its `[shared]` table, at most 3
/// requests a minute on its provider (no lease: exact) and the budget.
async fn sidecar(url: &str, shared: &str) -> Harness {
    let tables = format!(
        "[shared]\nredis_url = \"{url}\"\nexpected_pods = 1\ntimeout_ms = 2000\n{shared}\n{BUDGET}"
    );
    Harness::start_options(Options {
        provider_toml: "requests_per_minute = 3\nmax_queue_wait_ms = 10",
        tables: &tables,
        ..Options::default()
    })
    .await
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// One unary call, tagged for the budget or not.
async fn call(harness: &mut Harness, team: Option<&str>) -> Result<(), tonic::Status> {
    let mut ask = request(
        "hi",
        json!({"prompt_tokens": 100, "reply": "one two three"}),
    );
    ask.max_tokens = Some(50);
    if let Some(team) = team {
        ask.metadata.insert("team".into(), team.into());
    }
    let mut ask = tonic::Request::new(ask);
    ask.metadata_mut()
        .insert("x-llm-max-attempts", "1".parse().unwrap());
    harness.client.complete(ask).await.map(drop)
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

async fn fallbacks(harness: &Harness) -> f64 {
    let metrics = reqwest::get(format!("{}/metrics", harness.admin_base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| line.starts_with("llm_sidecar_shared_store_fallbacks"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Refused while the store cannot be reached: UNAVAILABLE, nothing sent.
async fn assert_refused(harness: &mut Harness) {
    let status = call(harness, None).await.expect_err("the store is away");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "SHARED_STORE_UNAVAILABLE", "{status:?}");
    assert!(harness.fake.requests().is_empty());
}

#[tokio::test]
async fn a_private_ca_in_ca_file_carries_the_fleet_limit_and_budget_over_tls() {
    logs::capture();
    let authority = Authority::new("redis test CA");
    let redis = tls_server(&authority, None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = authority.write(dir.path(), "ca.pem");
    let shared = format!("ca_file = \"{}\"", ca_file.display());
    let mut sidecar = sidecar(&redis.url(), &shared).await;

    // The budget: 103 + 103 of 250 spent, the third call's hold does not fit.
    call(&mut sidecar, Some("search")).await.unwrap();
    call(&mut sidecar, Some("search")).await.unwrap();
    let refused = call(&mut sidecar, Some("search")).await.unwrap_err();
    assert_eq!(reason(&refused), "BUDGET_EXCEEDED", "{refused:?}");
    // The limit: the third request of the minute passes, the fourth is
    // refused by the fleet's count (the local one would say LOCAL_).
    call(&mut sidecar, None).await.unwrap();
    let refused = call(&mut sidecar, None).await.unwrap_err();
    assert_eq!(reason(&refused), "SHARED_RATE_LIMIT", "{refused:?}");

    let budget = common::first_budget(&sidecar.admin_base()).await;
    assert_eq!(budget["source"], "shared", "{budget}");
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.contains(":requests"), "{keys}");
    assert!(keys.contains("search"), "{keys}");
    // Every decision was the store's (the server speaks TLS only, and
    // only to the ACL user).
    assert_eq!(fallbacks(&sidecar).await, 0.0);

    // The same server with a wrong password: refused, said, never shown.
    let wrong = redis
        .url()
        .replace(PASSWORD, "wrong-password-over-tls-abcdefgh");
    let mut refused = sidecar_closed(&wrong, &shared).await;
    assert_refused(&mut refused).await;
    let log = logs::text();
    assert!(log.contains("Password authentication failed"), "{log}");
    for secret in [PASSWORD, "wrong-password-over-tls-abcdefgh"] {
        assert!(!log.contains(secret), "{log}");
    }
    sidecar.stop().await;
    refused.stop().await;
}

async fn sidecar_closed(url: &str, shared: &str) -> Harness {
    sidecar(url, &format!("on_unavailable = \"closed\"\n{shared}")).await
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    logs::capture();
    let trusted = Authority::new("the CA the sidecar trusts");
    let other = Authority::new("another CA");
    let redis = tls_server(&other, None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = trusted.write(dir.path(), "ca.pem");
    // Closed: refused. With the system's store (no `ca_file`), which knows
    // neither CA, and on_unavailable = "local": the pod's share instead.
    let mut closed = sidecar_closed(
        &redis.url(),
        &format!("ca_file = \"{}\"", ca_file.display()),
    )
    .await;
    assert_refused(&mut closed).await;
    let mut local = sidecar(&redis.url(), "").await;
    for _ in 0..3 {
        call(&mut local, None).await.expect("the pod's share");
    }
    let refused = call(&mut local, None).await.unwrap_err();
    assert_eq!(reason(&refused), "LOCAL_RATE_LIMIT", "{refused:?}");
    assert!(fallbacks(&local).await >= 4.0);

    assert_eq!(
        redis.command(&["KEYS", "*"]),
        "",
        "nothing reached the store"
    );
    let log = logs::text();
    let outages: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("store (Redis) is unreachable"))
        .collect();
    assert_eq!(outages.len(), 2, "{log}");
    for line in outages {
        assert!(line.contains("UnknownIssuer"), "{line}");
    }
    assert!(!log.contains(PASSWORD), "{log}");
    closed.stop().await;
    local.stop().await;
}

#[tokio::test]
async fn a_server_that_asks_for_a_client_certificate_gets_the_configured_one() {
    logs::capture();
    let authority = Authority::new("redis test CA");
    let redis = tls_server(&authority, Some("client CA"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = authority.write(dir.path(), "ca.pem");
    // A certificate of the CA the server checks clients against.
    let client = redis.client_authority().unwrap().client("sidecar");
    let (cert, key) = client.write(dir.path(), "client");
    let trust = format!("ca_file = \"{}\"", ca_file.display());
    let mut shown = sidecar(
        &redis.url(),
        &format!(
            "{trust}\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    )
    .await;
    for _ in 0..3 {
        call(&mut shown, None).await.unwrap();
    }
    let refused = call(&mut shown, None).await.unwrap_err();
    assert_eq!(reason(&refused), "SHARED_RATE_LIMIT", "{refused:?}");

    let mut without = sidecar_closed(&redis.url(), &trust).await;
    assert_refused(&mut without).await;
    let log = logs::text();
    assert!(log.contains("store (Redis) is unreachable"), "{log}");
    shown.stop().await;
    without.stop().await;
}

#[tokio::test]
async fn tls_files_that_cannot_be_used_stop_the_start_naming_their_key() {
    let authority = Authority::new("redis test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = authority.write(dir.path(), "ca.pem");
    let (cert, _) = authority.client("one").write(dir.path(), "one");
    let (_, other_key) = authority.client("two").write(dir.path(), "two");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    let url = format!("rediss://{USER}:{PASSWORD}@127.0.0.1:1");
    let build = |shared: &str, url_env: Option<&str>| {
        let source = match url_env {
            Some(_) => "redis_url_env = \"REDIS_URL\"".to_owned(),
            None => format!("redis_url = \"{url}\""),
        };
        let config = llm_sidecar::config::from_toml(
            &format!(
                "[server]\ntcp = \"127.0.0.1:0\"\n[shared]\n{source}\nexpected_pods = 1\n{shared}\n"
            ),
            "test.toml",
        )
        .expect("the shape is valid");
        let env = |name: &str| (name == "REDIS_URL").then(|| url_env.unwrap().to_owned());
        llm_sidecar::pipeline::Pipeline::new(&config, &env)
            .map(drop)
            .expect_err("refused")
            .to_string()
    };
    let missing = file(dir.path(), "missing.pem");
    let junk = file(dir.path(), "junk.pem");
    for (shared, key, names) in [
        (
            format!("ca_file = \"{missing}\""),
            "shared.ca_file",
            missing.clone(),
        ),
        (
            format!("ca_file = \"{junk}\""),
            "shared.ca_file",
            junk.clone(),
        ),
        (
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{missing}\"",
                cert.display()
            ),
            "shared.client_key_file",
            missing.clone(),
        ),
        (
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                cert.display(),
                other_key.display()
            ),
            "shared.client_cert_file",
            other_key.display().to_string(),
        ),
    ] {
        let error = build(&shared, None);
        assert!(error.contains(key), "{shared}: {error}");
        assert!(error.contains(&names), "{shared}: {error}");
        assert!(!error.contains(PASSWORD), "{error}");
    }
    // A plain URL from the environment with a CA file: TLS was meant.
    let plain = format!("redis://:{PASSWORD}@127.0.0.1:1");
    let error = build(
        &format!("ca_file = \"{}\"", ca_file.display()),
        Some(&plain),
    );
    assert!(error.contains("rediss://"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
}

//! Fleet-wide limits (`[shared]`): sidecars in one process, each with its
//! own configuration and fake upstream, sharing a private redis-server.

mod common;

use common::logs;
use common::redis::RedisServer;
use common::{Harness, Options, request};
use serde_json::json;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt;

/// A sidecar whose `fake` provider has `provider_toml`, sharing `redis`.
/// Tests of the store's own answers give it a generous `timeout_ms`: on a
/// busy machine the default 50 ms may pass, and the call then (rightly)
/// goes to the local share instead.
async fn sidecar(redis: &RedisServer, provider_toml: &str, shared_toml: &str) -> Harness {
    let tables = format!("[shared]\nredis_url = \"{}\"\n{shared_toml}\n", redis.url());
    Harness::start_options(Options {
        provider_toml,
        tables: &tables,
        ..Options::default()
    })
    .await
}

/// One unary call: `Ok(())` or its status.
async fn call(harness: &mut Harness) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(request("hi", json!({})));
    request
        .metadata_mut()
        .insert("x-llm-max-attempts", "1".parse().unwrap());
    harness.client.complete(request).await.map(drop)
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

async fn metrics_text(harness: &Harness) -> String {
    reqwest::get(format!("{}/metrics", harness.admin_base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample of `name` (0 when absent).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn two_sidecars_sharing_redis_hold_the_requests_per_minute_together() {
    let redis = RedisServer::start();
    // 10 / min over 2 pods: leases of floor(10 % × 10 / 2) = 0, exact.
    let provider = "requests_per_minute = 10\nmax_queue_wait_ms = 50";
    let mut a = sidecar(&redis, provider, "expected_pods = 2\ntimeout_ms = 2000").await;
    let mut b = sidecar(&redis, provider, "expected_pods = 2\ntimeout_ms = 2000").await;
    let began = Instant::now();
    let mut passed = 0;
    let mut refused = Vec::new();
    for n in 0..30 {
        let harness = if n % 2 == 0 { &mut a } else { &mut b };
        match call(harness).await {
            Ok(()) => passed += 1,
            Err(status) => refused.push(status),
        }
    }
    // One more unit every 6 s past the burst of 10.
    let allowed = 10 + (began.elapsed().as_secs_f64() / 6.0).floor() as usize;
    assert!(
        passed >= 10 && passed <= allowed,
        "{passed} passed, {allowed} allowed"
    );
    let status = &refused[0];
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(status), "SHARED_RATE_LIMIT");
    let retry = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(retry > Duration::from_secs(1), "{retry:?}");
    assert_eq!(a.fake.requests().len() + b.fake.requests().len(), passed);
    // A server that lost its scripts (a restart, SCRIPT FLUSH) gets the
    // script again: the call is still judged by the fleet's limit, not the
    // local share (which would let it through).
    redis.command(&["SCRIPT", "FLUSH"]);
    let status = call(&mut a)
        .await
        .expect_err("still over the fleet's limit");
    assert_eq!(reason(&status), "SHARED_RATE_LIMIT");
    // One connection per sidecar (and the one asking).
    let clients = redis.command(&["CLIENT", "LIST"]);
    println!(
        "connections to redis: {} (two sidecars and this list)",
        clients.lines().count()
    );
    assert_eq!(clients.lines().count(), 3, "{clients}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_sidecars_sharing_redis_hold_the_tokens_per_minute_together() {
    let redis = RedisServer::start();
    // About 250 prompt tokens a call (a 1000-byte prompt): 1000 / min is
    // four calls; no lease (floor(10 % × 1000 / 2) = 50 < a call).
    let provider = "tokens_per_minute = 1000\nmax_queue_wait_ms = 50";
    let mut a = sidecar(&redis, provider, "expected_pods = 2\ntimeout_ms = 2000").await;
    let mut b = sidecar(&redis, provider, "expected_pods = 2\ntimeout_ms = 2000").await;
    let prompt = "x".repeat(1000);
    let mut passed = 0;
    for n in 0..10 {
        let harness = if n % 2 == 0 { &mut a } else { &mut b };
        let mut request = tonic::Request::new(request(&prompt, json!({})));
        request
            .metadata_mut()
            .insert("x-llm-max-attempts", "1".parse().unwrap());
        match harness.client.complete(request).await {
            Ok(_) => passed += 1,
            Err(status) => assert_eq!(reason(&status), "SHARED_RATE_LIMIT"),
        }
    }
    assert!(
        (3..=4).contains(&passed),
        "{passed} calls of ~250 tokens in 1000 / min"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn at_a_minute_boundary_the_limit_is_not_doubled() {
    let redis = RedisServer::start();
    // One every 10 s, a burst of 6; no lease.
    let mut sidecar = sidecar(
        &redis,
        "requests_per_minute = 6\nmax_queue_wait_ms = 10",
        "expected_pods = 1\ntimeout_ms = 2000",
    )
    .await;
    // A counter per clock minute would let 6 through just before the
    // minute turns and 6 more just after it.
    let minute = 60_000_000;
    let into = redis.time_micros() % minute;
    let until_before = (minute - into + minute - 1_500_000) % minute;
    tokio::time::sleep(Duration::from_micros(until_before)).await;
    let mut passed = 0;
    for _ in 0..6 {
        passed += usize::from(call(&mut sidecar).await.is_ok());
    }
    assert_eq!(passed, 6);
    let into = redis.time_micros() % minute;
    let after = (minute - into + 500_000) % minute;
    assert!(after < 5_000_000, "the minute turned too late: {after} µs");
    tokio::time::sleep(Duration::from_micros(after)).await;
    let mut after_boundary = 0;
    for _ in 0..6 {
        after_boundary += usize::from(call(&mut sidecar).await.is_ok());
    }
    assert_eq!(after_boundary, 0, "the limit doubled at the minute");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_local_lease_over_admits_at_most_a_tenth_of_the_limit() {
    let redis = RedisServer::start();
    // 600 / min over 2 pods: each may hold floor(10 % × 600 / 2) = 30.
    let provider = "requests_per_minute = 600\nmax_queue_wait_ms = 0";
    let a = sidecar(&redis, provider, "expected_pods = 2\ntimeout_ms = 2000").await;
    let b = sidecar(&redis, provider, "expected_pods = 2\ntimeout_ms = 2000").await;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let harness = if worker % 2 == 0 { &a } else { &b };
        let mut client = harness.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut passed = 0;
            for _ in 0..60 {
                let mut request = tonic::Request::new(request("hi", json!({})));
                request
                    .metadata_mut()
                    .insert("x-llm-max-attempts", "1".parse().unwrap());
                passed += usize::from(client.complete(request).await.is_ok());
            }
            passed
        }));
    }
    let mut passed = 0;
    for task in tasks {
        passed += task.await.unwrap();
    }
    let elapsed = began.elapsed().as_secs_f64();
    // What an exact GCRA admits in that time: the burst, one per 100 ms.
    let exact = 600.0 + (elapsed / 0.1).floor();
    let over = passed as f64 - exact;
    println!(
        "lease over-admission: {passed} admitted in {elapsed:.2} s, exact GCRA {exact}, \
         over by {over} ({:.1} % of the limit)",
        over.max(0.0) / 6.0
    );
    // Measured on the lease alone: no call went to the local share.
    for harness in [&a, &b] {
        let metrics = metrics_text(harness).await;
        assert_eq!(sample(&metrics, "llm_sidecar_shared_store_fallbacks"), 0.0);
    }
    assert!(over <= 60.0, "over-admitted {over} (> 10 % of 600)");
    assert!(passed >= 540, "under-admitted: {passed}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn with_redis_away_calls_go_on_under_the_local_share_and_the_shared_limit_comes_back() {
    logs::capture();
    let mut redis = RedisServer::start();
    // 20 / min over 4 pods: a local share of 5; no lease.
    let provider = "requests_per_minute = 20\nmax_queue_wait_ms = 10";
    let mut local = sidecar(&redis, provider, "expected_pods = 4").await;
    let mut closed = sidecar(
        &redis,
        provider,
        "expected_pods = 4\non_unavailable = \"closed\"",
    )
    .await;
    call(&mut local).await.unwrap();
    call(&mut closed).await.unwrap();

    redis.stop();
    let mut passed = 0;
    let mut last = None;
    for _ in 0..8 {
        match call(&mut local).await {
            Ok(()) => passed += 1,
            Err(status) => last = Some(status),
        }
    }
    assert_eq!(passed, 5, "the local share of 20 over 4 pods");
    assert_eq!(reason(last.as_ref().unwrap()), "LOCAL_RATE_LIMIT");
    let refused = call(&mut closed).await.expect_err("closed refuses");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(reason(&refused), "SHARED_STORE_UNAVAILABLE");
    assert!(
        refused.message().contains("shared limits store"),
        "{}",
        refused.message()
    );

    let metrics = metrics_text(&local).await;
    assert_eq!(
        sample(&metrics, "llm_sidecar_shared_store_outages"),
        1.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "llm_sidecar_shared_store_fallbacks") >= 8.0,
        "{metrics}"
    );
    let outage_lines = |text: &str| text.matches("store (Redis) is unreachable").count();
    // Once per sidecar (two of them), not once per call.
    assert_eq!(outage_lines(&logs::text()), 2, "{}", logs::text());

    redis.restart();
    // The store is probed again within 2 s; then the fleet's limit (20,
    // on a fresh store) holds again.
    let began = Instant::now();
    let mut shared_passes = 0;
    loop {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "the shared limit never came back"
        );
        match call(&mut local).await {
            Ok(()) => shared_passes += 1,
            Err(status) if reason(&status) == "SHARED_RATE_LIMIT" => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(shared_passes >= 19, "{shared_passes}");
    assert!(logs::text().contains("reachable again"), "{}", logs::text());
    assert_eq!(outage_lines(&logs::text()), 2, "{}", logs::text());
    local.stop().await;
    closed.stop().await;
}

#[tokio::test]
async fn a_closed_refusal_says_when_the_store_is_tried_again_on_both_edges() {
    let mut redis = RedisServer::start();
    let mut closed = sidecar(
        &redis,
        "requests_per_minute = 20",
        "expected_pods = 4\non_unavailable = \"closed\"",
    )
    .await;
    call(&mut closed).await.unwrap();
    redis.stop();
    // The first refusal finds the store away; later ones are refused
    // between probes, whose wait grows to 2 s.
    for _ in 0..5 {
        let refused = call(&mut closed).await.expect_err("closed refuses");
        common::store_refusal::assert_grpc(&refused);
        let response = common::http_client()
            .post(format!("{}/chat/completions", closed.http_base()))
            .json(&json!({
                "model": "fake-model",
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        common::store_refusal::assert_http(response).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(closed.fake.requests().len(), 1, "none sent upstream");
    closed.stop().await;
}

#[tokio::test]
async fn a_key_benched_by_one_sidecar_is_skipped_by_the_other() {
    let redis = RedisServer::start();
    let keys = "api_keys = [{ env = \"FAKE_KEY_2\" }]\nkey_cooldown_ms = 60000";
    let mut a = sidecar(&redis, keys, "expected_pods = 2\ntimeout_ms = 2000").await;
    let mut b = sidecar(&redis, keys, "expected_pods = 2\ntimeout_ms = 2000").await;
    // A's first key is answered 429: A benches it.
    let mut limited = tonic::Request::new(request("x", json!({"status": 429})));
    limited
        .metadata_mut()
        .insert("x-llm-max-attempts", "1".parse().unwrap());
    a.client.complete(limited).await.expect_err("429");
    let first_key = a.fake.requests()[0]
        .header("authorization")
        .unwrap()
        .to_owned();
    assert_eq!(first_key, format!("Bearer {}", common::UPSTREAM_KEY));
    let began = Instant::now();
    while !redis.command(&["KEYS", "*benched*"]).contains("benched") {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the bench never reached redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B would start with the same first key; it takes the other.
    for _ in 0..3 {
        call(&mut b).await.unwrap();
    }
    for seen in b.fake.requests() {
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {}", common::UPSTREAM_KEY_2).as_str())
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_redis_password_never_appears_in_logs_or_errors() {
    logs::capture();
    let password = "fleet-secret-password-0123456789";
    let mut redis = RedisServer::start_with_password(Some(password));
    // The right password, from the environment (as from a Secret).
    let tables = "[shared]\nredis_url_env = \"REDIS_URL\"\nexpected_pods = 1\n";
    let mut good = Harness::start_options(Options {
        provider_toml: "requests_per_minute = 100",
        tables,
        env: vec![("REDIS_URL", redis.url())],
        ..Options::default()
    })
    .await;
    call(&mut good).await.unwrap();
    assert!(redis.command(&["KEYS", "*requests"]).contains("requests"));
    // A wrong one, inline, refused closed: the error and the log stay clean.
    let wrong = redis
        .url()
        .replace(password, "wrong-password-abcdefghijklmnop");
    let mut refused = Harness::start_options(Options {
        provider_toml: "requests_per_minute = 100",
        tables: &format!(
            "[shared]\nredis_url = \"{wrong}\"\nexpected_pods = 1\non_unavailable = \"closed\"\n"
        ),
        ..Options::default()
    })
    .await;
    let status = call(&mut refused).await.expect_err("AUTH fails");
    assert_eq!(status.code(), Code::Unavailable);
    redis.stop();
    let _ = call(&mut good).await;
    // Nor does a configuration printed whole, or a URL that cannot be used.
    let config = llm_sidecar::config::from_toml(
        &format!(
            "[server]\ntcp = \"127.0.0.1:0\"\n[shared]\nredis_url = \"{}\"\nexpected_pods = 1\n",
            redis.url()
        ),
        "test.toml",
    )
    .unwrap();
    let unusable = llm_sidecar::config::from_toml(
        &format!(
            "[server]\ntcp = \"127.0.0.1:0\"\n[shared]\nredis_url = \"redis://:{password}@127.0.0.1:notaport\"\nexpected_pods = 1\n"
        ),
        "test.toml",
    )
    .unwrap();
    let unusable = llm_sidecar::pipeline::Pipeline::new(&unusable, &|_| None)
        .expect_err("not a usable URL")
        .to_string();
    assert!(unusable.contains("shared"), "{unusable}");
    let everything = format!(
        "{status:?}\n{config:?}\n{unusable}\n{}\n{}",
        logs::text(),
        metrics_text(&good).await
    );
    assert!(everything.contains("unreachable"), "{everything}");
    for secret in [password, "wrong-password-abcdefghijklmnop"] {
        assert!(!everything.contains(secret), "{everything}");
    }
    good.stop().await;
    refused.stop().await;
}

/// The cost of fleet-wide limits per call: p50/p99 of 200 unary calls on
/// loopback with per-pod limits, with Redis and the lease, and with Redis
/// asked on every call (no lease). A measurement, printed, not asserted.
#[tokio::test]
async fn added_latency_per_call_with_redis_limits() {
    let redis = RedisServer::start();
    let mut off = Harness::start_with("requests_per_minute = 100000").await;
    let mut leased = sidecar(
        &redis,
        "requests_per_minute = 100000",
        "expected_pods = 1\ntimeout_ms = 2000",
    )
    .await;
    // A lease of floor(10 % × 1000 / 1000) = 0: a round trip every call.
    let mut every = sidecar(
        &redis,
        "requests_per_minute = 1000",
        "expected_pods = 1000\ntimeout_ms = 2000",
    )
    .await;
    for (name, harness) in [
        ("off", &mut off),
        ("redis+lease", &mut leased),
        ("redis every call", &mut every),
    ] {
        for _ in 0..20 {
            call(harness).await.unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..200 {
            let began = Instant::now();
            call(harness).await.unwrap();
            times.push(began.elapsed());
        }
        times.sort();
        println!(
            "shared limits {name}: p50 {:?} p99 {:?}",
            times[100], times[198]
        );
    }
    off.stop().await;
    leased.stop().await;
    every.stop().await;
}

/// A URL the Redis client cannot read is a configuration error naming the
/// key it came from and the form expected, never the URL itself.
#[test]
fn a_redis_url_that_does_not_parse_names_its_key_and_the_form_expected() {
    let config = llm_sidecar::config::from_toml(
        "[server]\nuds = \"/tmp/unused.sock\"\n[shared]\n\
         redis_url = \"redis://:secret-pw@127.0.0.1:99999\"\nexpected_pods = 2\n",
        "test.toml",
    )
    .unwrap();
    let error = llm_sidecar::shared::SharedStore::for_config(&config, &|_: &str| None)
        .expect_err("port 99999 does not parse");
    assert_eq!(error.key, "shared.redis_url");
    assert!(error.message.contains("expected redis://"), "{error:?}");
    assert!(
        !format!("{error:?} {error}").contains("secret-pw"),
        "{error:?}"
    );
}

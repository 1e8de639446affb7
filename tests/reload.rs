//! Hot reload: a new config serves new calls while the calls under way
//! finish on the old one; a config that does not load changes nothing; a
//! rotated key file is picked up. In-process through `Running::reload`, and
//! through the real binary by file change, SIGHUP and a Kubernetes-style
//! `..data` symlink swap.

mod common;

use common::process::{SOCKET_ONLY, Sidecar};
use common::{collect, request, sidecar_from};
use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::config::from_toml;
use llm_sidecar::proto::v1 as pb;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// A config that sends model `smart` upstream as `rewrite`.
fn config_text(base_url: &str, rewrite: &str) -> String {
    format!(
        "[server]\nuds = \"{{socket}}\"\n\
         [providers.fake]\nbase_url = \"{base_url}\"\n\
         [[routes]]\nmodel = \"smart\"\nprovider = \"fake\"\nrewrite = \"{rewrite}\"\n"
    )
}

fn smart(scenario: serde_json::Value) -> pb::ChatRequest {
    pb::ChatRequest {
        model: "smart".into(),
        ..request("x", scenario)
    }
}

fn upstream_models(upstream: &FakeUpstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(|request| request.body["model"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_drops_nothing_and_serves_new_calls_by_the_new_config() {
    let upstream = FakeUpstream::start().await.unwrap();
    let (running, client, _dir) =
        sidecar_from(&config_text(&upstream.base_url(), "model-v1")).await;

    // 20 streams of 10 chunks, 50 ms apart, under way during the reload.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut client = client.clone();
        let mut stream = client
            .stream_complete(smart(
                json!({"reply": "a b c d e f g h i j", "chunk_delay_ms": 50}),
            ))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().expect("a first chunk");
        streams.push(tokio::spawn(async move { collect(&mut stream).await }));
    }
    let new = from_toml(&config_text(&upstream.base_url(), "model-v2"), "new.toml").unwrap();
    running
        .reload(&new, &|_| None)
        .expect("the new config loads");
    // New calls, unary and streamed, while the old streams still run.
    let mut unary_client = client.clone();
    unary_client.complete(smart(json!({}))).await.unwrap();
    for stream in streams {
        let (chunks, status) = stream.await.unwrap();
        assert!(status.is_none(), "a stream under way failed: {status:?}");
        // The nine content chunks left, the finish chunk, the usage chunk.
        assert_eq!(chunks.len(), 11, "{chunks:#?}");
    }
    let models = upstream_models(&upstream);
    assert_eq!(
        models.iter().filter(|model| *model == "model-v1").count(),
        20
    );
    assert_eq!(models.last().map(String::as_str), Some("model-v2"));

    // An invalid config changes nothing.
    let broken = config_text(&upstream.base_url(), "model-v3")
        .replace("[providers.fake]", "[providers.fake]\nmax_attempts = 0");
    match from_toml(&broken, "broken.toml") {
        Err(error) => assert!(error.to_string().contains("max_attempts"), "{error}"),
        Ok(config) => assert!(running.reload(&config, &|_| None).is_err()),
    }
    unary_client.complete(smart(json!({}))).await.unwrap();
    assert_eq!(
        upstream_models(&upstream).last().map(String::as_str),
        Some("model-v2")
    );
    running.shutdown().await;
}

/// The binary on `dir/sidecar.sock` with `config`, logging at info.
fn serve(dir: &Path, config: &Path) -> Sidecar {
    let socket = dir.join("sidecar.sock");
    Sidecar::serve(
        &[
            &["--config", config.to_str().unwrap()][..],
            &["--uds", socket.to_str().unwrap(), "--ledger", ""],
            &SOCKET_ONLY,
        ]
        .concat(),
        Some("info"),
        &socket,
        &dir.join("sidecar.log"),
    )
}

/// Calls model `smart` until the upstream sees `want` (or 10 s pass).
async fn until_upstream_sees(
    client: &mut llm_sidecar::proto::v1::chat_service_client::ChatServiceClient<
        tonic::transport::Channel,
    >,
    upstream: &FakeUpstream,
    what: impl Fn(&fake_upstream::RecordedRequest) -> bool,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let _ = client.complete(smart(json!({}))).await;
        if upstream.requests().last().is_some_and(&what) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn file_config(base_url: &str, rewrite: &str, extra: &str) -> String {
    // The socket comes from `--uds`; the file must still name a listener.
    format!(
        "[server]\nuds = \"/nonexistent/unused.sock\"\nwatch_interval_ms = 100\n\
         [providers.fake]\nbase_url = \"{base_url}\"\n{extra}\n\
         [[routes]]\nmodel = \"smart\"\nprovider = \"fake\"\nrewrite = \"{rewrite}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_file_change_and_sighup_and_keeps_serving_through_a_bad_edit() {
    let upstream = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, file_config(&upstream.base_url(), "model-v1", "")).unwrap();
    let sidecar = serve(dir.path(), &config);
    let mut client = chat_client(
        connect_uds(&dir.path().join("sidecar.sock")).await.unwrap(),
        1 << 20,
    );
    client.complete(smart(json!({}))).await.unwrap();
    assert_eq!(upstream_models(&upstream).last().unwrap(), "model-v1");

    // An edit that does not load: rejected, the old config keeps serving.
    std::fs::write(
        &config,
        file_config(&upstream.base_url(), "model-x", "max_attempts = 0"),
    )
    .unwrap();
    let started = Instant::now();
    while !sidecar.log().contains("config reload rejected") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no rejection logged:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sidecar.log().contains("max_attempts"),
        "the log names the key:\n{}",
        sidecar.log()
    );
    client.complete(smart(json!({}))).await.unwrap();
    assert_eq!(upstream_models(&upstream).last().unwrap(), "model-v1");

    // A good edit is picked up by the file check.
    std::fs::write(&config, file_config(&upstream.base_url(), "model-v2", "")).unwrap();
    assert!(
        until_upstream_sees(&mut client, &upstream, |request| request.body["model"]
            == "model-v2")
        .await,
        "{}",
        sidecar.log()
    );

    // SIGHUP reloads at once, even with the file check off.
    std::fs::write(
        &config,
        file_config(&upstream.base_url(), "model-v3", "")
            .replace("watch_interval_ms = 100", "watch_interval_ms = 0"),
    )
    .unwrap();
    sidecar.signal("HUP");
    assert!(
        until_upstream_sees(&mut client, &upstream, |request| request.body["model"]
            == "model-v3")
        .await,
        "{}",
        sidecar.log()
    );
}

/// Kubernetes' layout for a mounted Secret: `key` → `..data/key`, and
/// `..data` → a timestamped directory, swapped atomically on update.
fn write_secret(dir: &Path, generation: u32, key: &str) {
    let data = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("key"), format!("{key}\n")).unwrap();
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    if !dir.join("key").exists() {
        std::os::unix::fs::symlink("..data/key", dir.join("key")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_file_is_picked_up() {
    let upstream = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    write_secret(&secret, 1, "sk-rotation-old-1111");
    let config = dir.path().join("sidecar.toml");
    let key_line = format!("api_key_file = \"{}\"", secret.join("key").display());
    std::fs::write(&config, file_config(&upstream.base_url(), "m", &key_line)).unwrap();
    let sidecar = serve(dir.path(), &config);
    let mut client = chat_client(
        connect_uds(&dir.path().join("sidecar.sock")).await.unwrap(),
        1 << 20,
    );
    client.complete(smart(json!({}))).await.unwrap();
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer sk-rotation-old-1111")
    );

    write_secret(&secret, 2, "sk-rotation-new-2222");
    assert!(
        until_upstream_sees(&mut client, &upstream, |request| {
            request.header("authorization") == Some("Bearer sk-rotation-new-2222")
        })
        .await,
        "{}",
        sidecar.log()
    );
    assert!(!sidecar.log().contains("sk-rotation"), "no key in the log");
}

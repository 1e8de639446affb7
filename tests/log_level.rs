//! The log filter of the running binary, changed on the admin port: the
//! per-request line appears once the level allows it, in JSON, with the
//! call's request id and trace id; a bad filter is refused and changes
//! nothing.

mod common;

use common::process::{Sidecar, free_port};
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::proto::v1 as pb;
use std::time::{Duration, Instant};

async fn echo(socket: &std::path::Path, text: &str) {
    let mut client = chat_client(connect_uds(socket).await.unwrap(), 1 << 20);
    let mut request = tonic::Request::new(pb::ChatRequest {
        model: "mock/echo".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            content: Some(text.into()),
            ..pb::Message::default()
        }],
        ..pb::ChatRequest::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    client.complete(request).await.expect("the mock answers");
}

fn request_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect()
}

#[tokio::test]
async fn the_log_level_changes_at_run_time_on_the_admin_port() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    let config = dir.path().join("sidecar.toml");
    let log = dir.path().join("sidecar.log");
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    std::fs::write(
        &config,
        format!(
            "[server]\nuds = \"{}\"\nadmin = \"{admin}\"\n[logging]\nformat = \"json\"\nlevel = \"warn\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let sidecar = Sidecar::serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--tcp",
            "",
            "--http",
            "",
            "--ledger",
            "",
        ],
        None,
        &socket,
        &log,
    );
    // The admin port is bound after the socket.
    sidecar.wait_for_port(admin_port);
    let http = common::http_client();
    let level_url = format!("http://{admin}/admin/log-level");
    let level = || async {
        http.get(&level_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let shown = level().await;
    assert!(shown.contains("\"warn\""), "{shown}");

    echo(&socket, "quiet").await;
    assert!(request_lines(&log).is_empty(), "info is off at warn");

    // A write needs the admin token; the caller token is not it.
    let refused = http.put(&level_url).body("info").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let admin_token = std::fs::read_to_string(socket.with_file_name("admin-token"))
        .expect("the sidecar wrote its admin token beside the socket");
    let changed = http
        .put(&level_url)
        .bearer_auth(admin_token.trim())
        .body("info")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    echo(&socket, "loud").await;
    let started = Instant::now();
    let lines = loop {
        let lines = request_lines(&log);
        if !lines.is_empty() || started.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 1, "one line for the one call at info");
    assert_eq!(lines[0]["model"], "mock/echo");
    assert_eq!(
        lines[0]["span"]["trace_id"],
        "5bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(lines[0]["span"]["request_id"].is_string());

    let refused = http
        .put(&level_url)
        .bearer_auth(admin_token.trim())
        .body("info,[")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let shown = level().await;
    assert!(shown.contains("\"info\""), "{shown}");
}

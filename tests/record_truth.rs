//! Every call leaves exactly one true ledger row, including calls refused
//! before the handler runs: raw gRPC frames over the real Unix socket
//! (an h2 client, so the bytes are exactly what a broken or hostile
//! client sends), the facade over real HTTP, and answers too large for
//! the caller's protocol.

mod common;

use common::{Harness, collect, http_client, request, sidecar_from};
use fake_upstream::FakeUpstream;
use llm_sidecar::ledger::{LedgerRow, RecentQuery};
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::server::Running;
use serde_json::json;
use std::path::Path;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

const CALLER: &str = "billing-batch";

/// A gRPC message frame: uncompressed flag, length, then `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One gRPC call with `body` as its request bytes, over HTTP/2 on the Unix
/// socket; the status it ended with, and its response metadata.
async fn raw_call(socket: &Path, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Status {
    let io = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (client, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://localhost/llmsidecar.v1.ChatService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-llm-caller", CALLER);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(builder.body(()).unwrap(), false)
        .unwrap();
    send.send_data(body.into(), true).unwrap();
    let response = response.await.unwrap();
    // A status alone comes in the headers (trailers-only)...
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    // ...else after the messages, in the trailers.
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    Status::from_header_map(&trailers).expect("a grpc-status")
}

fn socket(harness: &Harness) -> std::path::PathBuf {
    harness.running.as_ref().unwrap().uds.clone().unwrap()
}

/// The one row the call left (found by the request id its status named).
async fn row_of(harness: &Harness, status: &Status) -> LedgerRow {
    let id = request_id(status);
    let rows: Vec<LedgerRow> = harness
        .ledger_rows()
        .await
        .into_iter()
        .filter(|row| row.request_id == id)
        .collect();
    assert_eq!(rows.len(), 1, "one row for {id}: {rows:?}");
    rows.into_iter().next().unwrap()
}

fn request_id(status: &Status) -> String {
    status
        .metadata()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("the refusal names its request id: {status:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("ErrorInfo in {status:?}"))
        .reason
}

#[tokio::test]
async fn undecodable_protobuf_is_invalid_argument_and_recorded() {
    let harness = Harness::start().await;
    // Field 1 with wire type 7, which protobuf does not have.
    let status = raw_call(
        &socket(&harness),
        "Complete",
        &[],
        frame(b"\x0f\x01garbage"),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("not a valid llmsidecar.v1.ChatRequest")
            && status.message().contains("wire type"),
        "{}",
        status.message()
    );
    assert_eq!(reason(&status), "UNDECODABLE_REQUEST");
    let row = row_of(&harness, &status).await;
    assert_eq!(row.outcome, "error:undecodable_request");
    assert_eq!(row.caller_name.as_deref(), Some(CALLER));
    assert_eq!(row.caller_uid, Some(own_uid()));
    assert_eq!(row.edge, "grpc");
    assert!(!row.stream);
    harness.stop().await;
}

fn own_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
        .unwrap()
}

#[tokio::test]
async fn a_cut_missing_or_oversized_message_is_recorded_with_its_reason() {
    let harness = Harness::start().await;
    let socket = socket(&harness);

    // The frame promises 100 bytes and the body ends after 3.
    let mut cut = frame(&[0; 100]);
    cut.truncate(8);
    let status = raw_call(&socket, "StreamComplete", &[], cut).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let row = row_of(&harness, &status).await;
    assert_eq!(row.outcome, "error:undecodable_request");
    assert!(row.stream);

    // No message at all.
    let status = raw_call(&socket, "Complete", &[], Vec::new()).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        row_of(&harness, &status).await.outcome,
        "error:undecodable_request"
    );

    // A frame declaring more than server.max_message_bytes (16 MiB).
    let mut huge = vec![0u8];
    huge.extend_from_slice(&(20u32 << 20).to_be_bytes());
    huge.extend_from_slice(&[0; 16]);
    let status = raw_call(&socket, "Complete", &[], huge).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("server.max_message_bytes"),
        "{}",
        status.message()
    );
    assert_eq!(reason(&status), "REQUEST_TOO_LARGE");
    let row = row_of(&harness, &status).await;
    assert_eq!(row.outcome, "error:request_too_large");
    assert_eq!(row.caller_name.as_deref(), Some(CALLER));
    harness.stop().await;
}

#[tokio::test]
async fn a_compressed_request_in_an_unaccepted_encoding_is_recorded() {
    let harness = Harness::start().await;
    let mut compressed = frame(b"\x1f\x8b\x08\x00");
    compressed[0] = 1;
    let status = raw_call(
        &socket(&harness),
        "Complete",
        &[("grpc-encoding", "br")],
        compressed,
    )
    .await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.metadata().get("grpc-accept-encoding").is_some());
    assert_eq!(reason(&status), "UNSUPPORTED_ENCODING");
    let row = row_of(&harness, &status).await;
    assert_eq!(row.outcome, "error:unsupported_encoding");
    assert_eq!(row.caller_name.as_deref(), Some(CALLER));
    harness.stop().await;
}

#[tokio::test]
async fn malformed_call_metadata_is_refused_and_recorded() {
    let harness = Harness::start().await;
    let body = {
        use prost::Message as _;
        frame(&request("hi", json!({})).encode_to_vec())
    };
    for (name, value) in [("grpc-timeout", "soon"), ("x-llm-max-attempts", "many")] {
        let status = raw_call(
            &socket(&harness),
            "Complete",
            &[(name, value)],
            body.clone(),
        )
        .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains(name), "{}", status.message());
        let row = row_of(&harness, &status).await;
        assert_eq!(row.outcome, "error:invalid_request", "{name}");
        assert_eq!(row.requested_model, "fake-model");
        assert_eq!(row.caller_name.as_deref(), Some(CALLER));
    }
    assert!(harness.fake.requests().is_empty(), "nothing went upstream");
    harness.stop().await;
}

#[tokio::test]
async fn a_well_formed_call_still_leaves_exactly_one_row() {
    let harness = Harness::start().await;
    let body = {
        use prost::Message as _;
        frame(&request("hi", json!({})).encode_to_vec())
    };
    let status = raw_call(&socket(&harness), "Complete", &[], body).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    let rows = harness.ledger_rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, "ok");
    harness.stop().await;
}

#[tokio::test]
async fn facade_bodies_it_cannot_read_are_recorded_with_their_reason() {
    let harness = Harness::start().await;
    let url = format!("{}/chat/completions", harness.http_base());
    let client = http_client();
    let not_json = client
        .post(&url)
        .header("x-llm-caller", CALLER)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let too_large = client
        .post(&url)
        .header("x-llm-caller", CALLER)
        .header("content-type", "application/json")
        .body(vec![b' '; 17 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    let ids = [&not_json, &too_large].map(|response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    });
    let rows = harness.ledger_rows().await;
    let outcome = |id: &str| {
        let found: Vec<&LedgerRow> = rows.iter().filter(|row| row.request_id == id).collect();
        assert_eq!(found.len(), 1, "{rows:?}");
        // The caller token's name is the caller; what it claimed is kept.
        assert_eq!(found[0].caller_name.as_deref(), Some("app"));
        assert_eq!(found[0].caller_claimed.as_deref(), Some(CALLER));
        found[0].outcome.clone()
    };
    assert_eq!(outcome(&ids[0]), "error:undecodable_request");
    assert_eq!(outcome(&ids[1]), "error:request_too_large");
    harness.stop().await;
}

/// A sidecar whose messages may be at most 64 KiB either way (the least
/// it takes), in front of an upstream that answers every request without
/// a scenario of its own by `scenario` (so a large scripted answer needs
/// no large request).
async fn small_messages_answering(
    scenario: serde_json::Value,
) -> (
    FakeUpstream,
    Running,
    pb::chat_service_client::ChatServiceClient<tonic::transport::Channel>,
    tempfile::TempDir,
) {
    let fake = FakeUpstream::start_with(
        "127.0.0.1:0".parse().unwrap(),
        serde_json::from_value(scenario).unwrap(),
    )
    .await
    .unwrap();
    let toml = format!(
        r#"default_provider = "fake"
[server]
uds = "{{socket}}"
max_message_bytes = 65536
[providers.fake]
base_url = "{base}"
[ledger]
path = "{{socket}}.ledger"
"#,
        base = fake.base_url()
    );
    let (running, client, dir) = sidecar_from(&toml).await;
    (fake, running, client, dir)
}

/// A request with no scenario: the upstream's defaults answer it.
fn plain_request() -> pb::ChatRequest {
    pb::ChatRequest {
        model: "fake-model".to_owned(),
        messages: vec![common::user("hi")],
        ..pb::ChatRequest::default()
    }
}

async fn rows_of(running: &Running) -> Vec<LedgerRow> {
    let ledger = running.observer.ledger().unwrap();
    ledger.flush().await;
    ledger
        .recent(RecentQuery {
            limit: 100,
            ..RecentQuery::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn an_answer_too_large_to_send_is_recorded_as_failed_not_ok() {
    // 20 KB of JSON (under the 64 KiB limit, so it is read whole) that is
    // some 110 KB as protobuf: each small number of an extra member becomes
    // a `Value` of its own.
    let numbers = vec![1; 10_000];
    let answer = json!({
        "id": "chatcmpl-big", "object": "chat.completion", "created": 1, "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "numbers": numbers,
    });
    let (_fake, running, mut client, _dir) =
        small_messages_answering(json!({"raw_body": answer})).await;
    let big = plain_request();
    let status = client.complete(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("server.max_message_bytes"),
        "{}",
        status.message()
    );
    assert_eq!(reason(&status), "RESPONSE_TOO_LARGE");
    let rows = rows_of(&running).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, "error:response_too_large");
    assert_eq!(rows[0].request_id, request_id(&status));
    // The upstream answered and billed: its usage is kept.
    assert!(rows[0].completion_tokens.is_some());
    running.shutdown().await;
}

#[tokio::test]
async fn a_stream_chunk_too_large_to_send_ends_the_stream_and_is_recorded() {
    // A small chunk goes out; the next, 20 KB of JSON, is some 110 KB as
    // protobuf (each small number of an extra member a `Value`).
    let chunk = |delta: serde_json::Value, extra: serde_json::Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": null}], "numbers": extra})
    };
    let (_fake, running, mut client, _dir) = small_messages_answering(json!({"raw_events": [
        chunk(json!({"role": "assistant", "content": "small"}), json!([])),
        chunk(json!({"content": "big"}), json!(vec![1; 10_000])),
        "[DONE]",
    ]}))
    .await;
    let big = plain_request();
    let mut stream = client.stream_complete(big).await.unwrap().into_inner();
    let (chunks, status) = collect(&mut stream).await;
    let status = status.expect("the stream ends with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "RESPONSE_TOO_LARGE");
    assert!(!chunks.is_empty(), "the small chunk was delivered");
    assert_eq!(
        status.metadata().get("x-llm-partial").unwrap(),
        "true",
        "{status:?}"
    );
    let rows = rows_of(&running).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, "partial:response_too_large");
    running.shutdown().await;
}

/// A model name written to forge a log line of its own and colour the
/// rest red.
const FORGED_MODEL: &str =
    "mock/echo\n2099-01-01T00:00:00.000000Z  INFO forged: all is well\x1b[31m";

#[tokio::test]
async fn caller_strings_cannot_forge_or_colour_text_log_lines() {
    use common::process::{Sidecar, free_port};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    let http = free_port();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nuds = \"{}\"\nhttp = \"127.0.0.1:{http}\"\n[ledger]\nenabled = false\n",
            socket.display()
        ),
    )
    .unwrap();
    let sidecar = Sidecar::serve_env(
        &[
            "--config",
            config.to_str().unwrap(),
            "--tcp",
            "",
            "--admin",
            "",
        ],
        Some("info"),
        &[("LLM_SIDECAR_TOKEN", common::CALLER_TOKEN)],
        &socket,
        &dir.path().join("sidecar.log"),
    );
    sidecar.wait_for_port(http);

    let channel = llm_sidecar::client::connect_uds(&socket).await.unwrap();
    let mut client = llm_sidecar::client::chat_client(channel, 1 << 20);
    let mut call = tonic::Request::new(pb::ChatRequest {
        model: FORGED_MODEL.to_owned(),
        messages: vec![common::user("hi")],
        ..pb::ChatRequest::default()
    });
    call.metadata_mut()
        .insert("x-llm-caller", "team a (ops) \"quoted\"".parse().unwrap());
    // No route serves it: refused, and logged.
    client.complete(call).await.unwrap_err();
    let answer = http_client()
        .post(format!("http://127.0.0.1:{http}/v1/chat/completions"))
        .json(&json!({"model": FORGED_MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{answer:?}");

    // Both calls' lines are written by the time their answers are.
    let log = sidecar.log();
    let request_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" request ") || line.contains("request edge"))
        .collect();
    assert_eq!(request_lines.len(), 2, "{log}");
    assert!(
        !log.contains('\x1b'),
        "no terminal escape reaches the log: {log:?}"
    );
    for line in log.lines() {
        assert!(
            !line.contains("forged") || line.contains("model=\"mock/echo\\n2099"),
            "a line forged by a caller: {line:?}\n{log}"
        );
    }
}

//! Only the pod's app spends the keys: caller tokens on the TCP listeners,
//! the admin token for the admin port's writes, and the Host, Origin and
//! content-type checks of every HTTP listener — over real sockets, with
//! the fake upstream counting what got through.

mod common;

use common::process::{BIN, Sidecar, free_port};
use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_tcp, connect_uds};
use llm_sidecar::config::from_toml;
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::server::{Running, start};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A sidecar with every listener, `auth` as its `[auth]` table and `env`
/// as its whole environment, in front of a fresh fake upstream.
struct Stack {
    fake: FakeUpstream,
    running: Running,
    dir: tempfile::TempDir,
}

async fn stack(auth: &str, env: &'static [(&'static str, &'static str)]) -> Stack {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"default_provider = "fake"
[server]
uds = "{dir}/grpc.sock"
http_uds = "{dir}/http.sock"
tcp = "127.0.0.1:0"
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[ledger]
path = "{dir}/ledger.sqlite3"
[providers.fake]
base_url = "{base}"
{auth}
"#,
        dir = dir.path().display(),
        base = fake.base_url(),
    );
    let config = from_toml(&toml, "test.toml").expect("the test config is valid");
    let lookup = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    let running = start(&config, &lookup).await.expect("the sidecar starts");
    Stack { fake, running, dir }
}

impl Stack {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn facade(&self) -> String {
        format!("http://{}/v1", self.running.http.unwrap())
    }

    fn admin(&self) -> String {
        format!("http://{}", self.running.admin.unwrap())
    }

    async fn ledger(&self) -> Vec<llm_sidecar::ledger::LedgerRow> {
        let ledger = self.running.observer.ledger().unwrap();
        ledger.flush().await;
        ledger
            .recent(llm_sidecar::ledger::RecentQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// `POST /v1/chat/completions` on the TCP facade with `token` (if any).
    async fn chat(&self, token: Option<&str>) -> (u16, Value) {
        let mut request = common::plain_http_client()
            .post(format!("{}/chat/completions", self.facade()))
            .json(&body());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

fn body() -> Value {
    json!({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
}

fn grpc_request(token: Option<(&'static str, String)>) -> tonic::Request<pb::ChatRequest> {
    let mut request = tonic::Request::new(common::request("hi", json!({})));
    if let Some((key, value)) = token {
        request.metadata_mut().insert(key, value.parse().unwrap());
    }
    request
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test]
async fn with_no_token_configured_one_is_written_beside_the_socket_and_asked_of_tcp_callers() {
    let stack = stack("", &[]).await;
    let token_file = stack.path("token");
    assert_eq!(mode(&token_file), 0o640, "the app's group may read it");
    assert_eq!(mode(&stack.path("admin-token")), 0o600);
    let token = read(&token_file);
    assert!(
        token.starts_with("llm-sidecar-") && token.len() > 50,
        "random"
    );
    assert_ne!(token, read(&stack.path("admin-token")));

    // The HTTP facade on TCP: an OpenAI error the SDKs raise as an
    // AuthenticationError, and nothing reaches the upstream.
    let (status, error) = stack.chat(None).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["error"]["code"], "token_missing");
    assert_eq!(error["error"]["type"], "authentication_error");
    let (status, error) = stack.chat(Some("llm-sidecar-guess")).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (401, &json!("token_invalid"))
    );
    assert!(stack.fake.requests().is_empty());
    let (status, answer) = stack.chat(Some(&token)).await;
    assert_eq!(status, 200, "{answer}");

    // gRPC on TCP: UNAUTHENTICATED without it, served with it (either
    // spelling); health and reflection need none.
    let tcp = stack.running.tcp.unwrap().to_string();
    let mut client = chat_client(connect_tcp(&tcp).await.unwrap(), 1 << 20);
    let refused = client.complete(grpc_request(None)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("caller token"), "{refused:?}");
    let bearer = Some(("authorization", format!("Bearer {token}")));
    client.complete(grpc_request(bearer)).await.unwrap();
    let own = Some(("x-llm-token", token.clone()));
    client.complete(grpc_request(own)).await.unwrap();
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(connect_tcp(&tcp).await.unwrap());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no token");
    assert_eq!(serving.into_inner().status, 1);

    // The Unix socket asks for nothing: its mode decides who connects.
    let uds = connect_uds(&stack.path("grpc.sock")).await.unwrap();
    chat_client(uds, 1 << 20)
        .complete(grpc_request(None))
        .await
        .unwrap();

    // Refusals are counted, not recorded: four calls, four rows.
    assert_eq!(stack.fake.requests().len(), 4);
    let rows = stack.ledger().await;
    let callers: Vec<Option<&str>> = rows.iter().map(|row| row.caller_name.as_deref()).collect();
    assert_eq!(callers, [None, Some("app"), Some("app"), Some("app")]);
    assert!(rows.iter().all(|row| row.outcome == "ok"));
    let metrics = stack.running.telemetry.prometheus_text();
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("llm_sidecar_access_refused"))
        .collect();
    for (listener, reason) in [
        ("http", "token_missing"),
        ("http", "token_invalid"),
        ("grpc_tcp", "token_missing"),
    ] {
        assert!(
            refused.iter().any(|line| line
                .contains(&format!("llm_sidecar_listener=\"{listener}\""))
                && line.contains(&format!("error_type=\"{reason}\""))
                && line.ends_with(" 1")),
            "{listener} {reason} counted once:\n{}",
            refused.join("\n")
        );
    }
    stack.running.shutdown().await;
}

#[tokio::test]
async fn a_tokens_name_is_the_caller_and_a_claimed_name_is_kept_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let app_file = dir.path().join("app-token");
    std::fs::write(&app_file, "app-token-first-0001\n").unwrap();
    let auth = format!(
        "[auth.tokens]\nbatch = {{ env = \"BATCH_TOKEN\" }}\nweb = {{ file = \"{}\" }}\n",
        app_file.display()
    );
    let stack = stack(&auth, &[("BATCH_TOKEN", "batch-token-0002")]).await;
    assert!(
        !stack.path("token").exists(),
        "configured tokens: no file is written"
    );
    let response = common::plain_http_client()
        .post(format!("{}/chat/completions", stack.facade()))
        .bearer_auth("batch-token-0002")
        .header("x-llm-caller", "pretends-to-be-web")
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = stack.chat(Some("app-token-first-0001")).await;
    assert_eq!(status, 200);
    let rows = stack.ledger().await;
    assert_eq!(rows[1].caller_name.as_deref(), Some("batch"));
    assert_eq!(
        rows[1].caller_claimed.as_deref(),
        Some("pretends-to-be-web")
    );
    assert_eq!(rows[0].caller_name.as_deref(), Some("web"));
    assert_eq!(rows[0].caller_claimed, None);

    // A reload reads the file again: the old token stops working.
    std::fs::write(&app_file, "app-token-second-0003\n").unwrap();
    let toml = format!(
        "default_provider = \"fake\"\n[server]\nuds = \"{dir}/grpc.sock\"\nhttp = \"127.0.0.1:0\"\n\
         [providers.fake]\nbase_url = \"{base}\"\n{auth}",
        dir = stack.dir.path().display(),
        base = stack.fake.base_url(),
    );
    let config = from_toml(&toml, "test.toml").unwrap();
    let env = |name: &str| (name == "BATCH_TOKEN").then(|| "batch-token-0002".to_owned());
    stack.running.reload(&config, &env).unwrap();
    assert_eq!(stack.chat(Some("app-token-first-0001")).await.0, 401);
    assert_eq!(stack.chat(Some("app-token-second-0003")).await.0, 200);
    stack.running.shutdown().await;
}

#[tokio::test]
async fn without_required_tokens_a_placeholder_api_key_is_no_error() {
    let stack = stack(
        "[auth]\nrequire_token = false\n[auth.tokens]\nweb = { env = \"WEB\" }\n",
        &[("WEB", "web-token-0004")],
    )
    .await;
    assert_eq!(stack.chat(None).await.0, 200);
    assert_eq!(stack.chat(Some("sk-placeholder")).await.0, 200);
    assert_eq!(stack.chat(Some("web-token-0004")).await.0, 200);
    let callers: Vec<Option<String>> = stack
        .ledger()
        .await
        .into_iter()
        .map(|row| row.caller_name)
        .collect();
    assert_eq!(callers, [Some("web".to_owned()), None, None]);
    stack.running.shutdown().await;
}

/// One HTTP/1.1 request over a Unix socket: the status and the body.
async fn over_uds(socket: &Path, head: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer)
}

#[tokio::test]
async fn http_listeners_answer_only_their_hosts_and_refuse_browsers() {
    let stack = stack(
        "[auth]\nallowed_hosts = [\"llm.example.svc\"]\nallowed_origins = [\"https://app.example\"]\n",
        &[("LLM_SIDECAR_TOKEN", "caller-token-0005")],
    )
    .await;
    let client = common::plain_http_client();
    let chat = |host: &'static str, origin: Option<&'static str>, content_type: &'static str| {
        let mut request = client
            .post(format!("{}/chat/completions", stack.facade()))
            .bearer_auth("caller-token-0005")
            .header("host", host)
            .header("content-type", content_type)
            .body(body().to_string());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move {
            let response = request.send().await.unwrap();
            let cors = response
                .headers()
                .get("access-control-allow-origin")
                .map(|value| value.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap(), cors)
        }
    };
    // DNS rebinding: a name we do not serve.
    let (status, error, _) = chat("evil.example:8787", None, "application/json").await;
    assert_eq!(status, 403);
    assert_eq!(error["error"]["code"], "host_not_allowed");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_hosts")
    );
    // A page on another origin, and the simple requests browsers send
    // without asking.
    let (status, error, _) = chat(
        "localhost",
        Some("https://evil.example"),
        "application/json",
    )
    .await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (403, &json!("origin_not_allowed"))
    );
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, error, _) = chat("localhost", None, content_type).await;
        assert_eq!(status, 415, "{content_type}: {error}");
        assert_eq!(error["error"]["code"], "unsupported_content_type");
    }
    // An untyped body (a browser's Blob) is no more JSON than text is.
    let untyped = client
        .post(format!("{}/chat/completions", stack.facade()))
        .bearer_auth("caller-token-0005")
        .body(body().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), 415);
    assert!(stack.fake.requests().is_empty(), "nothing went upstream");
    // What is served: loopback names, IP literals, configured names and
    // origins (with CORS).
    for host in ["localhost:1", "127.0.0.1", "[::1]:8787", "LLM.example.svc"] {
        let (status, answer, _) = chat(host, None, "application/json; charset=utf-8").await;
        assert_eq!(status, 200, "{host}: {answer}");
    }
    let (status, _, cors) =
        chat("localhost", Some("https://app.example"), "application/json").await;
    assert_eq!(
        (status, cors.as_deref()),
        (200, Some("https://app.example"))
    );
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/chat/completions", stack.facade()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let rebound_preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/chat/completions", stack.facade()),
        )
        .header("host", "evil.example")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound_preflight.status(), 403);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    // The facade's Unix socket: no token needed, the same Host and
    // Origin rules.
    let socket = stack.path("http.sock");
    let json = "content-type: application/json";
    let post = "POST /v1/chat/completions HTTP/1.1";
    let chat_body = body().to_string();
    let (status, _) = over_uds(
        &socket,
        &format!("{post}\r\nhost: localhost\r\n{json}"),
        &chat_body,
    )
    .await;
    assert_eq!(status, 200);
    // The calling process is recorded, as on the gRPC socket.
    let newest = stack.ledger().await.remove(0);
    assert_eq!(newest.caller_uid, Some(rustix::process::geteuid().as_raw()));
    assert_eq!(newest.caller_pid, Some(std::process::id() as i32));
    let (status, answer) = over_uds(
        &socket,
        &format!("{post}\r\nhost: evil.example\r\n{json}"),
        &chat_body,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = over_uds(
        &socket,
        &format!("{post}\r\nhost: localhost\r\norigin: https://evil.example\r\n{json}"),
        &chat_body,
    )
    .await;
    assert_eq!(status, 403, "{answer}");

    // The admin port: reads open to loopback names, not to other hosts.
    let metrics = client
        .get(format!("{}/metrics", stack.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let rebound = client
        .get(format!("{}/admin/requests", stack.admin()))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    stack.running.shutdown().await;
}

#[tokio::test]
async fn admin_writes_need_the_admin_token() {
    let stack = stack("", &[("LLM_SIDECAR_TOKEN", "caller-token-0006")]).await;
    let admin_token = read(&stack.path("admin-token"));
    assert!(
        !stack.path("token").exists(),
        "the env gave the caller token"
    );
    let client = common::plain_http_client();
    let put = |token: Option<&str>| {
        let mut request = client
            .put(format!("{}/admin/log-level", stack.admin()))
            .body("debug");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };
    let refused = put(None).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    assert_eq!(put(Some("caller-token-0006")).await.status(), 401);
    // Saying it is gRPC does not make a write a read.
    let disguised = client
        .put(format!("{}/admin/log-level", stack.admin()))
        .header("content-type", "application/grpc")
        .body("off")
        .send()
        .await
        .unwrap();
    assert_eq!(disguised.status(), 401);
    // Past the gate: this process's logging is not the sidecar's to change
    // (the test harness owns it), which the endpoint says itself.
    let passed = put(Some(&admin_token)).await;
    assert_ne!(passed.status(), 401);
    let text = passed.text().await.unwrap();
    assert!(!text.contains("admin token"), "{text}");
    stack.running.shutdown().await;
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `llm-sidecar ARGS` with `env`; its stdout when it succeeds.
fn run(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env_remove("LLM_SIDECAR_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn the_binary_rereads_a_changed_token_file_and_its_clients_find_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("grpc.sock");
    let tcp_port = free_port();
    let tcp = format!("127.0.0.1:{tcp_port}");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nuds = \"{}\"\ntcp = \"{tcp}\"\nhttp = \"\"\nadmin = \"\"\nwatch_interval_ms = 100\n\
             [ledger]\nenabled = false\n",
            socket.display()
        ),
    )
    .unwrap();
    let sidecar = Sidecar::serve(
        &["--config", config.to_str().unwrap()],
        Some("info"),
        &socket,
        &dir.path().join("sidecar.log"),
    );
    // The line naming the file comes once every listener is bound, after
    // the socket the start waited for.
    sidecar.wait_for_port(tcp_port);
    let token_file = dir.path().join("token");
    let named = |log: &str| log.contains(&token_file.display().to_string());
    let started = Instant::now();
    while !named(&sidecar.log()) && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = sidecar.log();
    assert!(
        log.contains(&token_file.display().to_string()),
        "the log says where the token is:\n{log}"
    );
    let token = read(&token_file);
    assert!(!log.contains(&token), "the token itself is never logged");

    let chat = |env: &[(&str, &str)]| run(&["chat", "--tcp", &tcp, "--no-stream", "hello"], env);
    let refused = chat(&[]).unwrap_err();
    assert!(refused.contains("Unauthenticated"), "{refused}");
    assert!(
        chat(&[("LLM_SIDECAR_TOKEN", &token)])
            .unwrap()
            .contains("hello")
    );
    let file_arg = token_file.to_str().unwrap();
    let printed = run(&["token", "--file", file_arg], &[]).unwrap();
    assert_eq!(printed.trim(), token);
    let models = run(&["models", "--tcp", &tcp, "--token-file", file_arg], &[]).unwrap();
    assert!(models.contains("mock/"), "{models}");

    // Rotated by the operator: the new token works within the watch
    // interval, the old one stops.
    std::fs::write(&token_file, "llm-sidecar-rotated-token-0007\n").unwrap();
    wait_for("the rotated token", || {
        chat(&[("LLM_SIDECAR_TOKEN", "llm-sidecar-rotated-token-0007")]).is_ok()
    });
    assert!(chat(&[("LLM_SIDECAR_TOKEN", &token)]).is_err());
}

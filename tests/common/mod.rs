//! The whole sidecar in-process on a temporary Unix socket, in front of the
//! fake upstream; a real gRPC client over the real socket.

#![allow(dead_code)]

pub mod corpus;
pub mod logs;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod store_refusal;
pub mod tls;
pub mod wire_json;

use fake_upstream::FakeUpstream;
use llm_sidecar::client::{chat_client, connect_uds};
use llm_sidecar::config::from_toml;
use llm_sidecar::inbound::grpc::json_to_struct;
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::server::{Running, start, start_with_telemetry};
use pb::chat_service_client::ChatServiceClient;
use tonic::transport::Channel;

/// The key the sidecar sends upstream; tests assert it never leaks.
pub const UPSTREAM_KEY: &str = "sk-test-0123456789abcdef";
/// The caller token the harness's sidecar knows (`LLM_SIDECAR_TOKEN`):
/// TCP and HTTP callers present it, and are recorded as `app`.
pub const CALLER_TOKEN: &str = "llm-sidecar-test-caller-token-0123456789";
/// The admin token the harness's sidecar knows (`LLM_SIDECAR_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "llm-sidecar-test-admin-token-0123456789";

/// An HTTP client of a caller that presents no token. (A caller's client,
/// not an upstream one: the sidecar's own are built in one place only.)
#[allow(clippy::disallowed_methods)]
pub fn plain_http_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// An HTTP client that presents [`CALLER_TOKEN`], as an OpenAI SDK given
/// it as `api_key` does.
#[allow(clippy::disallowed_methods)]
pub fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {CALLER_TOKEN}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("the HTTP client builds")
}

/// A second key, for tests that configure `api_keys = [{ env = "FAKE_KEY_2" }]`.
pub const UPSTREAM_KEY_2: &str = "sk-test-second-key-98765";

/// How to start a [`Harness`] beyond the defaults.
#[derive(Default)]
pub struct Options<'a> {
    /// Added to the `[providers.fake]` table.
    pub provider_toml: &'a str,
    /// Tables after the provider's (e.g. `[retry]`).
    pub tables: &'a str,
    /// Variables the sidecar sees besides the fake keys (e.g. `OTEL_*`).
    pub env: Vec<(&'static str, String)>,
    /// Telemetry made by the test (an in-memory span exporter).
    pub telemetry: Option<std::sync::Arc<llm_sidecar::telemetry::Telemetry>>,
}

pub struct Harness {
    pub fake: FakeUpstream,
    pub running: Option<Running>,
    pub client: ChatServiceClient<Channel>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with("").await
    }

    /// `provider_toml` is added to the `[providers.fake]` table.
    pub async fn start_with(provider_toml: &str) -> Harness {
        Harness::start_full(provider_toml, "").await
    }

    /// `tables` (e.g. a `[retry]` table) follow the provider's table.
    pub async fn start_full(provider_toml: &str, tables: &str) -> Harness {
        Harness::start_options(Options {
            provider_toml,
            tables,
            ..Options::default()
        })
        .await
    }

    pub async fn start_options(options: Options<'_>) -> Harness {
        let Options {
            provider_toml,
            tables,
            env: extra_env,
            telemetry,
        } = options;
        let fake = FakeUpstream::start()
            .await
            .expect("the fake upstream starts");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sidecar.sock");
        let toml = format!(
            r#"default_provider = "fake"
[server]
uds = "{socket}"
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
[providers.fake]
base_url = "{base}"
api_key_env = "FAKE_KEY"
# Most tests send failure after failure on purpose; the breaker has its own.
circuit_failures = 0
{provider_toml}
{tables}
{ledger}
"#,
            socket = socket.display(),
            ledger = if tables.contains("[ledger]") {
                String::new()
            } else {
                format!(
                    "[ledger]\npath = \"{}\"",
                    dir.path().join("ledger.sqlite3").display()
                )
            },
            base = fake.base_url(),
        );
        let config = from_toml(&toml, "test.toml").expect("the test config is valid");
        let env = |name: &str| match name {
            "FAKE_KEY" => Some(UPSTREAM_KEY.to_owned()),
            "FAKE_KEY_2" => Some(UPSTREAM_KEY_2.to_owned()),
            "LLM_SIDECAR_TOKEN" => Some(CALLER_TOKEN.to_owned()),
            "LLM_SIDECAR_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
            _ => extra_env
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone()),
        };
        let running = match telemetry {
            Some(telemetry) => start_with_telemetry(&config, &env, telemetry).await,
            None => start(&config, &env).await,
        }
        .expect("the sidecar starts");
        let channel = connect_uds(&socket).await.expect("the client connects");
        Harness {
            fake,
            running: Some(running),
            client: chat_client(channel, 16 * 1024 * 1024),
            dir,
        }
    }

    /// The OpenAI-compatible facade's base URL (`http://127.0.0.1:PORT/v1`).
    pub fn http_base(&self) -> String {
        let running = self.running.as_ref().expect("the sidecar runs");
        let addr = running.http.expect("the harness serves the HTTP facade");
        format!("http://{addr}/v1")
    }

    /// The admin port's base URL (`http://127.0.0.1:PORT`).
    pub fn admin_base(&self) -> String {
        let running = self.running.as_ref().expect("the sidecar runs");
        format!(
            "http://{}",
            running.admin.expect("the harness serves the admin port")
        )
    }

    /// The ledger's rows, newest first, once everything recorded so far is
    /// written.
    pub async fn ledger_rows(&self) -> Vec<llm_sidecar::ledger::LedgerRow> {
        let running = self.running.as_ref().expect("the sidecar runs");
        let ledger = running
            .observer
            .ledger()
            .expect("the harness keeps a ledger");
        ledger.flush().await;
        ledger
            .recent(llm_sidecar::ledger::RecentQuery {
                limit: 1000,
                ..llm_sidecar::ledger::RecentQuery::default()
            })
            .await
            .expect("the ledger answers")
    }

    /// The JSON body of the last request the upstream received.
    pub fn last_upstream_body(&self) -> serde_json::Value {
        self.fake
            .requests()
            .last()
            .expect("the upstream got a request")
            .body
            .clone()
    }

    /// `POST /v1/chat/completions` on the facade with a JSON body.
    pub async fn post_facade(&self, body: &serde_json::Value) -> reqwest::Response {
        http_client()
            .post(format!("{}/chat/completions", self.http_base()))
            .header("x-llm-max-attempts", "1")
            .json(body)
            .send()
            .await
            .expect("the facade answers")
    }

    /// Whether the upstream saw its request abandoned (within 5 s).
    pub async fn upstream_closed(&self) -> bool {
        self.fake
            .wait_for_disconnects(1, std::time::Duration::from_secs(5))
            .await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

pub fn user(text: &str) -> pb::Message {
    pb::Message {
        role: pb::Role::User as i32,
        content: Some(text.to_owned()),
        ..pb::Message::default()
    }
}

/// A request to the fake upstream with a scenario in `extra.fake`.
pub fn request(text: &str, scenario: serde_json::Value) -> pb::ChatRequest {
    let mut extra = serde_json::Map::new();
    extra.insert("fake".to_owned(), scenario);
    pb::ChatRequest {
        model: "fake-model".to_owned(),
        messages: vec![user(text)],
        extra: Some(json_to_struct(&extra)),
        ..pb::ChatRequest::default()
    }
}

/// All chunks of a stream, or the status it ended with (and the chunks
/// before it).
pub async fn collect(
    stream: &mut tonic::Streaming<pb::ChatChunk>,
) -> (Vec<pb::ChatChunk>, Option<tonic::Status>) {
    let mut chunks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => chunks.push(chunk),
            Ok(None) => return (chunks, None),
            Err(status) => return (chunks, Some(status)),
        }
    }
}

pub fn text_of(chunks: &[pb::ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|chunk| chunk.choices.iter())
        .map(|choice| choice.content.as_str())
        .collect()
}

/// A sidecar from a whole configuration (`{socket}` is replaced by a fresh
/// socket path), with no environment but the harness's tokens, and a
/// client connected to it.
pub async fn sidecar_from(toml: &str) -> (Running, ChatServiceClient<Channel>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    let toml = toml.replace("{socket}", &socket.display().to_string());
    let config = from_toml(&toml, "test.toml").expect("the test config is valid");
    let env = |name: &str| match name {
        "LLM_SIDECAR_TOKEN" => Some(CALLER_TOKEN.to_owned()),
        "LLM_SIDECAR_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        _ => None,
    };
    let running = start(&config, &env).await.expect("the sidecar starts");
    let channel = connect_uds(&socket).await.expect("the client connects");
    (running, chat_client(channel, 16 * 1024 * 1024), dir)
}

/// `path` on the admin port at `admin_base` (`http://127.0.0.1:PORT`),
/// asked with the admin token: its JSON.
pub async fn admin_json(admin_base: &str, path: &str) -> serde_json::Value {
    let response = plain_http_client()
        .get(format!("{admin_base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the admin port answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("JSON")
}

/// The first budget's state on the admin port at `admin_base`, as
/// `/admin/budgets` gives it.
pub async fn first_budget(admin_base: &str) -> serde_json::Value {
    admin_json(admin_base, "/admin/budgets").await["budgets"][0].clone()
}

/// A call from team `search` (a `metadata` tag) with 100 prompt tokens
/// and a three-word answer (103 in all) that reserves its prompt's
/// estimate plus `max_tokens` 50 (about 52), tried once.
pub fn search_team_call() -> tonic::Request<pb::ChatRequest> {
    let mut ask = request(
        "hi",
        serde_json::json!({"prompt_tokens": 100, "reply": "one two three"}),
    );
    ask.max_tokens = Some(50);
    ask.metadata.insert("team".into(), "search".into());
    let mut ask = tonic::Request::new(ask);
    ask.metadata_mut()
        .insert("x-llm-max-attempts", "1".parse().unwrap());
    ask
}

/// The data of each event of an SSE body, as JSON where it is JSON
/// (`"[DONE]"` stays a string).
pub fn sse_data(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| serde_json::json!(data)))
        .collect()
}

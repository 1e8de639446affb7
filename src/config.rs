//! Configuration in two steps: the TOML file as written ([`raw`]), then
//! validated, typed values whose errors name the key and the file.
//!
//! Nothing here reads the process environment directly: API keys are looked
//! up through an [`Env`] seam so tests never depend on the real environment.

pub mod auth;
pub mod budgets;
pub mod observability;
mod raw;
mod resume;
mod shared;
mod tls;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{AuthConfig, DEFAULT_TOKEN_NAME, NamedToken};
pub use observability::{
    LedgerSettings, LogFormat, LoggingSettings, PriceSettings, TelemetrySettings,
};
pub use resume::{DEFAULT_RESUME_MAX_BYTES, PrefillStyle};
pub use shared::{SharedConfig, SharedTls, SharedUrl, UnavailableMode};
pub use tls::{ClientIdentity, TlsConfig, TlsOverrides};
pub use validate::{from_toml, from_toml_in};

/// The embedded default, used when no file is given.
pub const DEFAULT_TOML: &str = include_str!("config/default.toml");
pub const DEFAULT_SOURCE: &str = "<embedded default>";

/// A lookup of environment variables, injectable for tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where this came from (a path, or the embedded default), for messages.
    pub source: String,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub retry: RetryConfig,
    pub timeouts: Timeouts,
    pub providers: Vec<ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    pub aliases: Vec<(String, String)>,
    pub default_provider: Option<String>,
    pub ledger: LedgerSettings,
    pub prices: Vec<PriceSettings>,
    pub telemetry: TelemetrySettings,
    pub logging: LoggingSettings,
    pub auth: AuthConfig,
    /// `[[budgets]]`, in the order written.
    pub budgets: Vec<budgets::BudgetConfig>,
    /// `[shared]`: fleet-wide limits in Redis; `None` keeps them per pod.
    pub shared: Option<SharedConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub uds: Option<PathBuf>,
    pub uds_mode: u32,
    /// The mode of a socket directory the sidecar makes (default 0700);
    /// never writable by group or others (`server::socket_dir`).
    pub uds_dir_mode: u32,
    pub tcp: Option<SocketAddr>,
    pub allow_non_loopback: bool,
    pub max_message_bytes: usize,
    /// The OpenAI-compatible HTTP facade on TCP.
    pub http: Option<SocketAddr>,
    /// The OpenAI-compatible HTTP facade on a Unix socket.
    pub http_uds: Option<PathBuf>,
    /// The admin HTTP port: `/metrics`, usage, provider health, log level.
    pub admin: Option<SocketAddr>,
    /// Whether callers of the chat sockets may also call `AdminService`.
    pub admin_on_app_socket: bool,
    /// gRPC health only, on any address: it serves nothing that spends keys.
    pub health: Option<SocketAddr>,
    /// How long a stop waits for calls in flight before ending them.
    pub shutdown_grace: Duration,
    /// How often to look for changed config and key files; `None`: never.
    pub watch_interval: Option<Duration>,
    /// When quiet connections are closed (`server::reaping`).
    pub connections: ConnectionTimeouts,
    /// What one connection, and one stream on it, may hold (`server::limits`).
    pub limits: ConnectionLimits,
    /// Chat calls in flight at once, over every edge; `None`: derived from
    /// the memory limit at start (`server::memory_limit`).
    pub max_calls_in_flight: Option<usize>,
}

/// What one connection and one stream may hold, on every listener, from
/// the `[server]` keys of the same names. The windows bound what a client
/// may send before the sidecar reads it; the send buffer bounds what is
/// queued for a client that does not read, whatever window it advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 initial window of each stream, bytes (RFC 9113 §6.9.2).
    pub stream_window_bytes: u32,
    /// HTTP/2 initial window of the whole connection, bytes.
    pub connection_window_bytes: u32,
    /// Bytes queued for one HTTP/2 stream, or one HTTP/1.1 connection's
    /// writes, before the answer is read no further.
    pub send_buffer_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            // A few hundred: a pod's app that wants more opens another
            // connection, as gRPC channels and load generators do.
            max_concurrent_streams: 256,
            stream_window_bytes: 256 * 1024,
            connection_window_bytes: 1024 * 1024,
            send_buffer_bytes: 64 * 1024,
        }
    }
}

/// How long a connection may stay quiet, from the `[server]` keys of the
/// same names (milliseconds, each at least 1). A connection with a request
/// or call open is never idle; keepalive pings find a peer that is gone
/// even then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionTimeouts {
    /// HTTP listeners (the facade, the admin port): no request open.
    pub idle: Duration,
    /// gRPC listeners (Unix socket, TCP, health port): no call open.
    pub grpc_idle: Duration,
    /// HTTP/2 ping interval on every listener.
    pub keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection closes.
    pub keepalive_timeout: Duration,
    /// The facade's bound on receiving a whole request body (408 after it).
    pub body_read: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts {
            idle: Duration::from_secs(30),
            grpc_idle: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            body_read: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub max_sse_line_bytes: usize,
    /// The largest unary answer read: what a caller can receive
    /// (`server.max_message_bytes`); a larger one is refused unread.
    pub max_response_bytes: usize,
    /// Trust and client certificate of upstream connections.
    pub tls: TlsConfig,
    /// The most answer text (bytes) a stream keeps to resume from; past
    /// it the stream is not resumed (`upstream.resume_max_bytes`).
    pub resume_max_bytes: usize,
}

/// The sidecar's own time bounds, each reported as its own error. The
/// caller's `grpc-timeout` caps them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Streams, per attempt: until the response headers. (A unary answer's
    /// headers come only once it is whole, so the total bounds it instead.)
    pub headers: Duration,
    /// Streams, per attempt: until the first chunk.
    pub first_chunk: Duration,
    /// Streams: the longest gap between two chunks.
    pub idle: Duration,
    /// A whole unary call, retries included.
    pub unary_total: Duration,
    /// Unary, per attempt, when the route has another target to fall back
    /// to: until the answer (whose headers come once it is whole). Without
    /// a next target only `unary_total` bounds an attempt, as it bounds
    /// every attempt (a longer `unary_attempt` is cut by it, not refused:
    /// a config that shortens only the total stays valid).
    pub unary_attempt: Duration,
    /// A whole stream, retries included.
    pub stream_total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            headers: Duration::from_secs(30),
            first_chunk: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            unary_total: Duration::from_secs(120),
            unary_attempt: Duration::from_secs(60),
            stream_total: Duration::from_secs(300),
        }
    }
}

/// Per-provider or per-route changes to [`Timeouts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub headers: Option<Duration>,
    pub first_chunk: Option<Duration>,
    pub idle: Option<Duration>,
    pub unary_total: Option<Duration>,
    pub unary_attempt: Option<Duration>,
    pub stream_total: Option<Duration>,
}

impl TimeoutOverrides {
    pub fn over(&self, base: Timeouts) -> Timeouts {
        Timeouts {
            headers: self.headers.unwrap_or(base.headers),
            first_chunk: self.first_chunk.unwrap_or(base.first_chunk),
            idle: self.idle.unwrap_or(base.idle),
            unary_total: self.unary_total.unwrap_or(base.unary_total),
            unary_attempt: self.unary_attempt.unwrap_or(base.unary_attempt),
            stream_total: self.stream_total.unwrap_or(base.stream_total),
        }
    }
}

/// `[retry]`, as plain settings: `pipeline::retry::RetryPolicy` acts on
/// them (its backoff and the decision to retry live there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 means no retries (default 3).
    pub max_attempts: u32,
    /// The first backoff's cap (default 500 ms), doubled per retry.
    pub base_delay: Duration,
    /// No backoff is longer (default 30 s).
    pub max_delay: Duration,
    /// Retries per provider at most this share of first attempts (0.2).
    pub budget_ratio: f64,
    /// ... plus this many per window, so a quiet provider can retry (10).
    pub budget_floor: u64,
    /// With no caller deadline known, the longest `Retry-After` the sidecar
    /// waits out itself (default 5 s); a longer one goes back to the caller
    /// at once, with its `Retry-After`, for it to act on.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            budget_ratio: 0.2,
            budget_floor: 10,
            max_retry_after: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat-completions API.
    OpenAi,
    /// The built-in offline provider.
    Mock,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Without the trailing slash, e.g. "https://openrouter.ai/api/v1".
    pub base_url: String,
    pub api_key: KeySource,
    /// Further keys, used in turn with `api_key`.
    pub more_api_keys: Vec<KeySource>,
    pub key_cooldown: Duration,
    /// Sent with every request, in the config's order.
    pub headers: Vec<HeaderConfig>,
    pub stream_options: bool,
    /// The JSON field a gRPC caller's `max_tokens` is sent as.
    pub max_tokens_field: MaxTokensField,
    /// Whether the caller's `metadata` tags are sent upstream too.
    pub forward_metadata: bool,
    pub max_attempts: Option<u32>,
    pub timeouts: TimeoutOverrides,
    pub limit: Option<LimitConfig>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    /// How long a call may wait for a queue slot or for rate quota.
    pub max_queue_wait: Duration,
    pub circuit_failures: u32,
    pub circuit_cooldown: Duration,
    /// Read an abandoned stream to its end in the background, so the
    /// ledger gets the provider's own usage (costs the rest of the answer).
    pub drain_on_cancel: bool,
    /// Its own trust or client certificate (and so its own HTTP client);
    /// empty: the `[upstream]` settings and the shared client.
    pub tls: TlsOverrides,
    /// Resume its streams cut mid-answer (`resume`); a route's own
    /// `resume` wins.
    pub resume: bool,
    /// How it accepts the text so far of a cut answer; `None`: it is never
    /// asked to continue one.
    pub prefill: Option<PrefillStyle>,
}

/// How a provider spells the cap on generated tokens. OpenAI's own API
/// refuses `max_tokens` for its reasoning models (o-series, gpt-5) and
/// accepts `max_completion_tokens` for all; most compatible APIs know only
/// `max_tokens`. Set per provider, never found out by retrying after a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The JSON field name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }

    /// The default for a base URL: OpenAI's own API takes the new field.
    pub fn default_for(base_url: &str) -> MaxTokensField {
        let host = base_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or_default();
        if host == "api.openai.com" {
            MaxTokensField::MaxCompletionTokens
        } else {
            MaxTokensField::MaxTokens
        }
    }
}

/// A provider's concurrency limit and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    pub max_in_flight: usize,
    pub max_queue: usize,
    pub max_queue_wait: Duration,
}

/// Where a provider's API key comes from; a file wins over the environment
/// (a mounted Kubernetes Secret is the production way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// A header a provider gets with every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderConfig {
    pub name: String,
    pub value: HeaderValueSource,
    /// Scrubbed from everything a caller or an operator sees: its name
    /// looks secret (`secret::header_name_is_secret`) or the config marks
    /// it `secret = true`.
    pub secret: bool,
}

/// Where a header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueSource {
    /// Written in the config.
    Inline(String),
    /// Read like a key: the file, else the environment variable.
    Loaded(KeySource),
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub model: String,
    pub provider: String,
    pub rewrite: Option<String>,
    pub max_attempts: Option<u32>,
    pub timeouts: TimeoutOverrides,
    pub fallbacks: Vec<FallbackConfig>,
    /// Resume the route's streams cut mid-answer; `None`: as the serving
    /// provider says.
    pub resume: Option<bool>,
}

/// Another provider and/or model to try when a route's target fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackConfig {
    pub provider: Option<String>,
    pub model: Option<String>,
}

/// The name of the built-in mock provider and its route.
pub const MOCK_PROVIDER: &str = "mock";
pub const MOCK_ROUTE: &str = "mock/*";

impl Config {
    /// The embedded default: its socket and ledger in this process's
    /// runtime directory ([`crate::runtime_dir`]).
    pub fn embedded() -> Config {
        let runtime_dir = crate::runtime_dir::default_dir(&process_env);
        let mut config = from_toml_in(DEFAULT_TOML, DEFAULT_SOURCE, &runtime_dir)
            .expect("the embedded default configuration is valid");
        config.server.uds = Some(runtime_dir.join(crate::runtime_dir::SOCKET_FILE));
        config
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: source.clone(),
            key: String::new(),
            message: format!("cannot read the file: {error}"),
        })?;
        from_toml(&text, &source)
    }
}

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

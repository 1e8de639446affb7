//! The configuration file exactly as written. `deny_unknown_fields`
//! everywhere: a misspelt key is an error that names it, not a silent
//! default.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Provider for models that match no route.
    pub default_provider: Option<String>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// The built-in `mock/*` models; on unless switched off.
    pub mock: Option<bool>,
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub auth: RawAuth,
    /// Prices per million tokens, by model name or glob.
    #[serde(default)]
    pub prices: Vec<RawPrice>,
    /// Spend limits per caller, tag or provider.
    #[serde(default)]
    pub budgets: Vec<RawBudget>,
    /// The store that makes limits and key cooldowns hold fleet-wide.
    pub shared: Option<RawShared>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub name: Option<String>,
    /// Exactly one of `caller`, `tag` ("key=value") and `provider`.
    pub caller: Option<String>,
    pub tag: Option<String>,
    pub provider: Option<String>,
    /// "hour", "day" or "month", in UTC.
    pub window: Option<String>,
    /// Tokens per window.
    pub tokens: Option<u64>,
    /// US dollars per window.
    pub usd: Option<f64>,
    /// "refuse" (default) or "allow" calls to unpriced models under `usd`.
    pub unpriced: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Unix socket path; empty string turns the socket off.
    pub uds: Option<String>,
    /// Socket file mode as an octal string, e.g. "0660".
    pub uds_mode: Option<String>,
    /// Mode of a socket directory the sidecar makes, e.g. "0750".
    pub uds_dir_mode: Option<String>,
    /// Loopback TCP address, e.g. "127.0.0.1:50051"; empty turns it off.
    pub tcp: Option<String>,
    pub allow_non_loopback: Option<bool>,
    pub max_message_bytes: Option<usize>,
    /// The OpenAI-compatible HTTP facade on loopback TCP; empty: off.
    pub http: Option<String>,
    /// The OpenAI-compatible HTTP facade on a Unix socket; empty: off.
    pub http_uds: Option<String>,
    /// The admin HTTP port (metrics, usage, health, log level); empty: off.
    pub admin: Option<String>,
    /// Also serve the gRPC `AdminService` to the application's callers.
    pub admin_on_app_socket: Option<bool>,
    /// A port that serves only gRPC health, for the kubelet's probes (which
    /// come to the pod IP, not loopback); empty: off.
    pub health: Option<String>,
    /// On SIGTERM, how long calls in flight may take to finish before they
    /// are ended with UNAVAILABLE.
    pub shutdown_grace_ms: Option<u64>,
    /// How often the config file and key files are checked for changes
    /// (hot reload); 0 turns the check off (SIGHUP still reloads).
    pub watch_interval_ms: Option<u64>,
    /// HTTP listeners: close a connection with no request open this long.
    pub idle_timeout_ms: Option<u64>,
    /// gRPC listeners: close a connection with no call open this long.
    pub grpc_idle_timeout_ms: Option<u64>,
    /// HTTP/2 keepalive: ping an open connection this often.
    pub keepalive_interval_ms: Option<u64>,
    /// HTTP/2 keepalive: close a connection whose ping is unanswered this long.
    pub keepalive_timeout_ms: Option<u64>,
    /// HTTP facade: the longest a request body may take to arrive.
    pub body_read_timeout_ms: Option<u64>,
    /// Every listener: streams one HTTP/2 connection may have open at once.
    pub max_concurrent_streams: Option<u32>,
    /// Every listener: the HTTP/2 window each stream is given for what the
    /// client sends (bytes).
    pub stream_window_bytes: Option<u32>,
    /// Every listener: the HTTP/2 window a whole connection is given for
    /// what the client sends (bytes).
    pub connection_window_bytes: Option<u32>,
    /// Every listener: what one stream (HTTP/2) or connection (HTTP/1.1)
    /// may have queued for a client that does not read (bytes).
    pub send_buffer_bytes: Option<usize>,
    /// Chat calls in flight at once, over every edge; more are refused at
    /// once (default: the memory limit over the bound of one call).
    pub max_calls_in_flight: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout_ms: Option<u64>,
    pub pool_idle_timeout_ms: Option<u64>,
    pub pool_max_idle_per_host: Option<usize>,
    pub max_sse_line_bytes: Option<usize>,
    /// PEM files of CA certificates to trust for upstream servers.
    pub ca_files: Option<Vec<String>>,
    /// Whether the public roots (and SSL_CERT_FILE / SSL_CERT_DIR) are
    /// trusted besides `ca_files` (default true).
    pub public_roots: Option<bool>,
    /// A PEM client certificate (chain) for mutual TLS…
    pub client_cert_file: Option<String>,
    /// …and its PEM private key.
    pub client_key_file: Option<String>,
    /// The most answer text (bytes) a stream keeps to resume from.
    pub resume_max_bytes: Option<usize>,
}

/// Each bound in milliseconds; unset ones come from the level above
/// (route → provider → global → built-in default).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Per attempt: until the response headers.
    pub headers_ms: Option<u64>,
    /// Streams, per attempt: until the first chunk.
    pub first_chunk_ms: Option<u64>,
    /// Streams: the longest gap between two chunks.
    pub idle_ms: Option<u64>,
    /// The whole unary call, retries included.
    pub unary_total_ms: Option<u64>,
    /// Unary, per attempt, when another target can take over.
    pub unary_attempt_ms: Option<u64>,
    /// The whole stream, retries included.
    pub stream_total_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included (1: no retries).
    pub max_attempts: Option<u32>,
    pub base_delay_ms: Option<u64>,
    pub max_delay_ms: Option<u64>,
    /// Retries may add at most this share on top of recent first attempts.
    pub budget_ratio: Option<f64>,
    /// Retries always allowed per 10 s window, however few requests came.
    pub budget_floor: Option<u64>,
    /// Without a caller deadline, the longest Retry-After waited out.
    pub max_retry_after_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// "openai" (any OpenAI-compatible API; the default) or "mock".
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    /// More keys (or deployments) of this provider, used in turn.
    #[serde(default)]
    pub api_keys: Vec<RawKeySource>,
    /// How long a key answered with 401/403/429 is set aside (default 60 s).
    pub key_cooldown_ms: Option<u64>,
    /// Sent with every request: a plain string, or a table (see
    /// [`RawHeader`]).
    #[serde(default)]
    pub headers: BTreeMap<String, RawHeader>,
    /// Whether the provider accepts `stream_options.include_usage`.
    pub stream_options: Option<bool>,
    /// The field a gRPC caller's `max_tokens` is sent as: "max_tokens" or
    /// "max_completion_tokens" (default: the latter for api.openai.com).
    pub max_tokens_field: Option<String>,
    /// Send the caller's `metadata` tags upstream too (default: kept).
    pub forward_metadata: Option<bool>,
    /// Overrides `retry.max_attempts` for this provider.
    pub max_attempts: Option<u32>,
    /// Overrides `[timeouts]` for this provider.
    pub timeouts: Option<RawTimeouts>,
    /// Upstream requests in flight at once (unset: no limit).
    pub max_in_flight: Option<usize>,
    /// Calls that may wait for a slot (default 64).
    pub max_queue: Option<usize>,
    /// The longest a call waits for a slot (default 10 s).
    pub max_queue_wait_ms: Option<u64>,
    /// Requests per minute this sidecar sends the provider (unset: no limit).
    pub requests_per_minute: Option<u32>,
    /// Prompt tokens per minute, estimated before sending (unset: no limit).
    pub tokens_per_minute: Option<u32>,
    /// Failures in a row that open the circuit (default 5; 0: never).
    pub circuit_failures: Option<u32>,
    /// How long an open circuit skips the provider (default 30 s).
    pub circuit_cooldown_ms: Option<u64>,
    /// When a caller abandons a stream, read it to the end anyway so the
    /// ledger records the provider's true usage (default false: stop at once).
    pub drain_on_cancel: Option<bool>,
    /// TLS settings of this provider's own client (see [`RawUpstream`]);
    /// each replaces the `[upstream]` value.
    /// PEM files of CA certificates to trust for upstream servers.
    pub ca_files: Option<Vec<String>>,
    /// Whether the public roots (and SSL_CERT_FILE / SSL_CERT_DIR) are
    /// trusted besides `ca_files` (default true).
    pub public_roots: Option<bool>,
    /// A PEM client certificate (chain) for mutual TLS…
    pub client_cert_file: Option<String>,
    /// …and its PEM private key.
    pub client_key_file: Option<String>,
    /// Resume streams cut mid-answer (needs `prefill`).
    pub resume: Option<bool>,
    /// How the provider accepts an assistant prefill: "trailing_assistant",
    /// "prefix_flag" or "continue_final_message".
    pub prefill: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// An exact model name or a glob such as "anthropic/*".
    pub model: String,
    pub provider: String,
    /// The model name sent upstream; `{model}` is the requested name and
    /// `{suffix}` what a trailing `*` matched.
    pub rewrite: Option<String>,
    /// Overrides the provider's and the global `max_attempts`.
    pub max_attempts: Option<u32>,
    /// Overrides the provider's and the global timeouts.
    pub timeouts: Option<RawTimeouts>,
    /// Tried in order when the target before fails in a way another may
    /// not (provider failure, open circuit, full queue), before any output.
    #[serde(default)]
    pub fallbacks: Vec<RawFallback>,
    /// Resume streams cut mid-answer, on a target that sets `prefill`.
    pub resume: Option<bool>,
}

/// A provider header's value: `"my-app"`, or a table
/// `{ value = "...", secret = true }`, `{ env = "NAME" }` or
/// `{ file = "/path" }` (read like a key file).
#[derive(Debug)]
pub enum RawHeader {
    Plain(String),
    Table(RawHeaderTable),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderTable {
    pub value: Option<String>,
    pub env: Option<String>,
    pub file: Option<String>,
    /// Scrub this value from errors, logs and spans even though its name
    /// does not look secret.
    pub secret: Option<bool>,
}

// By hand rather than `#[serde(untagged)]`: an untagged enum's error says
// only "did not match any variant", where this one names the unknown key.
impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, or a table with `value`, `env` or `file` and `secret`")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawHeader, E> {
                Ok(RawHeader::Plain(text.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawHeader, A::Error> {
                RawHeaderTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawHeader::Table)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeySource {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// `[auth]`: caller tokens, the admin token, allowed hosts and origins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// TCP listeners ask for a caller token (default true).
    pub require_token: Option<bool>,
    /// Name → where the token is (`{ env = ... }` or `{ file = ... }`).
    #[serde(default)]
    pub tokens: BTreeMap<String, RawKeySource>,
    pub admin_token: Option<RawKeySource>,
    pub token_file: Option<String>,
    pub admin_token_file: Option<String>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    /// Another provider (the same model name unless `model` says otherwise).
    pub provider: Option<String>,
    /// Another model; without `provider` it is routed like a request's.
    pub model: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// On unless switched off.
    pub enabled: Option<bool>,
    pub path: Option<String>,
    /// Rows older than this many days are deleted.
    pub retention_days: Option<f64>,
    /// At most this many newest rows are kept.
    pub retention_max_rows: Option<u64>,
    /// Records that may wait for the writer before new ones are dropped.
    pub queue_capacity: Option<usize>,
    /// The metadata key / HTTP header that names the caller.
    pub caller_header: Option<String>,
    /// The fleet ledger: a `postgres://` URL the rows are forwarded to.
    pub url: Option<String>,
    /// The variable that holds that URL (e.g. from a Kubernetes Secret).
    pub url_env: Option<String>,
    /// The file that holds that URL (e.g. a mounted Secret).
    pub url_file: Option<String>,
    /// Rows kept in the file while PostgreSQL is away.
    pub spool_max_rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP endpoint; unset: OTEL_EXPORTER_OTLP_ENDPOINT, or no export.
    pub endpoint: Option<String>,
    /// "grpc" or "http/protobuf".
    pub protocol: Option<String>,
    pub service_name: Option<String>,
    /// Record prompts and answers in spans (off unless switched on).
    pub capture_content: Option<bool>,
    pub capture_max_bytes: Option<usize>,
    /// Share of new traces sampled, 0.0 to 1.0 (a caller's sampled
    /// parent is always followed).
    pub sampler_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// "text" (default) or "json".
    pub format: Option<String>,
    /// A tracing filter such as "info" or "llm_sidecar=debug".
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// An exact model name or a glob such as "openai/gpt-4o*".
    pub model: String,
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// USD per million cached prompt tokens (default: the input price).
    pub cached_input: Option<f64>,
    /// USD per million prompt tokens written to the provider's cache
    /// (default: the input price).
    pub cache_write: Option<f64>,
}

/// `[shared]`: limits and key cooldowns held in Redis (or Valkey) across
/// every sidecar that shares it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub redis_url: Option<String>,
    /// The environment variable that holds the URL.
    pub redis_url_env: Option<String>,
    /// The file that holds the URL (a mounted Kubernetes Secret).
    pub redis_url_file: Option<String>,
    /// Prefix of every key written (default "llm-sidecar").
    pub prefix: Option<String>,
    /// The sidecars sharing the store (required).
    pub expected_pods: Option<u32>,
    /// "local" (default) or "closed".
    pub on_unavailable: Option<String>,
    /// The longest one round trip may take (default 50 ms).
    pub timeout_ms: Option<u64>,
    /// PEM file of the CA certificates a `rediss://` server is checked
    /// against, instead of the system's store.
    pub ca_file: Option<String>,
    /// PEM client certificate (then intermediates), for mutual TLS.
    pub client_cert_file: Option<String>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<String>,
}

//! From the file as written to typed, checked values. Every error names the
//! file and the key, and says what would be accepted.

use super::raw::{
    RawConfig, RawHeader, RawHeaderTable, RawKeySource, RawProvider, RawRetry, RawServer,
    RawTimeouts, RawUpstream,
};
use super::{
    Config, ConfigError, ConnectionLimits, ConnectionTimeouts, FallbackConfig, HeaderConfig,
    HeaderValueSource, KeySource, LimitConfig, MOCK_PROVIDER, MOCK_ROUTE, MaxTokensField,
    PrefillStyle, ProviderConfig, ProviderKind, RetryConfig, RouteConfig, ServerConfig,
    TimeoutOverrides, Timeouts, TlsConfig, TlsOverrides, UpstreamConfig,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tls::RawTlsKeys;

const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const DEFAULT_MAX_SSE_LINE_BYTES: usize = 1024 * 1024;
/// The least send buffer: one HTTP/2 frame at its default size.
const MIN_SEND_BUFFER_BYTES: usize = 16 * 1024;
/// Only this uid may reach a socket in a directory the sidecar makes.
const DEFAULT_UDS_DIR_MODE: u32 = 0o700;
/// Inside Kubernetes' default 30 s termination grace, leaving time for the
/// ledger and telemetry to flush after the calls end.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Key rotation in Kubernetes takes up to a minute to reach the pod; a
/// couple of seconds more is nothing, and the check is a few small reads.
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Parses and validates configuration text; `source` names it in errors.
/// Paths left unset default into this process's runtime directory
/// ([`crate::runtime_dir`], which reads `XDG_RUNTIME_DIR`).
pub fn from_toml(text: &str, source: &str) -> Result<Config, ConfigError> {
    let runtime_dir = crate::runtime_dir::default_dir(&super::process_env);
    from_toml_in(text, source, &runtime_dir)
}

/// [`from_toml`] with the runtime directory given.
pub fn from_toml_in(text: &str, source: &str, runtime_dir: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError {
        file: source.to_owned(),
        key: String::new(),
        message: error.to_string().trim_end().to_owned(),
    })?;
    Checker {
        source,
        runtime_dir,
    }
    .config(raw)
}

struct Checker<'a> {
    source: &'a str,
    /// Where the ledger goes when `ledger.path` is unset.
    runtime_dir: &'a Path,
}

impl Checker<'_> {
    fn error(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;
        let upstream = self.upstream(raw.upstream, server.max_message_bytes)?;
        let timeouts = self
            .overrides("timeouts", raw.timeouts.clone())?
            .over(Timeouts::default());
        self.timeouts_agree("timeouts", timeouts)?;
        let mut providers = Vec::new();
        if raw.mock != Some(false) {
            providers.push(mock_provider());
        }
        for (name, provider) in raw.providers {
            let provider = self.provider(name, provider, &upstream.tls)?;
            self.timeouts_agree(
                &format!("providers.{}.timeouts", provider.name),
                provider.timeouts.over(timeouts),
            )?;
            providers.push(provider);
        }
        let known = |name: &str| providers.iter().any(|provider| provider.name == name);

        let mut routes = Vec::new();
        if raw.mock != Some(false) {
            routes.push(RouteConfig {
                model: MOCK_ROUTE.to_owned(),
                provider: MOCK_PROVIDER.to_owned(),
                rewrite: None,
                max_attempts: None,
                timeouts: TimeoutOverrides::default(),
                fallbacks: Vec::new(),
                resume: None,
            });
        }
        for (index, route) in raw.routes.into_iter().enumerate() {
            let key = format!("routes[{index}]");
            if route.model.trim().is_empty() {
                return Err(self.error(format!("{key}.model"), "must not be empty"));
            }
            if let Err(error) = globset::Glob::new(&route.model) {
                return Err(self.error(
                    format!("{key}.model"),
                    format!("not a valid pattern: {error}"),
                ));
            }
            if !known(&route.provider) {
                return Err(self.error(
                    format!("{key}.provider"),
                    format!("no provider named `{}` is configured", route.provider),
                ));
            }
            if let Some(rewrite) = &route.rewrite
                && rewrite.contains("{suffix}")
                && !route.model.ends_with('*')
            {
                return Err(self.error(
                    format!("{key}.rewrite"),
                    "`{suffix}` needs a model pattern that ends with `*`",
                ));
            }
            self.attempts(&format!("{key}.max_attempts"), route.max_attempts)?;
            let route_timeouts = match route.timeouts {
                Some(raw) => self.overrides(&format!("{key}.timeouts"), raw)?,
                None => TimeoutOverrides::default(),
            };
            if let Some(provider) = providers
                .iter()
                .find(|provider| provider.name == route.provider)
            {
                let effective = route_timeouts.over(provider.timeouts.over(timeouts));
                self.timeouts_agree(&format!("{key}.timeouts"), effective)?;
            }
            let mut fallbacks = Vec::new();
            for (at, fallback) in route.fallbacks.into_iter().enumerate() {
                let fallback_key = format!("{key}.fallbacks[{at}]");
                if fallback.provider.is_none() && fallback.model.is_none() {
                    return Err(self.error(fallback_key, "name a `provider`, a `model`, or both"));
                }
                if let Some(provider) = &fallback.provider
                    && !known(provider)
                {
                    return Err(self.error(
                        format!("{fallback_key}.provider"),
                        format!("no provider named `{provider}` is configured"),
                    ));
                }
                fallbacks.push(FallbackConfig {
                    provider: fallback.provider,
                    model: fallback.model,
                });
            }
            if route.resume == Some(true) {
                self.route_can_resume(&key, &route.provider, &fallbacks, &providers)?;
            }
            routes.push(RouteConfig {
                model: route.model,
                provider: route.provider,
                rewrite: route.rewrite,
                max_attempts: route.max_attempts,
                timeouts: route_timeouts,
                fallbacks,
                resume: route.resume,
            });
        }

        for (alias, target) in &raw.aliases {
            if target.trim().is_empty() {
                return Err(self.error(format!("aliases.{alias}"), "must name a model"));
            }
            if raw.aliases.contains_key(target) {
                return Err(self.error(
                    format!("aliases.{alias}"),
                    format!("points at the alias `{target}`; point it at a model instead"),
                ));
            }
        }
        if let Some(default) = &raw.default_provider
            && !known(default)
        {
            return Err(self.error(
                "default_provider",
                format!("no provider named `{default}` is configured"),
            ));
        }

        let budgets = self.budgets(raw.budgets, |name| {
            providers.iter().any(|provider| provider.name == name)
        })?;
        Ok(Config {
            source: self.source.to_owned(),
            server,
            upstream,
            retry: self.retry(raw.retry)?,
            timeouts,
            providers,
            routes,
            aliases: raw.aliases.into_iter().collect(),
            default_provider: raw.default_provider,
            ledger: self.ledger(raw.ledger)?,
            prices: self.prices(raw.prices)?,
            telemetry: self.telemetry(raw.telemetry)?,
            logging: self.logging(raw.logging)?,
            auth: self.auth(raw.auth)?,
            budgets,
            shared: self.shared(raw.shared)?,
        })
    }

    /// A secret's `{ env = ... }` or `{ file = ... }`: exactly one.
    fn key_source(&self, key: &str, source: RawKeySource) -> Result<KeySource, ConfigError> {
        if source.env.is_none() == source.file.is_none() {
            return Err(self.error(key, "give either `env` or `file`"));
        }
        Ok(KeySource {
            env: source.env,
            file: source.file.map(PathBuf::from),
        })
    }

    /// `server.uds_dir_mode`: octal, and closed to writers other than the
    /// owner, which the socket directory check would refuse anyway.
    fn uds_dir_mode(&self, text: Option<&str>) -> Result<u32, ConfigError> {
        let Some(text) = text else {
            return Ok(DEFAULT_UDS_DIR_MODE);
        };
        let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| {
                self.error(
                    "server.uds_dir_mode",
                    format!("`{text}` is not an octal directory mode such as \"0750\""),
                )
            })?;
        if mode & 0o022 != 0 {
            return Err(self.error(
                "server.uds_dir_mode",
                format!(
                    "`{text}` lets group or others write in the socket directory, and so replace \
                     the socket; use a mode without their write bits, such as \"0750\""
                ),
            ));
        }
        Ok(mode)
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let connections = self.connection_timeouts(&raw)?;
        let limits = self.connection_limits(&raw)?;
        let uds = raw.uds.filter(|path| !path.is_empty()).map(PathBuf::from);
        let uds_mode = match raw.uds_mode.as_deref() {
            None => 0o660,
            Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                .ok()
                .filter(|mode| *mode <= 0o777)
                .ok_or_else(|| {
                    self.error(
                        "server.uds_mode",
                        format!("`{text}` is not an octal file mode such as \"0660\""),
                    )
                })?,
        };
        let uds_dir_mode = self.uds_dir_mode(raw.uds_dir_mode.as_deref())?;
        let allow_non_loopback = raw.allow_non_loopback.unwrap_or(false);
        let tcp = self.listen_addr("server.tcp", raw.tcp.as_deref(), allow_non_loopback)?;
        let http = self.listen_addr("server.http", raw.http.as_deref(), allow_non_loopback)?;
        let admin = self.listen_addr("server.admin", raw.admin.as_deref(), allow_non_loopback)?;
        // Health only: reachable from the kubelet by design.
        let health = self.listen_addr("server.health", raw.health.as_deref(), true)?;
        let shutdown_grace = Duration::from_millis(
            raw.shutdown_grace_ms
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE.as_millis() as u64),
        );
        let http_uds = raw
            .http_uds
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        if http_uds.is_some() && http_uds == uds {
            return Err(self.error(
                "server.http_uds",
                "is the same path as server.uds: give the HTTP facade its own socket",
            ));
        }
        if uds.is_none() && tcp.is_none() && http.is_none() && http_uds.is_none() {
            return Err(self.error(
                "server",
                "none of `uds`, `tcp`, `http`, `http_uds` is set: the sidecar would not listen anywhere",
            ));
        }
        let max_message_bytes = raw.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 64 * 1024 {
            return Err(self.error("server.max_message_bytes", "must be at least 65536"));
        }
        if raw.max_calls_in_flight == Some(0) {
            return Err(self.error(
                "server.max_calls_in_flight",
                "must be at least 1 (leave it out for the default from the memory limit)",
            ));
        }
        Ok(ServerConfig {
            uds,
            uds_mode,
            uds_dir_mode,
            tcp,
            allow_non_loopback,
            max_message_bytes,
            http,
            http_uds,
            admin,
            admin_on_app_socket: raw.admin_on_app_socket.unwrap_or(false),
            health,
            shutdown_grace,
            watch_interval: match raw.watch_interval_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => Some(DEFAULT_WATCH_INTERVAL),
            },
            connections,
            limits,
            max_calls_in_flight: raw.max_calls_in_flight,
        })
    }

    /// The `[server]` HTTP/2 windows, stream limit and send buffer, each
    /// within what HTTP/2 allows (windows up to 2^31 - 1, RFC 9113 §6.9.1)
    /// and large enough to carry a frame.
    fn connection_limits(&self, raw: &RawServer) -> Result<ConnectionLimits, ConfigError> {
        const MAX_WINDOW: u32 = (1 << 31) - 1;
        const DEFAULT_WINDOW: u32 = 65_535;
        let default = ConnectionLimits::default();
        let max_concurrent_streams = raw
            .max_concurrent_streams
            .unwrap_or(default.max_concurrent_streams);
        if max_concurrent_streams == 0 {
            return Err(self.error("server.max_concurrent_streams", "must be at least 1"));
        }
        let window = |key: &str, value: Option<u32>, default: u32, least: u32| match value {
            None => Ok(default),
            Some(bytes) if (least..=MAX_WINDOW).contains(&bytes) => Ok(bytes),
            Some(_) => Err(self.error(
                format!("server.{key}"),
                format!("must be a number of bytes from {least} to {MAX_WINDOW}"),
            )),
        };
        let stream_window_bytes = window(
            "stream_window_bytes",
            raw.stream_window_bytes,
            default.stream_window_bytes,
            DEFAULT_WINDOW,
        )?;
        let connection_window_bytes = window(
            "connection_window_bytes",
            raw.connection_window_bytes,
            default.connection_window_bytes.max(stream_window_bytes),
            stream_window_bytes,
        )?;
        let send_buffer_bytes = raw.send_buffer_bytes.unwrap_or(default.send_buffer_bytes);
        if send_buffer_bytes < MIN_SEND_BUFFER_BYTES {
            return Err(self.error(
                "server.send_buffer_bytes",
                format!("must be at least {MIN_SEND_BUFFER_BYTES} (one HTTP/2 frame)"),
            ));
        }
        Ok(ConnectionLimits {
            max_concurrent_streams,
            stream_window_bytes,
            connection_window_bytes,
            send_buffer_bytes,
        })
    }

    /// The `[server]` connection timeouts; 0 is refused, since it would
    /// close every connection at once rather than turn the bound off.
    fn connection_timeouts(&self, raw: &RawServer) -> Result<ConnectionTimeouts, ConfigError> {
        let default = ConnectionTimeouts::default();
        let read = |key: &str, value: Option<u64>, default: Duration| match value {
            None => Ok(default),
            Some(0) => Err(self.error(
                format!("server.{key}"),
                "must be a number of milliseconds of at least 1",
            )),
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        Ok(ConnectionTimeouts {
            idle: read("idle_timeout_ms", raw.idle_timeout_ms, default.idle)?,
            grpc_idle: read(
                "grpc_idle_timeout_ms",
                raw.grpc_idle_timeout_ms,
                default.grpc_idle,
            )?,
            keepalive_interval: read(
                "keepalive_interval_ms",
                raw.keepalive_interval_ms,
                default.keepalive_interval,
            )?,
            keepalive_timeout: read(
                "keepalive_timeout_ms",
                raw.keepalive_timeout_ms,
                default.keepalive_timeout,
            )?,
            body_read: read(
                "body_read_timeout_ms",
                raw.body_read_timeout_ms,
                default.body_read,
            )?,
        })
    }

    /// A TCP address to listen on; a non-loopback one only when allowed,
    /// since anyone who can reach it could spend the provider keys.
    fn listen_addr(
        &self,
        key: &str,
        text: Option<&str>,
        allow_non_loopback: bool,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(text) = text.filter(|text| !text.is_empty()) else {
            return Ok(None);
        };
        let addr: SocketAddr = text.parse().map_err(|_| {
            self.error(
                key,
                format!("`{text}` is not an address such as \"127.0.0.1:50051\""),
            )
        })?;
        if !addr.ip().is_loopback() && !allow_non_loopback {
            return Err(self.error(
                key,
                format!(
                    "{addr} is not a loopback address: anyone who can reach it could spend the provider keys. \
                     Set server.allow_non_loopback = true if that is what you want"
                ),
            ));
        }
        Ok(Some(addr))
    }

    /// `[upstream]`; a unary answer may be as large as a caller can
    /// receive, `max_message_bytes`.
    fn upstream(
        &self,
        raw: RawUpstream,
        max_message_bytes: usize,
    ) -> Result<UpstreamConfig, ConfigError> {
        let connect_timeout_ms = raw.connect_timeout_ms.unwrap_or(10_000);
        if connect_timeout_ms == 0 {
            return Err(self.error("upstream.connect_timeout_ms", "must be more than 0"));
        }
        // One event becomes one message to a gRPC caller: it must fit.
        let max_sse_line_bytes = raw
            .max_sse_line_bytes
            .unwrap_or(DEFAULT_MAX_SSE_LINE_BYTES.min(max_message_bytes));
        if max_sse_line_bytes < 1024 {
            return Err(self.error("upstream.max_sse_line_bytes", "must be at least 1024"));
        }
        if max_sse_line_bytes > max_message_bytes {
            return Err(self.error(
                "upstream.max_sse_line_bytes",
                format!(
                    "must be at most server.max_message_bytes ({max_message_bytes}): \
                     an event larger than a caller can receive could not be delivered"
                ),
            ));
        }
        let resume_max_bytes = raw
            .resume_max_bytes
            .unwrap_or(crate::config::DEFAULT_RESUME_MAX_BYTES);
        if resume_max_bytes == 0 {
            return Err(self.error(
                "upstream.resume_max_bytes",
                "must be more than 0 (leave `resume` out to never resume)",
            ));
        }
        Ok(UpstreamConfig {
            resume_max_bytes,
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            pool_idle_timeout: Duration::from_millis(raw.pool_idle_timeout_ms.unwrap_or(90_000)),
            pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(32),
            max_sse_line_bytes,
            max_response_bytes: max_message_bytes,
            tls: self.upstream_tls(RawTlsKeys {
                ca_files: raw.ca_files,
                public_roots: raw.public_roots,
                client_cert_file: raw.client_cert_file,
                client_key_file: raw.client_key_file,
            })?,
        })
    }

    fn overrides(&self, key: &str, raw: RawTimeouts) -> Result<TimeoutOverrides, ConfigError> {
        let ms = |name: &str, value: Option<u64>| match value {
            Some(0) => Err(self.error(format!("{key}.{name}"), "must be more than 0")),
            other => Ok(other.map(Duration::from_millis)),
        };
        Ok(TimeoutOverrides {
            headers: ms("headers_ms", raw.headers_ms)?,
            first_chunk: ms("first_chunk_ms", raw.first_chunk_ms)?,
            idle: ms("idle_ms", raw.idle_ms)?,
            unary_total: ms("unary_total_ms", raw.unary_total_ms)?,
            unary_attempt: ms("unary_attempt_ms", raw.unary_attempt_ms)?,
            stream_total: ms("stream_total_ms", raw.stream_total_ms)?,
        })
    }

    /// Cross-field checks: a per-attempt bound longer than the total could
    /// never fire and hides a mistake.
    fn timeouts_agree(&self, key: &str, timeouts: Timeouts) -> Result<(), ConfigError> {
        if timeouts.first_chunk > timeouts.stream_total {
            return Err(self.error(
                format!("{key}.first_chunk_ms"),
                "must not be more than stream_total_ms",
            ));
        }
        if timeouts.headers > timeouts.first_chunk {
            return Err(self.error(
                format!("{key}.headers_ms"),
                "must not be more than first_chunk_ms",
            ));
        }
        if timeouts.idle > timeouts.stream_total {
            return Err(self.error(
                format!("{key}.idle_ms"),
                "must not be more than stream_total_ms",
            ));
        }
        Ok(())
    }

    fn attempts(&self, key: &str, value: Option<u32>) -> Result<(), ConfigError> {
        match value {
            Some(0) => Err(self.error(key, "must be at least 1 (1 means no retries)")),
            Some(n) if n > 10 => Err(self.error(
                key,
                format!("{n} attempts would multiply load on a failing provider; use at most 10"),
            )),
            _ => Ok(()),
        }
    }

    fn retry(&self, raw: RawRetry) -> Result<RetryConfig, ConfigError> {
        let defaults = RetryConfig::default();
        self.attempts("retry.max_attempts", raw.max_attempts)?;
        let base_delay = raw
            .base_delay_ms
            .map_or(defaults.base_delay, Duration::from_millis);
        let max_delay = raw
            .max_delay_ms
            .map_or(defaults.max_delay, Duration::from_millis);
        if base_delay > max_delay {
            return Err(self.error(
                "retry.base_delay_ms",
                "must not be more than retry.max_delay_ms",
            ));
        }
        let budget_ratio = raw.budget_ratio.unwrap_or(defaults.budget_ratio);
        if !(0.0..=10.0).contains(&budget_ratio) {
            return Err(self.error(
                "retry.budget_ratio",
                "must be between 0 and 10 (0.2 means retries add at most 20 %)",
            ));
        }
        Ok(RetryConfig {
            max_attempts: raw.max_attempts.unwrap_or(defaults.max_attempts),
            base_delay,
            max_delay,
            budget_ratio,
            budget_floor: raw.budget_floor.unwrap_or(defaults.budget_floor),
            max_retry_after: raw
                .max_retry_after_ms
                .map_or(defaults.max_retry_after, Duration::from_millis),
        })
    }

    fn provider(
        &self,
        name: String,
        raw: RawProvider,
        upstream_tls: &TlsConfig,
    ) -> Result<ProviderConfig, ConfigError> {
        let key = format!("providers.{name}");
        if name == MOCK_PROVIDER {
            return Err(self.error(
                key,
                "the name `mock` is reserved for the built-in mock provider",
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.error(
                key,
                "a provider name may use only letters, digits, `-` and `_`",
            ));
        }
        let kind = match raw.kind.as_deref() {
            None | Some("openai") => ProviderKind::OpenAi,
            Some("mock") => ProviderKind::Mock,
            Some(other) => {
                return Err(self.error(
                    format!("{key}.kind"),
                    format!("`{other}` is not a provider kind; use \"openai\" or \"mock\""),
                ));
            }
        };
        let base_url = match (kind, raw.base_url) {
            (ProviderKind::Mock, url) => url.unwrap_or_default(),
            (ProviderKind::OpenAi, None) => {
                return Err(self.error(
                    format!("{key}.base_url"),
                    "is required, e.g. \"https://api.openai.com/v1\"",
                ));
            }
            (ProviderKind::OpenAi, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(self.error(
                        format!("{key}.base_url"),
                        format!("`{url}` must start with https:// or http://"),
                    ));
                }
                url.trim_end_matches('/').to_owned()
            }
        };
        let headers = raw
            .headers
            .into_iter()
            .map(|(name, value)| self.header(&key, name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let max_tokens_field = match raw.max_tokens_field.as_deref() {
            None => MaxTokensField::default_for(&base_url),
            Some("max_tokens") => MaxTokensField::MaxTokens,
            Some("max_completion_tokens") => MaxTokensField::MaxCompletionTokens,
            Some(other) => {
                return Err(self.error(
                    format!("{key}.max_tokens_field"),
                    format!(
                        "`{other}` is not a field; use \"max_tokens\" or \"max_completion_tokens\""
                    ),
                ));
            }
        };
        let prefill = match raw.prefill.as_deref() {
            None => None,
            Some(text) => Some(
                PrefillStyle::parse(text)
                    .map_err(|message| self.error(format!("{key}.prefill"), message))?,
            ),
        };
        let resume = raw.resume.unwrap_or(false);
        if resume && prefill.is_none() {
            return Err(self.error(
                format!("{key}.resume"),
                "needs `prefill` to say how the provider continues an answer \
                 (\"trailing_assistant\", \"prefix_flag\" or \"continue_final_message\")",
            ));
        }
        let tls = self.provider_tls(
            &key,
            RawTlsKeys {
                ca_files: raw.ca_files,
                public_roots: raw.public_roots,
                client_cert_file: raw.client_cert_file,
                client_key_file: raw.client_key_file,
            },
            upstream_tls,
        )?;
        Ok(ProviderConfig {
            tls,
            resume,
            prefill,
            name,
            kind,
            base_url,
            api_key: KeySource {
                env: raw.api_key_env.filter(|name| !name.is_empty()),
                file: raw
                    .api_key_file
                    .filter(|path| !path.is_empty())
                    .map(PathBuf::from),
            },
            more_api_keys: raw
                .api_keys
                .into_iter()
                .enumerate()
                .map(|(at, source)| self.key_source(&format!("{key}.api_keys[{at}]"), source))
                .collect::<Result<_, _>>()?,
            key_cooldown: Duration::from_millis(raw.key_cooldown_ms.unwrap_or(60_000)),
            headers,
            stream_options: raw.stream_options.unwrap_or(true),
            max_tokens_field,
            forward_metadata: raw.forward_metadata.unwrap_or(false),
            max_attempts: {
                self.attempts(&format!("{key}.max_attempts"), raw.max_attempts)?;
                raw.max_attempts
            },
            timeouts: match raw.timeouts {
                Some(timeouts) => self.overrides(&format!("{key}.timeouts"), timeouts)?,
                None => TimeoutOverrides::default(),
            },
            requests_per_minute: raw.requests_per_minute.filter(|rate| *rate > 0),
            tokens_per_minute: raw.tokens_per_minute.filter(|rate| *rate > 0),
            max_queue_wait: Duration::from_millis(raw.max_queue_wait_ms.unwrap_or(10_000)),
            circuit_failures: raw.circuit_failures.unwrap_or(5),
            circuit_cooldown: Duration::from_millis(raw.circuit_cooldown_ms.unwrap_or(30_000)),
            drain_on_cancel: raw.drain_on_cancel.unwrap_or(false),
            limit: match raw.max_in_flight {
                None => None,
                Some(0) => {
                    return Err(self.error(
                        format!("{key}.max_in_flight"),
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
                Some(max_in_flight) => Some(LimitConfig {
                    max_in_flight,
                    max_queue: raw.max_queue.unwrap_or(64),
                    max_queue_wait: Duration::from_millis(raw.max_queue_wait_ms.unwrap_or(10_000)),
                }),
            },
        })
    }

    /// A route that resumes needs a target that can continue an answer:
    /// its provider or a fallback naming one that sets `prefill`.
    fn route_can_resume(
        &self,
        key: &str,
        provider: &str,
        fallbacks: &[FallbackConfig],
        providers: &[ProviderConfig],
    ) -> Result<(), ConfigError> {
        let mut named = std::iter::once(provider).chain(
            fallbacks
                .iter()
                .filter_map(|fallback| fallback.provider.as_deref()),
        );
        let can = named.any(|name| {
            providers
                .iter()
                .any(|known| known.name == name && known.prefill.is_some())
        });
        if can {
            return Ok(());
        }
        Err(self.error(
            format!("{key}.resume"),
            "none of the route's providers sets `prefill`, so none can continue an answer",
        ))
    }

    /// One provider header: a valid name, one source, a valid inline value.
    fn header(&self, key: &str, name: String, raw: RawHeader) -> Result<HeaderConfig, ConfigError> {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(self.error(
                format!("{key}.headers"),
                format!("`{name}` is not a valid header name"),
            ));
        }
        let at = format!("{key}.headers.{name}");
        let table = match raw {
            RawHeader::Plain(value) => RawHeaderTable {
                value: Some(value),
                ..RawHeaderTable::default()
            },
            RawHeader::Table(table) => table,
        };
        let value = match (table.value, table.env, table.file) {
            (Some(value), None, None) => {
                if reqwest::header::HeaderValue::from_str(&value).is_err() {
                    return Err(self.error(at, "is not a valid header value"));
                }
                HeaderValueSource::Inline(value)
            }
            (None, env @ Some(_), None) => HeaderValueSource::Loaded(KeySource { env, file: None }),
            (None, None, Some(file)) => HeaderValueSource::Loaded(KeySource {
                env: None,
                file: Some(PathBuf::from(file)),
            }),
            _ => return Err(self.error(at, "give exactly one of `value`, `env` or `file`")),
        };
        let secret = table.secret.unwrap_or(false) || crate::secret::header_name_is_secret(&name);
        Ok(HeaderConfig {
            name,
            value,
            secret,
        })
    }
}

fn mock_provider() -> ProviderConfig {
    ProviderConfig {
        name: MOCK_PROVIDER.to_owned(),
        kind: ProviderKind::Mock,
        base_url: String::new(),
        api_key: KeySource::default(),
        more_api_keys: Vec::new(),
        key_cooldown: Duration::ZERO,
        headers: Vec::new(),
        stream_options: true,
        max_tokens_field: MaxTokensField::MaxTokens,
        forward_metadata: false,
        // The mock never fails transiently.
        max_attempts: Some(1),
        timeouts: TimeoutOverrides::default(),
        limit: None,
        requests_per_minute: None,
        tokens_per_minute: None,
        max_queue_wait: Duration::ZERO,
        circuit_failures: 0,
        circuit_cooldown: Duration::ZERO,
        drain_on_cancel: false,
        tls: TlsOverrides::default(),
        resume: false,
        prefill: None,
    }
}

mod auth;
mod budgets;
mod observability;
mod shared;
#[cfg(test)]
mod tests;
mod tls;

//! The HTTP clients of one configuration. Every provider shares one, so
//! many local calls ride on few pooled upstream connections (HTTP/2 where
//! the upstream offers it via ALPN, keep-alive HTTP/1.1 otherwise); only a
//! provider with TLS settings of its own (CA files, public roots, a client
//! certificate) gets a client of its own, since reqwest holds trust and
//! client certificate per client.
//!
//! Proxies come from the environment, reqwest's default: `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (and their lower-case
//! spellings), read when a client is built.

use super::tls::{ClientTls, TlsLoader};
use crate::config::{Config, ConfigError, Env, ProviderKind, UpstreamConfig};
use crate::upstream::openai::describe;

/// The HTTP/2 window of each upstream stream, bytes: about a second of a
/// fast model's output, and 2.5 MB/s of a large answer over 100 ms.
const UPSTREAM_STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// The HTTP/2 window of a whole upstream connection, bytes: 64 stalled
/// streams' windows before the connection's others wait.
const UPSTREAM_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Why the clients of a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TLS file is missing or broken; the error names key and file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// reqwest refused the settings (its cause chain).
    #[error("{0}")]
    Build(String),
}

/// The shared client and the providers' own ones, by provider name.
#[derive(Debug)]
pub struct UpstreamClients {
    shared: reqwest::Client,
    own: Vec<(String, reqwest::Client)>,
}

impl UpstreamClients {
    /// Reads every TLS file the configuration names (and those of
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` in `env`) and builds the clients.
    pub fn new(config: &Config, env: Env<'_>) -> Result<UpstreamClients, ClientError> {
        let loader = TlsLoader::new(&config.upstream.tls, &config.source, env)?;
        let shared = build_http_client(&config.upstream, &loader.upstream(), &config.source)?;
        let mut own = Vec::new();
        for provider in &config.providers {
            if provider.tls.is_empty() || provider.kind == ProviderKind::Mock {
                continue;
            }
            let key = format!("providers.{}", provider.name);
            let tls = loader.provider(&key, &provider.tls)?;
            own.push((
                provider.name.clone(),
                build_http_client(&config.upstream, &tls, &config.source)?,
            ));
        }
        Ok(UpstreamClients { shared, own })
    }

    /// The client that calls `provider`.
    pub fn for_provider(&self, provider: &str) -> &reqwest::Client {
        self.own
            .iter()
            .find(|(name, _)| name == provider)
            .map_or(&self.shared, |(_, client)| client)
    }
}

/// One client with `tls`; `source` names the configuration in errors.
pub fn build_http_client(
    config: &UpstreamConfig,
    tls: &ClientTls,
    source: &str,
) -> Result<reqwest::Client, ClientError> {
    #[allow(clippy::disallowed_methods)] // the owner
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("llm-sidecar/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .tcp_nodelay(true)
        // What one stream may have received and not yet read: a caller
        // that reads slowly holds at most this, and slows the upstream
        // rather than piling up its answer. (A window grown from the
        // measured bandwidth reaches 16 MiB a stream.) The connection's
        // window is larger, so a few stalled streams do not stall the
        // others sharing it.
        .http2_adaptive_window(false)
        .http2_initial_stream_window_size(UPSTREAM_STREAM_WINDOW_BYTES)
        .http2_initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW_BYTES)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .http2_keep_alive_while_idle(false)
        // A redirect would resend the Authorization header to wherever the
        // upstream points; chat APIs do not redirect.
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(tls.public_roots);
    for root in &tls.roots {
        builder = builder.add_root_certificate(root.clone());
    }
    if let Some(loaded) = &tls.identity {
        builder = builder.identity(loaded.identity.clone());
    }
    builder.build().map_err(|error| match &tls.identity {
        // The roots were checked as they were read: what is left to fail
        // is a client certificate whose key is not its own.
        Some(loaded) => ClientError::Config(ConfigError {
            file: source.to_owned(),
            key: format!("{}.client_key_file", loaded.key),
            message: format!(
                "`{}` is not the private key of `{}`: {}",
                loaded.files.key_file.display(),
                loaded.files.cert_file.display(),
                describe(&error)
            ),
        }),
        None => ClientError::Build(describe(&error)),
    })
}

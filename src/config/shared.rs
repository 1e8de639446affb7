//! `[shared]`: the store (Redis, or Valkey, which speaks the same
//! protocol) that makes provider rate limits and key cooldowns hold across
//! every sidecar that shares it. Without the table nothing of it exists.

use super::{ClientIdentity, KeySource};
use std::path::PathBuf;
use std::time::Duration;

/// The validated `[shared]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// Where the store's URL (`redis://` or `rediss://`, possibly with a
    /// password) comes from: read when a pipeline is built, never logged.
    pub url: SharedUrl,
    /// Prefix of every key the sidecar writes (default `llm-sidecar`).
    pub prefix: String,
    /// The sidecars expected to share the store: each takes `1 / N` of a
    /// limit when the store is unreachable, and the local lease of each is
    /// sized so that all `N` together over-admit by at most 10 % of a limit.
    pub expected_pods: u32,
    /// What a call does when the store cannot be reached.
    pub on_unavailable: UnavailableMode,
    /// The longest one round trip to the store may take before the call
    /// goes on as if the store were unreachable (default 50 ms).
    pub timeout: Duration,
    /// TLS of a `rediss://` store beyond the defaults (the system's trust
    /// store, no client certificate). Paths only: the files are read when
    /// the store is built.
    pub tls: SharedTls,
}

/// `ca_file`, `client_cert_file` and `client_key_file` of `[shared]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedTls {
    /// The CA certificates (one PEM file, one or more certificates) the
    /// server's certificate must chain to. They replace the system's
    /// store, as `redis-cli --cacert` and libpq's `sslrootcert` do: a
    /// private CA is then the only one trusted for the store.
    pub ca_file: Option<PathBuf>,
    /// The certificate shown to a server that asks for one (mutual TLS,
    /// `tls-auth-clients yes`).
    pub client_identity: Option<ClientIdentity>,
}

impl SharedTls {
    /// Whether anything is set (then the URL must be `rediss://`).
    pub fn is_set(&self) -> bool {
        *self != SharedTls::default()
    }

    /// Every file named, for the reload watch.
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.ca_file.iter().map(PathBuf::as_path).chain(
            self.client_identity
                .iter()
                .flat_map(|identity| [identity.cert_file.as_path(), identity.key_file.as_path()]),
        )
    }
}

/// Where the store's URL is written. `Debug` never shows an inline URL
/// (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub enum SharedUrl {
    /// In the configuration itself (`redis_url`).
    Inline(String),
    /// In a file (`redis_url_file`, e.g. a mounted Secret) or an
    /// environment variable (`redis_url_env`).
    Loaded(KeySource),
}

impl std::fmt::Debug for SharedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharedUrl::Inline(_) => f.write_str("Inline(<redacted>)"),
            SharedUrl::Loaded(source) => f.debug_tuple("Loaded").field(source).finish(),
        }
    }
}

/// `on_unavailable`: what a call does while the store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableMode {
    /// Go on under this pod's share of each limit (limit ÷ `expected_pods`,
    /// at least 1): the default.
    Local,
    /// Refuse the call with UNAVAILABLE / 503 naming the shared store.
    Closed,
}

/// The prefix of the store's keys when none is configured.
pub const DEFAULT_SHARED_PREFIX: &str = "llm-sidecar";
/// The round-trip bound when none is configured.
pub const DEFAULT_SHARED_TIMEOUT: Duration = Duration::from_millis(50);

//! `[auth]`: who may call the sidecar on its TCP and HTTP listeners. The
//! rules themselves are applied in [`crate::auth`].

use super::KeySource;
use std::path::PathBuf;

/// The name a token gets when it comes from `LLM_SIDECAR_TOKEN` or from the
/// token file the sidecar writes itself: the pod's app.
pub const DEFAULT_TOKEN_NAME: &str = "app";

/// The `[auth]` settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether callers of the TCP listeners (gRPC `server.tcp` and the
    /// facade's `server.http`) must present a caller token (default true).
    /// The Unix sockets never ask for one: their file mode decides.
    pub require_token: bool,
    /// Named caller tokens (`[auth.tokens]`); a token's name is recorded as
    /// the caller of every call made with it. Empty: `LLM_SIDECAR_TOKEN`,
    /// else a token the sidecar writes to [`token_file`](Self::token_file).
    pub tokens: Vec<NamedToken>,
    /// The token the admin port's write endpoints ask for. Unset:
    /// `LLM_SIDECAR_ADMIN_TOKEN`, else one the sidecar writes to
    /// [`admin_token_file`](Self::admin_token_file).
    pub admin_token: Option<KeySource>,
    /// Where the sidecar keeps the caller token it makes (mode 0640).
    /// Unset: `token` next to the gRPC socket (or in the runtime directory).
    pub token_file: Option<PathBuf>,
    /// Where the sidecar keeps the admin token it makes (mode 0600).
    /// Unset: `admin-token` beside the caller token file.
    pub admin_token_file: Option<PathBuf>,
    /// Host names the HTTP listeners answer besides `localhost`,
    /// `*.localhost` and IP literals; lower case, without a port.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) whose requests are served,
    /// with CORS headers; every other request with an `Origin` is refused.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            require_token: true,
            tokens: Vec::new(),
            admin_token: None,
            token_file: None,
            admin_token_file: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

/// A caller token as configured: its name and where its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedToken {
    pub name: String,
    pub source: KeySource,
}

impl AuthConfig {
    /// The token files to watch for changes (hot reload).
    pub fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.tokens
            .iter()
            .map(|token| &token.source)
            .chain(&self.admin_token)
            .filter_map(|source| source.file.clone())
            .chain(self.token_file.clone())
            .chain(self.admin_token_file.clone())
    }
}

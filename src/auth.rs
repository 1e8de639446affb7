//! Who may call: only the pod's app spends the provider keys.
//!
//! - **Caller tokens** on the TCP listeners (gRPC `server.tcp`, the
//!   facade's `server.http`): `authorization: Bearer <token>` (what an
//!   OpenAI SDK sends as its `api_key`) or `x-llm-token`. A token's name
//!   becomes the call's caller. Required by default: loopback TCP is open
//!   to every process in the pod's network namespace, and to every uid of
//!   a node with host networking. The Unix sockets need none: their file
//!   and directory modes decide who connects. With no token configured the
//!   sidecar writes one, once, to a 0640 file beside its socket
//!   ([`token_file`]), so the quickstart stays one command.
//! - **The admin port's writes** (any HTTP method but GET, HEAD and
//!   OPTIONS; its gRPC services only read) need the admin token, made the
//!   same way (0600) unless configured.
//! - **HTTP listeners** (the facade on TCP and on its Unix socket, the
//!   admin port) answer only a `Host` that is a loopback name, an IP
//!   literal or a configured name (`host.rs`: DNS rebinding), refuse
//!   browser requests (an `Origin` not configured, a facade body that is
//!   not JSON).
//!
//! Refusals are counted in `llm_sidecar.access.refused` (by listener and
//! reason) and logged at debug; they are not calls, and leave no ledger
//! row. The rules are rebuilt on every reload (token files are watched).

mod grpc_layer;
mod host;
mod http_guard;
pub mod token_file;
mod tokens;

pub use grpc_layer::RequireToken;
pub use http_guard::{cors, guard};
pub use tokens::{AuthenticatedCaller, CallerTokens, TOKEN_HEADER, presented};

use crate::config::{Config, DEFAULT_TOKEN_NAME, Env};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokens::Secret;

/// A caller token for the simple case, named [`DEFAULT_TOKEN_NAME`].
pub const TOKEN_ENV: &str = "LLM_SIDECAR_TOKEN";
/// The admin token for the simple case.
pub const ADMIN_TOKEN_ENV: &str = "LLM_SIDECAR_ADMIN_TOKEN";
/// The file name of the caller token the sidecar writes itself.
pub const TOKEN_FILE: &str = "token";
/// The file name of the admin token the sidecar writes itself.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The refusal counter.
pub const ACCESS_REFUSED: &str = "llm_sidecar.access.refused";

/// The rules in force, built from the config and the token sources.
#[derive(Debug)]
pub struct Access {
    callers: CallerTokens,
    admin: Option<Secret>,
    require_token: bool,
    hosts: Vec<String>,
    origins: Vec<String>,
    /// Files this sidecar keeps a token in, for the start-up log lines:
    /// what the token is for, and where.
    written: Vec<(&'static str, PathBuf)>,
}

impl Access {
    /// Loads every token `config` names. With none configured and a TCP
    /// listener on, `LLM_SIDECAR_TOKEN`, else the token file (made if
    /// missing); likewise the admin token when the admin port is on.
    /// Errors name the config key or the file, never a token.
    pub fn load(config: &Config, env: Env<'_>) -> anyhow::Result<Access> {
        let auth = &config.auth;
        let mut written = Vec::new();
        let mut callers = Vec::new();
        for token in &auth.tokens {
            let value = crate::secret::load_key(&token.source, env)
                .map_err(anyhow::Error::msg)
                .and_then(|key| {
                    key.ok_or_else(|| {
                        anyhow::anyhow!(
                            "the variable {} is unset or empty",
                            token.source.env.as_deref().unwrap_or_default()
                        )
                    })
                })
                .with_context(|| format!("auth.tokens.{} in {}", token.name, config.source))?;
            callers.push((token.name.clone(), value.expose().to_owned()));
        }
        let over_tcp = config.server.tcp.is_some() || config.server.http.is_some();
        let token_path = caller_token_path(config, env);
        if callers.is_empty() {
            if let Some(value) = env(TOKEN_ENV).filter(|value| !value.trim().is_empty()) {
                callers.push((DEFAULT_TOKEN_NAME.to_owned(), value.trim().to_owned()));
            } else if auth.require_token && over_tcp {
                let value = token_file::ensure(
                    &token_path,
                    token_file::CALLER_TOKEN_MODE,
                    config.server.uds_dir_mode,
                )
                .context("the caller token ([auth] in the README)")?;
                callers.push((DEFAULT_TOKEN_NAME.to_owned(), value));
                written.push(("caller token (TCP and HTTP callers)", token_path.clone()));
            }
        }
        let admin = match &auth.admin_token {
            Some(source) => Some(
                crate::secret::load_key(source, env)
                    .map_err(anyhow::Error::msg)?
                    .with_context(|| {
                        format!(
                            "auth.admin_token in {}: the variable {} is unset or empty",
                            config.source,
                            source.env.as_deref().unwrap_or_default()
                        )
                    })?
                    .expose()
                    .to_owned(),
            ),
            None => match env(ADMIN_TOKEN_ENV).filter(|value| !value.trim().is_empty()) {
                Some(value) => Some(value.trim().to_owned()),
                None if config.server.admin.is_some() => {
                    let path = auth
                        .admin_token_file
                        .clone()
                        .unwrap_or_else(|| token_path.with_file_name(ADMIN_TOKEN_FILE));
                    let value = token_file::ensure(
                        &path,
                        token_file::ADMIN_TOKEN_MODE,
                        config.server.uds_dir_mode,
                    )
                    .context("the admin token ([auth] in the README)")?;
                    written.push(("admin token (the admin port's writes)", path));
                    Some(value)
                }
                None => None,
            },
        };
        Ok(Access {
            callers: CallerTokens::new(callers),
            admin: admin.as_deref().map(Secret::new),
            require_token: auth.require_token,
            hosts: auth.allowed_hosts.clone(),
            origins: auth.allowed_origins.clone(),
            written,
        })
    }
}

/// Where the caller token file is: `[auth] token_file`, else
/// [`TOKEN_FILE`] beside the gRPC socket, else in the runtime directory.
pub fn caller_token_path(config: &Config, env: Env<'_>) -> PathBuf {
    if let Some(path) = &config.auth.token_file {
        return path.clone();
    }
    let dir = config
        .server
        .uds
        .as_deref()
        .and_then(Path::parent)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| crate::runtime_dir::default_dir(env), Path::to_owned);
    dir.join(TOKEN_FILE)
}

/// Every file a token may be read from, for the reload watch: the
/// configured ones and the two the sidecar may write.
pub fn token_files(config: &Config, env: Env<'_>) -> Vec<PathBuf> {
    let caller = caller_token_path(config, env);
    let admin = config
        .auth
        .admin_token_file
        .clone()
        .unwrap_or_else(|| caller.with_file_name(ADMIN_TOKEN_FILE));
    let mut files: Vec<PathBuf> = config.auth.files().collect();
    files.extend([caller, admin]);
    files.sort();
    files.dedup();
    files
}

/// Which listener a request came to, for the rules and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    GrpcTcp,
    Http,
    HttpUds,
    Admin,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::GrpcTcp => "grpc_tcp",
            Listener::Http => "http",
            Listener::HttpUds => "http_uds",
            Listener::Admin => "admin",
        }
    }

    /// Whether chat calls here need a caller token.
    fn asks_for_caller_token(self) -> bool {
        matches!(self, Listener::GrpcTcp | Listener::Http)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TokenMissing,
    TokenInvalid,
    AdminTokenMissing,
    AdminTokenInvalid,
    HostNotAllowed(String),
    OriginNotAllowed(String),
    NotJson(String),
}

impl Refusal {
    /// The short reason: the metric's `error.type` and the error's `code`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TokenMissing | Refusal::AdminTokenMissing => "token_missing",
            Refusal::TokenInvalid | Refusal::AdminTokenInvalid => "token_invalid",
            Refusal::HostNotAllowed(_) => "host_not_allowed",
            Refusal::OriginNotAllowed(_) => "origin_not_allowed",
            Refusal::NotJson(_) => "unsupported_content_type",
        }
    }

    /// What the caller is told: what was wrong and what to do. Never the
    /// token, nor where the expected one is kept.
    pub fn message(&self) -> String {
        match self {
            Refusal::TokenMissing => format!(
                "this listener needs a caller token: send `authorization: Bearer <token>` (an \
                 OpenAI SDK's api_key) or `{TOKEN_HEADER}`; the sidecar's log says where its \
                 token is, or use the Unix socket"
            ),
            Refusal::TokenInvalid => "the caller token is not one this sidecar knows".to_owned(),
            Refusal::AdminTokenMissing => "the admin port's write endpoints need the admin token: \
                 send `authorization: Bearer <admin token>`"
                .to_owned(),
            Refusal::AdminTokenInvalid => "the admin token is wrong".to_owned(),
            Refusal::HostNotAllowed(host) => format!(
                "Host `{}` is not served here: use localhost or an IP address, or add the name \
                 to [auth] allowed_hosts",
                shown(host)
            ),
            Refusal::OriginNotAllowed(origin) => format!(
                "requests from the browser origin `{}` are refused: add it to [auth] \
                 allowed_origins to serve it",
                shown(origin)
            ),
            Refusal::NotJson(content_type) => format!(
                "the request body must be JSON (content-type: application/json), not `{}`",
                shown(content_type)
            ),
        }
    }

    /// The HTTP status of the refusal.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Refusal::TokenMissing
            | Refusal::TokenInvalid
            | Refusal::AdminTokenMissing
            | Refusal::AdminTokenInvalid => http::StatusCode::UNAUTHORIZED,
            Refusal::HostNotAllowed(_) | Refusal::OriginNotAllowed(_) => {
                http::StatusCode::FORBIDDEN
            }
            Refusal::NotJson(_) => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// A caller's string as an error may quote it: at most 256 characters,
/// control characters escaped.
fn shown(text: &str) -> String {
    let cut = text
        .char_indices()
        .nth(256)
        .map_or(text.len(), |(at, _)| at);
    text[..cut].escape_debug().to_string()
}

/// The rules in force and the refusal counter, shared by every listener;
/// a reload swaps the rules whole.
#[derive(Debug)]
pub struct Gate {
    access: ArcSwap<Access>,
    refused: Option<Counter<u64>>,
}

impl Gate {
    pub fn new(access: Access, meter: Option<&Meter>) -> Arc<Gate> {
        let refused = meter.map(|meter| {
            meter
                .u64_counter(ACCESS_REFUSED)
                .with_unit("{request}")
                .with_description(
                    "Requests refused before any call began: no or a wrong token, a Host or \
                     browser Origin not served, a body that is not JSON.",
                )
                .build()
        });
        Arc::new(Gate {
            access: ArcSwap::from_pointee(access),
            refused,
        })
    }

    /// The files this sidecar keeps the tokens in force in, when it made
    /// them (for the start-up log line).
    pub fn written_files(&self) -> Vec<(&'static str, PathBuf)> {
        self.access.load().written.clone()
    }

    /// Serves by `access` from now on.
    pub fn replace(&self, access: Access) {
        self.access.store(Arc::new(access));
    }

    /// The caller a chat request on `listener` comes as: `Ok(Some(name))`
    /// with a known token; `Ok(None)` where none is needed and none known
    /// was sent.
    pub fn caller(
        &self,
        listener: Listener,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<str>>, Refusal> {
        let access = self.access.load();
        let needed = listener.asks_for_caller_token() && access.require_token;
        let result = match presented(headers) {
            Some(token) => match access.callers.caller(token) {
                Some(name) => Ok(Some(name)),
                None if needed => Err(Refusal::TokenInvalid),
                // Not asked for: an SDK's placeholder api_key is no error.
                None => Ok(None),
            },
            None if needed => Err(Refusal::TokenMissing),
            None => Ok(None),
        };
        result.map_err(|refusal| self.refused(listener, refusal))
    }

    /// The admin token check of a write on the admin port.
    pub fn admin(&self, headers: &http::HeaderMap) -> Result<(), Refusal> {
        let access = self.access.load();
        let result = match (presented(headers), &access.admin) {
            (None, _) => Err(Refusal::AdminTokenMissing),
            (Some(token), Some(admin)) if admin.matches(token) => Ok(()),
            (Some(_), _) => Err(Refusal::AdminTokenInvalid),
        };
        result.map_err(|refusal| self.refused(Listener::Admin, refusal))
    }

    /// The Host and Origin checks of every HTTP listener.
    pub fn browser(
        &self,
        listener: Listener,
        authority: Option<&str>,
        origin: Option<&str>,
    ) -> Result<(), Refusal> {
        let access = self.access.load();
        let result = match (authority, origin) {
            (Some(authority), _) if !host::host_allowed(authority, &access.hosts) => {
                Err(Refusal::HostNotAllowed(authority.to_owned()))
            }
            (_, Some(origin)) if !host::origin_allowed(origin, &access.origins) => {
                Err(Refusal::OriginNotAllowed(origin.to_owned()))
            }
            _ => Ok(()),
        };
        result.map_err(|refusal| self.refused(listener, refusal))
    }

    /// Whether `origin` may be answered with CORS headers.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        host::origin_allowed(origin, &self.access.load().origins)
    }

    /// Counts and logs a refusal made elsewhere (a body that is not JSON).
    pub fn refused(&self, listener: Listener, refusal: Refusal) -> Refusal {
        if let Some(counter) = &self.refused {
            counter.add(
                1,
                &[
                    KeyValue::new("llm_sidecar.listener", listener.as_str()),
                    KeyValue::new(crate::telemetry::genai::ERROR_TYPE, refusal.reason()),
                ],
            );
        }
        tracing::debug!(
            listener = listener.as_str(),
            reason = refusal.reason(),
            "request refused before the call"
        );
        refusal
    }
}

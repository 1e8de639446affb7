//! Checks for `[auth]`.

use super::Checker;
use crate::config::ConfigError;
use crate::config::auth::{AuthConfig, NamedToken};
use crate::config::raw::RawAuth;
use std::path::PathBuf;

/// A token name goes into the ledger and logs as the caller: short, plain.
const MAX_TOKEN_NAME_BYTES: usize = 64;

impl Checker<'_> {
    pub(super) fn auth(&self, raw: RawAuth) -> Result<AuthConfig, ConfigError> {
        let tokens = raw
            .tokens
            .into_iter()
            .map(|(name, source)| {
                let key = format!("auth.tokens.{name}");
                let plain = name.len() <= MAX_TOKEN_NAME_BYTES
                    && !name.is_empty()
                    && name
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
                if !plain {
                    return Err(self.error(
                        key,
                        format!(
                            "a token's name is recorded as the caller: use 1 to \
                             {MAX_TOKEN_NAME_BYTES} letters, digits, `.`, `_` or `-`"
                        ),
                    ));
                }
                let source = self.key_source(&key, source)?;
                Ok(NamedToken { name, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin_token = raw
            .admin_token
            .map(|source| self.key_source("auth.admin_token", source))
            .transpose()?;
        let allowed_hosts = raw
            .allowed_hosts
            .into_iter()
            .enumerate()
            .map(|(at, host)| {
                let plain = !host.is_empty()
                    && host
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b".-".contains(&byte));
                if plain {
                    Ok(host.to_ascii_lowercase())
                } else {
                    Err(self.error(
                        format!("auth.allowed_hosts[{at}]"),
                        format!("`{host}` is not a host name such as \"llm-sidecar.default.svc\" (no port, no scheme)"),
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        let allowed_origins = raw
            .allowed_origins
            .into_iter()
            .enumerate()
            .map(|(at, origin)| {
                let shaped = (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').contains(|c: char| c.is_whitespace())
                    && origin.split("://").nth(1).is_some_and(|rest| {
                        !rest.is_empty() && !rest.trim_end_matches('/').contains('/')
                    });
                if shaped {
                    Ok(origin.trim_end_matches('/').to_ascii_lowercase())
                } else {
                    Err(self.error(
                        format!("auth.allowed_origins[{at}]"),
                        format!("`{origin}` is not an origin such as \"https://app.example.com\" (scheme, host and port only)"),
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(AuthConfig {
            require_token: raw.require_token.unwrap_or(true),
            tokens,
            admin_token,
            token_file: raw
                .token_file
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            admin_token_file: raw
                .admin_token_file
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            allowed_hosts,
            allowed_origins,
        })
    }
}

//! Checks for the `[shared]` table.

use super::Checker;
use crate::config::raw::RawShared;
use crate::config::shared::{
    DEFAULT_SHARED_PREFIX, DEFAULT_SHARED_TIMEOUT, SharedConfig, SharedTls, SharedUrl,
    UnavailableMode,
};
use crate::config::{ClientIdentity, ConfigError, KeySource};
use std::path::PathBuf;
use std::time::Duration;

impl Checker<'_> {
    pub(super) fn shared(
        &self,
        raw: Option<RawShared>,
    ) -> Result<Option<SharedConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let given = [
            raw.redis_url.is_some(),
            raw.redis_url_env.is_some(),
            raw.redis_url_file.is_some(),
        ];
        if given.iter().filter(|set| **set).count() != 1 {
            return Err(self.error(
                "shared",
                "give exactly one of `redis_url`, `redis_url_env` or `redis_url_file`",
            ));
        }
        let tls = self.shared_tls(raw.ca_file, raw.client_cert_file, raw.client_key_file)?;
        let url = match (raw.redis_url, raw.redis_url_env, raw.redis_url_file) {
            (Some(url), _, _) => {
                // The message never repeats the URL: it may hold a password.
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(self.error(
                        "shared.redis_url",
                        "must start with redis:// (or rediss:// for TLS)",
                    ));
                }
                if tls.is_set() && !url.starts_with("rediss://") {
                    return Err(self.error(
                        "shared.redis_url",
                        "must start with rediss:// when `ca_file` or a client certificate \
                         is given (redis:// would connect without TLS)",
                    ));
                }
                SharedUrl::Inline(url)
            }
            (_, Some(env), _) => SharedUrl::Loaded(KeySource {
                env: Some(env),
                file: None,
            }),
            (_, _, file) => SharedUrl::Loaded(KeySource {
                env: None,
                file: file.map(PathBuf::from),
            }),
        };
        let expected_pods = match raw.expected_pods {
            Some(pods) if pods >= 1 => pods,
            Some(_) => return Err(self.error("shared.expected_pods", "must be at least 1")),
            None => {
                return Err(self.error(
                    "shared.expected_pods",
                    "is required: the sidecars sharing the store (each falls back to \
                     its share of a limit when the store is unreachable)",
                ));
            }
        };
        let on_unavailable = match raw.on_unavailable.as_deref() {
            None | Some("local") => UnavailableMode::Local,
            Some("closed") => UnavailableMode::Closed,
            Some(other) => {
                return Err(self.error(
                    "shared.on_unavailable",
                    format!("`{other}` is neither \"local\" nor \"closed\""),
                ));
            }
        };
        let timeout = match raw.timeout_ms {
            None => DEFAULT_SHARED_TIMEOUT,
            Some(0) => return Err(self.error("shared.timeout_ms", "must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
        };
        let prefix = raw
            .prefix
            .unwrap_or_else(|| DEFAULT_SHARED_PREFIX.to_owned());
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(self.error(
                "shared.prefix",
                "must be non-empty and hold no `{` or `}` (they mark the provider's hash tag)",
            ));
        }
        Ok(Some(SharedConfig {
            url,
            prefix,
            expected_pods,
            on_unavailable,
            timeout,
            tls,
        }))
    }

    /// `ca_file` and the client certificate: paths, not empty, the
    /// certificate and its key together. The files are read when the store
    /// is built.
    fn shared_tls(
        &self,
        ca_file: Option<String>,
        client_cert_file: Option<String>,
        client_key_file: Option<String>,
    ) -> Result<SharedTls, ConfigError> {
        let path = |key: &str, text: String| {
            if text.trim().is_empty() {
                Err(self.error(key, "must be a path to a PEM file, not empty"))
            } else {
                Ok(PathBuf::from(text))
            }
        };
        let ca_file = ca_file
            .map(|file| path("shared.ca_file", file))
            .transpose()?;
        let client_identity = match (client_cert_file, client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_file: path("shared.client_cert_file", cert)?,
                key_file: path("shared.client_key_file", key)?,
            }),
            (Some(_), None) => {
                return Err(self.error(
                    "shared.client_key_file",
                    "is required with client_cert_file: the PEM private key of that certificate",
                ));
            }
            (None, Some(_)) => {
                return Err(self.error(
                    "shared.client_cert_file",
                    "is required with client_key_file: the PEM certificate of that key",
                ));
            }
        };
        Ok(SharedTls {
            ca_file,
            client_identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{SharedUrl, UnavailableMode, from_toml};
    use std::time::Duration;

    const SERVER: &str = "[server]\ntcp = \"127.0.0.1:1\"\n";

    fn shared(table: &str) -> Result<Option<crate::config::SharedConfig>, String> {
        from_toml(&format!("{SERVER}[shared]\n{table}"), "t.toml")
            .map(|config| config.shared)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn no_table_no_store_and_defaults_with_one() {
        assert!(from_toml(SERVER, "t").unwrap().shared.is_none());
        let config = shared("redis_url_env = \"REDIS\"\nexpected_pods = 3")
            .unwrap()
            .unwrap();
        assert_eq!(config.prefix, "llm-sidecar");
        assert_eq!(config.timeout, Duration::from_millis(50));
        assert_eq!(config.on_unavailable, UnavailableMode::Local);
        assert!(matches!(config.url, SharedUrl::Loaded(_)));
        assert!(!config.tls.is_set());
    }

    #[test]
    fn tls_files_are_kept_as_paths() {
        let config = shared(
            "redis_url = \"rediss://h:6380\"\nexpected_pods = 1\nca_file = \"/ca.pem\"\n\
             client_cert_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"",
        )
        .unwrap()
        .unwrap();
        let files: Vec<_> = config
            .tls
            .files()
            .map(|path| path.display().to_string())
            .collect();
        assert_eq!(files, ["/ca.pem", "/c.pem", "/k.pem"]);
    }

    #[test]
    fn mistakes_name_their_key_and_never_the_url() {
        let secret = "redis-password-0123456789";
        for (table, key) in [
            ("expected_pods = 2", "`shared`"),
            (
                "redis_url = \"redis://h\"\nredis_url_env = \"R\"\nexpected_pods = 2",
                "`shared`",
            ),
            ("redis_url = \"redis://h\"", "`shared.expected_pods`"),
            (
                "redis_url = \"redis://h\"\nexpected_pods = 0",
                "`shared.expected_pods`",
            ),
            (
                "redis_url = \"http://:redis-password-0123456789@h\"\nexpected_pods = 1",
                "`shared.redis_url`",
            ),
            (
                "redis_url = \"redis://h\"\nexpected_pods = 1\non_unavailable = \"open\"",
                "`shared.on_unavailable`",
            ),
            (
                "redis_url = \"redis://h\"\nexpected_pods = 1\ntimeout_ms = 0",
                "`shared.timeout_ms`",
            ),
            (
                "redis_url = \"redis://h\"\nexpected_pods = 1\nprefix = \"a{b}\"",
                "`shared.prefix`",
            ),
            (
                "redis_url = \"redis://:redis-password-0123456789@h\"\nexpected_pods = 1\n\
                 ca_file = \"/ca.pem\"",
                "`shared.redis_url`",
            ),
            (
                "redis_url = \"rediss://h\"\nexpected_pods = 1\nca_file = \" \"",
                "`shared.ca_file`",
            ),
            (
                "redis_url = \"rediss://h\"\nexpected_pods = 1\nclient_cert_file = \"/c.pem\"",
                "`shared.client_key_file`",
            ),
            (
                "redis_url = \"rediss://h\"\nexpected_pods = 1\nclient_key_file = \"/k.pem\"",
                "`shared.client_cert_file`",
            ),
        ] {
            let error = shared(table).expect_err(table);
            assert!(error.contains(key), "{table}: {error}");
            assert!(!error.contains(secret), "{error}");
        }
    }
}

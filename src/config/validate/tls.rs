//! Checks for the TLS keys of `[upstream]` and of each provider. Only the
//! shape is checked here; the files are read, and their contents checked,
//! when the HTTP clients are built.

use super::Checker;
use crate::config::ConfigError;
use crate::config::tls::{ClientIdentity, TlsConfig, TlsOverrides};
use std::path::PathBuf;

/// The TLS keys as written, at one level (`[upstream]` or a provider).
pub(super) struct RawTlsKeys {
    pub ca_files: Option<Vec<String>>,
    pub public_roots: Option<bool>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

impl Checker<'_> {
    /// `[upstream]`'s settings: the defaults with what the table changes.
    pub(super) fn upstream_tls(&self, raw: RawTlsKeys) -> Result<TlsConfig, ConfigError> {
        let tls = self
            .tls_overrides("upstream", raw)?
            .over(&TlsConfig::default());
        self.trusts_someone("upstream", &tls)?;
        Ok(tls)
    }

    /// A provider's changes, checked as they combine with `[upstream]`'s.
    pub(super) fn provider_tls(
        &self,
        key: &str,
        raw: RawTlsKeys,
        upstream: &TlsConfig,
    ) -> Result<TlsOverrides, ConfigError> {
        let overrides = self.tls_overrides(key, raw)?;
        self.trusts_someone(key, &overrides.over(upstream))?;
        Ok(overrides)
    }

    fn tls_overrides(&self, key: &str, raw: RawTlsKeys) -> Result<TlsOverrides, ConfigError> {
        let path = |name: String, text: String| {
            if text.trim().is_empty() {
                Err(self.error(name, "must be a path to a PEM file, not empty"))
            } else {
                Ok(PathBuf::from(text))
            }
        };
        let ca_files = match raw.ca_files {
            None => None,
            Some(files) => Some(
                files
                    .into_iter()
                    .enumerate()
                    .map(|(at, file)| path(format!("{key}.ca_files[{at}]"), file))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let client_identity = match (raw.client_cert_file, raw.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(private_key)) => Some(ClientIdentity {
                cert_file: path(format!("{key}.client_cert_file"), cert)?,
                key_file: path(format!("{key}.client_key_file"), private_key)?,
            }),
            (Some(_), None) => {
                return Err(self.error(
                    format!("{key}.client_key_file"),
                    "is required with client_cert_file: the PEM private key of that certificate",
                ));
            }
            (None, Some(_)) => {
                return Err(self.error(
                    format!("{key}.client_cert_file"),
                    "is required with client_key_file: the PEM certificate of that key",
                ));
            }
        };
        Ok(TlsOverrides {
            ca_files,
            public_roots: raw.public_roots,
            client_identity,
        })
    }

    /// Without public roots and CA files, no server could be trusted: a
    /// mistake better refused than found as failing calls.
    fn trusts_someone(&self, key: &str, tls: &TlsConfig) -> Result<(), ConfigError> {
        if !tls.public_roots && tls.ca_files.is_empty() {
            return Err(self.error(
                format!("{key}.public_roots"),
                "is false and no `ca_files` are given: no upstream server would be trusted",
            ));
        }
        Ok(())
    }
}

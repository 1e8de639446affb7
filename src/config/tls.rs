//! Upstream TLS settings: which servers a connection trusts and the
//! certificate it shows (mutual TLS). Paths only: the files are read when
//! the HTTP clients are built (`upstream/tls.rs`), and read again when they
//! change (`cli/reload.rs`).

use std::path::{Path, PathBuf};

/// The `[upstream]` TLS settings, shared by every provider without its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM files of CA certificates trusted for upstream servers
    /// (`ca_files`), e.g. an in-cluster CA or a TLS-inspecting proxy's.
    pub ca_files: Vec<PathBuf>,
    /// Whether the compiled-in public roots (Mozilla's), and the
    /// certificates named by `SSL_CERT_FILE` / `SSL_CERT_DIR`, are trusted
    /// too (`public_roots`, default true). False: only `ca_files`.
    pub public_roots: bool,
    /// The client certificate for servers that ask for one.
    pub client_identity: Option<ClientIdentity>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_files: Vec::new(),
            public_roots: true,
            client_identity: None,
        }
    }
}

/// A provider's changes to [`TlsConfig`], each replacing the `[upstream]`
/// value it names. A provider with any gets an HTTP client of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOverrides {
    pub ca_files: Option<Vec<PathBuf>>,
    pub public_roots: Option<bool>,
    pub client_identity: Option<ClientIdentity>,
}

impl TlsOverrides {
    /// No changes: the provider shares the `[upstream]` client.
    pub fn is_empty(&self) -> bool {
        *self == TlsOverrides::default()
    }

    pub fn over(&self, base: &TlsConfig) -> TlsConfig {
        TlsConfig {
            ca_files: self
                .ca_files
                .clone()
                .unwrap_or_else(|| base.ca_files.clone()),
            public_roots: self.public_roots.unwrap_or(base.public_roots),
            client_identity: self
                .client_identity
                .clone()
                .or_else(|| base.client_identity.clone()),
        }
    }

    fn files(&self) -> impl Iterator<Item = &Path> {
        self.ca_files
            .iter()
            .flatten()
            .map(PathBuf::as_path)
            .chain(self.client_identity.iter().flat_map(ClientIdentity::files))
    }
}

/// A client certificate chain and its private key, both PEM files
/// (`client_cert_file`, `client_key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_file: PathBuf,
}

impl ClientIdentity {
    fn files(&self) -> impl Iterator<Item = &Path> {
        [self.cert_file.as_path(), self.key_file.as_path()].into_iter()
    }
}

impl super::Config {
    /// Every CA, certificate and key file the configuration names, for the
    /// reload watch.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let upstream = &self.upstream.tls;
        let mut files: Vec<PathBuf> = upstream.ca_files.clone();
        files.extend(
            upstream
                .client_identity
                .iter()
                .flat_map(ClientIdentity::files)
                .map(Path::to_path_buf),
        );
        for provider in &self.providers {
            files.extend(provider.tls.files().map(Path::to_path_buf));
        }
        if let Some(shared) = &self.shared {
            files.extend(shared.tls.files().map(Path::to_path_buf));
        }
        files
    }
}

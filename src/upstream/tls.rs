//! The TLS material of the upstream HTTP clients, read from the files the
//! configuration names: CA certificates to trust and a client certificate
//! for mutual TLS. Each file is checked as it is read, so a missing or
//! broken one is a configuration error naming the key, the file and what
//! was expected, before any call fails on it.
//!
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` (OpenSSL's convention, which most
//! tools follow) add their certificates to the public roots. They are read
//! leniently, as system stores are: a certificate webpki cannot use, or a
//! file in the directory that holds none, is skipped. rustls-native-certs
//! reads the same variables, but when they are unset it loads the
//! platform's store, which the sidecar does not use (its public roots are
//! compiled in, the same in every image); so the two are read here.

use crate::config::{ClientIdentity, ConfigError, Env, TlsConfig, TlsOverrides};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the variables' errors say they come from.
const ENVIRONMENT: &str = "the environment";

/// What one HTTP client trusts and shows, read and checked.
#[derive(Clone)]
pub struct ClientTls {
    /// From `ca_files`, plus the environment's when `public_roots`.
    pub roots: Vec<reqwest::Certificate>,
    /// Whether the compiled-in public roots are trusted too.
    pub public_roots: bool,
    pub identity: Option<LoadedIdentity>,
}

/// A client certificate read from its files, with where it came from.
#[derive(Clone)]
pub struct LoadedIdentity {
    pub identity: reqwest::Identity,
    /// `upstream` or `providers.NAME`, for errors.
    pub key: String,
    pub files: ClientIdentity,
}

/// Reads the files of one configuration, each level once.
pub struct TlsLoader<'a> {
    /// The configuration file, for errors.
    source: &'a str,
    /// The certificates of `SSL_CERT_FILE` / `SSL_CERT_DIR`.
    env_roots: Vec<CertificateDer<'static>>,
    /// `[upstream]`'s CA certificates and identity, which providers inherit.
    upstream_ca: Vec<CertificateDer<'static>>,
    upstream_identity: Option<LoadedIdentity>,
    upstream: TlsConfig,
}

impl<'a> TlsLoader<'a> {
    /// Reads `[upstream]`'s files and the environment's.
    pub fn new(upstream: &TlsConfig, source: &'a str, env: Env<'_>) -> Result<Self, ConfigError> {
        let error = |key: String, message: String| ConfigError {
            file: source.to_owned(),
            key,
            message,
        };
        let upstream_ca = read_ca_files(&upstream.ca_files, "upstream", &error)?;
        let upstream_identity = upstream
            .client_identity
            .as_ref()
            .map(|identity| read_identity(identity, "upstream", &error))
            .transpose()?;
        Ok(TlsLoader {
            source,
            env_roots: env_roots(env)?,
            upstream_ca,
            upstream_identity,
            upstream: upstream.clone(),
        })
    }

    /// The `[upstream]` client's material.
    pub fn upstream(&self) -> ClientTls {
        self.client_tls(
            &self.upstream_ca,
            self.upstream.public_roots,
            self.upstream_identity.clone(),
        )
    }

    /// A provider's material: its own files where it names them, the rest
    /// inherited from `[upstream]`. `key` is `providers.NAME`.
    pub fn provider(&self, key: &str, tls: &TlsOverrides) -> Result<ClientTls, ConfigError> {
        let error = |key: String, message: String| ConfigError {
            file: self.source.to_owned(),
            key,
            message,
        };
        let own_ca;
        let ca = match &tls.ca_files {
            Some(files) => {
                own_ca = read_ca_files(files, key, &error)?;
                &own_ca
            }
            None => &self.upstream_ca,
        };
        let identity = match &tls.client_identity {
            Some(identity) => Some(read_identity(identity, key, &error)?),
            None => self.upstream_identity.clone(),
        };
        let public_roots = tls.public_roots.unwrap_or(self.upstream.public_roots);
        Ok(self.client_tls(ca, public_roots, identity))
    }

    fn client_tls(
        &self,
        ca: &[CertificateDer<'static>],
        public_roots: bool,
        identity: Option<LoadedIdentity>,
    ) -> ClientTls {
        let env = if public_roots {
            &self.env_roots[..]
        } else {
            &[]
        };
        ClientTls {
            roots: ca
                .iter()
                .chain(env)
                // Infallible with rustls: the DER is checked when the
                // client is built, and was checked as it was read.
                .filter_map(|der| reqwest::Certificate::from_der(der).ok())
                .collect(),
            public_roots,
            identity,
        }
    }
}

/// Every CA certificate of `files`, each checked as a trust anchor.
fn read_ca_files(
    files: &[PathBuf],
    key: &str,
    error: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let mut roots = Vec::new();
    for (at, file) in files.iter().enumerate() {
        let key = format!("{key}.ca_files[{at}]");
        let certs =
            read_certificates(file, "CA certificates").map_err(|m| error(key.clone(), m))?;
        for (number, cert) in certs.iter().enumerate() {
            rustls::RootCertStore::empty()
                .add(cert.clone())
                .map_err(|problem| {
                    error(
                        key.clone(),
                        format!(
                            "`{}`: certificate {} is not a usable CA certificate: {problem}",
                            file.display(),
                            number + 1
                        ),
                    )
                })?;
        }
        roots.extend(certs);
    }
    Ok(roots)
}

/// The certificates of one PEM file; `what` says what it should hold.
pub(crate) fn read_certificates(
    file: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    certificates_in(&read(file, what)?, file, what)
}

/// The certificates in `bytes`, the PEM text of `file`.
fn certificates_in(
    bytes: &[u8],
    file: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|problem| {
            format!(
                "`{}` is not a valid PEM file ({}); expected {what}",
                file.display(),
                pem_problem(&problem)
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "`{}` holds no certificate; expected {what} in PEM \
             (`-----BEGIN CERTIFICATE-----` blocks)",
            file.display()
        ));
    }
    Ok(certs)
}

/// The PEM parser's complaint in words (its own prints markers as bytes).
/// Never the file's contents: a key file's lines are secret.
pub(crate) fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a `{}` block has no END line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_owned(),
        pem::Error::NoItemsFound => "no block of that kind".to_owned(),
        other => other.to_string(),
    }
}

/// The bytes of `file`; the error names it and what it should hold.
pub(crate) fn read(file: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|problem| {
        format!(
            "`{}` cannot be read ({problem}); expected a PEM file of {what}",
            file.display()
        )
    })
}

/// A client certificate chain and its key, as reqwest takes them (one PEM
/// text). Re-encoded from what was read, so that blocks reqwest does not
/// know (OpenSSL's `EC PARAMETERS` before an EC key) are left behind.
fn read_identity(
    identity: &ClientIdentity,
    key: &str,
    error: &dyn Fn(String, String) -> ConfigError,
) -> Result<LoadedIdentity, ConfigError> {
    let certs = read_certificates(
        &identity.cert_file,
        "the client certificate, then any intermediates",
    )
    .map_err(|message| error(format!("{key}.client_cert_file"), message))?;
    let key_file = &identity.key_file;
    let private_key = read(key_file, "the client certificate's private key")
        .and_then(|bytes| {
            PrivateKeyDer::from_pem_slice(&bytes).map_err(|problem| {
                format!(
                    "`{}` holds no usable private key ({}); expected a PEM \
                     `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block",
                    key_file.display(),
                    pem_problem(&problem)
                )
            })
        })
        .map_err(|message| error(format!("{key}.client_key_file"), message))?;
    let mut pem = String::new();
    for cert in &certs {
        push_pem(&mut pem, "CERTIFICATE", cert);
    }
    let label = match &private_key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    push_pem(&mut pem, label, private_key.secret_der());
    let loaded = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|problem| {
        error(
            format!("{key}.client_cert_file"),
            format!(
                "`{}` with `{}` is not a usable client certificate: {}",
                identity.cert_file.display(),
                key_file.display(),
                crate::upstream::openai::describe(&problem)
            ),
        )
    })?;
    Ok(LoadedIdentity {
        identity: loaded,
        key: key.to_owned(),
        files: identity.clone(),
    })
}

fn push_pem(pem: &mut String, label: &str, der: &[u8]) {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    pem.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
}

/// The paths `SSL_CERT_FILE` and `SSL_CERT_DIR` name (the latter a list
/// separated by `:`), for the reload watch.
pub fn env_paths(env: Env<'_>) -> Vec<PathBuf> {
    let file = env("SSL_CERT_FILE").filter(|file| !file.is_empty());
    let dirs = env("SSL_CERT_DIR").unwrap_or_default();
    file.into_iter()
        .chain(
            dirs.split(':')
                .filter(|dir| !dir.is_empty())
                .map(str::to_owned),
        )
        .map(PathBuf::from)
        .collect()
}

/// The certificates `SSL_CERT_FILE` and `SSL_CERT_DIR` name, without
/// duplicates (a directory usually repeats the bundle file).
pub(crate) fn env_roots(env: Env<'_>) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let error = |key: &str, message: String| ConfigError {
        file: ENVIRONMENT.to_owned(),
        key: key.to_owned(),
        message,
    };
    let mut roots = Vec::new();
    let mut read_files = HashSet::new();
    if let Some(file) = env("SSL_CERT_FILE").filter(|file| !file.is_empty()) {
        read_files.extend(std::fs::canonicalize(&file));
        roots = read_certificates(Path::new(&file), "CA certificates")
            .map_err(|message| error("SSL_CERT_FILE", message))?;
    }
    for dir in env("SSL_CERT_DIR").unwrap_or_default().split(':') {
        if dir.is_empty() {
            continue;
        }
        let entries = std::fs::read_dir(dir).map_err(|problem| {
            error(
                "SSL_CERT_DIR",
                format!("`{dir}` cannot be read ({problem}); expected a directory of PEM CA certificates"),
            )
        })?;
        // A system directory names each certificate two or three times
        // (hash links, file names, a bundle): each real file is read once.
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| std::fs::canonicalize(entry.ok()?.path()).ok())
            .filter(|path| path.is_file() && read_files.insert(path.clone()))
            .collect();
        files.sort();
        for file in files {
            let what = "CA certificates";
            // A file that cannot be read (its mode, a Secret mounted for
            // another user) was surely meant to be trusted: say so. One
            // that holds no usable certificate is a system store's usual
            // clutter.
            let bytes = match read(&file, what) {
                Ok(bytes) => bytes,
                Err(problem) => {
                    tracing::warn!("SSL_CERT_DIR: skipped: {problem}");
                    continue;
                }
            };
            match certificates_in(&bytes, &file, what) {
                Ok(certs) => roots.extend(certs),
                Err(problem) => tracing::debug!("SSL_CERT_DIR: skipped: {problem}"),
            }
        }
    }
    let mut seen = HashSet::new();
    roots.retain(|cert| {
        seen.insert(cert.as_ref().to_vec())
            && rustls::RootCertStore::empty().add(cert.clone()).is_ok()
    });
    Ok(roots)
}

#[cfg(test)]
mod tests;

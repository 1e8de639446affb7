//! The TLS material of a `rediss://` store (`[shared] ca_file`,
//! `client_cert_file`, `client_key_file`), read and checked when the store
//! is built, so a missing or broken file is a configuration error naming
//! the key and the file, not an outage found at the first call.
//!
//! The redis crate (rustls) trusts the system's store by default
//! (rustls-native-certs: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else
//! the platform's bundle); a `root_cert` it is given replaces that store,
//! which is what `ca_file` means.

use crate::config::{ClientIdentity, ConfigError, SharedTls};
use crate::upstream::tls::{pem_problem, read, read_certificates};
use redis::{ClientTlsConfig, TlsCertificates};
use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

/// What the redis crate is given for `tls`: `None` when nothing is set
/// (the crate's defaults). Errors name the key and the file, never a
/// key file's contents.
pub(super) fn certificates(
    tls: &SharedTls,
    source: &str,
) -> Result<Option<TlsCertificates>, ConfigError> {
    if !tls.is_set() {
        return Ok(None);
    }
    let error = |key: &str, message: String| ConfigError {
        file: source.to_owned(),
        key: key.to_owned(),
        message,
    };
    let root_cert =
        tls.ca_file
            .as_ref()
            .map(|file| {
                let certs = read_certificates(file, "CA certificates")
                    .map_err(|message| error("shared.ca_file", message))?;
                for (number, cert) in certs.iter().enumerate() {
                    RootCertStore::empty().add(cert.clone()).map_err(|problem| {
                    error(
                        "shared.ca_file",
                        format!(
                            "`{}`: certificate {} is not a usable CA certificate: {problem}",
                            file.display(),
                            number + 1
                        ),
                    )
                })?;
                }
                read(file, "CA certificates").map_err(|message| error("shared.ca_file", message))
            })
            .transpose()?;
    let client_tls = tls
        .client_identity
        .as_ref()
        .map(|identity| client_identity(identity, &error))
        .transpose()?;
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The certificate chain and its key, checked to belong together (as
/// rustls would only find at the first handshake).
fn client_identity(
    identity: &ClientIdentity,
    error: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ClientTlsConfig, ConfigError> {
    let cert_key = "shared.client_cert_file";
    let key_key = "shared.client_key_file";
    let what = "the client certificate, then any intermediates";
    let certs =
        read_certificates(&identity.cert_file, what).map_err(|message| error(cert_key, message))?;
    let client_key = read(&identity.key_file, "the client certificate's private key")
        .map_err(|message| error(key_key, message))?;
    let private_key = PrivateKeyDer::from_pem_slice(&client_key).map_err(|problem| {
        error(
            key_key,
            format!(
                "`{}` holds no usable private key ({}); expected a PEM `PRIVATE KEY`, \
                 `RSA PRIVATE KEY` or `EC PRIVATE KEY` block",
                identity.key_file.display(),
                pem_problem(&problem)
            ),
        )
    })?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|problem| error(cert_key, format!("TLS setup: {problem}")))?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(certs, private_key)
        .map_err(|problem| {
            error(
                cert_key,
                format!(
                    "`{}` with `{}` is not a usable client certificate: {problem}",
                    identity.cert_file.display(),
                    identity.key_file.display()
                ),
            )
        })?;
    let client_cert =
        read(&identity.cert_file, what).map_err(|message| error(cert_key, message))?;
    Ok(ClientTlsConfig {
        client_cert,
        client_key,
    })
}

//! The TLS part of a PostgreSQL URL, in libpq's words, which
//! tokio-postgres only partly knows: it takes `sslmode` `disable`,
//! `prefer` and `require` and refuses `verify-ca`, `verify-full`,
//! `sslrootcert`, `sslcert` and `sslkey`. Those are taken out of the URL
//! (or `key=value` string) here, their files read and checked, and the
//! rest left for tokio-postgres.
//!
//! - `sslmode`: `disable`, `prefer` (the default) or `require`, as
//!   tokio-postgres does them; `verify-ca` and `verify-full` are TLS as
//!   `require` is. With TLS the server's certificate is always checked
//!   (stricter than libpq's `require`): its chain, and its name except with
//!   `verify-ca`.
//! - `sslrootcert=FILE`: the CA certificates the server's chain must end
//!   in, instead of the default roots (`system`: the default roots, as in
//!   libpq 16).
//! - `sslcert=FILE` and `sslkey=FILE`: the client certificate (then any
//!   intermediates) and its key, for a server that asks for one
//!   (`clientcert=verify-full`, or `cert` authentication).

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The libpq TLS keys a URL gave, as paths (compared when a target is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsKeys {
    /// `sslmode=verify-ca`: the server's name is not checked.
    pub chain_only: bool,
    /// `sslrootcert`, unless `system`.
    pub root_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The TLS material, read and checked: what a connection trusts and shows.
#[derive(Clone, Debug)]
pub struct LoadedTls {
    keys: TlsKeys,
    /// `sslrootcert`'s certificates, replacing the default roots.
    root_cert: Option<Vec<CertificateDer<'static>>>,
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

/// Takes the keys tokio-postgres does not know out of `url` (a URL or a
/// `key=value` string): the rest of it, and what they said. `sslmode`
/// `verify-ca` / `verify-full` become `require`. Errors name the key and
/// what it takes; never the password.
pub fn split(url: &str) -> Result<(String, TlsKeys), String> {
    let mut keys = TlsKeys::default();
    let mut take = |key: &str, value: &str| -> Result<Option<String>, String> {
        match key {
            "sslmode" => match value {
                "disable" | "prefer" | "require" => Ok(Some(value.to_owned())),
                "verify-full" => Ok(Some("require".to_owned())),
                "verify-ca" => {
                    keys.chain_only = true;
                    Ok(Some("require".to_owned()))
                }
                other => Err(format!(
                    "has sslmode=`{other}`; expected disable, prefer, require, verify-ca or \
                     verify-full"
                )),
            },
            "sslrootcert" if value == "system" => Ok(None),
            "sslrootcert" => path(&mut keys.root_cert, key, value),
            "sslcert" => path(&mut keys.client_cert, key, value),
            "sslkey" => path(&mut keys.client_key, key, value),
            _ => Ok(Some(value.to_owned())),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url, &mut take)?
    } else {
        split_keywords(url, &mut take)?
    };
    match (&keys.client_cert, &keys.client_key) {
        (Some(_), None) => Err("has sslcert but no sslkey (the certificate's key)".to_owned()),
        (None, Some(_)) => Err("has sslkey but no sslcert (the key's certificate)".to_owned()),
        _ => Ok((rest, keys)),
    }
}

fn path(slot: &mut Option<PathBuf>, key: &str, value: &str) -> Result<Option<String>, String> {
    if value.trim().is_empty() {
        return Err(format!(
            "has an empty {key}; expected the path of a PEM file"
        ));
    }
    *slot = Some(PathBuf::from(value));
    Ok(None)
}

type Take<'a> = dyn FnMut(&str, &str) -> Result<Option<String>, String> + 'a;

/// The query of a URL, each pair decoded to be judged, kept as written
/// unless `take` changes or drops it.
fn split_url(url: &str, take: &mut Take<'_>) -> Result<String, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, decoded) = (
            super::target::percent_decode(key),
            super::target::percent_decode(value),
        );
        match take(&key, &decoded)? {
            Some(same) if same == decoded => kept.push(pair.to_owned()),
            Some(changed) => kept.push(format!("{key}={changed}")),
            None => {}
        }
    }
    Ok(match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    })
}

/// A `key=value` string (values optionally in single quotes, `\` escaping
/// the next character, as libpq and tokio-postgres read them), written
/// again with every value quoted.
fn split_keywords(text: &str, take: &mut Take<'_>) -> Result<String, String> {
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // tokio-postgres says what is wrong (without the value).
            return Ok(text.to_owned());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '\'' if quoted => break,
                c if c.is_whitespace() && !quoted => break,
                c => value.push(c),
            }
        }
        if let Some(value) = take(&key, &value)? {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{escaped}'"));
        }
    }
    Ok(kept.join(" "))
}

impl LoadedTls {
    /// Reads and checks the files `keys` name. Errors name the key and the
    /// file, never a key file's contents.
    pub fn load(keys: TlsKeys) -> Result<LoadedTls, String> {
        use crate::upstream::tls::{pem_problem, read, read_certificates};
        fn in_key(key: &'static str) -> impl Fn(String) -> String {
            move |message| format!("has {key}: {message}")
        }
        let root_cert = match &keys.root_cert {
            None => None,
            Some(file) => {
                let certs =
                    read_certificates(file, "CA certificates").map_err(in_key("sslrootcert"))?;
                for cert in &certs {
                    RootCertStore::empty().add(cert.clone()).map_err(|problem| {
                        format!("has sslrootcert: `{}` holds a certificate that is no usable CA: {problem}", file.display())
                    })?;
                }
                Some(certs)
            }
        };
        let client = match (&keys.client_cert, &keys.client_key) {
            (Some(cert), Some(key)) => {
                let certs =
                    read_certificates(cert, "the client certificate, then any intermediates")
                        .map_err(in_key("sslcert"))?;
                let bytes =
                    read(key, "the client certificate's private key").map_err(in_key("sslkey"))?;
                let private_key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|problem| {
                    format!(
                        "has sslkey: `{}` holds no usable private key ({}); expected a PEM \
                         `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block",
                        key.display(),
                        pem_problem(&problem)
                    )
                })?;
                Some((certs, Arc::new(private_key)))
            }
            _ => None,
        };
        let loaded = LoadedTls {
            keys,
            root_cert,
            client,
        };
        // A certificate and key that do not belong together, found now.
        loaded.client_config(&[])?;
        Ok(loaded)
    }

    pub fn keys(&self) -> &TlsKeys {
        &self.keys
    }

    /// The rustls configuration of a connection: `sslrootcert`'s CAs, else
    /// the public roots plus `extra_roots` (`SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`); the name checked unless `verify-ca`; the client
    /// certificate when one is given.
    pub fn client_config(
        &self,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<rustls::ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(certs) => {
                roots.add_parsable_certificates(certs.iter().cloned());
            }
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                // One rustls cannot use is skipped, as system stores are read.
                roots.add_parsable_certificates(extra_roots.iter().cloned());
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS setup: {error}"))?;
        let builder = if self.keys.chain_only {
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("TLS setup: {error}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
        } else {
            builder.with_root_certificates(roots)
        };
        match &self.client {
            None => Ok(builder.with_no_client_auth()),
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|problem| {
                    format!(
                        "has sslcert `{}` and sslkey `{}`, which are not a usable client \
                         certificate: {problem}",
                        path_of(&self.keys.client_cert),
                        path_of(&self.keys.client_key)
                    )
                }),
        }
    }
}

fn path_of(path: &Option<PathBuf>) -> String {
    path.as_deref()
        .map(Path::display)
        .map(|path| path.to_string())
        .unwrap_or_default()
}

/// `sslmode=verify-ca`: the chain is checked, the name is not. rustls
/// checks the chain first and the name last, so a name error means the
/// chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_keys_are_taken_out_of_a_url_and_a_keyword_string() {
        let (rest, keys) = split(
            "postgres://app:pw@db/usage?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://app:pw@db/usage?sslmode=require&application_name=x"
        );
        assert_eq!(keys.root_cert.as_deref(), Some(Path::new("/ca.pem")));
        assert!(!keys.chain_only);
        let (rest, keys) = split(
            "host=db user=app password='p w\\'x' sslmode=verify-ca sslcert=/c.pem sslkey = '/k.pem'",
        )
        .unwrap();
        assert_eq!(
            rest,
            "host='db' user='app' password='p w\\'x' sslmode='require'"
        );
        assert!(keys.chain_only);
        assert_eq!(keys.client_key.as_deref(), Some(Path::new("/k.pem")));
        let (rest, keys) = split("postgres://db/x?sslrootcert=system").unwrap();
        assert_eq!(
            (rest.as_str(), keys),
            ("postgres://db/x", TlsKeys::default())
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        for (url, key) in [
            ("postgres://db/x?sslmode=allow", "sslmode"),
            ("postgres://db/x?sslcert=/c.pem", "sslkey"),
            ("host=db sslkey=/k.pem", "sslcert"),
            ("postgres://db/x?sslrootcert=", "sslrootcert"),
        ] {
            let error = split(url).unwrap_err();
            assert!(error.contains(key), "{url}: {error}");
        }
    }
}

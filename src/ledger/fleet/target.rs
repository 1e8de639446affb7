//! Where the fleet ledger is: the PostgreSQL URL, read from the config, an
//! environment variable or a file (a Kubernetes Secret), parsed once, shown
//! without its password, and connected to with TLS as its `sslmode` asks.
//! Every text that leaves this module (errors, log lines) is scrubbed of
//! the password, in its raw and its percent-decoded spelling. libpq's TLS
//! keys tokio-postgres does not know are read in `tls.rs`.

use super::tls::{self, LoadedTls};
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements the sidecar runs are small; one that takes longer than this
/// is a database in trouble, and the rows wait in the spool instead.
const STATEMENT_TIMEOUT: &str = "30s";

/// A parsed PostgreSQL URL (or `key=value` connection string) and the
/// TLS it asks for. Its `Debug` and [`shown`](Self::shown) never include
/// the password.
#[derive(Clone)]
pub struct FleetTarget {
    config: tokio_postgres::Config,
    shown: String,
    secrets: Arc<Vec<String>>,
    /// `sslrootcert`, `sslcert`, `sslkey`, `verify-ca`, read and checked.
    tls: LoadedTls,
    /// The `SSL_CERT_FILE` / `SSL_CERT_DIR` certificates, trusted with the
    /// public roots unless `sslrootcert` names the CAs.
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
}

impl FleetTarget {
    /// Parses `url` (`postgres://user:password@host:port/db?sslmode=require`
    /// or `host=... user=...`), with libpq's TLS keys (`sslmode` up to
    /// `verify-full`, `sslrootcert`, `sslcert`, `sslkey`: see `tls.rs`),
    /// reading the files they name. Server certificates are checked against
    /// `sslrootcert`'s CAs, else the compiled-in public roots plus
    /// `extra_roots` (the `SSL_CERT_FILE` / `SSL_CERT_DIR` certificates).
    /// The error says what is wrong without repeating the URL or its
    /// password.
    pub fn parse(
        url: &str,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<FleetTarget, String> {
        let secrets = Arc::new(password_spellings(url));
        let scrub = |text: &str| scrub_with(&secrets, text);
        let (url, keys) = tls::split(url.trim()).map_err(|error| scrub(&error))?;
        let tls = LoadedTls::load(keys).map_err(|error| scrub(&error))?;
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|error| {
            scrub(&format!(
                "is not a PostgreSQL URL (postgres://user:password@host:port/database) or \
                 connection string: {error}"
            ))
        })?;
        if config.get_hosts().is_empty() {
            return Err("names no host (postgres://user:password@HOST:port/database)".to_owned());
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err("names no user (postgres://USER:password@host:port/database)".to_owned());
        }
        let mut secrets = (*secrets).clone();
        if let Some(password) = config.get_password() {
            secrets.push(String::from_utf8_lossy(password).into_owned());
        }
        secrets.retain(|secret| !secret.is_empty());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("llm-sidecar");
        }
        config.keepalives(true);
        let shown = shown(&config);
        Ok(FleetTarget {
            config,
            shown,
            secrets: Arc::new(secrets),
            tls,
            extra_roots: Arc::new(extra_roots),
        })
    }

    /// The same target, its server checked against the public roots plus
    /// `extra_roots` (the `SSL_CERT_FILE` / `SSL_CERT_DIR` certificates)
    /// unless the URL's `sslrootcert` names the CAs.
    pub fn with_roots(mut self, extra_roots: Vec<CertificateDer<'static>>) -> FleetTarget {
        self.extra_roots = Arc::new(extra_roots);
        self
    }

    /// `user@host:port/database`, for logs and answers: never the password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `text` with every spelling of the password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub_with(&self.secrets, text)
    }

    /// Opens one connection, its I/O driven by a task on the current
    /// runtime (it ends when the returned client is dropped). TLS is used
    /// as the URL's `sslmode` says (`disable`, `prefer` — the default —
    /// `require`, `verify-ca`, `verify-full`); a server certificate is
    /// always checked (its name too, but with `verify-ca`). The error is
    /// scrubbed of the password.
    pub async fn connect(&self) -> Result<Client, String> {
        let tls = self.tls.client_config(&self.extra_roots)?;
        let (client, connection) = self
            .config
            .connect(MakeRustlsConnect::new(tls))
            .await
            .map_err(|error| self.describe(&error))?;
        let target = self.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(
                    target = %target.shown,
                    "ledger: PostgreSQL connection closed: {}",
                    target.describe(&error)
                );
            }
        });
        client
            .batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
            .await
            .map_err(|error| self.describe(&error))?;
        Ok(client)
    }

    /// A PostgreSQL error as one scrubbed line, with the server's own
    /// message when there is one (tokio-postgres's `Display` says only
    /// "db error").
    pub fn describe(&self, error: &tokio_postgres::Error) -> String {
        let text = match error.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            }
        };
        self.scrub(&text)
    }
}

impl fmt::Debug for FleetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FleetTarget").field(&self.shown).finish()
    }
}

impl PartialEq for FleetTarget {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.tls.keys() == other.tls.keys()
    }
}

fn shown(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or_default()
    )
}

/// The password as the text may spell it: raw between `user:` and `@` in a
/// URL, percent-decoded, and after `password=` in a query or a `key=value`
/// string. Found by hand so that a URL the parser refuses is scrubbed too.
fn password_spellings(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            found.push(password.to_owned());
        }
    }
    for (at, _) in url.match_indices("password=") {
        let value = &url[at + "password=".len()..];
        let end = value.find(['&', ' ', '\'']).unwrap_or(value.len());
        found.push(value[..end].to_owned());
    }
    let decoded: Vec<String> = found.iter().map(|text| percent_decode(text)).collect();
    found.extend(decoded);
    found.retain(|secret| !secret.is_empty());
    found.sort();
    found.dedup();
    // Longest first, so a password that contains another is replaced whole.
    found.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    found
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn scrub_with(secrets: &[String], text: &str) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() && text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_found_in_every_spelling_and_never_shown() {
        let target = FleetTarget::parse(
            "postgres://app:p%40ss%3Aw0rd@db.internal:6543/usage",
            vec![],
        )
        .unwrap();
        assert_eq!(target.shown(), "app@db.internal:6543/usage");
        assert!(!format!("{target:?}").contains("p@ss"));
        assert_eq!(
            target.scrub("auth p%40ss%3Aw0rd and p@ss:w0rd"),
            "auth *** and ***"
        );
        let keyed = FleetTarget::parse("host=db user=app password=hunter22", vec![]).unwrap();
        assert_eq!(keyed.scrub("it was hunter22"), "it was ***");
    }

    #[test]
    fn a_refused_url_is_described_without_its_password() {
        for url in [
            "postgres://app:s3cr3t-pw@db:notaport/usage",
            "postgres://app:s3cr3t-pw@/usage",
            "postgres://:s3cr3t-pw@db/usage",
        ] {
            let error = FleetTarget::parse(url, vec![]).unwrap_err();
            assert!(!error.contains("s3cr3t-pw"), "{error}");
        }
    }
}

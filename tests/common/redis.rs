//! A private `redis-server` (from PATH) on a free loopback port, with no
//! persistence, in a temporary directory: killed on drop, and stoppable
//! and restartable on the same port for outage tests. Optionally TLS only
//! (`--port 0`, `--tls-port`), asking clients for a certificate, and with
//! a password or an ACL user.

use super::tls::{Authority, Issued};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    options: RedisOptions,
    /// The TLS files the server reads, when it speaks TLS.
    tls_files: Option<TlsFiles>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// How a [`RedisServer`] differs from a plain one.
#[derive(Default)]
pub struct RedisOptions {
    /// The default user's password (`requirepass`).
    pub password: Option<String>,
    /// An ACL user and its password, allowed everything; the default
    /// user is then off.
    pub user: Option<(String, String)>,
    pub tls: Option<RedisTls>,
}

/// TLS only, with `server` as the server's certificate.
pub struct RedisTls {
    pub server: Issued,
    /// The CA that signed `server`: the test's own connections trust it.
    pub server_ca: String,
    /// Clients must show a certificate of this CA (`tls-auth-clients
    /// yes`); the test's own connections show `own_client`.
    pub client_ca: Option<(Authority, Issued)>,
}

struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_options(RedisOptions::default())
    }

    /// A server that asks for `password` (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        RedisServer::start_options(RedisOptions {
            password: password.map(str::to_owned),
            ..RedisOptions::default()
        })
    }

    pub fn start_options(options: RedisOptions) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let tls_files = options.tls.as_ref().map(|tls| {
            let (cert, key) = tls.server.write(dir.path(), "server");
            // Checked against client certificates only with `client_ca`;
            // redis-server wants a CA file for TLS either way.
            let ca = dir.path().join("client-ca.pem");
            let ca_pem = match &tls.client_ca {
                Some((authority, _)) => &authority.pem,
                None => &tls.server_ca,
            };
            std::fs::write(&ca, ca_pem).unwrap();
            TlsFiles { cert, key, ca }
        });
        let mut server = RedisServer {
            port: super::process::free_port(),
            options,
            tls_files,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`, `rediss://` with TLS, with the user and
    /// password when there are some.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let credentials = match (&self.options.user, &self.options.password) {
            (Some((user, password)), _) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            (None, None) => String::new(),
        };
        format!("{scheme}://{credentials}127.0.0.1:{}", self.port)
    }

    /// The CA the server checks client certificates against, if it asks.
    pub fn client_authority(&self) -> Option<&Authority> {
        let tls = self.options.tls.as_ref()?;
        tls.client_ca.as_ref().map(|(authority, _)| authority)
    }

    /// A client of the test's own: over TLS it trusts the server's CA and
    /// shows its own certificate when the server asks for one.
    fn client(&self) -> redis::Client {
        let Some(tls) = &self.options.tls else {
            return redis::Client::open(self.url()).unwrap();
        };
        let client_tls = tls
            .client_ca
            .as_ref()
            .map(|(_, own)| redis::ClientTlsConfig {
                client_cert: own.cert_pem.clone().into_bytes(),
                client_key: own.key_pem.clone().into_bytes(),
            });
        redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls,
                root_cert: Some(tls.server_ca.clone().into_bytes()),
            },
        )
        .unwrap()
    }

    /// Starts it again (on the same port) and waits for PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.tls_files {
            None => command.args(["--port", &port]),
            Some(files) => {
                let auth_clients = match self.options.tls.as_ref().unwrap().client_ca {
                    Some(_) => "yes",
                    None => "no",
                };
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&files.cert)
                    .arg("--tls-key-file")
                    .arg(&files.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&files.ca)
                    .args(["--tls-auth-clients", auth_clients])
            }
        };
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        if let Some((user, password)) = &self.options.user {
            command
                .args([
                    "--user",
                    user,
                    "on",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                ])
                .args(["--user", "default", "off"]);
        }
        self.child = Some(command.spawn().expect("redis-server is on PATH"));
        let began = Instant::now();
        while !self.ping() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "redis-server never answered PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A command through a fresh connection, its answer as text.
    pub fn command(&self, args: &[&str]) -> String {
        let mut connection = self.client().get_connection().expect("redis answers");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        text(&command.query::<redis::Value>(&mut connection).unwrap())
    }

    /// The server's clock (`TIME`) in microseconds.
    pub fn time_micros(&self) -> u64 {
        let mut connection = self.client().get_connection().unwrap();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut connection).unwrap();
        seconds * 1_000_000 + micros
    }

    fn ping(&self) -> bool {
        if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            return false;
        }
        self.client()
            .get_connection()
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
            .is_ok()
    }
}

/// A reply as text: strings as they are, arrays one item a line.
fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

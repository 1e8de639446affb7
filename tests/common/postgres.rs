//! A private PostgreSQL cluster for a test binary: `initdb` in a temporary
//! directory, `postgres` on a free loopback port with its Unix socket in
//! that directory, `fsync` off. Tests share one cluster per process
//! ([`shared`]) and each takes a database of its own
//! ([`PgCluster::database`]). As root (CI) the server runs as the
//! `postgres` user, which `initdb` and `postgres` require. A cluster of
//! its own may speak TLS ([`PgCluster::start_tls`]).

use super::tls::{Authority, Issued};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A role that must log in with a password (scram-sha-256 on TCP).
pub const PASSWORD_USER: &str = "ledger_writer";
/// With TLS: a role that logs in with a client certificate of that name
/// (`cert` authentication), over TLS only.
pub const CERT_USER: &str = "ledger_cert";

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Run the server's programs as `postgres` (the tests run as root).
    as_postgres: bool,
    /// `ssl = on`, with the files written into the data directory.
    tls: bool,
    pub port: u16,
}

static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// The process's cluster, started by the first test that asks; stopped
/// when the last one holding it is done.
pub fn shared() -> Arc<PgCluster> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(PgCluster::start());
    *shared = Arc::downgrade(&cluster);
    cluster
}

fn bin_dir() -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            // The installation's own directory (a PATH entry may be a
            // link to `initdb` alone), where psql and pg_ctl are too.
            if let Ok(initdb) = std::fs::canonicalize(dir.join("initdb"))
                && let Some(bin) = initdb.parent()
                && bin.join("pg_ctl").is_file()
                && bin.join("psql").is_file()
            {
                return bin.to_owned();
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL's initdb on PATH or under /usr/lib/postgresql/*/bin (scripts/install-test-servers)",
    )
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl PgCluster {
    pub fn start() -> PgCluster {
        PgCluster::start_with(None)
    }

    /// A cluster that also speaks TLS (`ssl = on`) with `server` as its
    /// certificate, and checks client certificates against `client_ca`.
    pub fn start_tls(server: &Issued, client_ca: &Authority) -> PgCluster {
        PgCluster::start_with(Some((server, client_ca)))
    }

    fn start_with(tls: Option<(&Issued, &Authority)>) -> PgCluster {
        let bin = bin_dir();
        let as_postgres = rustix::process::getuid().is_root();
        let dir = tempfile::Builder::new().prefix("pg-").tempdir().unwrap();
        if as_postgres {
            std::os::unix::fs::chown(dir.path(), Some(id_of("-u")), Some(id_of("-g"))).unwrap();
        }
        let cluster = PgCluster {
            dir,
            bin,
            as_postgres,
            tls: tls.is_some(),
            port: super::process::free_port(),
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                 host all {CERT_USER} 127.0.0.1/32 reject\n\
                 host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n\
                 host all all 127.0.0.1/32 trust\n"
            ),
        )
        .unwrap();
        if let Some((server, client_ca)) = tls {
            let (cert, key) = server.write(&data, "server");
            client_ca.write(&data, "root.crt");
            if as_postgres {
                for file in [&cert, &key, &data.join("root.crt")] {
                    std::os::unix::fs::chown(file, Some(id_of("-u")), Some(id_of("-g"))).unwrap();
                }
            }
            // The server refuses a key others may read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        cluster.resume();
        cluster.psql(&format!(
            "CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD 'pw-{port}-s3cr3t'",
            port = cluster.port
        ));
        cluster.psql(&format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"));
        cluster
    }

    /// The password [`PASSWORD_USER`] logs in with.
    pub fn password(&self) -> String {
        format!("pw-{}-s3cr3t", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` from the cluster's binaries, run as `postgres` when we
    /// are root (`initdb` and `postgres` refuse to run as root).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let mut command = self.command(program);
        let out = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|error| panic!("{program}: {error}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again, after [`pause`](Self::pause)) on the same
    /// port and data, and waits until it accepts connections.
    pub fn resume(&self) {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options.push_str(
                " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
                 -c ssl_ca_file=root.crt",
            );
        }
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (fast: sessions are ended, as in an outage).
    pub fn pause(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// A SQL statement through `psql` on the Unix socket, as `postgres`.
    pub fn psql(&self, sql: &str) -> String {
        let mut command = self.command("psql");
        let out = command
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .args(["-h", self.dir.path().to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database of the test's own; its URL (trust, no TLS).
    pub fn database(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// `url` with [`PASSWORD_USER`] and its password instead.
    pub fn password_url(&self, url: &str, password: &str) -> String {
        url.replace(
            "postgres://postgres@",
            &format!("postgres://{PASSWORD_USER}:{password}@"),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A plain client of the test's own (no TLS), its connection on a task.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connecting to the test cluster: {error}"));
    tokio::spawn(connection);
    client
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let mut command = self.command("pg_ctl");
        let _ = command
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

/// Polls `check` until it holds, for at most 60 s (PostgreSQL and the
/// forwarder take their time on a loaded machine).
pub async fn eventually<F: Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

//! The fleet ledger over TLS, against a private PostgreSQL cluster with
//! `ssl = on` and a certificate from a CA made in the test: rows arrive
//! over TLS with `verify-full` and `sslrootcert`, and with `require` and
//! the CA in `SSL_CERT_FILE`; `verify-ca` checks the chain but not the
//! name; a client certificate logs in as its role; a certificate from
//! another CA is refused, said without the password, and the rows wait in
//! the local file.

mod common;

use common::postgres::{self, CERT_USER, PgCluster, eventually};
use common::tls::Authority;
use common::{Harness, Options, request};
use llm_sidecar::ledger::{FleetStatus, FleetTarget};
use serde_json::json;

/// The server's CA, the CA of client certificates, and the cluster.
struct TlsCluster {
    server_ca: Authority,
    client_ca: Authority,
    cluster: PgCluster,
    dir: tempfile::TempDir,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let server_ca = Authority::new("PostgreSQL test CA");
        let client_ca = Authority::new("PostgreSQL client CA");
        let cluster = PgCluster::start_tls(&server_ca.server(), &client_ca);
        TlsCluster {
            server_ca,
            client_ca,
            cluster,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The server CA's file.
    fn ca_file(&self) -> String {
        self.server_ca
            .write(self.dir.path(), "server-ca.pem")
            .display()
            .to_string()
    }

    /// A new database: its plain URL (for the test's own checks) and the
    /// same with `query` in place of `sslmode=disable`.
    fn database(&self, prefix: &str, query: &str) -> (String, String) {
        let plain = self.cluster.database(prefix);
        let tls = plain.replace("sslmode=disable", query);
        (plain, tls)
    }
}

async fn one(url: &str, sql: &str) -> i64 {
    let client = postgres::client(url).await;
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A sidecar whose ledger forwards to `url`, its file in a directory of
/// its own under the cluster's.
async fn sidecar(tls: &TlsCluster, url: &str, env: Vec<(&'static str, String)>) -> Harness {
    let spool = tempfile::tempdir_in(tls.dir.path()).unwrap().keep();
    let tables = format!(
        "[ledger]\npath = \"{}\"\nurl = \"{url}\"\n",
        spool.join("ledger.sqlite3").display()
    );
    Harness::start_options(Options {
        tables: &tables,
        env,
        ..Options::default()
    })
    .await
}

async fn calls(harness: &mut Harness, count: usize) {
    for index in 0..count {
        harness
            .client
            .complete(request(&format!("call {index}"), json!({})))
            .await
            .expect("the call succeeds");
    }
}

fn fleet_status(harness: &Harness) -> FleetStatus {
    let running = harness.running.as_ref().unwrap();
    running.observer.ledger().unwrap().fleet_status().unwrap()
}

/// Waits until `rows` rows are in the database of `plain`, and checks that
/// the sidecar's connection to it is TLS.
async fn arrived_over_tls(plain: &str, rows: i64) {
    eventually(&format!("{rows} rows arrive"), || async {
        let client = postgres::client(plain).await;
        client
            .query_one("SELECT count(*) FROM llm_sidecar_requests", &[])
            .await
            .is_ok_and(|row| row.get::<_, i64>(0) == rows)
    })
    .await;
    let over_tls = one(
        plain,
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'llm-sidecar' AND datname = current_database() AND ssl",
    )
    .await;
    assert_eq!(over_tls, 1, "the forwarder's one connection, over TLS");
}

#[tokio::test]
async fn verify_full_with_sslrootcert_and_require_with_ssl_cert_file_carry_the_rows() {
    let tls = TlsCluster::start();
    let ca = tls.ca_file();
    let (plain, url) = tls.database("full", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let mut harness = sidecar(&tls, &url, Vec::new()).await;
    calls(&mut harness, 3).await;
    arrived_over_tls(&plain, 3).await;
    harness.stop().await;

    // `require`, the CA trusted beside the public roots.
    let (plain, url) = tls.database("require", "sslmode=require");
    let mut harness = sidecar(&tls, &url, vec![("SSL_CERT_FILE", ca)]).await;
    calls(&mut harness, 2).await;
    arrived_over_tls(&plain, 2).await;
    harness.stop().await;
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let tls = TlsCluster::start();
    let ca = tls.ca_file();
    // The certificate names 127.0.0.1 and localhost, not this host.
    let target = |mode: &str, root: &str| {
        FleetTarget::parse(
            &format!(
                "host=db.elsewhere.example hostaddr=127.0.0.1 port={} user=postgres \
                 dbname=postgres sslmode={mode} sslrootcert={root}",
                tls.cluster.port
            ),
            Vec::new(),
        )
        .unwrap()
    };
    let error = target("verify-full", &ca).connect().await.unwrap_err();
    assert!(error.contains("not valid for name"), "{error}");
    let client = target("verify-ca", &ca)
        .connect()
        .await
        .expect("the chain holds");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    // The chain is still checked.
    let other = Authority::new("another CA").write(tls.dir.path(), "other.pem");
    let error = target("verify-ca", &other.display().to_string())
        .connect()
        .await
        .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_client_certificate_logs_in_as_its_role() {
    let tls = TlsCluster::start();
    let ca = tls.ca_file();
    let (cert, key) = tls
        .client_ca
        .client(CERT_USER)
        .write(tls.dir.path(), "client");
    let url = format!(
        "postgres://{CERT_USER}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
        tls.cluster.port
    );
    let with_cert = format!("{url}&sslcert={}&sslkey={}", cert.display(), key.display());
    let client = FleetTarget::parse(&with_cert, Vec::new())
        .unwrap()
        .connect()
        .await
        .expect("the certificate logs in");
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, CERT_USER);
    // The rows travel with it too.
    let plain = tls.cluster.database("cert");
    let database = plain.rsplit('/').next().unwrap().split('?').next().unwrap();
    let forwarded = with_cert.replace("/postgres?", &format!("/{database}?"));
    let mut harness = sidecar(&tls, &forwarded, Vec::new()).await;
    calls(&mut harness, 2).await;
    arrived_over_tls(&plain, 2).await;
    harness.stop().await;

    let error = FleetTarget::parse(&url, Vec::new())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_and_the_rows_wait() {
    common::logs::capture();
    let tls = TlsCluster::start();
    let other = Authority::new("another CA").write(tls.dir.path(), "other.pem");
    let password = tls.cluster.password();
    let (plain, url) = tls.database(
        "refused",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    );
    let url = tls.cluster.password_url(&url, &password);
    let mut harness = sidecar(&tls, &url, Vec::new()).await;
    calls(&mut harness, 4).await;
    eventually("the refusal is seen", || async {
        fleet_status(&harness).last_error.is_some()
    })
    .await;
    // The rows wait in the local file, none forwarded.
    let ledger = harness.running.as_ref().unwrap().observer.ledger().unwrap();
    ledger.flush().await;
    assert_eq!(ledger.written(), 4);
    let status = fleet_status(&harness);
    let error = status.last_error.unwrap();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert_eq!(status.forwarded, 0);
    assert_eq!(
        one(
            &plain,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'llm_sidecar_requests'"
        )
        .await,
        0,
        "nothing reached the database"
    );
    let log = common::logs::text();
    assert!(log.contains("UnknownIssuer"), "{log}");
    for text in [error.as_str(), log.as_str()] {
        assert!(!text.contains(&password), "{text}");
    }
    harness.stop().await;
}

#[test]
fn tls_files_that_cannot_be_read_are_a_configuration_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    std::fs::write(dir.path().join("junk.pem"), "no certificate here\n").unwrap();
    let junk = dir.path().join("junk.pem");
    for (query, names) in [
        (format!("sslrootcert={}", missing.display()), &missing),
        (format!("sslrootcert={}", junk.display()), &junk),
        (
            format!("sslcert={}&sslkey={}", junk.display(), missing.display()),
            &junk,
        ),
    ] {
        let toml = format!(
            "[server]\ntcp = \"127.0.0.1:0\"\n[ledger]\n\
             url = \"postgres://app:s3cret-pw@db/usage?sslmode=verify-full&{query}\"\n"
        );
        let error = llm_sidecar::config::from_toml(&toml, "test.toml")
            .expect_err(&query)
            .to_string();
        assert!(error.contains("ledger.url"), "{error}");
        assert!(error.contains(&names.display().to_string()), "{error}");
        assert!(!error.contains("s3cret-pw"), "{error}");
    }
}

//! The fleet ledger against a real PostgreSQL cluster started for this
//! binary (`common::postgres`): calls through the sidecar arrive once with
//! the fields of the local row; two pods share one database and either
//! answers for both; an outage mid-burst loses and duplicates nothing;
//! migrations race safely, beside a writer of the previous schema; the
//! spool keeps its bound and counts what it gives up.

mod common;

use common::postgres::{self, PgCluster, eventually};
use common::{Harness, Options, request};
use llm_sidecar::call_record::{CallRecord, Caller, Edge, Outcome};
use llm_sidecar::ledger::{FleetConfig, FleetTarget, Ledger, LedgerConfig, LedgerRow};
use llm_sidecar::model::Usage;
use llm_sidecar::proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

async fn count(url: &str, sql: &str) -> i64 {
    let client = postgres::client(url).await;
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until the fleet table exists and holds `rows` rows.
async fn wait_for_rows(url: &str, rows: i64) {
    eventually(&format!("PostgreSQL holds {rows} rows"), || async {
        let client = postgres::client(url).await;
        client
            .query_one("SELECT count(*) FROM llm_sidecar_requests", &[])
            .await
            .map(|row| row.get::<_, i64>(0) == rows)
            .unwrap_or(false)
    })
    .await;
}

fn ledger_table(path: &Path, url: &str) -> String {
    format!("[ledger]\npath = \"{}\"\nurl = \"{url}\"\n", path.display())
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("the admin port answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn call(harness: &mut Harness, text: &str) {
    let mut asked = request(text, json!({}));
    asked.metadata.insert("team".to_owned(), text.to_owned());
    harness
        .client
        .complete(asked)
        .await
        .expect("the call succeeds");
}

#[tokio::test]
async fn calls_through_the_sidecar_arrive_once_with_the_local_rows_fields() {
    let cluster = postgres::shared();
    let url = cluster.database("fields");
    let spool = tempfile::tempdir().unwrap();
    let path = spool.path().join("ledger.sqlite3");
    let tables = ledger_table(&path, &url);
    let mut harness = Harness::start_options(Options {
        tables: &tables,
        env: vec![("POD_NAME", "pod-a".to_owned())],
        ..Options::default()
    })
    .await;
    for index in 0..12 {
        call(&mut harness, &format!("call-{index}")).await;
    }
    wait_for_rows(&url, 12).await;

    // The local file's rows, read by a ledger of its own with no fleet.
    let local = Ledger::open(&LedgerConfig {
        path: path.clone(),
        ..LedgerConfig::default()
    })
    .unwrap();
    let mut local_rows = local
        .recent(llm_sidecar::ledger::RecentQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    // The admin port answers from PostgreSQL, each row naming its pod.
    let (status, body) = get_json(&format!(
        "{}/admin/requests?limit=100",
        harness.admin_base()
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let mut fleet_rows: Vec<LedgerRow> = Vec::new();
    for row in body["requests"].as_array().unwrap() {
        assert_eq!(row["pod"], "pod-a", "{row}");
        let mut row: Value = row.clone();
        row.as_object_mut().unwrap().remove("pod");
        fleet_rows.push(row_from_json(&row));
    }
    assert_eq!(fleet_rows.len(), 12);
    local_rows.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    fleet_rows.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    assert_eq!(local_rows, fleet_rows, "the same fields as the local rows");
    let distinct = count(
        &url,
        "SELECT count(DISTINCT request_id) FROM llm_sidecar_requests",
    )
    .await;
    assert_eq!(distinct, 12, "each call once");
    local.close().await;
    harness.stop().await;
}

/// A row of `/admin/requests` as the struct the local query returns.
fn row_from_json(row: &Value) -> LedgerRow {
    let text = |key: &str| row[key].as_str().map(str::to_owned);
    let number = |key: &str| row[key].as_u64().map(|value| value as u32);
    LedgerRow {
        request_id: text("request_id").unwrap(),
        started_at_ms: row["started_at_ms"].as_i64().unwrap(),
        started_at: text("started_at").unwrap(),
        edge: text("edge").unwrap(),
        stream: row["stream"].as_bool().unwrap(),
        caller_name: text("caller_name"),
        caller_uid: number("caller_uid"),
        caller_pid: row["caller_pid"].as_i64().map(|pid| pid as i32),
        caller_claimed: text("caller_claimed"),
        tags: serde_json::from_value(row["tags"].clone()).unwrap(),
        requested_model: text("requested_model").unwrap(),
        served_model: text("served_model"),
        provider: text("provider"),
        outcome: text("outcome").unwrap(),
        attempts: number("attempts").unwrap(),
        queue_wait_ms: row["queue_wait_ms"].as_f64().unwrap(),
        latency_ms: row["latency_ms"].as_f64().unwrap(),
        time_to_first_chunk_ms: row["time_to_first_chunk_ms"].as_f64(),
        prompt_tokens: number("prompt_tokens"),
        completion_tokens: number("completion_tokens"),
        total_tokens: number("total_tokens"),
        cached_prompt_tokens: number("cached_prompt_tokens"),
        reasoning_tokens: number("reasoning_tokens"),
        cache_write_tokens: number("cache_write_tokens"),
        usage_estimated: row["usage_estimated"].as_bool().unwrap(),
        cost_usd: row["cost_usd"].as_f64(),
        resumed: row["resumed"].as_bool().unwrap(),
        pod: None,
    }
}

#[tokio::test]
async fn two_pods_write_one_database_and_either_answers_for_both() {
    let cluster = postgres::shared();
    let url = cluster.database("pods");
    let spools = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut pods = Vec::new();
    for (name, spool) in ["pod-a", "pod-b"].into_iter().zip(&spools) {
        let tables = ledger_table(&spool.path().join("ledger.sqlite3"), &url);
        pods.push(
            Harness::start_options(Options {
                tables: &tables,
                env: vec![("POD_NAME", name.to_owned())],
                ..Options::default()
            })
            .await,
        );
    }
    for index in 0..5 {
        call(&mut pods[0], &format!("a-{index}")).await;
    }
    for index in 0..3 {
        call(&mut pods[1], &format!("b-{index}")).await;
    }
    wait_for_rows(&url, 8).await;
    for pod in &pods {
        let (status, body) =
            get_json(&format!("{}/admin/usage?group_by=model", pod.admin_base())).await;
        assert_eq!(status, 200, "{body}");
        let requests: u64 = body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|group| group["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(requests, 8, "both pods' calls: {body}");
        let (_, body) = get_json(&format!("{}/admin/requests", pod.admin_base())).await;
        let mut per_pod: HashMap<String, usize> = HashMap::new();
        for row in body["requests"].as_array().unwrap() {
            *per_pod
                .entry(row["pod"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(per_pod["pod-a"], 5, "{per_pod:?}");
        assert_eq!(per_pod["pod-b"], 3, "{per_pod:?}");

        // The gRPC AdminService answers from the same place.
        let mut admin = AdminServiceClient::connect(pod.admin_base())
            .await
            .expect("gRPC on the admin port");
        let groups = admin
            .get_usage_summary(pb::GetUsageSummaryRequest::default())
            .await
            .unwrap()
            .into_inner()
            .groups;
        assert_eq!(groups.iter().map(|group| group.requests).sum::<u64>(), 8);
        let recent = admin
            .list_recent_requests(pb::ListRecentRequestsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .requests;
        let mut pods: Vec<&str> = recent.iter().map(|row| row.pod.as_str()).collect();
        pods.sort_unstable();
        pods.dedup();
        assert_eq!(pods, ["pod-a", "pod-b"]);
    }
    // One connection per pod once the admin queries are answered.
    let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let connections = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'llm-sidecar' AND datname = '{database}'"
    );
    eventually("each pod holds one connection", || async {
        count(&url, &connections).await == 2
    })
    .await;
    println!("connections held by 2 idle pods: 2");
    for pod in pods {
        pod.stop().await;
    }
}

fn record(index: usize) -> CallRecord {
    CallRecord {
        request_id: format!("burst-{index:05}"),
        started_at: SystemTime::now(),
        edge: Edge::Grpc,
        stream: false,
        caller: Caller::default(),
        tags: BTreeMap::new(),
        requested_model: "m".to_owned(),
        route: None,
        served_model: Some("m".to_owned()),
        provider: Some("p".to_owned()),
        outcome: Outcome::Ok,
        attempts: 1,
        queue_wait: Duration::ZERO,
        latency: Duration::from_millis(3),
        time_to_first_chunk: None,
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
            total_tokens: 12,
            ..Usage::default()
        }),
        usage_estimated: false,
        cost_usd: Some(0.001),
        resumed: false,
    }
}

fn fleet_ledger(path: &Path, url: &str, spool_max_rows: u64) -> Ledger {
    let mut fleet = FleetConfig::new(
        FleetTarget::parse(url, Vec::new()).unwrap(),
        "pod-burst".to_owned(),
    );
    fleet.poll_interval = Duration::from_millis(50);
    fleet.batch_max = 40;
    fleet.spool_max_rows = spool_max_rows;
    Ledger::open(&LedgerConfig {
        path: path.to_owned(),
        fleet: Some(fleet),
        ..LedgerConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn an_outage_mid_burst_loses_and_duplicates_nothing() {
    // A cluster of its own: this test stops it.
    let cluster = PgCluster::start();
    let url = cluster.database("outage");
    let spool = tempfile::tempdir().unwrap();
    let ledger = fleet_ledger(&spool.path().join("ledger.sqlite3"), &url, 100_000);
    const CALLS: usize = 3000;
    for index in 0..CALLS {
        if index == CALLS / 3 {
            ledger.flush().await;
            cluster.pause();
        }
        if index == 2 * CALLS / 3 {
            ledger.flush().await;
            eventually("the forwarder has seen the outage", || async {
                ledger.fleet_status().unwrap().last_error.is_some()
            })
            .await;
            cluster.resume();
        }
        ledger.record(record(index));
        if index % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    ledger.flush().await;
    // Caught up after the outage: every row forwarded. (Not "nothing
    // spooled": that figure is the forwarder's last pass, and may predate
    // the burst's last commit.) Rows truly lost never count here, and the
    // wait fails.
    eventually("the forwarder has caught up", || async {
        let status = ledger.fleet_status().unwrap();
        status.forwarded >= CALLS as u64 && status.last_error.is_none()
    })
    .await;
    let client = postgres::client(&url).await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT request_id) FROM llm_sidecar_requests",
            &[],
        )
        .await
        .unwrap();
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    let lost = CALLS as i64 - distinct;
    let duplicated = rows - distinct;
    let status = ledger.fleet_status().unwrap();
    println!(
        "outage mid-burst: {CALLS} calls, {lost} rows lost, {duplicated} duplicated \
         (written {}, dropped {}, forwarded {}, spool_dropped {})",
        ledger.written(),
        ledger.dropped(),
        status.forwarded,
        status.spool_dropped
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(ledger.fleet_status().unwrap().spool_dropped, 0);
    ledger.close().await;
}

#[tokio::test]
async fn migrations_race_safely_and_an_older_writer_keeps_writing() {
    let cluster = postgres::shared();
    // Four connections migrate a new database at once.
    let url = cluster.database("race");
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(postgres::client(&url).await);
    }
    let results =
        futures::future::join_all(clients.iter_mut().map(llm_sidecar::ledger::fleet::migrate))
            .await;
    let found: Vec<i32> = results.into_iter().map(|found| found.unwrap()).collect();
    assert_eq!(
        found.iter().filter(|&&found| found == 0).count(),
        1,
        "{found:?}"
    );
    assert_eq!(
        count(&url, "SELECT max(version)::bigint FROM llm_sidecar_schema").await,
        i64::from(llm_sidecar::ledger::fleet::SCHEMA_VERSION)
    );

    // A database at the first schema, written by a sidecar that knows no
    // more, while two newer ones migrate it.
    let url = cluster.database("rolling");
    let mut old = postgres::client(&url).await;
    llm_sidecar::ledger::fleet::migrate_to(&mut old, 1)
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut written = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            let tx = old.transaction().await.unwrap();
            for _ in 0..5 {
                tx.execute(
                    "INSERT INTO llm_sidecar_requests (record_id, pod, request_id, started_at_ms,
                         edge, stream, tags, requested_model, outcome, attempts, queue_wait_ms,
                         latency_ms, usage_estimated, resumed)
                     VALUES ($1, 'old-pod', $1, 0, 'grpc', false, '{}', 'm', 'ok', 1, 0, 1,
                             false, false)
                     ON CONFLICT (record_id) DO NOTHING",
                    &[&format!("old-{written}")],
                )
                .await
                .expect("the older writer keeps inserting");
                written += 1;
            }
            tx.commit().await.expect("and committing");
        }
        written
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut newer = [postgres::client(&url).await, postgres::client(&url).await];
    let [first, second] = &mut newer;
    let (a, b) = tokio::join!(
        llm_sidecar::ledger::fleet::migrate(first),
        llm_sidecar::ledger::fleet::migrate(second)
    );
    assert_eq!(
        a.unwrap().min(b.unwrap()),
        1,
        "migrated from the first schema"
    );
    let written = writer.await.unwrap();
    assert!(written > 0);
    assert_eq!(
        count(&url, "SELECT count(*) FROM llm_sidecar_requests").await,
        written
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM llm_sidecar_requests WHERE writer_version IS NULL"
        )
        .await,
        written,
        "the new column is there, empty in the older writer's rows"
    );
}

#[tokio::test]
async fn the_spool_keeps_its_bound_and_counts_what_it_gives_up() {
    let cluster = postgres::shared();
    // A database that does not exist yet: PostgreSQL refuses the forwarder
    // until it is created.
    let url = cluster.url("spool_later");
    let spool = tempfile::tempdir().unwrap();
    let ledger = fleet_ledger(&spool.path().join("ledger.sqlite3"), &url, 5);
    for index in 0..20 {
        ledger.record(record(index));
    }
    ledger.flush().await;
    eventually("15 rows are given up, and the failure is seen", || async {
        ledger.spool_dropped() == 15 && ledger.fleet_status().unwrap().last_error.is_some()
    })
    .await;
    let status = ledger.fleet_status().unwrap();
    assert_eq!(status.spooled, 5);
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("spool_later"),
        "{status:?}"
    );
    cluster.psql("CREATE DATABASE spool_later");
    wait_for_rows(&url, 5).await;
    let client = postgres::client(&url).await;
    let ids: Vec<String> = client
        .query(
            "SELECT request_id FROM llm_sidecar_requests ORDER BY request_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        ids,
        (15..20)
            .map(|index| format!("burst-{index:05}"))
            .collect::<Vec<_>>(),
        "the newest rows are kept"
    );
    assert_eq!(ledger.spool_dropped(), 15, "counted once");
    ledger.close().await;
}

/// The real binary with a fleet ledger: `ledger` is the `[ledger]` table's
/// fleet keys; the admin port is returned with it.
fn serve(
    dir: &Path,
    upstream: &fake_upstream::FakeUpstream,
    ledger: &str,
    env: &[(&str, &str)],
    log: &str,
) -> (common::process::Sidecar, u16) {
    let socket = dir.join("sidecar.sock");
    let admin = common::process::free_port();
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"default_provider = "fake"
[server]
uds = "{socket}"
admin = "127.0.0.1:{admin}"
shutdown_grace_ms = 5000
[providers.fake]
base_url = "{base}"
[ledger]
path = "{path}"
{ledger}
"#,
            socket = socket.display(),
            base = upstream.base_url(),
            path = dir.join("ledger.sqlite3").display(),
        ),
    )
    .unwrap();
    let sidecar = common::process::Sidecar::serve_env(
        &[
            "--config",
            config.to_str().unwrap(),
            "--tcp",
            "",
            "--http",
            "",
        ],
        Some("info"),
        env,
        &socket,
        &dir.join(log),
    );
    sidecar.wait_for_port(admin);
    (sidecar, admin)
}

async fn calls_to(dir: &Path, count: usize) {
    let channel = llm_sidecar::client::connect_uds(&dir.join("sidecar.sock"))
        .await
        .unwrap();
    let mut client = llm_sidecar::client::chat_client(channel, 1 << 20);
    for index in 0..count {
        client
            .complete(request(&format!("call {index}"), json!({})))
            .await
            .expect("the call succeeds");
    }
}

fn wait_for_exit(sidecar: &mut common::process::Sidecar) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = sidecar.child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_password_never_appears_in_logs_or_answers() {
    let cluster = postgres::shared();
    let url = cluster.database("secret");
    let upstream = fake_upstream::FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A wrong password, spelled with characters a URL must escape.
    let wrong = "Wr0ng-p@ss/word";
    let wrong_url = cluster.password_url(&url, "Wr0ng-p%40ss%2Fword");
    let (mut sidecar, admin) = serve(
        dir.path(),
        &upstream,
        "url_env = \"LEDGER_URL\"",
        &[("LEDGER_URL", wrong_url.as_str())],
        "first.log",
    );
    calls_to(dir.path(), 3).await;
    let (status, body) = get_json(&format!("http://127.0.0.1:{admin}/admin/usage")).await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("password authentication failed"), "{error}");
    let (_, ledger) = get_json(&format!("http://127.0.0.1:{admin}/admin/ledger")).await;
    assert_eq!(ledger["fleet"]["connected"], false, "{ledger}");
    sidecar.signal("TERM");
    wait_for_exit(&mut sidecar);
    let log = sidecar.log();
    assert!(log.contains("unreachable"), "{log}");
    for text in [log.as_str(), error, &ledger.to_string()] {
        for spelling in [wrong, "Wr0ng-p%40ss%2Fword", "Wr0ng"] {
            assert!(!text.contains(spelling), "{spelling} in {text}");
        }
    }
    drop(sidecar);

    // The right password, from a file: the rows spooled meanwhile arrive.
    let secret = dir.path().join("url");
    std::fs::write(&secret, cluster.password_url(&url, &cluster.password())).unwrap();
    let (mut sidecar, _) = serve(
        dir.path(),
        &upstream,
        &format!("url_file = \"{}\"", secret.display()),
        &[],
        "second.log",
    );
    calls_to(dir.path(), 2).await;
    wait_for_rows(&url, 5).await;
    sidecar.signal("TERM");
    wait_for_exit(&mut sidecar);
    assert!(!sidecar.log().contains(&cluster.password()));
}

#[tokio::test]
async fn sigterm_forwards_what_waits_within_the_grace() {
    let cluster = postgres::shared();
    // No such database yet: the rows can only wait in the file.
    let name = format!("drain_{}", std::process::id());
    let url = cluster.url(&name);
    let upstream = fake_upstream::FakeUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut sidecar, admin) = serve(
        dir.path(),
        &upstream,
        &format!("url = \"{url}\""),
        &[("POD_NAME", "pod-drain")],
        "sidecar.log",
    );
    calls_to(dir.path(), 20).await;
    eventually(
        "the forwarder has failed and counted the rows waiting",
        || async {
            let (_, ledger) = get_json(&format!("http://127.0.0.1:{admin}/admin/ledger")).await;
            ledger["fleet"]["last_error"].is_string() && ledger["fleet"]["spooled"] == 20
        },
    )
    .await;
    // The rows waiting are on the pod's metrics too.
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .to_owned()
    };
    assert_eq!(value("llm_sidecar_ledger_spooled"), "20");
    assert_eq!(value("llm_sidecar_ledger_spool_dropped_total"), "0");
    assert_eq!(value("llm_sidecar_ledger_forwarded_total"), "0");
    // The database appears only after the signal: every row that reaches
    // it was sent by the drain.
    sidecar.signal("TERM");
    cluster.psql(&format!("CREATE DATABASE {name}"));
    let status = wait_for_exit(&mut sidecar);
    assert!(status.success(), "{}", sidecar.log());
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM llm_sidecar_requests WHERE pod = 'pod-drain'"
        )
        .await,
        20,
        "{}",
        sidecar.log()
    );
    assert!(sidecar.log().contains("every row is in PostgreSQL"));
}

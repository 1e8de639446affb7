//! The sidecar as a user runs it: the release binary with every listener a
//! default install has (Unix socket, loopback TCP, the HTTP facade, the
//! admin port) and the ledger on, one provider pointing at the fake.

use super::Paths;
use crate::call_grpc::GrpcCaller;
use crate::service::{Service, free_port, wait_until};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Sidecar {
    pub service: Service,
    pub uds: PathBuf,
    pub tcp: String,
    pub http: String,
    /// The caller token it wrote beside its socket, for TCP and HTTP.
    pub token: String,
    /// From spawning the process to its first answered gRPC call.
    pub cold_start: Duration,
}

/// The same footing as the peers: nginx runs with `access_log off` and
/// `keepalive 256`, LiteLLM logs at ERROR. So the per-call log line is
/// filtered out (warnings and failures still show) and as many idle upstream
/// connections are kept; `scripts/telemetry-cost` measures what the request
/// log costs. Idle connections close after 5 s, upstream (not 90) and on
/// the HTTP facade (not 30: the load generator keeps its 1,000 keep-alive
/// connections open, some 28 KiB each in hyper's buffers) and on the gRPC
/// socket (not 300: the load generator's 4 channels stay open, and what
/// the HTTP/2 connections grew to at their busiest, some 1.8 MiB in all
/// after 1,000 streams, measured, stays with them), so that the memory
/// once they are gone can be read without a long wait; the load keeps
/// them busy, so this changes nothing else.
const PARITY: &str = "[logging]\nlevel = \"info,llm_sidecar::request=warn\"\n\
                      [upstream]\npool_max_idle_per_host = 256\npool_idle_timeout_ms = 5000\n";

/// The `[server]` lines of the same: idle connections on the facade and
/// the gRPC socket.
const PARITY_SERVER: &str = "idle_timeout_ms = 5000\ngrpc_idle_timeout_ms = 5000\n";

/// How long after the first reading after the load the second one waits:
/// the idle timeout above, the pool's sweep (up to one more timeout), and
/// the sidecar's next release of free memory (16 s into the pause).
pub const IDLE_CONNECTIONS_GONE: Duration = Duration::from_secs(15);

pub async fn start(
    paths: &Paths,
    name: &str,
    upstream: &str,
    ledger: bool,
) -> anyhow::Result<Sidecar> {
    let dir = paths.run_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let uds = dir.join("grpc.sock");
    let tcp = format!("127.0.0.1:{}", free_port()?);
    let http = format!("127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let config = dir.join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "default_provider = \"fake\"\n\
             [server]\nuds = \"{}\"\ntcp = \"{tcp}\"\nhttp = \"{http}\"\nadmin = \"{admin}\"\n\
             {PARITY_SERVER}\
             [ledger]\npath = \"{}\"\n\
             {PARITY}\
             [providers.fake]\nbase_url = \"{upstream}\"\n",
            uds.display(),
            dir.join("ledger.sqlite3").display(),
        ),
    )?;
    let mut command = Command::new(&paths.sidecar_bin);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .envs(paths.sidecar_env.iter().map(|(k, v)| (k, v)));
    if !ledger {
        command.args(["--ledger", ""]);
    }
    let started = Instant::now();
    let mut service = Service::spawn("llm-sidecar", command, &dir.join("sidecar.log"))?;
    let socket = uds.clone();
    wait_until(
        &mut service,
        Duration::from_secs(10),
        Duration::from_micros(500),
        || {
            let socket = socket.clone();
            async move {
                match GrpcCaller::uds(&socket, "fake-model").await {
                    Ok(caller) => caller.ping().await,
                    Err(_) => false,
                }
            }
        },
    )
    .await?;
    let cold_start = started.elapsed();
    // Empty for builds older than caller tokens (`--sidecar`), which ask
    // for none.
    let token = std::fs::read_to_string(dir.join("token"))
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    Ok(Sidecar {
        service,
        uds,
        tcp,
        http: format!("http://{http}/v1"),
        token,
        cold_start,
    })
}

/// Cold starts of fresh processes (new config, new ledger file), stopped
/// right after their first answer.
pub async fn cold_starts(paths: &Paths, upstream: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let sidecar = start(paths, &format!("cold-{i}"), upstream, true).await?;
        times.push(sidecar.cold_start);
        sidecar.service.shutdown().await;
    }
    Ok(times)
}

pub fn binary_size(paths: &Paths) -> Option<u64> {
    std::fs::metadata(&paths.sidecar_bin).ok().map(|m| m.len())
}

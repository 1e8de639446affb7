//! The run: the fake upstream, then each target in turn (floors, our three
//! edges, the peers), each through the same phases (unary calls, unpaced
//! streams, paced streams), then the cold starts.

use crate::call_grpc::GrpcCaller;
use crate::call_http::HttpCaller;
use crate::caller::Caller;
use crate::load::{self, StreamResult};
use crate::plan::Plan;
use crate::procfs::Tree;
use crate::report::{Meta, Report, Role, TargetReport, goals};
use crate::services::upstream::{self, unpaced_model};
use crate::services::{Paths, litellm, nginx, sidecar};
use std::process::Command;
use std::time::{Duration, Instant};

const MODEL: &str = "fake-model";

/// From the end of the first call to the memory reading after it.
const ONE_CALL_SETTLE: Duration = Duration::from_millis(500);

/// What a target is, apart from what the load measures.
struct Spec {
    name: &'static str,
    role: Role,
    description: String,
    version: Option<String>,
    tree: Option<Tree>,
    cold_start: Option<Duration>,
    size_bytes: Option<u64>,
}

impl Spec {
    fn new(name: &'static str, role: Role, description: &str) -> Spec {
        Spec {
            name,
            role,
            description: description.to_owned(),
            version: None,
            tree: None,
            cold_start: None,
            size_bytes: None,
        }
    }
}

fn rss(tree: Option<Tree>) -> Option<u64> {
    tree.map(|t| t.rss_kib())
}

fn log_streams(name: &str, s: &StreamResult) {
    if s.unpaced {
        eprintln!(
            "bench: {name} unpaced {}-chunk streams c={}: {}/{} complete, whole p50 {:.0} µs, CPU {:.1} µs per chunk, machine {:.0} % busy",
            s.chunks_per_stream,
            s.concurrency,
            s.completed,
            s.streams,
            s.whole.map_or(f64::NAN, |h| h.p50_us),
            s.cpu_us_per_chunk.unwrap_or(f64::NAN),
            s.machine_busy_pct.unwrap_or(f64::NAN),
        );
        return;
    }
    eprintln!(
        "bench: {name} streams c={}: {}/{} complete, {} stalled, TTFC p99 {:.0} µs, per chunk p99 {:.0} µs, machine {:.0} % busy",
        s.concurrency,
        s.completed,
        s.streams,
        s.stalled,
        s.ttfc.map_or(f64::NAN, |h| h.p99_us),
        s.transit.map_or(f64::NAN, |h| h.p99_us),
        s.machine_busy_pct.unwrap_or(f64::NAN),
    );
}

async fn measure(plan: &Plan, spec: Spec, caller: &Caller) -> TargetReport {
    let tree = spec.tree;
    tokio::time::sleep(plan.settle).await;
    let rss_idle_kib = rss(tree);
    // One call, then the memory again: what serving at all costs.
    let _ = caller.unary().await;
    tokio::time::sleep(ONE_CALL_SETTLE).await;
    let rss_one_call_kib = rss(tree);
    let mut unary = Vec::new();
    let unary_phases = if plan.runs_phase("unary") {
        plan.unary.as_slice()
    } else {
        &[]
    };
    for &phase in unary_phases {
        let result = load::unary(caller, phase, tree).await;
        eprintln!(
            "bench: {} unary c={}: {} requests, {} errors, p50 {:.0} µs, p99 {:.0} µs",
            spec.name,
            result.concurrency,
            result.requests,
            result.errors,
            result.latency.map_or(f64::NAN, |l| l.p50_us),
            result.latency.map_or(f64::NAN, |l| l.p99_us),
        );
        unary.push(result);
    }
    let mut unpaced = Vec::new();
    let unpaced_phases = if plan.runs_phase("unpaced") {
        let _ = load::streams(
            &caller.with_model(&unpaced_model(plan.unpaced.chunks)),
            plan.unpaced.warmup_phase(),
            None,
        )
        .await;
        plan.unpaced.phases.as_slice()
    } else {
        &[]
    };
    for &phase in unpaced_phases {
        let caller = caller.with_model(&unpaced_model(phase.chunks));
        let result = load::streams(&caller, plan.unpaced.stream_phase(phase), tree).await;
        log_streams(spec.name, &result);
        unpaced.push(result);
    }
    let mut streams = Vec::new();
    let mut rss_loaded_kib = None;
    let paced_levels = if plan.runs_phase("paced") {
        plan.streams.as_slice()
    } else {
        &[]
    };
    for &(concurrency, count) in paced_levels {
        let result = load::streams(caller, plan.stream_phase(concurrency, count), tree).await;
        log_streams(spec.name, &result);
        if concurrency == plan.loaded_streams {
            rss_loaded_kib = result.rss_peak_kib;
        }
        streams.push(result);
    }
    for &level in &plan.search {
        if streams.is_empty() || !streams.last().is_some_and(StreamResult::held) {
            break;
        }
        let result = load::streams(caller, plan.stream_phase(level, level), tree).await;
        log_streams(spec.name, &result);
        streams.push(result);
    }
    tokio::time::sleep(plan.settle).await;
    let rss_after_kib = rss(tree);
    let rss_after_idle_kib = if spec.role == Role::Ours {
        tokio::time::sleep(plan.idle_connections_gone).await;
        rss(tree)
    } else {
        None
    };
    let max_streams_held = streams
        .iter()
        .filter(|s| s.held())
        .map(|s| s.concurrency)
        .max();
    TargetReport {
        name: spec.name.to_owned(),
        role: spec.role,
        description: spec.description,
        version: spec.version,
        unary,
        unpaced,
        streams,
        max_streams_held,
        rss_idle_kib,
        rss_one_call_kib,
        rss_loaded_kib,
        rss_after_kib,
        rss_after_idle_kib,
        cold_start_ms: spec.cold_start.map(|d| d.as_secs_f64() * 1e3),
        size_bytes: spec.size_bytes,
    }
}

#[derive(Debug, Clone, Copy)]
enum Edge {
    Uds,
    Tcp,
    Http,
}

async fn ours(
    plan: &Plan,
    paths: &Paths,
    upstream: &str,
    name: &'static str,
    edge: Edge,
    ledger: bool,
) -> anyhow::Result<TargetReport> {
    let sidecar = sidecar::start(paths, name, upstream, ledger).await?;
    let caller = match edge {
        Edge::Uds => Caller::Grpc(Box::new(GrpcCaller::uds(&sidecar.uds, MODEL).await?)),
        Edge::Tcp => Caller::Grpc(Box::new(
            GrpcCaller::tcp(&sidecar.tcp, MODEL, &sidecar.token).await?,
        )),
        Edge::Http => Caller::Http(HttpCaller::new(
            &sidecar.http,
            MODEL,
            vec![(
                "authorization".to_owned(),
                format!("Bearer {}", sidecar.token),
            )],
        )?),
    };
    let description = match (edge, ledger) {
        (Edge::Uds, true) => "llm-sidecar, gRPC over its Unix socket (ledger on, as installed)",
        (Edge::Uds, false) => {
            "llm-sidecar, gRPC over its Unix socket, ledger off (`--ledger \"\"`)"
        }
        (Edge::Tcp, _) => "llm-sidecar, gRPC over loopback TCP",
        (Edge::Http, _) => "llm-sidecar, its OpenAI-compatible HTTP facade",
    };
    let spec = Spec {
        tree: Some(sidecar.service.tree),
        cold_start: Some(sidecar.cold_start),
        size_bytes: sidecar::binary_size(paths),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        ..Spec::new(name, Role::Ours, description)
    };
    let report = measure(plan, spec, &caller).await;
    drop(caller);
    sidecar.service.shutdown().await;
    Ok(report)
}

pub async fn run(plan: &Plan, paths: &Paths) -> anyhow::Result<Report> {
    let started = Instant::now();
    let upstream = upstream::start(paths, plan.workload, &plan.unpaced).await?;
    let url = upstream.base_url();
    let mut targets = Vec::new();

    let direct = Caller::Http(HttpCaller::new(&url, MODEL, Vec::new())?);
    let spec = Spec::new(
        goals::FLOOR,
        Role::Floor,
        "the fake upstream called directly over HTTP/1.1: this machine's floor",
    );
    targets.push(measure(plan, spec, &direct).await);

    if plan.nginx && plan.runs(goals::NGINX) {
        match nginx::start(paths, upstream.port).await {
            Ok(nginx) => {
                let caller = Caller::Http(HttpCaller::new(&nginx.base_url, MODEL, Vec::new())?);
                let spec = Spec {
                    tree: Some(nginx.service.tree),
                    version: Some(nginx.version.clone()),
                    ..Spec::new(
                        goals::NGINX,
                        Role::Floor,
                        "nginx as a plain reverse proxy (1 worker, keep-alive upstream, no buffering): a proxy that only copies bytes",
                    )
                };
                targets.push(measure(plan, spec, &caller).await);
            }
            Err(e) => eprintln!("bench: nginx skipped: {e:#}"),
        }
    }

    let edges = [
        (goals::OURS, Edge::Uds, true),
        ("grpc-tcp", Edge::Tcp, true),
        ("http", Edge::Http, true),
        ("grpc-uds-no-ledger", Edge::Uds, false),
    ];
    for (name, edge, ledger) in edges {
        // The smoke run proves each edge works; the ledger-off variant
        // only matters for figures.
        if plan.runs(name) && (ledger || !plan.smoke) {
            targets.push(ours(plan, paths, &url, name, edge, ledger).await?);
        }
    }

    if plan.peers && plan.runs("litellm") {
        match litellm::start(paths, &url).await {
            Ok(peer) => {
                let caller = Caller::Http(HttpCaller::new(&peer.base_url, MODEL, Vec::new())?);
                let spec = Spec {
                    tree: Some(peer.service.tree),
                    version: Some(peer.version.clone()),
                    cold_start: Some(peer.cold_start),
                    size_bytes: peer.install_bytes,
                    ..Spec::new(
                        "litellm",
                        Role::Peer,
                        "LiteLLM proxy, one uvicorn worker, logging at ERROR, installed from PyPI into target/bench/litellm",
                    )
                };
                targets.push(measure(plan, spec, &caller).await);
            }
            Err(e) => eprintln!("bench: LiteLLM skipped: {e:#}"),
        }
    }

    let cold = sidecar::cold_starts(paths, &url, plan.cold_starts).await?;
    // Every figure above assumed the shared upstream stayed up.
    let mut upstream = upstream;
    upstream.service.check_running()?;
    let mut report = Report {
        meta: meta(plan, started),
        targets,
        sidecar_cold_starts_ms: cold.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        goals: Vec::new(),
    };
    // The sidecar's cold start is the median of fresh starts, not the one
    // start that happened to come first.
    let median = goals::median(&report.sidecar_cold_starts_ms);
    for target in report.targets.iter_mut().filter(|t| t.role == Role::Ours) {
        target.cold_start_ms = median.or(target.cold_start_ms);
    }
    report.goals = goals::judge(&report);
    Ok(report)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn meta(plan: &Plan, started: Instant) -> Meta {
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    Meta {
        mode: if plan.smoke { "smoke" } else { "full" }.to_owned(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        commit: format!(
            "{}{}",
            command_output("git", &["rev-parse", "--short", "HEAD"]),
            if dirty { "+changes" } else { "" }
        ),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_owned(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: command_output("uname", &["-sr"]),
        chunks: plan.workload.chunks,
        pacing_ms: plan.workload.pacing_ms,
        unpaced_chunks: plan.unpaced.chunks,
        unpaced_long_chunks: plan.unpaced.long_chunks,
        unpaced_events_per_write: plan.unpaced.events_per_write,
        unpaced_concurrency: plan.unpaced.judged,
        judged_unary_concurrency: plan.judged_unary,
        judged_stream_concurrency: plan.judged_streams,
        loaded_streams: plan.loaded_streams,
        seconds: started.elapsed().as_secs_f64(),
    }
}

//! `bench`: the benchmark suite in one command (scripts/bench). It starts a
//! fake upstream, nginx, the sidecar and LiteLLM on loopback, drives the
//! same load through each, and writes a Markdown and a JSON report.
//! BENCHMARKS.md says what each figure means.
//!
//! Layout: `plan` (how much load), `services/` (starting what is measured),
//! `caller`, `call_http`, `call_grpc`, `trace` (one call and what it saw),
//! `load` (phases), `hist`, `procfs` (CPU and memory from /proc),
//! `report/` (JSON, Markdown, the performance targets), `suite` (the run).

mod call_grpc;
mod call_http;
mod caller;
mod hist;
mod load;
mod plan;
mod procfs;
mod report;
mod service;
mod services;
mod suite;
mod trace;

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "The llm-sidecar benchmark suite")]
struct Args {
    /// A few seconds against whatever build this is, without nginx or
    /// peers: proves the suite works (CI); its figures mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Where to write latest.md and latest.json (default bench/reports,
    /// or target/bench/smoke with --smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip LiteLLM.
    #[arg(long)]
    no_peers: bool,
    /// Skip nginx.
    #[arg(long)]
    no_nginx: bool,
    /// Run only this target besides the floor (repeatable): nginx,
    /// grpc-uds, grpc-tcp, http, grpc-uds-no-ledger, litellm.
    #[arg(long)]
    only: Vec<String>,
    /// Run only this phase (repeatable): unary, unpaced, paced. The report
    /// leaves the others' figures out, e.g. `--phase unary` to profile
    /// the per-call path in a minute.
    #[arg(long, value_parser = ["unary", "unpaced", "paced"])]
    phase: Vec<String>,
    /// The llm-sidecar binary to measure (default: the one next to this
    /// binary), e.g. an unstripped build for profiling.
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// KEY=VALUE set in the sidecar's environment only (repeatable), e.g.
    /// TOKIO_WORKER_THREADS=2 to measure a runtime setting.
    #[arg(long, value_parser = parse_env)]
    sidecar_env: Vec<(String, String)>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_owned(), value.to_owned()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut plan = if args.smoke {
        plan::Plan::smoke()
    } else {
        plan::Plan::full()
    };
    plan.peers &= !args.no_peers;
    plan.nginx &= !args.no_nginx;
    plan.only = args.only;
    plan.phases = args.phase;
    let repo = std::env::current_dir()?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe
        .parent()
        .context("the bench binary's folder")?
        .to_owned();
    let paths = services::Paths {
        sidecar_bin: args.sidecar.unwrap_or_else(|| bin_dir.join("llm-sidecar")),
        sidecar_env: args.sidecar_env,
        bin_dir,
        run_dir: repo.join("target/bench/run"),
        install_dir: repo.join("target/bench"),
        repo: repo.clone(),
    };
    // Sockets, ledgers and logs of the last run only.
    let _ = std::fs::remove_dir_all(&paths.run_dir);
    std::fs::create_dir_all(&paths.run_dir)?;
    // On Ctrl-C or SIGTERM the run is dropped, and with it every service
    // it started (each stops its processes on drop): nothing is left behind.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = suite::run(&plan, &paths) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = terminate.recv() => anyhow::bail!("terminated"),
    };

    let out = args.out.unwrap_or_else(|| {
        repo.join(if plan.smoke {
            "target/bench/smoke"
        } else {
            "bench/reports"
        })
    });
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let markdown = report::markdown::render(&report);
    std::fs::write(out.join("latest.md"), &markdown)?;
    println!("{markdown}");
    eprintln!("bench: wrote {}/latest.md and latest.json", out.display());

    let failed: Vec<String> = report
        .targets
        .iter()
        .filter(|t| t.failures() > 0)
        .map(|t| {
            format!(
                "{} ({} failed calls or incomplete streams)",
                t.name,
                t.failures()
            )
        })
        .collect();
    // The smoke run is a functional check: every call must work. Timing
    // is never judged there (2 shared cores, debug build).
    if plan.smoke && !failed.is_empty() {
        anyhow::bail!("calls failed: {}", failed.join(", "));
    }
    Ok(())
}

//! LiteLLM proxy, the Python gateway most teams run, installed by the suite
//! into target/bench/litellm (a venv) the way found to work
//! here: uv with a certifi override, plus the two packages without which it
//! is needlessly slow; one worker, logging at ERROR.

use super::Paths;
use crate::call_http::HttpCaller;
use crate::service::{Service, free_port, wait_until};
use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const VERSION: &str = "1.108.7";

pub struct LiteLlm {
    pub service: Service,
    pub base_url: String,
    pub version: String,
    pub cold_start: Duration,
    pub install_bytes: Option<u64>,
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("{command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn ensure_installed(venv: &Path) -> anyhow::Result<()> {
    if venv.join("bin/litellm").exists() {
        return Ok(());
    }
    eprintln!(
        "bench: installing LiteLLM {VERSION} into {}",
        venv.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "uv",
    ]))?;
    // Its wheels pin a certifi newer than the index here has.
    let overrides = venv.join("overrides.txt");
    std::fs::write(&overrides, "certifi>=2026.1.4\n")?;
    run(Command::new(venv.join("bin/uv"))
        .args(["pip", "install", "--quiet", "--override"])
        .arg(&overrides)
        .arg(format!("litellm[proxy]=={VERSION}"))
        // Without the first it retries a failing import on every request;
        // without the second uvicorn parses HTTP in pure Python.
        .args(["opentelemetry-sdk", "httptools"])
        .env("VIRTUAL_ENV", venv))
}

fn installed_version(venv: &Path) -> String {
    Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn dir_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("du").arg("-sb").arg(dir).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub async fn start(paths: &Paths, upstream: &str) -> anyhow::Result<LiteLlm> {
    let venv = paths.install_dir.join("litellm");
    ensure_installed(&venv)?;
    let dir = paths.run_dir.join("litellm");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n\
             \x20 - model_name: fake-model\n\
             \x20   litellm_params:\n\
             \x20     model: openai/fake-model\n\
             \x20     api_base: {upstream}\n\
             \x20     api_key: unused\n\
             litellm_settings:\n\
             \x20 set_verbose: false\n\
             general_settings:\n\
             \x20 dangerously_permit_weak_or_unset_master_key: true\n"
        ),
    )?;
    let mut command = Command::new(venv.join("bin/litellm"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", "1"])
        // Otherwise it spends ~10 s fetching a cost map from the internet.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR");
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let probe = HttpCaller::new(&base_url, "fake-model", Vec::new())?;
    let started = Instant::now();
    let mut service = Service::spawn("litellm", command, &dir.join("litellm.log"))?;
    wait_until(
        &mut service,
        Duration::from_secs(180),
        Duration::from_millis(100),
        || {
            let probe = probe.clone();
            async move { probe.unary().await.is_ok() }
        },
    )
    .await?;
    Ok(LiteLlm {
        service,
        base_url,
        version: installed_version(&venv),
        cold_start: started.elapsed(),
        install_bytes: dir_bytes(&venv),
    })
}

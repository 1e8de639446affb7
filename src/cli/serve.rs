//! `serve` and `check-config`.

use super::ServeArgs;
use crate::config::{Config, ConfigError, process_env};
use crate::pipeline::Pipeline;
use crate::server;
use anyhow::bail;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    apply_overrides(&mut config, &args)?;
    crate::logging::init(&config.logging);
    tracing::info!(config = %config.source, "starting llm-sidecar {}", env!("CARGO_PKG_VERSION"));
    let mut signals = super::signals::Signals::install();
    let running = server::start(&config, &process_env).await?;
    let load = || -> anyhow::Result<Config> {
        let mut config = match &args.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        apply_overrides(&mut config, &args)?;
        Ok(config)
    };
    let hangup = signals.hangup.take();
    tokio::select! {
        () = signals.stop() => {}
        () = super::reload::watch(&running, args.config.clone(), &config, hangup, load) => {}
    }
    tracing::info!("stopping: finishing the calls in flight");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// `--uds` / `--tcp` (or their environment variables) win over the file,
/// under the same rules as the file.
fn apply_overrides(config: &mut Config, args: &ServeArgs) -> Result<(), ConfigError> {
    let error = |key: &str, message: String| ConfigError {
        file: "the command line".to_owned(),
        key: key.to_owned(),
        message,
    };
    if let Some(uds) = &args.uds {
        config.server.uds = (!uds.is_empty()).then(|| PathBuf::from(uds));
    }
    let allow_non_loopback = config.server.allow_non_loopback;
    let address = |flag: &str, text: &str| -> Result<Option<SocketAddr>, ConfigError> {
        if text.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = text.parse().map_err(|_| {
            error(
                flag,
                format!("`{text}` is not an address such as 127.0.0.1:50051"),
            )
        })?;
        if !addr.ip().is_loopback() && !allow_non_loopback {
            return Err(error(
                flag,
                format!(
                    "{addr} is not a loopback address; set server.allow_non_loopback = true in the config file if you mean it"
                ),
            ));
        }
        Ok(Some(addr))
    };
    if let Some(tcp) = &args.tcp {
        config.server.tcp = address("--tcp", tcp)?;
    }
    if let Some(http) = &args.http {
        config.server.http = address("--http", http)?;
    }
    if let Some(admin) = &args.admin {
        config.server.admin = address("--admin", admin)?;
    }
    if let Some(ledger) = &args.ledger {
        config.ledger.enabled = !ledger.is_empty();
        if !ledger.is_empty() {
            config.ledger.path = PathBuf::from(ledger);
        }
    }
    let server = &config.server;
    if server.uds.is_none()
        && server.tcp.is_none()
        && server.http.is_none()
        && server.http_uds.is_none()
    {
        return Err(error(
            "--uds/--tcp/--http",
            "nothing left to listen on".to_owned(),
        ));
    }
    Ok(())
}

pub fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let pipeline = Pipeline::new(&config, &process_env)?;
    println!("{}: valid", config.source);
    for route in pipeline.routes() {
        let target = if route.target.is_empty() {
            String::new()
        } else {
            format!(" -> {}", route.target)
        };
        println!(
            "  {:<8} {}{target} => {}",
            route.kind.as_str(),
            route.model,
            route.provider
        );
    }
    for budget in &config.budgets {
        let limits: Vec<String> = budget
            .tokens
            .map(|tokens| format!("{tokens} tokens"))
            .into_iter()
            .chain(budget.usd.map(|usd| format!("${usd}")))
            .collect();
        println!(
            "  budget   {} ({}): {} per {} (UTC){}",
            budget.name,
            budget.scope.label(),
            limits.join(" and "),
            budget.window.as_str(),
            if pipeline.shared_store().is_some() {
                ", held by the fleet"
            } else {
                ""
            }
        );
    }
    let problems: Vec<String> = pipeline
        .providers()
        .filter_map(|provider| {
            provider
                .readiness_problem()
                .map(|problem| format!("provider `{}`: {problem}", provider.name))
        })
        .collect();
    for problem in &problems {
        println!("  warning: {problem}");
    }
    if problems.len() == pipeline.providers().count() {
        bail!("no provider is usable");
    }
    Ok(())
}

//! Standalone fake OpenAI-compatible upstream, for manual runs and benchmarks
//! driven from outside the test process. Per-request behaviour is scripted the
//! same way as in-process (`"fake"` body object or `x-fake-scenario` header);
//! the flags only set the defaults for requests that script nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Parser;
use fake_upstream::{FakeUpstream, Scenario};

#[derive(Debug, Parser)]
#[command(
    name = "fake-upstream",
    about = "Scriptable fake OpenAI chat-completions server"
)]
struct Args {
    /// Address to listen on; must be loopback unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Allow a non-loopback listen address.
    #[arg(long)]
    allow_remote: bool,
    /// Full default scenario as JSON; the flags below override its fields.
    #[arg(long)]
    scenario: Option<String>,
    /// Default delay before response headers.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Default number of content chunks per reply.
    #[arg(long)]
    chunks: Option<usize>,
    /// Default delay between streamed chunks.
    #[arg(long)]
    chunk_delay_ms: Option<u64>,
    /// Default assistant reply (instead of echoing the last user message).
    #[arg(long)]
    reply: Option<String>,
    /// MODEL=JSON: the whole default scenario for requests naming MODEL
    /// (repeatable); the flags above do not apply to it.
    #[arg(long, value_name = "MODEL=JSON")]
    model_scenario: Vec<String>,
}

impl Args {
    fn defaults(&self) -> anyhow::Result<Scenario> {
        let mut s: Scenario = match &self.scenario {
            Some(json) => serde_json::from_str(json).context("invalid --scenario JSON")?,
            None => Scenario::default(),
        };
        if let Some(v) = self.latency_ms {
            s.latency_ms = v;
        }
        if let Some(v) = self.chunks {
            s.chunks = Some(v);
        }
        if let Some(v) = self.chunk_delay_ms {
            s.chunk_delay_ms = v;
        }
        if let Some(v) = &self.reply {
            s.reply = Some(v.clone());
        }
        Ok(s)
    }

    fn model_defaults(&self) -> anyhow::Result<BTreeMap<String, Scenario>> {
        self.model_scenario
            .iter()
            .map(|entry| {
                let (model, json) = entry
                    .split_once('=')
                    .with_context(|| format!("--model-scenario {entry:?}: expected MODEL=JSON"))?;
                let scenario = serde_json::from_str(json)
                    .with_context(|| format!("invalid --model-scenario JSON for {model}"))?;
                Ok((model.to_owned(), scenario))
            })
            .collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "refusing to listen on non-loopback address {} (pass --allow-remote to override)",
            args.listen
        );
    }
    let fake =
        FakeUpstream::start_with_models(args.listen, args.defaults()?, args.model_defaults()?)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("fake-upstream listening on {}", fake.base_url());
    shutdown_signal().await?;
    tracing::info!(
        requests = fake.requests().len(),
        connections = fake.connections_accepted(),
        client_disconnects = fake.client_disconnects(),
        "fake-upstream shutting down"
    );
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    Ok(())
}

//! The `llm-sidecar` command line: `serve`, `check-config`, `chat`,
//! `models`, `token`.

mod chat;
mod reload;
mod serve;
mod signals;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "llm-sidecar",
    version,
    about = "A gRPC sidecar that forwards chat completions to OpenAI-compatible LLM APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Threads for the async runtime: `serve --workers`, else one (the
    /// client commands make one call at a time).
    pub fn worker_threads(&self) -> usize {
        match &self.command {
            Command::Serve(args) => args.workers.max(1),
            _ => 1,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Serve(ServeArgs),
    /// Validate a configuration file and print what it routes.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Send one prompt to a running sidecar and print the answer as it streams.
    Chat(chat::ChatArgs),
    /// List the models a running sidecar routes.
    Models(chat::Target),
    /// Print the caller token (or the admin token) a sidecar with no token
    /// configured wrote at its first start, e.g. for an OpenAI SDK's api_key.
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The admin token (for the admin port's write endpoints) instead.
    #[arg(long)]
    pub admin: bool,
    /// The file [default: `token` (or `admin-token`) in the runtime
    /// directory, where `serve` keeps them beside its default socket].
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one the embedded default is used.
    #[arg(long, env = "LLM_SIDECAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve on this Unix socket instead of the configured one ("" for none).
    #[arg(long, env = "LLM_SIDECAR_UDS")]
    pub uds: Option<String>,
    /// Serve on this TCP address instead of the configured one ("" for none).
    #[arg(long, env = "LLM_SIDECAR_TCP")]
    pub tcp: Option<String>,
    /// Serve the OpenAI-compatible HTTP API on this TCP address ("" for none).
    #[arg(long, env = "LLM_SIDECAR_HTTP")]
    pub http: Option<String>,
    /// Serve the admin port (metrics, usage) on this TCP address ("" for none).
    #[arg(long, env = "LLM_SIDECAR_ADMIN")]
    pub admin: Option<String>,
    /// Keep the usage ledger in this SQLite file ("" to switch it off).
    #[arg(long, env = "LLM_SIDECAR_LEDGER")]
    pub ledger: Option<String>,
    /// Threads serving calls. One (the default) keeps each call on one
    /// thread with no hand-offs, the cheapest per call; more for a pod
    /// whose calls need more than one core.
    #[arg(long, env = "LLM_SIDECAR_WORKERS", default_value_t = 1)]
    pub workers: usize,
}

/// Runs a parsed command line; the exit code is the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Serve(_)) {
        crate::logging::init(&crate::config::LoggingSettings::default());
    }
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::CheckConfig { file } => serve::check_config(&file),
        Command::Chat(args) => chat::chat(args).await,
        Command::Models(target) => chat::models(target).await,
        Command::Token(args) => {
            let file = args.file.unwrap_or_else(|| {
                crate::runtime_dir::default_dir(&crate::config::process_env).join(if args.admin {
                    crate::auth::ADMIN_TOKEN_FILE
                } else {
                    crate::auth::TOKEN_FILE
                })
            });
            println!("{}", chat::read_token(&file)?);
            Ok(())
        }
    }
}

//! The `llm-sidecar` binary: the command line does the rest (including
//! logging, whose format comes from the config file).

use clap::Parser;
use llm_sidecar::cli::{Cli, run};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("llm-sidecar: {error:#}");
            ExitCode::FAILURE
        }
    }
}

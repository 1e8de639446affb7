//! The `llm-sidecar` binary: the command line does the rest (including
//! logging, whose format comes from the config file).

#![forbid(unsafe_code)]

use clap::Parser;
use llm_sidecar::cli::{Cli, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One worker: every call, its upstream request and its stream run on
    // the main thread, with no wake-up of another thread per hop (which
    // costs more CPU here than the hop itself). The ledger writer and the
    // span exporter keep their own threads.
    let runtime = match cli.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        workers => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("llm-sidecar: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("llm-sidecar: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! Starting what the suite measures: the fake upstream (shared by every
//! target), the sidecar, nginx and the peers. Each knows its own config,
//! readiness check and version.

pub mod litellm;
pub mod nginx;
pub mod sidecar;
pub mod upstream;

use std::path::PathBuf;

/// Where things are: the binaries next to this one, and a scratch folder.
#[derive(Debug, Clone)]
pub struct Paths {
    /// target/release or target/debug: fake-upstream.
    pub bin_dir: PathBuf,
    /// The llm-sidecar binary measured (next to this one unless --sidecar).
    pub sidecar_bin: PathBuf,
    /// Extra environment for the sidecar (--sidecar-env).
    pub sidecar_env: Vec<(String, String)>,
    /// Configs, logs, sockets, ledgers of this run.
    pub run_dir: PathBuf,
    /// Installed peers, kept between runs (target/bench).
    pub install_dir: PathBuf,
    /// The repository (bench/nginx.conf).
    pub repo: PathBuf,
}

//! The fake OpenAI-compatible upstream every target forwards to, in its own
//! process (an in-process one would share the load generator's runtime and
//! flatter the floor). Its defaults make every request the same workload.

use super::Paths;
use crate::service::{Service, free_port, wait_for_port};
use std::process::Command;

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Content chunks per streamed answer, and the pause between them.
    pub chunks: usize,
    pub pacing_ms: u64,
}

pub struct Upstream {
    pub service: Service,
    pub port: u16,
}

impl Upstream {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

pub async fn start(paths: &Paths, workload: Workload) -> anyhow::Result<Upstream> {
    let port = free_port()?;
    // One short word per chunk, as a model streams tokens; in stamp mode the
    // streamed text is replaced by send times, the unary answer keeps it.
    let reply = "token ".repeat(workload.chunks);
    let scenario = serde_json::json!({
        "reply": reply,
        "chunks": workload.chunks,
        "chunk_delay_ms": workload.pacing_ms,
        "stamp": true,
    });
    let mut command = Command::new(paths.bin_dir.join("fake-upstream"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--scenario", &scenario.to_string()])
        .env("RUST_LOG", "warn");
    let mut service = Service::spawn(
        "fake-upstream",
        command,
        &paths.run_dir.join("fake-upstream.log"),
    )?;
    wait_for_port(&mut service, port).await?;
    Ok(Upstream { service, port })
}

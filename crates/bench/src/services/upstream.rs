//! The fake OpenAI-compatible upstream every target forwards to, in its own
//! process (an in-process one would share the load generator's runtime and
//! flatter the floor). Its defaults make every request the same paced
//! workload; a request for an unpaced model (`fake-unpaced-20`) gets that
//! many chunks back to back instead, chosen by the model name alone so the
//! request stays what any caller sends and every proxy routes it as is.

use super::Paths;
use crate::service::{Service, free_port, wait_for_port};
use std::process::Command;

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Content chunks per streamed answer, and the pause between them.
    pub chunks: usize,
    pub pacing_ms: u64,
}

/// The model whose streams are `chunks` content chunks, unpaced.
pub fn unpaced_model(chunks: usize) -> String {
    format!("fake-unpaced-{chunks}")
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

pub async fn start(
    paths: &Paths,
    workload: Workload,
    unpaced: &crate::plan::Unpaced,
) -> anyhow::Result<Upstream> {
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
        .args(["--scenario", &scenario.to_string()]);
    // Unstamped: back to back, a chunk's transit would be its wait behind
    // the chunks before it, and stamping costs the fake a clock read and
    // a rewrite per chunk.
    for chunks in unpaced.lengths() {
        let scenario = serde_json::json!({
            "reply": "token ".repeat(chunks),
            "chunks": chunks,
            "events_per_write": unpaced.events_per_write,
        });
        command
            .arg("--model-scenario")
            .arg(format!("{}={scenario}", unpaced_model(chunks)));
    }
    command.env("RUST_LOG", "warn");
    let mut service = Service::spawn(
        "fake-upstream",
        command,
        &paths.run_dir.join("fake-upstream.log"),
    )?;
    wait_for_port(&mut service, port).await?;
    Ok(Upstream { service, port })
}

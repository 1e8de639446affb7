//! The report: what was measured on each target, written as JSON (all the
//! figures) and Markdown (the tables a person reads).

pub mod figures;
pub mod goals;
pub mod markdown;

use crate::load::{StreamResult, UnaryResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The fake upstream called directly, and nginx: what any proxy costs.
    Floor,
    Ours,
    Peer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub name: String,
    pub role: Role,
    pub description: String,
    pub version: Option<String>,
    pub unary: Vec<UnaryResult>,
    /// Unpaced streams: chunks back to back, several per write.
    #[serde(default)]
    pub unpaced: Vec<StreamResult>,
    /// Paced streams.
    pub streams: Vec<StreamResult>,
    /// The highest stream concurrency held with every chunk delivered and
    /// no gap over twice the pacing.
    pub max_streams_held: Option<usize>,
    pub rss_idle_kib: Option<u64>,
    /// Shortly after one unary call, the first one it served.
    #[serde(default)]
    pub rss_one_call_kib: Option<u64>,
    pub rss_loaded_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// Later still, once the idle upstream connections kept for reuse have
    /// timed out (our sidecar only: its bench config makes that 5 s).
    #[serde(default)]
    pub rss_after_idle_kib: Option<u64>,
    pub cold_start_ms: Option<f64>,
    /// The binary, or for a peer its installed folder.
    pub size_bytes: Option<u64>,
}

impl TargetReport {
    pub fn unary_at(&self, concurrency: usize) -> Option<&UnaryResult> {
        self.unary.iter().find(|u| u.concurrency == concurrency)
    }

    pub fn streams_at(&self, concurrency: usize) -> Option<&StreamResult> {
        self.streams.iter().find(|s| s.concurrency == concurrency)
    }

    /// The unpaced phase at `concurrency` whose streams are `chunks` long.
    pub fn unpaced_at(&self, concurrency: usize, chunks: usize) -> Option<&StreamResult> {
        self.unpaced
            .iter()
            .find(|s| s.concurrency == concurrency && s.chunks_per_stream == chunks)
    }

    /// Calls that failed, and streams that did not complete, anywhere.
    pub fn failures(&self) -> u64 {
        let unary: u64 = self.unary.iter().map(|u| u.errors).sum();
        let streams: usize = self
            .streams
            .iter()
            .chain(&self.unpaced)
            .map(|s| s.streams - s.completed)
            .sum();
        unary + streams as u64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub mode: String,
    pub date: String,
    pub commit: String,
    pub build: String,
    pub cpus: usize,
    pub kernel: String,
    pub chunks: usize,
    pub pacing_ms: u64,
    /// Unpaced streams: content chunks, those of the longer stream, SSE
    /// events per write upstream, and the concurrency judged.
    #[serde(default)]
    pub unpaced_chunks: usize,
    #[serde(default)]
    pub unpaced_long_chunks: usize,
    #[serde(default)]
    pub unpaced_events_per_write: usize,
    #[serde(default)]
    pub unpaced_concurrency: usize,
    pub judged_unary_concurrency: usize,
    pub judged_stream_concurrency: usize,
    pub loaded_streams: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub meta: Meta,
    pub targets: Vec<TargetReport>,
    /// Every cold start of the sidecar measured, in milliseconds.
    pub sidecar_cold_starts_ms: Vec<f64>,
    pub goals: Vec<goals::Goal>,
}

impl Report {
    pub fn target(&self, name: &str) -> Option<&TargetReport> {
        self.targets.iter().find(|t| t.name == name)
    }
}

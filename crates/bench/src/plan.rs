//! How much load, for how long: the full run (about 8 minutes on 2 cores)
//! and the smoke run CI keeps working (seconds, debug build, no peers).
//! Paced streams (the fake's default workload) and unpaced ones (chunks
//! back to back, asked for by model name) are planned apart.

use crate::load::{StreamPhase, UnaryPhase};
use crate::services::upstream::Workload;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub workload: Workload,
    pub unpaced: Unpaced,
    pub unary: Vec<UnaryPhase>,
    /// The levels every target runs, as (concurrency, streams).
    pub streams: Vec<(usize, usize)>,
    /// Higher levels, each tried while the previous one held.
    pub search: Vec<usize>,
    /// The concurrency whose figures the performance targets are judged on.
    pub judged_unary: usize,
    pub judged_streams: usize,
    pub loaded_streams: usize,
    pub cold_starts: usize,
    /// Quiet time before reading idle memory, and after the load.
    pub settle: Duration,
    /// Further quiet before the last memory reading of our sidecar.
    pub idle_connections_gone: Duration,
    pub nginx: bool,
    pub peers: bool,
    /// When not empty, only these targets run besides the floor (which
    /// every "added" figure needs), e.g. `--only grpc-uds` to profile one.
    pub only: Vec<String>,
    /// When not empty, only these phases run (unary, unpaced, paced).
    pub phases: Vec<String>,
}

/// Unpaced streams: the fake sends each stream's chunks back to back,
/// several SSE events per write, as a fast provider delivers many tokens
/// per read. Here the per-chunk work shows instead of the wake-ups.
#[derive(Debug, Clone)]
pub struct Unpaced {
    /// Content chunks per stream.
    pub chunks: usize,
    /// Content chunks of a longer stream: the difference in CPU between the
    /// two lengths is what one more chunk costs, apart from the call.
    pub long_chunks: usize,
    /// SSE events per write upstream.
    pub events_per_write: usize,
    /// Streams at the load's concurrency before the measured phases, so
    /// that connections are open and warm.
    pub warmup: Duration,
    pub phases: Vec<UnpacedPhase>,
    /// The concurrency whose CPU figures are judged (latency: at 1).
    pub judged: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct UnpacedPhase {
    pub concurrency: usize,
    pub chunks: usize,
    /// New streams start for this long, up to `max_streams`.
    pub start_for: Duration,
    pub max_streams: usize,
}

impl Plan {
    pub fn full() -> Plan {
        let unary = |concurrency, seconds, parts| UnaryPhase {
            concurrency,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(seconds),
            max_requests: 200_000,
            parts,
        };
        let unpaced = |concurrency, chunks, seconds| UnpacedPhase {
            concurrency,
            chunks,
            start_for: Duration::from_secs(seconds),
            max_streams: 100_000,
        };
        Plan {
            smoke: false,
            workload: Workload {
                chunks: 64,
                pacing_ms: 20,
            },
            unpaced: Unpaced {
                chunks: 20,
                long_chunks: 200,
                events_per_write: 4,
                warmup: Duration::from_millis(500),
                phases: vec![unpaced(1, 20, 2), unpaced(16, 20, 3), unpaced(16, 200, 3)],
                judged: 16,
            },
            unary: vec![unary(1, 4, 3), unary(16, 3, 1), unary(64, 3, 1)],
            streams: vec![(1, 5), (16, 64), (64, 128), (1000, 1000)],
            search: vec![2000, 4000],
            judged_unary: 1,
            judged_streams: 16,
            loaded_streams: 1000,
            cold_starts: 7,
            settle: Duration::from_secs(3),
            idle_connections_gone: crate::services::sidecar::IDLE_CONNECTIONS_GONE,
            nginx: true,
            peers: true,
            only: Vec::new(),
            phases: Vec::new(),
        }
    }

    pub fn smoke() -> Plan {
        let unary = |concurrency, parts| UnaryPhase {
            concurrency,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(300),
            max_requests: 2_000,
            parts,
        };
        let unpaced = |concurrency, chunks, max_streams| UnpacedPhase {
            concurrency,
            chunks,
            start_for: Duration::from_millis(200),
            max_streams,
        };
        Plan {
            smoke: true,
            workload: Workload {
                chunks: 8,
                pacing_ms: 5,
            },
            unpaced: Unpaced {
                chunks: 20,
                long_chunks: 40,
                events_per_write: 4,
                warmup: Duration::from_millis(50),
                phases: vec![unpaced(1, 20, 5), unpaced(4, 20, 40), unpaced(4, 40, 20)],
                judged: 4,
            },
            unary: vec![unary(1, 3), unary(4, 1)],
            streams: vec![(1, 2), (8, 16)],
            search: Vec::new(),
            judged_unary: 1,
            judged_streams: 8,
            loaded_streams: 8,
            cold_starts: 1,
            settle: Duration::from_millis(100),
            idle_connections_gone: Duration::ZERO,
            nginx: false,
            peers: false,
            only: Vec::new(),
            phases: Vec::new(),
        }
    }

    /// Whether a target (by its report name) is part of this run.
    pub fn runs(&self, target: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|name| name == target)
    }

    /// Whether a phase (unary, unpaced, paced) is part of this run.
    pub fn runs_phase(&self, phase: &str) -> bool {
        self.phases.is_empty() || self.phases.iter().any(|name| name == phase)
    }

    pub fn stream_phase(&self, concurrency: usize, streams: usize) -> StreamPhase {
        let pacing = Duration::from_millis(self.workload.pacing_ms);
        let one = pacing * u32::try_from(self.workload.chunks).unwrap_or(u32::MAX);
        let rounds = u32::try_from(streams.div_ceil(concurrency)).unwrap_or(u32::MAX);
        StreamPhase {
            concurrency,
            streams,
            chunks: self.workload.chunks,
            pacing: Some(pacing),
            start_for: None,
            // Twice the ideal, plus room to open the connections; a target
            // that cannot keep up is cut off here and its streams count as
            // stalled.
            time_limit: one * rounds * 2 + Duration::from_secs(if self.smoke { 5 } else { 10 }),
            stagger: Duration::from_millis(1),
        }
    }
}

impl Unpaced {
    /// Every stream length the phases ask for (the fake plays each).
    pub fn lengths(&self) -> Vec<usize> {
        let mut lengths: Vec<usize> = self.phases.iter().map(|p| p.chunks).collect();
        lengths.sort_unstable();
        lengths.dedup();
        lengths
    }

    pub fn stream_phase(&self, phase: UnpacedPhase) -> StreamPhase {
        StreamPhase {
            concurrency: phase.concurrency,
            streams: phase.max_streams,
            chunks: phase.chunks,
            pacing: None,
            start_for: Some(phase.start_for),
            // The last streams started finish well within this.
            time_limit: phase.start_for + Duration::from_secs(10),
            stagger: Duration::from_millis(1),
        }
    }

    /// Discarded streams at the judged concurrency before the phases.
    pub fn warmup_phase(&self) -> StreamPhase {
        self.stream_phase(UnpacedPhase {
            concurrency: self.judged,
            chunks: self.chunks,
            start_for: self.warmup,
            max_streams: usize::MAX,
        })
    }
}

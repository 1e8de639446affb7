//! How much load, for how long: the full run (about 8 minutes on 2 cores)
//! and the smoke run CI keeps working (seconds, debug build, no peers).

use crate::load::{StreamPhase, UnaryPhase};
use crate::services::upstream::Workload;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub workload: Workload,
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
}

impl Plan {
    pub fn full() -> Plan {
        let unary = |concurrency, seconds| UnaryPhase {
            concurrency,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(seconds),
            max_requests: 200_000,
        };
        Plan {
            smoke: false,
            workload: Workload {
                chunks: 64,
                pacing_ms: 20,
            },
            unary: vec![unary(1, 4), unary(16, 3), unary(64, 3)],
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
        }
    }

    pub fn smoke() -> Plan {
        let unary = |concurrency| UnaryPhase {
            concurrency,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(300),
            max_requests: 2_000,
        };
        Plan {
            smoke: true,
            workload: Workload {
                chunks: 8,
                pacing_ms: 5,
            },
            unary: vec![unary(1), unary(4)],
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
        }
    }

    /// Whether a target (by its report name) is part of this run.
    pub fn runs(&self, target: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|name| name == target)
    }

    pub fn stream_phase(&self, concurrency: usize, streams: usize) -> StreamPhase {
        let pacing = Duration::from_millis(self.workload.pacing_ms);
        let one = pacing * u32::try_from(self.workload.chunks).unwrap_or(u32::MAX);
        let rounds = u32::try_from(streams.div_ceil(concurrency)).unwrap_or(u32::MAX);
        StreamPhase {
            concurrency,
            streams,
            chunks: self.workload.chunks,
            pacing,
            // Twice the ideal, plus room to open the connections; a target
            // that cannot keep up is cut off here and its streams count as
            // stalled.
            time_limit: one * rounds * 2 + Duration::from_secs(if self.smoke { 5 } else { 10 }),
            stagger: Duration::from_millis(1),
        }
    }
}

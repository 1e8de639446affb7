//! The load: unary calls at a fixed concurrency for a bounded time, and
//! rounds of streams at a fixed concurrency, bounded in count and time
//! (paced ones: a count; unpaced ones: as many as start in a time, up to a
//! count). The CPU of the target's processes is read before and after the
//! measured part.

use crate::caller::Caller;
use crate::hist::{Hist, Summary};
use crate::procfs::{self, Tree};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use tokio::time::Instant;

/// A call still running this long after its phase ended is abandoned.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct UnaryPhase {
    pub concurrency: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub max_requests: u64,
    /// The measured time is cut into this many equal parts, each with its
    /// own p99 besides the whole phase's: their median is a p99 that one
    /// burst of noise cannot move alone.
    pub parts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnaryResult {
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub throughput_rps: f64,
    pub latency: Option<Summary>,
    /// The p99 of each part of the phase, in µs (see [`UnaryPhase::parts`]).
    #[serde(default)]
    pub part_p99_us: Vec<f64>,
    /// CPU milliseconds of the target's processes per request (= CPU
    /// seconds per 1,000 requests).
    pub cpu_ms_per_request: Option<f64>,
}

#[derive(Default)]
struct UnaryTally {
    hist: Hist,
    errors: u64,
    first_error: Option<String>,
}

async fn unary_workers(
    caller: &Caller,
    concurrency: usize,
    until: Instant,
    max: u64,
) -> UnaryTally {
    let issued = Cell::new(0u64);
    let tally = RefCell::new(UnaryTally::default());
    let worker = || async {
        while Instant::now() < until && issued.get() < max {
            issued.set(issued.get() + 1);
            let started = Instant::now();
            let outcome = tokio::time::timeout_at(until + GRACE, caller.unary()).await;
            let elapsed = started.elapsed();
            let mut tally = tally.borrow_mut();
            match outcome {
                Ok(Ok(())) => tally.hist.record(elapsed),
                Ok(Err(e)) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(e);
                }
                Err(_) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert("timed out".into());
                }
            }
        }
    };
    join_all((0..concurrency).map(|_| worker())).await;
    tally.into_inner()
}

pub async fn unary(caller: &Caller, phase: UnaryPhase, tree: Option<Tree>) -> UnaryResult {
    unary_workers(
        caller,
        phase.concurrency,
        Instant::now() + phase.warmup,
        u64::MAX,
    )
    .await;
    let cpu_before = tree.map(|t| t.cpu());
    let started = Instant::now();
    let parts = phase.parts.max(1);
    let mut tally = UnaryTally::default();
    let mut part_p99_us = Vec::new();
    for part in 1..=parts {
        let issued = tally.hist.count() + tally.errors;
        let this = unary_workers(
            caller,
            phase.concurrency,
            started + phase.measure * part / parts,
            phase.max_requests.saturating_sub(issued),
        )
        .await;
        part_p99_us.extend(this.hist.summary().map(|s| s.p99_us));
        tally.hist.add(&this.hist);
        tally.errors += this.errors;
        tally.first_error = tally.first_error.or(this.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = tally.hist.count();
    let cpu = tree.zip(cpu_before).map(|(t, before)| t.cpu() - before);
    UnaryResult {
        concurrency: phase.concurrency,
        requests,
        errors: tally.errors,
        first_error: tally.first_error,
        seconds,
        throughput_rps: requests as f64 / seconds,
        latency: tally.hist.summary(),
        part_p99_us: if parts > 1 { part_p99_us } else { Vec::new() },
        cpu_ms_per_request: cpu
            .filter(|_| requests > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e3 / requests as f64),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StreamPhase {
    pub concurrency: usize,
    /// The streams to run (paced), or the most to start (unpaced).
    pub streams: usize,
    /// Content chunks each stream should bring.
    pub chunks: usize,
    /// The pause between chunks upstream; `None` for unpaced streams, which
    /// have no gap to judge: only a missing chunk or an error stalls one.
    pub pacing: Option<Duration>,
    /// Unpaced: new streams start only this long from the phase's start;
    /// the ones running then finish. Paced phases run all their streams.
    pub start_for: Option<Duration>,
    pub time_limit: Duration,
    /// Between the first streams of consecutive workers: 1,000 callers
    /// do not all start in the same millisecond, and a load generator
    /// opening 1,000 connections at once stalls its own early streams.
    pub stagger: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamResult {
    pub concurrency: usize,
    /// Content chunks each stream should bring.
    #[serde(default)]
    pub chunks_per_stream: usize,
    /// Unpaced: chunks sent back to back, several per write.
    #[serde(default)]
    pub unpaced: bool,
    pub streams: usize,
    /// Ended cleanly with every chunk.
    pub completed: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Streams that missed a chunk, ended in error, or had a gap between
    /// chunks over twice the pacing.
    pub stalled: usize,
    pub seconds: f64,
    pub ttfc: Option<Summary>,
    /// From sending the request to the end of each complete stream.
    #[serde(default)]
    pub whole: Option<Summary>,
    /// Upstream write to caller read, per chunk (stamped chunks only).
    pub transit: Option<Summary>,
    /// Between consecutive chunks, as the caller reads them.
    pub gap: Option<Summary>,
    pub chunks_per_second: f64,
    /// CPU milliseconds of the target's processes per stream.
    pub cpu_ms_per_stream: Option<f64>,
    /// CPU microseconds of the target's processes per content chunk read,
    /// everything the stream cost included.
    #[serde(default)]
    pub cpu_us_per_chunk: Option<f64>,
    /// The largest resident memory of the target seen during the phase.
    pub rss_peak_kib: Option<u64>,
    /// How busy the whole machine was (load generator, upstream and target
    /// together): near 100 % the rig itself is the limit.
    pub machine_busy_pct: Option<f64>,
}

impl StreamResult {
    pub fn held(&self) -> bool {
        self.stalled == 0 && self.completed == self.streams
    }
}

#[derive(Default)]
struct StreamTally {
    ttfc: Hist,
    whole: Hist,
    transit: Hist,
    gap: Hist,
    completed: usize,
    errors: usize,
    stalled: usize,
    chunks: u64,
    first_error: Option<String>,
}

pub async fn streams(caller: &Caller, phase: StreamPhase, tree: Option<Tree>) -> StreamResult {
    let started = Instant::now();
    let deadline = started + phase.time_limit;
    let stop_starting = phase.start_for.map_or(deadline, |d| started + d);
    let stall_ns = phase.pacing.map_or(u64::MAX, |pacing| {
        u64::try_from((pacing * 2).as_nanos()).unwrap_or(u64::MAX)
    });
    let issued = Cell::new(0usize);
    let tally = RefCell::new(StreamTally::default());
    let cpu_before = tree.map(|t| t.cpu());
    let machine_before = procfs::machine_ticks();
    let worker = |index: u32| {
        let (issued, tally) = (&issued, &tally);
        async move {
            tokio::time::sleep(phase.stagger * index).await;
            while issued.get() < phase.streams && Instant::now() < stop_starting {
                issued.set(issued.get() + 1);
                let trace = caller.stream(deadline).await;
                let mut t = tally.borrow_mut();
                let whole =
                    trace.complete && trace.error.is_none() && trace.chunks() == phase.chunks;
                let smooth = trace.gaps_ns.iter().all(|&gap| gap <= stall_ns);
                t.completed += usize::from(whole);
                t.stalled += usize::from(!whole || !smooth);
                if let Some(e) = &trace.error {
                    t.errors += 1;
                    t.first_error.get_or_insert_with(|| e.clone());
                }
                if let Some(ttfc) = trace.ttfc {
                    t.ttfc.record(ttfc);
                }
                if let Some(whole) = trace.whole {
                    t.whole.record(whole);
                }
                for &ns in &trace.transits_ns {
                    t.transit.record_ns(ns);
                }
                for &ns in &trace.gaps_ns {
                    t.gap.record_ns(ns);
                }
                t.chunks += trace.chunks() as u64;
            }
        }
    };
    let rss_peak = Cell::new(0u64);
    let sampler = async {
        let Some(tree) = tree else {
            return std::future::pending().await;
        };
        loop {
            rss_peak.set(rss_peak.get().max(tree.rss_kib()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = join_all((0..phase.concurrency).map(|i| worker(u32::try_from(i).unwrap_or(u32::MAX)))) => {}
        () = sampler => {}
    }
    let seconds = started.elapsed().as_secs_f64();
    let machine_busy_pct = procfs::busy_pct(machine_before, procfs::machine_ticks());
    let cpu = tree.zip(cpu_before).map(|(t, before)| t.cpu() - before);
    let t = tally.into_inner();
    let streams = issued.get();
    // Paced streams never started for lack of time count as stalled too;
    // an unpaced phase starts as many as its time allows.
    let unstarted = if phase.start_for.is_some() {
        0
    } else {
        phase.streams - streams
    };
    StreamResult {
        concurrency: phase.concurrency,
        chunks_per_stream: phase.chunks,
        unpaced: phase.pacing.is_none(),
        streams,
        completed: t.completed,
        errors: t.errors,
        first_error: t.first_error,
        stalled: t.stalled + unstarted,
        seconds,
        ttfc: t.ttfc.summary(),
        whole: t.whole.summary(),
        transit: t.transit.summary(),
        gap: t.gap.summary(),
        chunks_per_second: t.chunks as f64 / seconds,
        cpu_ms_per_stream: cpu
            .filter(|_| streams > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e3 / streams as f64),
        cpu_us_per_chunk: cpu
            .filter(|_| t.chunks > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / t.chunks as f64),
        rss_peak_kib: tree.map(|_| rss_peak.get()),
        machine_busy_pct,
    }
}

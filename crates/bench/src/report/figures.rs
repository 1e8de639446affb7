//! The figures read off a target's phases, shared by the tables and the
//! targets. "Added" figures are the target's percentile minus the floor's
//! (the fake upstream called directly) at the same concurrency, in the same
//! run.

use super::{Report, TargetReport};
use crate::hist::Summary;

pub const FLOOR: &str = "direct";
pub const NGINX: &str = "nginx";

/// The concurrency of unary calls whose CPU is compared.
pub const CPU_UNARY_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy)]
pub enum Pct {
    P50,
    P99,
}

impl Pct {
    pub fn of(self, summary: &Summary) -> f64 {
        match self {
            Pct::P50 => summary.p50_us,
            Pct::P99 => summary.p99_us,
        }
    }
}

/// Which histogram of a target a figure is read from.
#[derive(Debug, Clone, Copy)]
pub enum Series {
    Unary,
    Ttfc,
    Transit,
}

pub fn value(target: &TargetReport, series: Series, concurrency: usize, pct: Pct) -> Option<f64> {
    let summary = match series {
        Series::Unary => target.unary_at(concurrency)?.latency?,
        Series::Ttfc => target.streams_at(concurrency)?.ttfc?,
        Series::Transit => target.streams_at(concurrency)?.transit?,
    };
    Some(pct.of(&summary))
}

/// Microseconds `target` adds over the floor.
pub fn added(
    report: &Report,
    target: &TargetReport,
    series: Series,
    concurrency: usize,
    pct: Pct,
) -> Option<f64> {
    let floor = report.target(FLOOR)?;
    Some(value(target, series, concurrency, pct)? - value(floor, series, concurrency, pct)?)
}

/// The unary p99 in µs at `concurrency`: the median of the phase's parts'
/// p99s when it was cut in parts, else the whole phase's.
pub fn unary_p99(target: &TargetReport, concurrency: usize) -> Option<f64> {
    let unary = target.unary_at(concurrency)?;
    median(&unary.part_p99_us).or(unary.latency.map(|l| l.p99_us))
}

/// Microseconds of p99 `target` adds over the floor at `concurrency`, each
/// read as [`unary_p99`].
pub fn added_unary_p99(report: &Report, target: &TargetReport, concurrency: usize) -> Option<f64> {
    Some(unary_p99(target, concurrency)? - unary_p99(report.target(FLOOR)?, concurrency)?)
}

/// CPU µs per unary call at [`CPU_UNARY_CONCURRENCY`].
pub fn cpu_unary_us(target: &TargetReport) -> Option<f64> {
    let unary = target.unary_at(CPU_UNARY_CONCURRENCY)?;
    unary.cpu_ms_per_request.map(|ms| ms * 1e3)
}

/// The paced stream concurrency whose CPU is compared: the first level
/// above the judged one (64 in the full run), else the judged one.
pub fn paced_cpu_concurrency(report: &Report) -> usize {
    let judged = report.meta.judged_stream_concurrency;
    report
        .targets
        .first()
        .and_then(|t| {
            t.streams
                .iter()
                .map(|s| s.concurrency)
                .find(|&c| c > judged)
        })
        .unwrap_or(judged)
}

/// CPU ms per paced stream at [`paced_cpu_concurrency`].
pub fn cpu_paced_stream_ms(report: &Report, target: &TargetReport) -> Option<f64> {
    target
        .streams_at(paced_cpu_concurrency(report))?
        .cpu_ms_per_stream
}

/// CPU µs per unpaced stream of the short length at the judged concurrency.
pub fn cpu_unpaced_stream_us(report: &Report, target: &TargetReport) -> Option<f64> {
    let m = &report.meta;
    let phase = target.unpaced_at(m.unpaced_concurrency, m.unpaced_chunks)?;
    phase.cpu_ms_per_stream.map(|ms| ms * 1e3)
}

/// CPU µs per content chunk of the short unpaced stream, all it cost
/// (the call's own work included) divided by its chunks.
pub fn cpu_unpaced_chunk_all_in_us(report: &Report, target: &TargetReport) -> Option<f64> {
    let m = &report.meta;
    target
        .unpaced_at(m.unpaced_concurrency, m.unpaced_chunks)?
        .cpu_us_per_chunk
}

/// CPU µs one more unpaced chunk costs: the difference between the long
/// and the short stream's CPU, divided by the difference in chunks. What
/// every call costs whatever its length (request, routing, the upstream
/// request, the ledger) drops out.
pub fn cpu_unpaced_chunk_us(report: &Report, target: &TargetReport) -> Option<f64> {
    let m = &report.meta;
    let c = m.unpaced_concurrency;
    let short = target.unpaced_at(c, m.unpaced_chunks)?.cpu_ms_per_stream?;
    let long = target
        .unpaced_at(c, m.unpaced_long_chunks)?
        .cpu_ms_per_stream?;
    let more = m.unpaced_long_chunks.checked_sub(m.unpaced_chunks)?;
    (more > 0).then(|| (long - short) * 1e3 / more as f64)
}

/// The unpaced short stream at concurrency 1, from the request to its end:
/// the target's percentile minus the floor's, in µs.
pub fn added_unpaced_whole(report: &Report, target: &TargetReport, pct: Pct) -> Option<f64> {
    let chunks = report.meta.unpaced_chunks;
    let whole = |t: &TargetReport| t.unpaced_at(1, chunks)?.whole.map(|s| pct.of(&s));
    Some(whole(target)? - whole(report.target(FLOOR)?)?)
}

/// Paced streams at `level` that brought every chunk with no gap over
/// twice the pacing.
pub fn stall_free(target: &TargetReport, level: usize) -> Option<usize> {
    let phase = target.streams_at(level)?;
    Some(phase.streams.saturating_sub(phase.stalled))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

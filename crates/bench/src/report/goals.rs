//! The performance targets (BENCHMARKS.md), judged on this run's figures. "Added" figures are
//! the target's percentile minus the floor's (the fake upstream called
//! directly) at the same concurrency, in the same run.

use super::{Report, TargetReport};
use crate::hist::Summary;
use serde::{Deserialize, Serialize};

pub const FLOOR: &str = "direct";
pub const NGINX: &str = "nginx";
/// The edge the targets are judged on.
pub const OURS: &str = "grpc-uds";

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goal {
    pub name: String,
    pub limit: String,
    pub measured: Option<String>,
    pub met: Option<bool>,
}

fn goal(name: &str, limit: &str, measured: Option<(String, bool)>) -> Goal {
    Goal {
        name: name.to_owned(),
        limit: limit.to_owned(),
        met: measured.as_ref().map(|(_, met)| *met),
        measured: measured.map(|(text, _)| text),
    }
}

/// The level held, and at the loaded level how many streams went without
/// a stall, next to the floor's: where the floor stalls too, the rig is
/// the limit.
fn streams_held(report: &Report, ours: &TargetReport, level: usize) -> String {
    let held = ours.max_streams_held.unwrap_or(0);
    if held >= level {
        return held.to_string();
    }
    let smooth = |t: &TargetReport| {
        t.streams_at(level)
            .map(|s| s.streams.saturating_sub(s.stalled))
    };
    match (smooth(ours), report.target(FLOOR).and_then(smooth)) {
        (Some(ours), Some(floor)) => format!(
            "{held}; at {level}, {ours} of {level} streams without a stall (the floor: {floor})"
        ),
        _ => held.to_string(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn judge(report: &Report) -> Vec<Goal> {
    let Some(ours) = report.target(OURS) else {
        return Vec::new();
    };
    let m = &report.meta;
    let (cu, cs) = (m.judged_unary_concurrency, m.judged_stream_concurrency);
    let under = |value: Option<f64>, limit: f64| value.map(|v| (format!("{v:.0} µs"), v <= limit));
    let cpu = |t: &TargetReport| t.unary_at(16).and_then(|u| u.cpu_ms_per_request);
    let cpu_ratio = report
        .target(NGINX)
        .and_then(cpu)
        .zip(cpu(ours))
        .map(|(nginx, ours)| {
            let ratio = ours / nginx;
            (
                format!(
                    "{:.0} µs vs nginx {:.0} µs: ×{ratio:.1}",
                    ours * 1e3,
                    nginx * 1e3
                ),
                ratio <= 2.0,
            )
        });
    let held = ours.max_streams_held.unwrap_or(0);
    let cold = median(&report.sidecar_cold_starts_ms);
    vec![
        goal(
            &format!("added p99 latency, unary, c={cu}, gRPC over UDS"),
            "≤ 100 µs",
            under(added(report, ours, Series::Unary, cu, Pct::P99), 100.0),
        ),
        goal(
            &format!("added time per chunk p99 (c={cs})"),
            "≤ 5 µs",
            per_chunk(report, ours, cs),
        ),
        goal(
            &format!("added time to first chunk p99 (c={cs})"),
            "≤ 150 µs",
            under(added(report, ours, Series::Ttfc, cs, Pct::P99), 150.0),
        ),
        goal(
            "concurrent streams without a stall",
            &format!("≥ {}", m.loaded_streams),
            Some((
                streams_held(report, ours, m.loaded_streams),
                held >= m.loaded_streams,
            )),
        ),
        goal("CPU per unary request (c=16)", "≤ 2× nginx", cpu_ratio),
        goal(
            "RSS idle",
            "≤ 10 MiB",
            ours.rss_idle_kib
                .map(|k| (format!("{:.1} MiB", mib(k)), mib(k) <= 10.0)),
        ),
        goal(
            &format!("RSS with {} open streams", m.loaded_streams),
            "≤ 64 MiB",
            ours.rss_loaded_kib
                .map(|k| (format!("{:.1} MiB", mib(k)), mib(k) <= 64.0)),
        ),
        goal(
            "RSS after the load, idle connections closed",
            "within 10 % of idle",
            ours.rss_idle_kib
                .zip(ours.rss_after_idle_kib.or(ours.rss_after_kib))
                .map(|(idle, after)| {
                    let growth = (after as f64 / idle as f64 - 1.0) * 100.0;
                    (
                        format!("{:.1} MiB ({growth:+.0} %)", mib(after)),
                        growth <= 10.0,
                    )
                }),
        ),
        goal(
            "cold start to serving (median)",
            "≤ 50 ms",
            cold.map(|ms| (format!("{ms:.1} ms"), ms <= 50.0)),
        ),
    ]
}

/// Judged on p50 as well as p99: the floor's own p99 per chunk is
/// milliseconds of scheduling noise on a shared 2-core VM, so a p99
/// difference alone can come out negative while every chunk pays the hop.
fn per_chunk(report: &Report, ours: &TargetReport, concurrency: usize) -> Option<(String, bool)> {
    let p50 = added(report, ours, Series::Transit, concurrency, Pct::P50)?;
    let p99 = added(report, ours, Series::Transit, concurrency, Pct::P99)?;
    Some((
        format!("p50 {p50:+.0} µs, p99 {p99:+.0} µs"),
        p50 <= 5.0 && p99 <= 5.0,
    ))
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

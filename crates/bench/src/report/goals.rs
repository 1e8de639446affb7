//! The performance targets (BENCHMARKS.md, "Targets"), judged on this run's
//! figures for each of our edges: most as a ratio to nginx in the same run,
//! so that the machine's own speed drops out.

use super::figures::{self as f, Pct, Series};
use super::{Report, TargetReport};
use serde::{Deserialize, Serialize};

pub use super::figures::{FLOOR, NGINX, median};
/// The edge the summary ratios are shown for beside the facade.
pub const OURS: &str = "grpc-uds";

/// Our edges the targets are judged on (when they ran), and whether each
/// speaks gRPC (the facade forwards the upstream's bytes; gRPC converts
/// each event, so its per-chunk limit is higher).
const EDGES: [(&str, bool); 3] = [("grpc-uds", true), ("grpc-tcp", true), ("http", false)];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goal {
    pub name: String,
    /// The edge judged.
    #[serde(default)]
    pub target: String,
    pub limit: String,
    pub measured: Option<String>,
    /// Our figure divided by nginx's in the same run, when both were read.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// `None`: not judged (a figure is missing, e.g. nginx did not run).
    pub met: Option<bool>,
}

/// One figure of ours and nginx's, with its unit and decimals.
struct Pair {
    ours: Option<f64>,
    nginx: Option<f64>,
    unit: &'static str,
    decimals: usize,
    /// Shown with its sign (an added figure).
    signed: bool,
}

impl Pair {
    fn of(
        report: &Report,
        ours: &TargetReport,
        figure: impl Fn(&TargetReport) -> Option<f64>,
    ) -> Self {
        Pair {
            ours: figure(ours),
            nginx: report.target(NGINX).and_then(&figure),
            unit: "µs",
            decimals: 0,
            signed: false,
        }
    }

    fn unit(self, unit: &'static str, decimals: usize) -> Self {
        Pair {
            unit,
            decimals,
            ..self
        }
    }

    fn signed(self) -> Self {
        Pair {
            signed: true,
            ..self
        }
    }

    fn text(&self, value: f64) -> String {
        let prec = self.decimals;
        if self.signed {
            format!("{value:+.prec$} {}", self.unit)
        } else {
            format!("{value:.prec$} {}", self.unit)
        }
    }

    /// "ours (nginx theirs)", or ours alone.
    fn measured(&self) -> Option<String> {
        let ours = self.text(self.ours?);
        Some(match self.nginx {
            Some(nginx) => format!("{ours} (nginx {})", self.text(nginx)),
            None => ours,
        })
    }

    fn ratio(&self) -> Option<f64> {
        let (ours, nginx) = (self.ours?, self.nginx?);
        (nginx > 0.0)
            .then(|| ours / nginx)
            .filter(|r| r.is_finite())
    }
}

/// Judges each target on every edge of ours that ran: target by target,
/// each edge under the other; the cold start (one figure for all) last.
pub fn judge(report: &Report) -> Vec<Goal> {
    let per_edge: Vec<Vec<Goal>> = EDGES
        .iter()
        .filter_map(|&(name, grpc)| Some(edge_goals(report, report.target(name)?, grpc)))
        .collect();
    let mut goals = Vec::new();
    for row in 0..per_edge.first().map_or(0, Vec::len) {
        goals.extend(per_edge.iter().filter_map(|edge| edge.get(row)).cloned());
    }
    let cold = median(&report.sidecar_cold_starts_ms);
    if !per_edge.is_empty() {
        goals.push(Goal {
            measured: cold.map(|ms| format!("{ms:.1} ms")),
            met: cold.map(|ms| ms <= 50.0),
            ..goal("cold start to serving (median)", "llm-sidecar", "≤ 50 ms")
        });
    }
    goals
}

fn goal(name: impl Into<String>, target: &str, limit: impl Into<String>) -> Goal {
    Goal {
        name: name.into(),
        target: target.to_owned(),
        limit: limit.into(),
        measured: None,
        ratio: None,
        met: None,
    }
}

/// At most `times` nginx's figure.
fn within(name: String, ours: &TargetReport, pair: &Pair, times: f64) -> Goal {
    Goal {
        measured: pair.measured(),
        ratio: pair.ratio(),
        met: pair.ratio().map(|r| r <= times),
        ..goal(name, &ours.name, format!("≤ {times}× nginx"))
    }
}

/// At most `limit` (in the pair's unit), with the ratio to nginx beside.
fn under(name: String, ours: &TargetReport, pair: &Pair, limit: f64) -> Goal {
    Goal {
        measured: pair.measured(),
        ratio: pair.ratio(),
        met: pair.ours.map(|v| v <= limit),
        ..goal(name, &ours.name, format!("≤ {} {}", limit, pair.unit))
    }
}

fn edge_goals(report: &Report, ours: &TargetReport, grpc: bool) -> Vec<Goal> {
    let m = &report.meta;
    let (cu, cs) = (m.judged_unary_concurrency, m.unpaced_concurrency);
    let paced = f::paced_cpu_concurrency(report);
    let pair = |figure: &dyn Fn(&TargetReport) -> Option<f64>| Pair::of(report, ours, figure);
    let chunk_limit = if grpc { 3.0 } else { 2.0 };
    let chunk = pair(&|t| f::cpu_unpaced_chunk_us(report, t)).unit("µs", 2);
    let mut chunk_goal = under(
        format!("CPU per unpaced chunk, c={cs} (one more chunk)"),
        ours,
        &chunk,
        chunk_limit,
    );
    if let (Some(text), Some(all_in)) = (
        &chunk_goal.measured,
        f::cpu_unpaced_chunk_all_in_us(report, ours),
    ) {
        chunk_goal.measured = Some(format!(
            "{text}; all in {all_in:.1} µs ({} chunks)",
            m.unpaced_chunks
        ));
    }
    let mut goals = vec![
        within(
            format!("CPU per unary call, c={}", f::CPU_UNARY_CONCURRENCY),
            ours,
            &pair(&f::cpu_unary_us),
            2.0,
        ),
        chunk_goal,
        within(
            format!("CPU per unpaced {}-chunk stream, c={cs}", m.unpaced_chunks),
            ours,
            &pair(&|t| f::cpu_unpaced_stream_us(report, t)),
            3.0,
        ),
        within(
            format!("CPU per paced {}-chunk stream, c={paced}", m.chunks),
            ours,
            &pair(&|t| f::cpu_paced_stream_ms(report, t)).unit("ms", 2),
            1.2,
        ),
        stall_free(report, ours),
        latency(
            format!("added latency p50, unary c={cu}"),
            ours,
            &pair(&|t| f::added(report, t, Series::Unary, cu, Pct::P50)).signed(),
        ),
        latency(
            p99_name(report, cu),
            ours,
            &pair(&|t| f::added_unary_p99(report, t, cu)).signed(),
        ),
    ];
    goals.extend(memory_goals(report, ours));
    goals
}

fn p99_name(report: &Report, concurrency: usize) -> String {
    let parts = report
        .target(FLOOR)
        .and_then(|t| t.unary_at(concurrency))
        .map_or(0, |u| u.part_p99_us.len());
    if parts > 1 {
        format!("added latency p99, unary c={concurrency} (median of {parts} parts)")
    } else {
        format!("added latency p99, unary c={concurrency}")
    }
}

/// Added latency at most 1.5× nginx's added latency. Where nginx adds
/// nothing measurable (its figure at or below the floor's, i.e. noise) the
/// ratio means nothing and the target is not judged.
fn latency(name: String, ours: &TargetReport, pair: &Pair) -> Goal {
    let met = match (pair.ours, pair.nginx) {
        (Some(ours), Some(nginx)) if nginx > 0.0 => Some(ours <= 1.5 * nginx),
        _ => None,
    };
    Goal {
        measured: pair.measured(),
        ratio: pair.ratio(),
        met,
        ..goal(name, &ours.name, "≤ 1.5× nginx's")
    }
}

/// At the loaded level of paced streams, at least as many without a stall
/// as nginx (where the rig itself stalls streams, both lose some).
fn stall_free(report: &Report, ours: &TargetReport) -> Goal {
    let level = report.meta.loaded_streams;
    let count = |t: &TargetReport| f::stall_free(t, level);
    let (o, n) = (count(ours), report.target(NGINX).and_then(count));
    let floor = report.target(FLOOR).and_then(count);
    let total = ours.streams_at(level).map_or(level, |s| s.streams);
    let measured = o.map(|o| {
        let mut text = format!("{o} of {total}");
        if let Some(n) = n {
            text.push_str(&format!(" (nginx {n}"));
            if let Some(floor) = floor {
                text.push_str(&format!(", the floor {floor}"));
            }
            text.push(')');
        }
        text
    });
    Goal {
        measured,
        ratio: o
            .zip(n)
            .filter(|&(_, n)| n > 0)
            .map(|(o, n)| o as f64 / n as f64),
        met: o.zip(n).map(|(o, n)| o >= n),
        ..goal(
            format!("paced streams without a stall, at {level}"),
            &ours.name,
            "≥ nginx's",
        )
    }
}

fn memory_goals(report: &Report, ours: &TargetReport) -> Vec<Goal> {
    let mib_pair = |figure: fn(&TargetReport) -> Option<u64>| {
        Pair::of(report, ours, |t| figure(t).map(f::mib)).unit("MiB", 1)
    };
    let idle = ours.rss_idle_kib;
    let after = ours.rss_after_idle_kib.or(ours.rss_after_kib);
    let after_load = Goal {
        measured: idle.zip(after).map(|(idle, after)| {
            let growth = (after as f64 / idle as f64 - 1.0) * 100.0;
            format!(
                "{:.1} MiB, idle {:.1} MiB ({growth:+.0} %)",
                f::mib(after),
                f::mib(idle)
            )
        }),
        met: idle
            .zip(after)
            .map(|(idle, after)| after as f64 <= idle as f64 * 1.1),
        ..goal(
            "RSS after the load, idle connections closed",
            &ours.name,
            "within 10 % of idle",
        )
    };
    let m = &report.meta;
    vec![
        under(
            "RSS idle".to_owned(),
            ours,
            &mib_pair(|t| t.rss_idle_kib),
            10.0,
        ),
        under(
            "RSS after one call".to_owned(),
            ours,
            &mib_pair(|t| t.rss_one_call_kib),
            10.0,
        ),
        after_load,
        under(
            format!("RSS with {} open streams", m.loaded_streams),
            ours,
            &mib_pair(|t| t.rss_loaded_kib),
            64.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Role;

    fn target() -> TargetReport {
        TargetReport {
            name: "http".to_owned(),
            role: Role::Ours,
            description: String::new(),
            version: None,
            unary: Vec::new(),
            unpaced: Vec::new(),
            streams: Vec::new(),
            max_streams_held: None,
            rss_idle_kib: None,
            rss_one_call_kib: None,
            rss_loaded_kib: None,
            rss_after_kib: None,
            rss_after_idle_kib: None,
            cold_start_ms: None,
            size_bytes: None,
        }
    }

    fn pair(ours: Option<f64>, nginx: Option<f64>) -> Pair {
        Pair {
            ours,
            nginx,
            unit: "µs",
            decimals: 0,
            signed: false,
        }
    }

    #[test]
    fn ratios_to_nginx_are_judged_only_when_nginx_ran() {
        let ours = target();
        let met = within("cpu".into(), &ours, &pair(Some(40.0), Some(20.0)), 2.0);
        assert_eq!((met.ratio, met.met), (Some(2.0), Some(true)));
        let missed = within("cpu".into(), &ours, &pair(Some(41.0), Some(20.0)), 2.0);
        assert_eq!(missed.met, Some(false));
        let alone = within("cpu".into(), &ours, &pair(Some(41.0), None), 2.0);
        assert_eq!((alone.ratio, alone.met), (None, None));
        assert_eq!(alone.measured.as_deref(), Some("41 µs"));
    }

    #[test]
    fn latency_is_not_judged_where_nginx_adds_nothing() {
        let ours = target();
        let judged = latency("p50".into(), &ours, &pair(Some(59.0), Some(40.0)).signed());
        assert_eq!(judged.met, Some(true));
        assert_eq!(judged.measured.as_deref(), Some("+59 µs (nginx +40 µs)"));
        let noise = latency("p99".into(), &ours, &pair(Some(10.0), Some(-5.0)));
        assert_eq!(noise.met, None);
    }

    #[test]
    fn absolute_limits_are_judged_without_nginx() {
        let ours = target();
        let chunk = under(
            "chunk".into(),
            &ours,
            &pair(Some(2.5), None).unit("µs", 2),
            3.0,
        );
        assert_eq!(chunk.met, Some(true));
        assert_eq!(chunk.limit, "≤ 3 µs");
    }
}

//! The Markdown report: the summary table (for the README), the peers as
//! ratios to ours, the performance targets, then every phase in detail.

use super::figures::{self as f, Pct, Series, added, value};
use super::goals;
use super::{Report, Role, TargetReport};
use std::fmt::Write as _;

fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

fn pair(a: Option<f64>, b: Option<f64>, decimals: usize) -> String {
    if a.is_none() && b.is_none() {
        return "–".to_owned();
    }
    format!("{} / {}", num(a, decimals), num(b, decimals))
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

type Row = (String, Box<dyn Fn(&TargetReport) -> String>);

fn rows(report: &Report) -> Vec<Row> {
    let m = &report.meta;
    let (cu, cs, cl) = (
        m.judged_unary_concurrency,
        m.judged_stream_concurrency,
        m.loaded_streams,
    );
    let r = report.clone();
    let r2 = report.clone();
    let r3 = report.clone();
    let top_unary = report
        .targets
        .first()
        .and_then(|t| t.unary.last())
        .map_or(cu, |u| u.concurrency);
    let top_streams = report
        .targets
        .first()
        .and_then(|t| t.streams.iter().map(|s| s.concurrency).find(|&c| c > cs))
        .unwrap_or(cs);
    let chunks = m.chunks;
    let (uc, un, ul) = (
        m.unpaced_concurrency,
        m.unpaced_chunks,
        m.unpaced_long_chunks,
    );
    let r4 = report.clone();
    let r5 = report.clone();
    let r6 = report.clone();
    vec![
        (
            format!("unary latency p50 / p99, c={cu} (µs)"),
            Box::new(move |t| {
                pair(
                    value(t, Series::Unary, cu, Pct::P50),
                    value(t, Series::Unary, cu, Pct::P99),
                    0,
                )
            }),
        ),
        (
            format!("added vs floor p50 / p99, unary c={cu} (µs)"),
            Box::new(move |t| {
                pair(
                    added(&r, t, Series::Unary, cu, Pct::P50),
                    added(&r, t, Series::Unary, cu, Pct::P99),
                    0,
                )
            }),
        ),
        (
            format!("unary throughput, c={top_unary} (req/s)"),
            Box::new(move |t| num(t.unary_at(top_unary).map(|u| u.throughput_rps), 0)),
        ),
        (
            format!("CPU per unary request, c={} (µs)", f::CPU_UNARY_CONCURRENCY),
            Box::new(|t| num(f::cpu_unary_us(t), 0)),
        ),
        (
            format!("time to first chunk p50 / p99, c={cs} (µs)"),
            Box::new(move |t| {
                pair(
                    value(t, Series::Ttfc, cs, Pct::P50),
                    value(t, Series::Ttfc, cs, Pct::P99),
                    0,
                )
            }),
        ),
        (
            format!("added time to first chunk p50 / p99, c={cs} (µs)"),
            Box::new(move |t| {
                pair(
                    added(&r2, t, Series::Ttfc, cs, Pct::P50),
                    added(&r2, t, Series::Ttfc, cs, Pct::P99),
                    0,
                )
            }),
        ),
        (
            format!("added time per chunk p50 / p99, c={cs} (µs)"),
            Box::new(move |t| {
                pair(
                    added(&r3, t, Series::Transit, cs, Pct::P50),
                    added(&r3, t, Series::Transit, cs, Pct::P99),
                    1,
                )
            }),
        ),
        (
            format!("CPU per {chunks}-chunk stream, c={top_streams} (ms)"),
            Box::new(move |t| {
                num(
                    t.streams_at(top_streams).and_then(|s| s.cpu_ms_per_stream),
                    2,
                )
            }),
        ),
        (
            format!("unpaced {un}-chunk stream, c=1, request to end p50 / p99 (µs)"),
            Box::new(move |t| {
                let whole = t.unpaced_at(1, un).and_then(|s| s.whole);
                pair(whole.map(|w| w.p50_us), whole.map(|w| w.p99_us), 0)
            }),
        ),
        (
            "added vs floor p50 / p99, unpaced stream c=1 (µs)".to_owned(),
            Box::new(move |t| {
                pair(
                    f::added_unpaced_whole(&r4, t, Pct::P50),
                    f::added_unpaced_whole(&r4, t, Pct::P99),
                    0,
                )
            }),
        ),
        (
            format!("CPU per unpaced {un}-chunk stream, c={uc} (µs)"),
            Box::new(move |t| num(f::cpu_unpaced_stream_us(&r5, t), 0)),
        ),
        (
            format!(
                "CPU per unpaced chunk, c={uc}: all in / one more chunk ({un} vs {ul} chunks, µs)"
            ),
            Box::new(move |t| {
                pair(
                    f::cpu_unpaced_chunk_all_in_us(&r6, t),
                    f::cpu_unpaced_chunk_us(&r6, t),
                    2,
                )
            }),
        ),
        (
            "concurrent streams held without a stall".to_owned(),
            Box::new(|t| match t.max_streams_held {
                Some(n) if t.streams.iter().any(|s| s.concurrency > n) => n.to_string(),
                Some(n) => format!("≥ {n}"),
                None => "none".to_owned(),
            }),
        ),
        (
            format!("RSS idle / {cl} streams / after / after idle connections close (MiB)"),
            Box::new(|t| {
                if t.rss_idle_kib.is_none() {
                    return "–".to_owned();
                }
                format!(
                    "{} / {} / {} / {}",
                    num(mib(t.rss_idle_kib), 1),
                    num(mib(t.rss_loaded_kib), 1),
                    num(mib(t.rss_after_kib), 1),
                    num(mib(t.rss_after_idle_kib), 1)
                )
            }),
        ),
        (
            "cold start to serving (ms)".to_owned(),
            Box::new(|t| num(t.cold_start_ms, 1)),
        ),
        (
            "binary / install size (MiB)".to_owned(),
            Box::new(|t| num(t.size_bytes.map(|b| b as f64 / 1048576.0), 1)),
        ),
    ]
}

fn summary(out: &mut String, report: &Report) {
    let targets = &report.targets;
    let _ = write!(out, "| |");
    for t in targets {
        let _ = write!(out, " {} |", t.name);
    }
    let _ = write!(out, "\n|---|");
    for _ in targets {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (label, cell) in rows(report) {
        let _ = write!(out, "| {label} |");
        for t in targets {
            let _ = write!(out, " {} |", cell(t));
        }
        out.push('\n');
    }
}

/// Each peer's figure divided by ours on each of our edges (× > 1: the
/// peer spends more); streams held: ours divided by the peer's.
fn ratios(out: &mut String, report: &Report) {
    let peers: Vec<&TargetReport> = report
        .targets
        .iter()
        .filter(|t| matches!(t.role, Role::Peer) || t.name == f::NGINX)
        .collect();
    let ours: Vec<&TargetReport> = ["http", goals::OURS]
        .iter()
        .filter_map(|n| report.target(n))
        .collect();
    if peers.is_empty() || ours.is_empty() {
        return;
    }
    let m = &report.meta;
    let (cu, cs) = (m.judged_unary_concurrency, m.judged_stream_concurrency);
    let top = m.loaded_streams.min(64);
    type Figure = (String, Box<dyn Fn(&TargetReport) -> Option<f64>>);
    let r = report.clone();
    let r2 = report.clone();
    let r3 = report.clone();
    let figures: Vec<Figure> = vec![
        (
            format!("added p99, unary c={cu}"),
            Box::new(move |t| added(&r, t, Series::Unary, cu, Pct::P99)),
        ),
        (
            format!("added time to first chunk p99, c={cs}"),
            Box::new(move |t| added(&r2, t, Series::Ttfc, cs, Pct::P99)),
        ),
        (
            "CPU per unary request, c=16".to_owned(),
            Box::new(|t| t.unary_at(16).and_then(|u| u.cpu_ms_per_request)),
        ),
        (
            format!("CPU per stream, c={top}"),
            Box::new(move |t| t.streams_at(top).and_then(|s| s.cpu_ms_per_stream)),
        ),
        (
            format!(
                "CPU per unpaced {}-chunk stream, c={}",
                m.unpaced_chunks, m.unpaced_concurrency
            ),
            Box::new(move |t| f::cpu_unpaced_stream_us(&r3, t)),
        ),
        (
            "RSS idle".to_owned(),
            Box::new(|t| t.rss_idle_kib.map(|k| k as f64)),
        ),
        (
            format!("RSS with {} streams", m.loaded_streams),
            Box::new(|t| t.rss_loaded_kib.map(|k| k as f64)),
        ),
        ("cold start".to_owned(), Box::new(|t| t.cold_start_ms)),
    ];
    let _ = write!(out, "| figure |");
    for p in &peers {
        for o in &ours {
            let _ = write!(out, " {} ÷ {} |", p.name, o.name);
        }
    }
    let _ = write!(out, "\n|---|");
    for _ in 0..peers.len() * ours.len() {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (label, figure) in figures {
        let _ = write!(out, "| {label} |");
        for p in &peers {
            for o in &ours {
                let ratio = figure(p).zip(figure(o)).map(|(p, o)| p / o);
                let cell = match ratio {
                    Some(r) if r.is_finite() && r > 0.0 => format!("×{r:.1}"),
                    _ => "–".to_owned(),
                };
                let _ = write!(out, " {cell} |");
            }
        }
        out.push('\n');
    }
    let _ = write!(out, "| streams held (ours ÷ peer) |");
    for p in &peers {
        for o in &ours {
            let cell = match (o.max_streams_held, p.max_streams_held) {
                (Some(o), Some(p)) if p > 0 => format!("×{:.1}", o as f64 / p as f64),
                (Some(_), _) => "peer held none".to_owned(),
                _ => "–".to_owned(),
            };
            let _ = write!(out, " {cell} |");
        }
    }
    out.push('\n');
}

fn goals_table(out: &mut String, report: &Report) {
    out.push_str(
        "| target | edge | limit | measured | ÷ nginx | met |\n|---|---|---|---:|---:|:---:|\n",
    );
    for g in &report.goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not judged",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {met} |",
            g.name,
            g.target,
            g.limit,
            g.measured.as_deref().unwrap_or("–"),
            g.ratio
                .map_or_else(|| "–".to_owned(), |r| format!("×{r:.2}")),
        );
    }
}

fn details(out: &mut String, report: &Report) {
    out.push_str(
        "\n### Unary calls\n\n| target | c | requests | errors | req/s | p50 µs | p90 µs | p99 µs | max µs | CPU µs/req |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in &report.targets {
        for u in &t.unary {
            let l = u.latency;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
                t.name,
                u.concurrency,
                u.requests,
                u.errors,
                u.throughput_rps,
                num(l.map(|l| l.p50_us), 0),
                num(l.map(|l| l.p90_us), 0),
                num(l.map(|l| l.p99_us), 0),
                num(l.map(|l| l.max_us), 0),
                num(u.cpu_ms_per_request.map(|ms| ms * 1e3), 0),
            );
        }
    }
    unpaced_details(out, report);
    out.push_str(
        "\n### Paced streams\n\n| target | c | streams | complete | stalled | TTFC p50 / p99 µs | per chunk p50 / p99 µs | gap p99 / max ms | chunks/s | CPU ms/stream | RSS peak MiB | machine busy |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in &report.targets {
        for s in &t.streams {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                t.name,
                s.concurrency,
                s.streams,
                s.completed,
                s.stalled,
                pair(s.ttfc.map(|h| h.p50_us), s.ttfc.map(|h| h.p99_us), 0),
                pair(s.transit.map(|h| h.p50_us), s.transit.map(|h| h.p99_us), 0),
                pair(
                    s.gap.map(|h| h.p99_us / 1e3),
                    s.gap.map(|h| h.max_us / 1e3),
                    1
                ),
                s.chunks_per_second,
                num(s.cpu_ms_per_stream, 2),
                num(mib(s.rss_peak_kib), 1),
                s.machine_busy_pct
                    .map_or_else(|| "–".to_owned(), |p| format!("{p:.0} %")),
            );
        }
    }
    let errors: Vec<String> = report
        .targets
        .iter()
        .flat_map(|t| {
            let unary = t.unary.iter().filter_map(|u| u.first_error.as_ref());
            let streams = t.streams.iter().filter_map(|s| s.first_error.as_ref());
            unary
                .chain(streams)
                .take(1)
                .map(|e| format!("- {}: {}", t.name, e.chars().take(200).collect::<String>()))
                .collect::<Vec<_>>()
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("\nFirst error seen per target:\n\n");
        out.push_str(&errors.join("\n"));
        out.push('\n');
    }
}

fn unpaced_details(out: &mut String, report: &Report) {
    out.push_str(
        "\n### Unpaced streams\n\n| target | c | chunks | streams | complete | TTFC p50 / p99 µs | request to end p50 / p99 µs | chunks/s | CPU µs/stream | CPU µs/chunk | machine busy |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in &report.targets {
        for s in &t.unpaced {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                t.name,
                s.concurrency,
                s.chunks_per_stream,
                s.streams,
                s.completed,
                pair(s.ttfc.map(|h| h.p50_us), s.ttfc.map(|h| h.p99_us), 0),
                pair(s.whole.map(|h| h.p50_us), s.whole.map(|h| h.p99_us), 0),
                s.chunks_per_second,
                num(s.cpu_ms_per_stream.map(|ms| ms * 1e3), 0),
                num(s.cpu_us_per_chunk, 2),
                s.machine_busy_pct
                    .map_or_else(|| "–".to_owned(), |p| format!("{p:.0} %")),
            );
        }
    }
}

pub fn render(report: &Report) -> String {
    let m = &report.meta;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmark report ({})\n\n{} · commit {} · {} build · {} CPUs · {} · {} chunks paced {} ms · unpaced {} and {} chunks, {} events per write · {:.0} s\n",
        m.mode,
        m.date,
        m.commit,
        m.build,
        m.cpus,
        m.kernel,
        m.chunks,
        m.pacing_ms,
        m.unpaced_chunks,
        m.unpaced_long_chunks,
        m.unpaced_events_per_write,
        m.seconds
    );
    for t in &report.targets {
        let version = t
            .version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        let _ = writeln!(out, "- **{}**{version}: {}", t.name, t.description);
    }
    out.push_str("\n## Summary\n\n");
    summary(&mut out, report);
    out.push_str("\n## Targets\n\n");
    goals_table(&mut out, report);
    let mut ratio_table = String::new();
    ratios(&mut ratio_table, report);
    if !ratio_table.is_empty() {
        out.push_str("\n## Peers as ratios to ours\n\n");
        out.push_str(&ratio_table);
    }
    out.push_str("\n## Every phase\n");
    details(&mut out, report);
    out
}

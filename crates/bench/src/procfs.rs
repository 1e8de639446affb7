//! What a process tree costs, read from /proc: CPU time (utime + stime of
//! every process in the tree) and resident memory. A tree, because nginx
//! works in a child of its master and LiteLLM may start workers.

use std::collections::HashMap;
use std::time::Duration;

/// USER_HZ: the unit of utime/stime in /proc/PID/stat. It is 100 on every
/// Linux ABI Rust targets, and reading it via sysconf would need `unsafe`.
const TICKS_PER_SECOND: u64 = 100;

/// The processes of one service: its root and all descendants.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    pub root: u32,
}

/// One process as /proc/PID/stat tells it.
struct Stat {
    ppid: u32,
    ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces: fields start after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(1)?).ok()?,
        ticks: field(11)? + field(12)?,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Tree {
    /// The root and its descendants alive now.
    pub fn pids(&self) -> Vec<u32> {
        let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some(stat) = stat(pid) {
                    parents.entry(stat.ppid).or_default().push(pid);
                }
            }
        }
        let mut tree = vec![self.root];
        let mut next = 0;
        while next < tree.len() {
            if let Some(children) = parents.get(&tree[next]) {
                tree.extend(children);
            }
            next += 1;
        }
        tree
    }

    /// CPU time the live processes of the tree have used so far.
    pub fn cpu(&self) -> Duration {
        let ticks: u64 = self
            .pids()
            .into_iter()
            .filter_map(stat)
            .map(|s| s.ticks)
            .sum();
        Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
    }

    /// Resident memory of the tree, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids().into_iter().map(rss_kib).sum()
    }

    pub fn alive(&self) -> bool {
        stat(self.root).is_some()
    }
}

/// Busy and total time of the whole machine so far (all CPUs, in ticks),
/// from the first line of /proc/stat: idle and iowait are the idle part.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// How busy the machine was between two [`machine_ticks`] readings, in %.
pub fn busy_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((busy0, total0), (busy1, total1)) = before.zip(after)?;
    let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
    Some((busy1.saturating_sub(busy0)) as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = Tree {
            root: std::process::id(),
        };
        assert!(me.alive());
        assert!(me.rss_kib() > 0);
        assert!(me.pids().contains(&std::process::id()));
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total);
    }
}

//! What a child process holds and does, from /proc: its resident memory,
//! and whether it has gone quiet (all its work blocked on its peers).

use std::time::{Duration, Instant};

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// VmHWM of `pid`: the most it has been resident, in bytes.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a memory line");
    kib * 1024
}

/// utime + stime of `pid`, in clock ticks (USER_HZ, 100 a second).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    // The command name (in parentheses) may hold spaces: fields start after it.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 1..]
        .split_whitespace()
        .collect();
    let field = |i: usize| fields[i].parse::<u64>().expect("a number");
    field(11) + field(12)
}

/// Waits until `progress` (a count of work done elsewhere, e.g. frames the
/// upstream was asked for) and the process's CPU time have both stood
/// still for `quiet`: every stream is then blocked where it holds the
/// most it can. Panics after `limit`.
pub async fn wait_until_quiet(
    pid: u32,
    progress: impl Fn() -> usize,
    quiet: Duration,
    limit: Duration,
) {
    let began = Instant::now();
    let mut seen = (progress(), cpu_ticks(pid));
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (progress(), cpu_ticks(pid));
        // One tick of slack: the runtime's timers and pings.
        if now.0 != seen.0 || now.1 > seen.1 + 1 {
            seen = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
        assert!(
            began.elapsed() < limit,
            "the sidecar did not settle within {limit:?}"
        );
    }
}

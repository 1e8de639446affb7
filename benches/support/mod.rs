//! What the micro-benchmarks share: timing a closure per call.

use std::time::Instant;

/// Nanoseconds per call of `work` over `rounds` calls, best of three runs
/// (the least disturbed by whatever else the machine is doing).
pub fn per_call(rounds: u32, mut work: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..rounds {
                work();
            }
            started.elapsed().as_nanos() as f64 / f64::from(rounds)
        })
        .fold(f64::INFINITY, f64::min)
}

/// `cargo test` runs bench targets without `--bench`: they do nothing then.
pub fn asked_to_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

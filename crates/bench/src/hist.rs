//! Latency histograms: HdrHistogram in nanoseconds (3 significant digits),
//! so a phase's memory stays fixed however many samples it takes.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Up to 10 minutes: longer than any phase, so no sample is clamped.
const HIGHEST_NS: u64 = 600_000_000_000;

#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, value: Duration) {
        self.record_ns(u64::try_from(value.as_nanos()).unwrap_or(HIGHEST_NS));
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Adds `other`'s samples to these.
    pub fn add(&mut self, other: &Hist) {
        // Same bounds on both sides: it can only fail by overflowing a
        // count, which no phase comes near.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Some(Summary {
            count: self.0.len(),
            p50_us: us(self.0.value_at_quantile(0.50)),
            p90_us: us(self.0.value_at_quantile(0.90)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            max_us: us(self.0.max()),
            mean_us: self.0.mean() / 1e3,
        })
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut hist = Hist::default();
        for us in 1..=100 {
            hist.record(Duration::from_micros(us));
        }
        let summary = hist.summary().unwrap();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_us - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_us - 99.0).abs() < 0.1, "{summary:?}");
        assert!(Hist::default().summary().is_none());
    }
}

//! A latency histogram cheap enough for every store call: atomic counts in buckets that grow
//! by a quarter-octave (each bound 2^(1/4) ≈ 1.19 times the one before, from 16 µs), so a
//! quantile read from it is within 19% of the true one. Recording is one atomic add; reading
//! walks 96 counters.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Buckets: 16 µs × 2^(i/4) for i in 0..96 reaches about 2.2 hours; slower lands in the last.
const BUCKETS: usize = 96;
/// The first bucket's upper bound, in microseconds.
const FIRST_US: f64 = 16.0;

/// Counts of durations by bucket.
#[derive(Debug)]
pub struct Latency {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The upper bound of bucket `i`.
fn bound(i: usize) -> Duration {
    Duration::from_secs_f64(FIRST_US * 2f64.powf(i as f64 / 4.0) / 1e6)
}

impl Latency {
    /// Counts one call that took `took`.
    pub fn record(&self, took: Duration) {
        let us = took.as_secs_f64() * 1e6;
        let i = if us <= FIRST_US {
            0
        } else {
            ((us / FIRST_US).log2() * 4.0).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0 < q ≤ 1) as the upper bound of its bucket; `None` with no calls.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bound(i));
            }
        }
        Some(bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_within_a_bucket_of_the_truth() {
        let latency = Latency::default();
        assert_eq!(latency.quantile(0.5), None);
        // 98 fast calls of 1 ms, 2 slow ones of 100 ms.
        for _ in 0..98 {
            latency.record(Duration::from_millis(1));
        }
        for _ in 0..2 {
            latency.record(Duration::from_millis(100));
        }
        assert_eq!(latency.count(), 100);
        let p50 = latency.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_millis(1) && p50 < Duration::from_micros(1190),
            "{p50:?}"
        );
        let p99 = latency.quantile(0.99).unwrap();
        assert!(
            p99 >= Duration::from_millis(100) && p99 < Duration::from_millis(119),
            "{p99:?}"
        );
        // Extremes land in the end buckets rather than out of range.
        latency.record(Duration::ZERO);
        latency.record(Duration::from_secs(100_000));
        assert_eq!(latency.count(), 102);
    }
}

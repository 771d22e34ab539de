//! A histogram with fixed bucket bounds, kept in plain cells on the event loop: observing is a
//! short scan of the bounds and two additions, with no allocation, lock or atomic. Only a scrape
//! turns it into Prometheus buckets (`snapshot`).

use std::cell::Cell;

/// Request and fdatasync latencies, in nanoseconds: 25 µs to 10 s, about 2.5× apart, so the
/// fast path (tens of µs to a few ms) gets most of the resolution.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Records per flush: powers of two up to 8,192 (a batch holds at most a few thousand).
pub const BATCH_RECORDS_BOUNDS: &[u64] = &[
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
];

const _: () = assert!(is_ascending(LATENCY_BOUNDS_NS) && is_ascending(BATCH_RECORDS_BOUNDS));

const fn is_ascending(bounds: &[u64]) -> bool {
    let mut i = 1;
    while i < bounds.len() {
        if bounds[i] <= bounds[i - 1] {
            return false;
        }
        i += 1;
    }
    true
}

/// Counts of observed values by bucket (`value <= bound`, the last bucket for anything above
/// every bound), their sum and their count, in the unit observed.
pub struct Histogram {
    bounds: &'static [u64],
    /// One more than the bounds: the last counts values above every bound (`+Inf`).
    buckets: Box<[Cell<u64>]>,
    sum: Cell<u64>,
}

/// A histogram as a scrape reports it: each bucket's own count (not cumulative) with its upper
/// bound scaled to the exposed unit, and the sum in that unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        let cell = &self.buckets[bucket];
        cell.set(cell.get() + 1);
        self.sum.set(self.sum.get().saturating_add(value));
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Cell::get).sum()
    }

    /// The buckets with bounds multiplied by `scale` (1e-9 to report nanoseconds as seconds).
    pub fn snapshot(&self, scale: f64) -> HistogramSnapshot {
        let buckets = self
            .bounds
            .iter()
            .map(|&bound| bound as f64 * scale)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(Cell::get))
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum.get() as f64 * scale,
            count: self.count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        let histogram = Histogram::new(&[10, 100]);
        for value in [0, 10, 11, 100, 101, u64::MAX] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot(1.0);
        assert_eq!(
            snapshot.buckets,
            vec![(10.0, 2), (100.0, 2), (f64::INFINITY, 2)]
        );
        assert_eq!(snapshot.count, 6);
        // The sum saturates rather than wrapping.
        assert_eq!(snapshot.sum, u64::MAX as f64);
    }

    #[test]
    fn a_scale_turns_nanoseconds_into_seconds() {
        let histogram = Histogram::new(LATENCY_BOUNDS_NS);
        histogram.observe(1_500_000);
        let snapshot = histogram.snapshot(1e-9);
        assert_eq!(snapshot.buckets[6], (0.0025, 1));
        assert!((snapshot.sum - 0.0015).abs() < 1e-12);
    }
}

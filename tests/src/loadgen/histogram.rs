//! A latency histogram in microseconds with HDR-style buckets: exact below
//! 2048 µs, and within 1/1024 (0.1 %) of the true value above.
//!
//! Each client records into its own histogram (no lock, no atomics on the
//! hot path) and the runner merges them at the end by adding bucket counts,
//! which is exact: merging then asking for p99 gives the same answer as one
//! histogram fed every sample.
//!
//! Buckets: values below 2048 have one bucket each. Above, a value with its
//! highest set bit at position `b` falls in one of 1024 equal buckets
//! spanning `[2^b, 2^(b+1))`, so the bucket width is `2^(b-10)`. Quantiles
//! report the highest value of the bucket (as HdrHistogram does), capped at
//! the largest value actually recorded, so `max` is exact. Storage grows
//! only up to the largest bucket used (about 90 kB for latencies up to a
//! second); values above [`MAX_VALUE`] are recorded as `MAX_VALUE`.

/// Values below this get a bucket each.
const EXACT_BELOW: u64 = 2048;
/// log2 of the buckets per power of two above [`EXACT_BELOW`].
const SUB_BITS: u32 = 10;
/// Largest value kept apart (about 12.7 days in µs).
pub const MAX_VALUE: u64 = (1 << 40) - 1;

/// Counts of values (µs) per bucket, plus exact count, min, max and sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Count per bucket; grows to the highest bucket used.
    counts: Vec<u64>,
    /// Number of values recorded.
    total: u64,
    /// Smallest value recorded.
    min: u64,
    /// Largest value recorded (exact; quantiles never exceed it).
    max: u64,
    /// Sum of all values, for the mean.
    sum: u128,
}

fn bucket_of(value: u64) -> usize {
    if value < EXACT_BELOW {
        return value as usize;
    }
    let top_bit = 63 - value.leading_zeros();
    let shift = top_bit - SUB_BITS;
    let sub = (value >> shift) - (1 << SUB_BITS);
    (EXACT_BELOW + u64::from(shift - 1) * (1 << SUB_BITS) + sub) as usize
}

/// The highest value that falls into `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < EXACT_BELOW {
        return bucket;
    }
    let above = bucket - EXACT_BELOW;
    let shift = (above >> SUB_BITS) + 1;
    let sub = above & ((1 << SUB_BITS) - 1);
    let low = ((1 << SUB_BITS) + sub) << shift;
    low + (1 << shift) - 1
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one value (µs).
    pub fn record(&mut self, value: u64) {
        let value = value.min(MAX_VALUE);
        let bucket = bucket_of(value);
        if bucket >= self.counts.len() {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        if self.total == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.total += 1;
        self.sum += u128::from(value);
    }

    /// Adds every value of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.total == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn min(&self) -> u64 {
        self.min
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum as f64 / self.total as f64
    }

    /// The value at quantile `q` (0.0–1.0): the smallest recorded bucket
    /// such that at least `q` of all values are at or below it. 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(bucket).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut previous_high = None;
        for bucket in 0..bucket_of(MAX_VALUE) + 1 {
            let high = bucket_high(bucket);
            if let Some(p) = previous_high {
                assert_eq!(bucket_of(p + 1), bucket, "gap before bucket {bucket}");
            }
            assert_eq!(bucket_of(high), bucket);
            previous_high = Some(high);
        }
        for value in [2047u64, 2048, 2049, 4095, 4096, 1_000_000, 123_456_789] {
            let high = bucket_high(bucket_of(value));
            assert!(
                high >= value && (high - value) as f64 <= value as f64 / 1024.0,
                "{value}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.value_at_quantile(0.5), 500);
        assert_eq!(h.value_at_quantile(0.99), 990);
        assert_eq!(h.value_at_quantile(1.0), 1000);
        assert_eq!(h.value_at_quantile(0.0), 1);
        assert_eq!((h.min(), h.max()), (1, 1000));
        assert!((h.mean() - 500.5).abs() < 1e-9);
        assert_eq!(Histogram::new().value_at_quantile(0.5), 0);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut all = Histogram::new();
        let mut parts = vec![Histogram::new(), Histogram::new(), Histogram::new()];
        for i in 0..30_000u64 {
            let v = (i * 7919) % 250_000 + 3;
            all.record(v);
            parts[(i % 3) as usize].record(v);
        }
        let mut merged = Histogram::new();
        for p in &parts {
            merged.merge(p);
        }
        merged.merge(&Histogram::new());
        assert_eq!(merged, all);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), all.value_at_quantile(q));
        }
        assert_eq!(merged.max(), all.max());
    }

    #[test]
    fn huge_values_are_capped_and_max_is_exact() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.max(), MAX_VALUE);
        let mut h = Histogram::new();
        h.record(1_000_001);
        assert_eq!(h.value_at_quantile(0.5), 1_000_001);
    }
}

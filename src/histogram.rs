//! A compact log-linear histogram of millisecond values with exact min and max.
//!
//! Values below 64 ms are counted exactly; above, each power of two is split into 32 buckets,
//! so a quantile is within about 3 % of the true value. Buckets are allocated only up to the
//! largest value seen, so an unused histogram costs no heap at all.

use std::time::Duration;

const EXACT: u64 = 64;
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// Counts of millisecond values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_ms: u64,
    min_ms: u64,
    max_ms: u64,
}

/// min / p50 / p99 / max in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (EXACT + u64::from(exp - 6) * SUB + sub) as usize
}

/// The smallest value that lands in bucket `i`.
fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let exp = (i - EXACT) / SUB + 6;
    let sub = (i - EXACT) % SUB;
    // The bucket after the last one starts past u64::MAX: saturate instead of wrapping.
    let bound = u128::from(SUB + sub) << (exp - u64::from(SUB_BITS));
    u64::try_from(bound).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let v = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let i = index(v);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += 1;
        if self.count == 0 || v < self.min_ms {
            self.min_ms = v;
        }
        self.max_ms = self.max_ms.max(v);
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(v);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value below which a fraction `q` (0..=1) of the samples lie, within a bucket's width,
    /// clamped to the exact min and max. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count() == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let lo = lower_bound(i);
                let hi = lower_bound(i + 1).saturating_sub(1).max(lo);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min_ms, self.max_ms));
            }
        }
        Some(self.max_ms)
    }

    pub fn summary(&self) -> Option<Summary> {
        Some(Summary {
            min: self.min_ms,
            p50: self.quantile(0.5)?,
            p99: self.quantile(0.99)?,
            max: self.max_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn empty_histogram_has_no_summary_and_no_heap() {
        let h = Histogram::default();
        assert_eq!(h.summary(), None);
        assert_eq!(h.buckets.capacity(), 0);
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for i in 0..1800 {
            assert!(lower_bound(i) < lower_bound(i + 1), "bucket {i}");
            assert_eq!(index(lower_bound(i)), i);
            assert_eq!(index(lower_bound(i + 1) - 1), i);
        }
    }

    #[test]
    fn quantiles_within_three_percent() {
        let mut h = Histogram::default();
        for v in 1..=10_000 {
            h.record(ms(v));
        }
        let s = h.summary().unwrap();
        assert_eq!((s.min, s.max), (1, 10_000));
        assert!((4850..=5150).contains(&s.p50), "{s:?}");
        assert!((9600..=10_000).contains(&s.p99), "{s:?}");
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn single_value_is_exact() {
        let mut h = Histogram::default();
        h.record(ms(5034));
        let s = h.summary().unwrap();
        assert_eq!(
            s,
            Summary {
                min: 5034,
                p50: 5034,
                p99: 5034,
                max: 5034
            }
        );
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut h = Histogram::default();
        h.record(Duration::MAX);
        h.record(ms(1));
        assert_eq!(h.summary().unwrap().max, u64::MAX);
    }
}

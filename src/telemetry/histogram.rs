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

const fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    // `as` casts, not `From`, so that this can be a `const fn`; both are lossless here.
    (EXACT + (exp - 6) as u64 * SUB + sub) as usize
}

/// The smallest value that lands in bucket `i`.
const fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let exp = (i - EXACT) / SUB + 6;
    let sub = (i - EXACT) % SUB;
    // The bucket after the last one starts past u64::MAX: saturate instead of wrapping.
    let bound = ((SUB + sub) as u128) << (exp - SUB_BITS as u64);
    if bound > u64::MAX as u128 {
        u64::MAX
    } else {
        bound as u64
    }
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

    /// The sum of the recorded values, in whole milliseconds (saturating).
    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// How many recorded values are below `ms`. Exact when `ms` is a bucket boundary (see
    /// [`is_boundary`]); otherwise the bucket holding `ms` is left out, an undercount.
    ///
    /// "Below" rather than "at most" because values are durations cut to whole milliseconds:
    /// a recorded value is below `ms` exactly when the true duration was, so this is a
    /// Prometheus `le` bucket of `ms` (apart from durations of exactly `ms`, to the nanosecond).
    pub fn count_below(&self, ms: u64) -> u64 {
        self.buckets.iter().take(index(ms)).sum()
    }
}

/// Whether a bucket starts at `ms`, so that [`Histogram::count_below`] is exact there: every
/// value below 64, and above that every value with at most six significant bits (100, 200,
/// 400, 800, 1600, ... are; 1000 is not).
pub const fn is_boundary(ms: u64) -> bool {
    lower_bound(index(ms)) == ms
}

impl Histogram {
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
    fn boundaries_have_at_most_six_significant_bits() {
        for ms in [0, 1, 63, 64, 66, 100, 200, 400, 800, 1600, 3200, 102_400] {
            assert!(is_boundary(ms), "{ms}");
        }
        for ms in [65, 250, 500, 1000, 1001, 5000, 60_000] {
            assert!(!is_boundary(ms), "{ms}");
        }
    }

    #[test]
    fn count_below_a_boundary_is_exact() {
        let mut h = Histogram::default();
        for v in [0, 5, 99, 100, 101, 150, 199, 200, 1599, 1600, 1_000_000] {
            h.record(ms(v));
        }
        assert_eq!(h.count_below(0), 0);
        assert_eq!(h.count_below(6), 2);
        assert_eq!(h.count_below(100), 3);
        assert_eq!(h.count_below(200), 7);
        assert_eq!(h.count_below(1600), 9);
        assert_eq!(h.count_below(u64::MAX), 11);
        assert_eq!(h.sum_ms(), 1_004_053);
        // Every value, and every boundary against a brute-force count.
        let values: Vec<u64> = (0..5000).map(|i| i * 7 % 3001).collect();
        let mut h = Histogram::default();
        for &v in &values {
            h.record(ms(v));
        }
        for b in (0..4000).filter(|&b| is_boundary(b)) {
            let want = values.iter().filter(|&&v| v < b).count() as u64;
            assert_eq!(h.count_below(b), want, "below {b}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut h = Histogram::default();
        h.record(Duration::MAX);
        h.record(ms(1));
        assert_eq!(h.summary().unwrap().max, u64::MAX);
    }
}

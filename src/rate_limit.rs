//! Keeping floods out of the log. [`RateLimited`]: a warning logged at most once per period,
//! with the count of occurrences it stands for (descriptor exhaustion, connection limits,
//! accept errors, failed authentication). [`LineBudget`]: lines of one kind (reap lines)
//! written up to a number per second; past it they are counted by key and reported in one
//! line a second instead.
//!
//! Time is a parameter: the caller passes the loop's `now`.

use std::time::{Duration, Instant};

/// At most one line of each kind per this period.
pub const WARN_EVERY: Duration = Duration::from_secs(1);

/// Occurrences of one kind of event, and when a line about them was last logged.
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// Records one occurrence. `Some(n)` when a line should be logged now, `n` being the
    /// occurrences it covers (this one and those suppressed since the last line).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.suppressed += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Up to `per_second` lines per one-second window; the rest are counted by key.
#[derive(Debug)]
pub struct LineBudget {
    per_second: u64,
    window: Option<Instant>,
    used: u64,
    suppressed: Vec<u64>,
    last_report: Option<Instant>,
}

impl LineBudget {
    /// A budget of `per_second` lines, with `keys` kinds of line to count when over it.
    pub fn new(per_second: u64, keys: usize) -> LineBudget {
        LineBudget {
            per_second,
            window: None,
            used: 0,
            suppressed: vec![0; keys],
            last_report: None,
        }
    }

    /// Changes the budget (a reload); what was counted so far is still reported.
    pub fn set_per_second(&mut self, per_second: u64) {
        self.per_second = per_second;
    }

    /// Whether a line of kind `key` may be written now; if not, it is counted.
    pub fn admit(&mut self, key: usize, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= WARN_EVERY)
        {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            return true;
        }
        if let Some(n) = self.suppressed.get_mut(key) {
            *n += 1;
        }
        false
    }

    /// When a report of left-out lines is due (none is pending: `None`).
    pub fn report_due(&self) -> Option<Instant> {
        if self.suppressed.iter().all(|&n| n == 0) {
            return None;
        }
        let first = self.window.unwrap_or_else(Instant::now);
        Some(self.last_report.map_or(first, |t| t + WARN_EVERY))
    }

    /// The counts of left-out lines by key (non-zero ones), once their report is due.
    pub fn take_report(&mut self, now: Instant) -> Option<Vec<(usize, u64)>> {
        if self.report_due().is_none_or(|due| due > now) {
            return None;
        }
        self.last_report = Some(now);
        let counts = self
            .suppressed
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k, std::mem::take(n)))
            .collect();
        Some(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_budget_counts_what_it_leaves_out_and_reports_once_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = LineBudget::new(2, 3);
        assert!(b.admit(0, t0) && b.admit(1, ms(1)));
        assert_eq!(b.report_due(), None);
        assert!(!b.admit(1, ms(2)) && !b.admit(2, ms(3)) && !b.admit(1, ms(4)));
        // The first report is due at once; later ones a second after the previous one.
        assert_eq!(b.take_report(ms(5)), Some(vec![(1, 2), (2, 1)]));
        assert_eq!(b.take_report(ms(6)), None);
        assert!(!b.admit(0, ms(500)));
        assert_eq!(b.report_due(), Some(ms(1005)));
        assert_eq!(b.take_report(ms(1000)), None);
        // A new window: lines are written again.
        assert!(b.admit(2, ms(1001)));
        assert_eq!(b.take_report(ms(1005)), Some(vec![(0, 1)]));
        assert_eq!(b.report_due(), None);
    }

    #[test]
    fn counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut r = RateLimited::default();
        assert_eq!(r.hit(t0), Some(1));
        assert_eq!(r.hit(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.hit(t0 + Duration::from_millis(500)), None);
        assert_eq!(r.hit(t0 + Duration::from_millis(1001)), Some(3));
        assert_eq!(r.hit(t0 + Duration::from_millis(1002)), None);
    }
}

//! A warning that is logged at most once per period, with the count of occurrences it stands
//! for. Used wherever a peer (or a flood of them) could otherwise fill the log: descriptor
//! exhaustion, connection limits, accept errors, failed authentication.
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

#[cfg(test)]
mod tests {
    use super::*;

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

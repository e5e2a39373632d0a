//! Accepts and reaps (by reason) per minute over the last hour, for the status page's charts
//! and its accept and reap rates (docs/status.md).
//!
//! A fixed ring of [`MINUTES`] slots, one per minute, so memory is bounded whatever the
//! traffic: 60 × (8 + 4 × (1 + reasons)) bytes, about 4 KiB. A minute is counted from the
//! first event the ring saw (minute 0 starts there), not from the wall clock: the loop's
//! monotonic `now` is the only clock, and a jump of the wall clock cannot fold two minutes
//! together. A slot remembers which minute it holds, so a slot left from an hour ago (or
//! more, after a quiet spell) reads as zero instead of stale counts.
//!
//! Time is a parameter (`now`), so the arithmetic is unit-tested without sleeping.

use std::time::{Duration, Instant};

use crate::session::reap::ReapReason;

/// Minutes kept.
pub const MINUTES: usize = 60;
/// One slot's span.
pub const MINUTE: Duration = Duration::from_secs(60);

/// One minute's counts.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The minute (since the ring's start) these counts are of.
    minute: u64,
    accepts: u32,
    reaps: [u32; ReapReason::ALL.len()],
}

/// The ring; see the module docs.
#[derive(Debug, Clone)]
pub struct LastHour {
    /// When minute 0 began: the first event's `now`.
    start: Option<Instant>,
    slots: [Slot; MINUTES],
}

impl Default for LastHour {
    fn default() -> LastHour {
        LastHour {
            start: None,
            slots: [Slot::default(); MINUTES],
        }
    }
}

/// What the ring holds at one moment, oldest minute first (index `MINUTES - 1` is the minute
/// `now` falls in, still filling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minutes {
    pub accepts: [u32; MINUTES],
    /// By [`ReapReason::index`].
    pub reaps: [[u32; MINUTES]; ReapReason::ALL.len()],
    /// How far into the current minute `now` is.
    pub into_current: Duration,
    /// Since minute 0 began (the ring's first event).
    pub since_start: Duration,
}

impl LastHour {
    /// The minute `now` falls in, starting the ring if it had not started.
    fn minute(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        now.saturating_duration_since(start).as_secs() / MINUTE.as_secs()
    }

    /// The slot for `now`'s minute, emptied if it held an older one.
    fn slot(&mut self, now: Instant) -> &mut Slot {
        let minute = self.minute(now);
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.minute != minute {
            *slot = Slot {
                minute,
                ..Slot::default()
            };
        }
        slot
    }

    pub fn on_accept(&mut self, now: Instant) {
        let slot = self.slot(now);
        slot.accepts = slot.accepts.saturating_add(1);
    }

    /// Takes back an accept counted at `at` (a connection refused once its PROXY header gave
    /// its real address), if that minute is still in the ring.
    pub fn undo_accept(&mut self, at: Instant) {
        let Some(start) = self.start else {
            return;
        };
        let minute = at.saturating_duration_since(start).as_secs() / MINUTE.as_secs();
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.minute == minute {
            slot.accepts = slot.accepts.saturating_sub(1);
        }
    }

    pub fn on_reap(&mut self, reason: ReapReason, now: Instant) {
        let slot = self.slot(now);
        let n = &mut slot.reaps[reason.index()];
        *n = n.saturating_add(1);
    }

    /// The last hour as of `now`, oldest minute first.
    pub fn minutes(&self, now: Instant) -> Minutes {
        let mut out = Minutes {
            accepts: [0; MINUTES],
            reaps: [[0; MINUTES]; ReapReason::ALL.len()],
            into_current: Duration::ZERO,
            since_start: Duration::ZERO,
        };
        let Some(start) = self.start else {
            return out;
        };
        let since = now.saturating_duration_since(start);
        let current = since.as_secs() / MINUTE.as_secs();
        out.into_current = since.saturating_sub(MINUTE * current as u32);
        out.since_start = since;
        for (i, back) in (0..MINUTES as u64).rev().enumerate() {
            let Some(minute) = current.checked_sub(back) else {
                continue;
            };
            let slot = &self.slots[(minute % MINUTES as u64) as usize];
            if slot.minute != minute {
                continue;
            }
            out.accepts[i] = slot.accepts;
            for (r, n) in slot.reaps.iter().enumerate() {
                out.reaps[r][i] = *n;
            }
        }
        out
    }
}

impl Minutes {
    /// The window the rates average over: the previous full minute and the current one so
    /// far, or the time since the ring started if that is shorter (so the first minute's rate
    /// is not diluted by a minute that never was), and never less than one second (a rate is
    /// never a division by zero).
    pub fn rate_window(&self) -> Duration {
        (MINUTE + self.into_current)
            .min(self.since_start)
            .max(Duration::from_secs(1))
    }

    /// Per second over [`Minutes::rate_window`], from a per-minute series.
    pub fn rate(&self, series: &[u32; MINUTES]) -> f64 {
        let n = u64::from(series[MINUTES - 1]) + u64::from(series[MINUTES - 2]);
        n as f64 / self.rate_window().as_secs_f64()
    }

    /// All reaps per minute, whatever the reason.
    pub fn all_reaps(&self) -> [u32; MINUTES] {
        let mut out = [0u32; MINUTES];
        for series in &self.reaps {
            for (o, n) in out.iter_mut().zip(series) {
                *o = o.saturating_add(*n);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KA: ReapReason = ReapReason::KeepaliveTimeout;

    #[test]
    fn counts_land_in_their_minute_oldest_first() {
        let t0 = Instant::now();
        let mut h = LastHour::default();
        h.on_accept(t0);
        h.on_accept(t0 + Duration::from_secs(59));
        h.on_reap(KA, t0 + Duration::from_secs(61));
        h.on_reap(KA, t0 + Duration::from_secs(125));
        let m = h.minutes(t0 + Duration::from_secs(130));
        assert_eq!(m.accepts[MINUTES - 3], 2, "minute 0, two minutes back");
        assert_eq!(m.reaps[KA.index()][MINUTES - 2], 1, "minute 1");
        assert_eq!(m.reaps[KA.index()][MINUTES - 1], 1, "minute 2, current");
        assert_eq!(m.into_current, Duration::from_secs(10));
        assert_eq!(m.all_reaps()[MINUTES - 1], 1);
        // Two reaps over the previous minute and 10 s of this one.
        assert!((m.rate(&m.reaps[KA.index()]) - 2.0 / 70.0).abs() < 1e-9);
    }

    #[test]
    fn an_hour_later_old_slots_read_as_zero() {
        let t0 = Instant::now();
        let mut h = LastHour::default();
        for s in 0..3600 {
            h.on_accept(t0 + Duration::from_secs(s));
        }
        let m = h.minutes(t0 + Duration::from_secs(3599));
        assert!(m.accepts.iter().all(|&n| n == 60), "{:?}", m.accepts);
        // Ten minutes of silence: the ten newest minutes are empty, the rest shifted back.
        let m = h.minutes(t0 + Duration::from_secs(3600 + 9 * 60));
        assert_eq!(m.accepts[..50], [60; 50]);
        assert_eq!(m.accepts[50..], [0; 10]);
        // A new event after two hours of silence empties its slot first.
        h.on_accept(t0 + Duration::from_secs(3 * 3600));
        let m = h.minutes(t0 + Duration::from_secs(3 * 3600));
        assert_eq!(m.accepts.iter().sum::<u32>(), 1);
    }

    #[test]
    fn an_accept_taken_back_leaves_its_minute_and_no_other() {
        let t0 = Instant::now();
        let mut h = LastHour::default();
        h.undo_accept(t0);
        h.on_accept(t0);
        h.on_accept(t0 + Duration::from_secs(61));
        h.on_accept(t0 + Duration::from_secs(62));
        h.undo_accept(t0 + Duration::from_secs(61));
        let m = h.minutes(t0 + Duration::from_secs(63));
        assert_eq!(m.accepts[MINUTES - 2..], [1, 1]);
        // An hour on, that minute's slot holds another minute: nothing is taken from it.
        h.on_accept(t0 + Duration::from_secs(3600));
        h.undo_accept(t0);
        assert_eq!(
            h.minutes(t0 + Duration::from_secs(3600)).accepts[MINUTES - 1],
            1
        );
    }

    #[test]
    fn an_unstarted_ring_is_all_zeros() {
        let m = LastHour::default().minutes(Instant::now());
        assert_eq!(m.accepts, [0; MINUTES]);
        assert_eq!(m.rate(&m.accepts), 0.0);
    }

    #[test]
    fn a_young_ring_rates_over_its_own_age() {
        let t0 = Instant::now();
        let mut h = LastHour::default();
        for _ in 0..10 {
            h.on_accept(t0);
        }
        let m = h.minutes(t0 + Duration::from_secs(5));
        assert_eq!(m.rate_window(), Duration::from_secs(5));
        assert_eq!(m.rate(&m.accepts), 2.0);
        let m = h.minutes(t0 + Duration::from_millis(10));
        assert_eq!(m.rate_window(), Duration::from_secs(1), "at least a second");
    }
}

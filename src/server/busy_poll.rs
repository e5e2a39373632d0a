//! Busy polling: after a turn that had work, the loop keeps asking the kernel for events without
//! sleeping, for a short window (`server.busy_poll_us`), before it blocks in `epoll_wait` again.
//!
//! Why: a thread asleep in `epoll_wait` is woken by whoever makes one of its sockets ready, and
//! the waker pays for it. In a virtual machine whose idle vCPU halts (no guest halt polling),
//! that wakeup is an inter-processor interrupt through the hypervisor: measured here, about
//! 10 µs of the client's CPU per wakeup, more than its whole cost of a pipelined request. A
//! server that answers faster than its client sends therefore makes the client slower; one that
//! stays awake for the next request does not. The price is CPU spent polling, so it is off
//! unless configured, and a window only opens after a turn that had events: a daemon holding
//! idle sessions never spins.
//!
//! Windows that keep expiring empty (a client that sends every few milliseconds, longer than the
//! window) are pure cost, so the loop keeps score: once most recent windows were misses it opens
//! only every [`PROBE_EVERY`]th one, and goes back to every busy turn when those start catching
//! events again. `docs/benchmarks.md` has the measured trade.

use std::time::{Duration, Instant};

use crate::telemetry::stats::WindowCounts;

/// While windows are mostly misses, one busy turn in this many still opens one, to notice when
/// the traffic gets dense again.
pub const PROBE_EVERY: u32 = 16;

/// The hit score is an average of recent windows, 1 = caught an event, scaled to this.
const SCORE_MAX: u32 = 256;
/// Each window moves the score an eighth of the way to 0 or `SCORE_MAX`.
const SCORE_SHIFT: u32 = 3;

/// The polling window's state; owned by the event loop.
#[derive(Debug)]
pub struct BusyPoll {
    /// The last `poll` returned events: the next `timeout` starts a gap.
    busy: bool,
    /// Polls do not sleep until then.
    until: Option<Instant>,
    /// Recent windows that caught an event, out of `SCORE_MAX` (an exponential average).
    score: u32,
    /// Busy turns without a window since the last one, while windows are mostly misses.
    skipped: u32,
}

impl Default for BusyPoll {
    fn default() -> Self {
        BusyPoll {
            busy: false,
            until: None,
            score: SCORE_MAX,
            skipped: 0,
        }
    }
}

impl BusyPoll {
    /// After `poll` returned: an event inside an open window is a hit (counted in `counts`).
    /// `window` is the configured length; zero turns all of this off.
    pub fn after_poll(&mut self, had_events: bool, window: Duration, counts: &mut WindowCounts) {
        if window.is_zero() {
            *self = BusyPoll::default();
            return;
        }
        if had_events {
            if self.until.take().is_some() {
                self.record(true);
                counts.caught += 1;
            }
            self.busy = true;
        }
    }

    /// Whether [`timeout`] has anything to decide, so the loop reads the clock only then.
    ///
    /// [`timeout`]: BusyPoll::timeout
    pub fn wants_clock(&self) -> bool {
        self.busy || self.until.is_some()
    }

    /// Before `poll`, at `now` (the end of the turn): zero (do not sleep) while a window is
    /// open, otherwise `timeout` unchanged. A busy turn opens a window of `window` from `now`
    /// (counted in `counts`).
    pub fn timeout(
        &mut self,
        now: Instant,
        window: Duration,
        timeout: Option<Duration>,
        counts: &mut WindowCounts,
    ) -> Option<Duration> {
        if std::mem::take(&mut self.busy) && !window.is_zero() && self.worth_opening() {
            self.until = Some(now + window);
            counts.opened += 1;
        }
        match self.until {
            Some(until) if now < until => Some(Duration::ZERO),
            Some(_) => {
                self.until = None;
                self.record(false);
                timeout
            }
            None => timeout,
        }
    }

    fn worth_opening(&mut self) -> bool {
        if self.score * 2 >= SCORE_MAX {
            self.skipped = 0;
            return true;
        }
        self.skipped += 1;
        if self.skipped >= PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    fn record(&mut self, hit: bool) {
        let target = if hit { SCORE_MAX } else { 0 };
        self.score = self.score - (self.score >> SCORE_SHIFT) + (target >> SCORE_SHIFT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(15);
    const SLEEP: Option<Duration> = Some(Duration::from_secs(1));

    /// The loop's side: the state and the counts it keeps in its statistics.
    #[derive(Default)]
    struct Loop {
        poll: BusyPoll,
        counts: WindowCounts,
    }

    impl Loop {
        fn after_poll(&mut self, had_events: bool, window: Duration) {
            self.poll.after_poll(had_events, window, &mut self.counts);
        }

        fn timeout(
            &mut self,
            now: Instant,
            window: Duration,
            t: Option<Duration>,
        ) -> Option<Duration> {
            self.poll.timeout(now, window, t, &mut self.counts)
        }
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// One busy turn ending at `at`, then polls until an event at `at + gap` or the window
    /// closes; returns whether the loop would have slept.
    fn gap(b: &mut Loop, at: Instant, gap: Duration) -> bool {
        b.after_poll(true, WINDOW);
        let mut t = at;
        loop {
            let timeout = b.timeout(t, WINDOW, SLEEP);
            if timeout != Some(Duration::ZERO) {
                // Sleeps until the event.
                b.after_poll(true, WINDOW);
                return true;
            }
            t += us(1);
            if t >= at + gap {
                b.after_poll(true, WINDOW);
                return false;
            }
            b.after_poll(false, WINDOW);
        }
    }

    #[test]
    fn off_with_a_zero_window() {
        let t0 = Instant::now();
        let mut b = Loop::default();
        b.after_poll(true, Duration::ZERO);
        assert!(!b.poll.wants_clock());
        assert_eq!(b.timeout(t0, Duration::ZERO, SLEEP), SLEEP);
        assert_eq!(b.timeout(t0, Duration::ZERO, None), None);
    }

    #[test]
    fn a_busy_turn_opens_a_window_that_closes_after_it() {
        let t0 = Instant::now();
        let mut b = Loop::default();
        assert!(!b.poll.wants_clock());
        assert_eq!(b.timeout(t0, WINDOW, SLEEP), SLEEP, "no events, no window");
        b.after_poll(true, WINDOW);
        assert!(b.poll.wants_clock());
        assert_eq!(b.timeout(t0, WINDOW, None), Some(Duration::ZERO));
        // Empty polls inside the window neither extend nor close it.
        b.after_poll(false, WINDOW);
        assert_eq!(b.timeout(t0 + us(14), WINDOW, SLEEP), Some(Duration::ZERO));
        b.after_poll(false, WINDOW);
        assert_eq!(b.timeout(t0 + WINDOW, WINDOW, SLEEP), SLEEP);
        assert!(!b.poll.wants_clock());
        assert_eq!(
            b.counts,
            WindowCounts {
                opened: 1,
                caught: 0
            }
        );
        // A deadline shorter than the sleep is passed through untouched.
        let soon = Some(Duration::from_millis(3));
        assert_eq!(b.timeout(t0 + WINDOW, WINDOW, soon), soon);
    }

    #[test]
    fn the_window_starts_when_the_turn_ends() {
        let t0 = Instant::now();
        let mut b = Loop::default();
        b.after_poll(true, WINDOW);
        // The turn took longer than the window; polling still goes on for the window after it.
        let end = t0 + us(100);
        assert_eq!(b.timeout(end, WINDOW, None), Some(Duration::ZERO));
        b.after_poll(false, WINDOW);
        assert_eq!(b.timeout(end + us(14), WINDOW, None), Some(Duration::ZERO));
    }

    #[test]
    fn dense_traffic_keeps_polling() {
        let mut b = Loop::default();
        let t0 = Instant::now();
        let slept = (0..1000)
            .filter(|&i| gap(&mut b, t0 + us(i * 100), us(5)))
            .count();
        assert_eq!(slept, 0);
        assert_eq!(
            b.counts,
            WindowCounts {
                opened: 1000,
                caught: 1000
            }
        );
        // Turning it off leaves the counts alone.
        b.after_poll(true, Duration::ZERO);
        assert_eq!(b.counts.opened, 1000);
    }

    #[test]
    fn sparse_traffic_stops_opening_windows_until_it_gets_dense_again() {
        let mut b = Loop::default();
        let t0 = Instant::now();
        let mut at = t0;
        // Gaps of 3 ms: every window is a miss. After a handful the loop opens one in 16.
        let mut windows = 0;
        for _ in 0..320 {
            let before = b.poll.score;
            gap(&mut b, at, Duration::from_millis(3));
            if b.poll.score != before {
                windows += 1;
            }
            at += Duration::from_millis(3);
        }
        assert!(
            (20..=30).contains(&windows),
            "about 320 / 16 windows plus the first few: {windows}"
        );
        // Dense again: the probes catch events, and polling resumes after six of them (each
        // hit moves the score an eighth of the way back).
        let slept: Vec<bool> = (0..200)
            .map(|i| gap(&mut b, at + us(i * 100), us(5)))
            .collect();
        let resumed = slept.iter().rposition(|&s| s).map_or(0, |i| i + 1);
        assert!(
            resumed <= 7 * PROBE_EVERY as usize,
            "resumed after {resumed}"
        );
        assert!(slept[resumed..].iter().all(|&s| !s));
    }
}

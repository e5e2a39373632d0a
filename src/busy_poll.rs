//! Busy polling: after a turn that had work, the loop keeps asking the kernel for events without
//! sleeping, for a short window (`server.busy_poll_us`), before it blocks in `epoll_wait` again.
//!
//! Why: a thread asleep in `epoll_wait` is woken by whoever makes one of its sockets ready, and
//! the waker pays for it. In a virtual machine whose idle vCPU halts (no guest halt polling),
//! that wakeup is an inter-processor interrupt through the hypervisor: measured here, about
//! 10 µs of the client's CPU per wakeup, more than its whole cost of a pipelined request. A
//! server that answers faster than its client sends therefore makes the client slower; one that
//! stays awake for the next request does not. The price is CPU spent polling, so it is off
//! unless configured, and the window only opens after a turn that had events: a daemon holding
//! idle sessions never spins. `docs/benchmarks.md` has the measured trade.

use std::time::{Duration, Instant};

/// Longest window accepted: past a millisecond, polling costs more than any wakeup saves.
pub const MAX_BUSY_POLL_US: u64 = 1_000;

/// When the current polling window closes; owned by the event loop.
#[derive(Debug, Default)]
pub struct BusyPoll {
    until: Option<Instant>,
}

impl BusyPoll {
    /// After `poll` returned at `now`: a turn with events (re)opens a window of `window`.
    pub fn after_poll(&mut self, now: Instant, had_events: bool, window: Duration) {
        if had_events && !window.is_zero() {
            self.until = Some(now + window);
        }
    }

    /// The timeout for the next `poll`: zero (do not sleep) while the window is open at `now`,
    /// otherwise `timeout` unchanged. A closed window stays closed until new events reopen it.
    pub fn timeout(&mut self, now: Instant, timeout: Option<Duration>) -> Option<Duration> {
        match self.until {
            Some(until) if now < until => Some(Duration::ZERO),
            Some(_) => {
                self.until = None;
                timeout
            }
            None => timeout,
        }
    }

    /// Whether a window is open; the loop reads the clock for [`timeout`] only then.
    ///
    /// [`timeout`]: BusyPoll::timeout
    pub fn is_open(&self) -> bool {
        self.until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(15);
    const SLEEP: Option<Duration> = Some(Duration::from_secs(1));

    #[test]
    fn off_by_default_and_with_a_zero_window() {
        let t0 = Instant::now();
        let mut b = BusyPoll::default();
        assert_eq!(b.timeout(t0, SLEEP), SLEEP);
        assert_eq!(b.timeout(t0, None), None);
        b.after_poll(t0, true, Duration::ZERO);
        assert!(!b.is_open());
        assert_eq!(b.timeout(t0, None), None);
    }

    #[test]
    fn events_open_a_window_that_closes_after_it() {
        let t0 = Instant::now();
        let mut b = BusyPoll::default();
        b.after_poll(t0, true, WINDOW);
        assert!(b.is_open());
        assert_eq!(b.timeout(t0, None), Some(Duration::ZERO));
        assert_eq!(
            b.timeout(t0 + Duration::from_micros(14), SLEEP),
            Some(Duration::ZERO)
        );
        // Empty polls inside the window do not extend it.
        b.after_poll(t0 + Duration::from_micros(14), false, WINDOW);
        assert_eq!(b.timeout(t0 + WINDOW, SLEEP), SLEEP);
        assert!(!b.is_open());
        assert_eq!(b.timeout(t0 + WINDOW, None), None);
    }

    #[test]
    fn new_events_extend_the_window() {
        let t0 = Instant::now();
        let mut b = BusyPoll::default();
        b.after_poll(t0, true, WINDOW);
        let t1 = t0 + Duration::from_micros(10);
        b.after_poll(t1, true, WINDOW);
        assert_eq!(
            b.timeout(t0 + Duration::from_micros(20), None),
            Some(Duration::ZERO)
        );
        assert_eq!(b.timeout(t1 + WINDOW, None), None);
    }

    #[test]
    fn a_shorter_deadline_is_kept_when_no_window_is_open() {
        let t0 = Instant::now();
        let mut b = BusyPoll::default();
        let soon = Some(Duration::from_millis(3));
        assert_eq!(b.timeout(t0, soon), soon);
        b.after_poll(t0, false, WINDOW);
        assert_eq!(b.timeout(t0, soon), soon);
    }
}

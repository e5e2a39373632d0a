//! Commands per second over the last moments, for `INFO`'s `instantaneous_ops_per_sec` (what
//! `redis-cli --stat` and dashboards read).
//!
//! Redis samples its command counter every 100 ms from a timer and averages the last 16
//! samples. vigild has no timer that fires while it is idle (an idle daemon uses no CPU), so
//! the loop offers a sample on every turn ([`CommandRate::tick`], one comparison when less than
//! [`SAMPLE_EVERY`] has passed) and the rate is worked out when asked. Commands only run in a
//! loop turn, so every command is followed by a tick: a turn that runs commands after a long
//! idle period records a sample, and the rate between two samples is the true average over the
//! span between them.
//!
//! Time is a parameter (`now`), so the arithmetic is unit-tested without sleeping.

use std::time::{Duration, Instant};

/// Samples are at least this far apart.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Samples kept: with [`SAMPLE_EVERY`], the last 1.6 s or more, as in Redis.
const SAMPLES: usize = 16;

/// A ring of (when, commands run so far) samples.
#[derive(Debug, Default, Clone)]
pub struct CommandRate {
    samples: [Option<(Instant, u64)>; SAMPLES],
    /// Where the next sample goes.
    next: usize,
}

impl CommandRate {
    /// Offers the counter's value at `now`; kept when the newest sample is old enough.
    pub fn tick(&mut self, now: Instant, total: u64) {
        let newest = self.samples[(self.next + SAMPLES - 1) % SAMPLES];
        if newest.is_some_and(|(at, _)| now.saturating_duration_since(at) < SAMPLE_EVERY) {
            return;
        }
        self.samples[self.next] = Some((now, total));
        self.next = (self.next + 1) % SAMPLES;
    }

    /// Commands per second from the oldest sample kept to (`now`, `total`); 0 without a
    /// sample at least [`SAMPLE_EVERY`] old.
    pub fn per_second(&self, now: Instant, total: u64) -> u64 {
        let oldest = self
            .samples
            .iter()
            .flatten()
            .filter(|(at, _)| now.saturating_duration_since(*at) >= SAMPLE_EVERY)
            .min_by_key(|(at, _)| *at);
        let Some((at, then)) = oldest else {
            return 0;
        };
        let secs = now.saturating_duration_since(*at).as_secs_f64();
        let ran = total.saturating_sub(*then) as f64;
        (ran / secs).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_average_over_the_samples_kept() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = CommandRate::default();
        assert_eq!(r.per_second(t0, 0), 0, "no sample yet");
        // 1,000 commands a second for 3 s, a tick every 10 ms.
        for ms in (0..=3_000).step_by(10) {
            r.tick(at(ms), ms);
        }
        assert_eq!(r.per_second(at(3_000), 3_000), 1_000);
        // Only 16 samples, 100 ms apart, are kept: the rate is over the last 1.6 s or so.
        let kept: Vec<Instant> = r.samples.iter().flatten().map(|(t, _)| *t).collect();
        assert_eq!(kept.len(), 16);
        assert!(kept.iter().all(|t| *t >= at(1_400)), "{kept:?}");
        // Then a burst of 500 in the next 100 ms lifts the average over the window.
        r.tick(at(3_100), 3_500);
        let rate = r.per_second(at(3_100), 3_500);
        assert!((1_200..=1_400).contains(&rate), "{rate}");
    }

    #[test]
    fn an_idle_daemon_reads_zero_and_a_burst_after_idling_is_averaged_from_its_last_sample() {
        let t0 = Instant::now();
        let mut r = CommandRate::default();
        r.tick(t0, 100);
        // No turn for 60 s: nothing ran.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(r.per_second(later, 100), 0);
        // A turn that ran 600 commands: averaged over the idle minute, as it should be.
        r.tick(later, 700);
        assert_eq!(r.per_second(later, 700), 10);
        assert_eq!(
            r.per_second(later + Duration::from_millis(50), 700),
            10,
            "a sample younger than 100 ms is not the base"
        );
    }
}

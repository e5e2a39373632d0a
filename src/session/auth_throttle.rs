//! Failed passwords counted per source address, and the lockouts that bound how fast one
//! address can guess (`server.auth_failures_before_backoff` = K, `server.auth_backoff_max` =
//! C). The event loop owns one [`Throttle`]; `crate::protocol::auth_gate::gate` only sees the
//! [`GuessBudget`] the loop gave the session before its requests ran.
//!
//! The rule, per source: an IPv4 address, or an IPv6 /64 (one host gets a whole /64, so
//! counting single IPv6 addresses would give it 2^64 budgets). IPv4-mapped IPv6 counts as the
//! IPv4 address.
//! - After K wrong passwords the source is locked out: its `AUTH` is refused without comparing
//!   the password (the session is told when to retry and closed, `auth-throttled`). Lockouts
//!   last 1 s, 2 s, 4 s, ... doubling up to C.
//! - Each C without a failure after a lockout ended takes one step off the doubling, and
//!   forgets the failures counted towards the next lockout. A source with nothing left to
//!   remember is removed. The level stops growing where the lockout reaches C, so a source is
//!   forgotten at most `LEVEL_CAP × C` after its last failure.
//! - So one source compares at most K passwords at once, then K after each lockout: with the
//!   defaults (K = 10, C = 60 s) 60 in its first minute and 10 a minute after that. Waiting
//!   for the level to decay never pays: a step of decay costs C of silence and saves at most
//!   C of a lockout.
//!
//! Memory: at most [`MAX_TRACKED`] sources (56 bytes each, in a hash table of 8,192 slots when
//! full: under 0.5 MiB) plus one shared entry; nothing at all until a password fails. When
//! the table is full a new failing source takes the place of the *least punished* entry that
//! is not locked out (lowest level, then fewest failures, then oldest); an entry that is
//! locked out is never evicted. So an attacker cannot reset its own lockout by failing from
//! many other addresses: to push its entry out it must first give thousands of other
//! addresses a worse record, and each of those is limited like any source. When every entry
//! is locked out, sources not in the table share one entry ("other addresses"): the overflow
//! is throttled as a whole, so even a distributed guesser is bounded (to 4097 budgets).
//!
//! Time is a parameter: every method takes the loop's `now`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Sources remembered at once (the shared overflow entry comes on top).
pub const MAX_TRACKED: usize = 4096;
/// The first lockout; each next one doubles, up to the configured maximum.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(1);

/// Who failed: an IPv4 address, an IPv6 /64, or every source the full table had no room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix(u64),
    /// Sources not in the table while it is full of locked-out entries.
    Others,
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(ip) => write!(f, "{ip}"),
            Source::V6Prefix(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*p) << 64)),
            Source::Others => f.write_str("other-addresses"),
        }
    }
}

/// What the per-address limit allows a session's next `AUTH` attempts, given to the session
/// before its requests run (the gate cannot reach the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessBudget {
    /// No per-address limit (throttling off, or no password).
    Unlimited,
    /// `left` more passwords may be compared; with none left the address is being locked out
    /// for `then_secs`.
    Left { left: u16, then_secs: u16 },
    /// Locked out: refused without comparing, for `retry_secs` more seconds.
    Throttled { retry_secs: u16 },
}

impl GuessBudget {
    /// Takes one comparison from the budget; `Err(retry_secs)` when none is left.
    pub fn take(&mut self) -> Result<(), u16> {
        match self {
            GuessBudget::Unlimited => Ok(()),
            GuessBudget::Left { left: 0, then_secs } => Err(*then_secs),
            GuessBudget::Left { left, .. } => {
                *left -= 1;
                Ok(())
            }
            GuessBudget::Throttled { retry_secs } => Err(*retry_secs),
        }
    }
}

/// The two settings, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// K; 0 = no per-address limit.
    pub failures_before_backoff: u32,
    /// C, at least [`FIRST_LOCKOUT`].
    pub backoff_max: Duration,
}

impl Policy {
    /// The lockout at `level` (1 = the first): 1 s doubling, at most C.
    fn lockout(&self, level: u32) -> Duration {
        let doubled = FIRST_LOCKOUT.saturating_mul(1 << level.saturating_sub(1).min(31));
        doubled.min(self.backoff_max)
    }

    /// The first level whose lockout is C: the level stops there.
    fn level_cap(&self) -> u32 {
        (1..=32)
            .find(|&l| self.lockout(l) >= self.backoff_max)
            .unwrap_or(32)
    }
}

/// One source's record.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since the last lockout (or since they were forgotten).
    failures: u32,
    /// Lockouts not yet decayed; the next one lasts `lockout(level + 1)`.
    level: u32,
    /// End of the current (or last) lockout.
    until: Instant,
    /// Quiet periods of C are counted from here (the last failure or lockout end).
    anchor: Instant,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            level: 0,
            until: now,
            anchor: now,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        now < self.until
    }

    /// Applies the quiet periods of C that passed since `anchor`.
    fn decay(&mut self, now: Instant, policy: &Policy) {
        if self.locked(now) {
            return;
        }
        let quiet = now.saturating_duration_since(self.anchor);
        let periods = quiet.as_nanos() / policy.backoff_max.as_nanos().max(1);
        if periods == 0 {
            return;
        }
        self.failures = 0;
        let steps = u32::try_from(periods).unwrap_or(u32::MAX);
        self.level = self.level.saturating_sub(steps);
        self.anchor += policy.backoff_max.saturating_mul(steps.min(1 << 20));
    }

    fn forgotten(&self, now: Instant) -> bool {
        !self.locked(now) && self.level == 0 && self.failures == 0
    }

    fn budget(&self, now: Instant, policy: &Policy) -> GuessBudget {
        if self.locked(now) {
            GuessBudget::Throttled {
                retry_secs: secs_up(self.until - now),
            }
        } else {
            let left = policy.failures_before_backoff.saturating_sub(self.failures);
            GuessBudget::Left {
                left: u16::try_from(left).unwrap_or(u16::MAX),
                then_secs: secs_up(policy.lockout(self.level + 1)),
            }
        }
    }

    /// Least punished first: what eviction gives up first.
    fn worth(&self) -> (u32, u32, Instant) {
        (self.level, self.failures, self.anchor)
    }
}

/// Whole seconds, rounded up, for "retry in N s".
fn secs_up(d: Duration) -> u16 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u16::try_from(secs).unwrap_or(u16::MAX)
}

/// A lockout that just started, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub source: Source,
    /// 1 for the first lockout in a row.
    pub level: u32,
    pub duration: Duration,
}

/// The table of failing sources.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<Source, Entry>,
    /// Failures that found the table full of locked-out entries (went to `Others`).
    pub overflowed: u64,
}

impl Throttle {
    /// Sources tracked now (the shared overflow entry included).
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// What a session from `ip` may attempt now.
    pub fn budget(&mut self, ip: IpAddr, now: Instant, policy: &Policy) -> GuessBudget {
        if policy.failures_before_backoff == 0 {
            return GuessBudget::Unlimited;
        }
        let source = self.source_for(ip);
        let Some(entry) = self.entries.get_mut(&source) else {
            return Entry::new(now).budget(now, policy);
        };
        entry.decay(now, policy);
        let budget = entry.budget(now, policy);
        if entry.forgotten(now) {
            self.entries.remove(&source);
        }
        budget
    }

    /// Records `n` wrong passwords from `ip`; returns the lockout they started, if any.
    pub fn record_failures(
        &mut self,
        ip: IpAddr,
        n: u32,
        now: Instant,
        policy: &Policy,
    ) -> Option<Lockout> {
        if policy.failures_before_backoff == 0 || n == 0 {
            return None;
        }
        let source = Source::of(ip);
        let source = if self.entries.contains_key(&source) || self.make_room(now, policy) {
            source
        } else {
            self.overflowed += u64::from(n);
            Source::Others
        };
        if source != Source::Others {
            // The shared entry is looked up only while the table is full: forget it here.
            if let Some(shared) = self.entries.get_mut(&Source::Others) {
                shared.decay(now, policy);
                if shared.forgotten(now) {
                    self.entries.remove(&Source::Others);
                }
            }
        }
        let entry = self
            .entries
            .entry(source)
            .or_insert_with(|| Entry::new(now));
        entry.decay(now, policy);
        let mut started = None;
        for _ in 0..n {
            if entry.locked(now) {
                // Compared before the lockout was known (cannot happen with a fresh budget);
                // counting on would only lengthen nothing.
                break;
            }
            entry.failures += 1;
            entry.anchor = now;
            if entry.failures >= policy.failures_before_backoff {
                entry.level = (entry.level + 1).min(policy.level_cap());
                let duration = policy.lockout(entry.level);
                entry.failures = 0;
                entry.until = now + duration;
                entry.anchor = entry.until;
                started = Some(Lockout {
                    source,
                    level: entry.level,
                    duration,
                });
            }
        }
        started
    }

    /// The entry whose budget applies to `ip`: its own; or, while the table is full and the
    /// shared entry exists, the shared one (a source without an entry then shares the
    /// overflow's budget until there is room again).
    fn source_for(&self, ip: IpAddr) -> Source {
        let source = Source::of(ip);
        if self.entries.contains_key(&source) || self.own_entries() < MAX_TRACKED {
            return source;
        }
        if self.entries.contains_key(&Source::Others) {
            Source::Others
        } else {
            source
        }
    }

    /// Entries other than the shared one.
    fn own_entries(&self) -> usize {
        self.entries.len() - usize::from(self.entries.contains_key(&Source::Others))
    }

    /// Makes room for one more source: forgets what decayed away, else evicts the least
    /// punished entry that is not locked out. False when every entry is locked out.
    fn make_room(&mut self, now: Instant, policy: &Policy) -> bool {
        if self.own_entries() < MAX_TRACKED {
            return true;
        }
        // One pass: decay everything, drop the forgotten, and find the cheapest to evict.
        self.entries.retain(|_, e| {
            e.decay(now, policy);
            !e.forgotten(now)
        });
        if self.own_entries() < MAX_TRACKED {
            return true;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(s, e)| **s != Source::Others && !e.locked(now))
            .min_by_key(|(_, e)| e.worth())
            .map(|(s, _)| *s);
        match victim {
            Some(s) => {
                self.entries.remove(&s);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u32 = 10;
    fn policy() -> Policy {
        Policy {
            failures_before_backoff: K,
            backoff_max: Duration::from_secs(60),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An attacker that guesses whenever its budget allows, `per_second` times a second at
    /// most, for `secs`: the passwords compared.
    fn greedy(t: &mut Throttle, who: IpAddr, secs: u64, t0: Instant, p: &Policy) -> u64 {
        let mut compared = 0;
        for ms in (0..secs * 1000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            let mut b = t.budget(who, now, p);
            let mut n = 0;
            while n < 3 && b.take().is_ok() {
                n += 1;
            }
            compared += u64::from(n);
            t.record_failures(who, n, now, p);
        }
        compared
    }

    #[test]
    fn sources_group_ipv6_by_64_and_map_ipv4() {
        assert_eq!(
            Source::of(ip("127.0.0.5")),
            Source::V4("127.0.0.5".parse().unwrap())
        );
        assert_eq!(
            Source::of(ip("::ffff:127.0.0.5")),
            Source::of(ip("127.0.0.5"))
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(Source::of(ip("::1")).to_string(), "::/64");
    }

    #[test]
    fn k_failures_lock_out_doubling_up_to_the_cap() {
        let p = policy();
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut t = Throttle::default();
        let a = ip("127.0.0.9");
        assert_eq!(
            t.budget(a, t0, &p),
            GuessBudget::Left {
                left: 10,
                then_secs: 1
            }
        );
        assert_eq!(t.record_failures(a, 9, t0, &p), None);
        assert_eq!(
            t.budget(a, t0, &p),
            GuessBudget::Left {
                left: 1,
                then_secs: 1
            }
        );
        let l = t.record_failures(a, 1, t0, &p).expect("a lockout");
        assert_eq!((l.level, l.duration), (1, Duration::from_secs(1)));
        assert_eq!(
            t.budget(a, t0, &p),
            GuessBudget::Throttled { retry_secs: 1 }
        );
        // Another address is not affected.
        assert_eq!(
            t.budget(ip("127.0.0.10"), t0, &p),
            GuessBudget::Left {
                left: 10,
                then_secs: 1
            }
        );
        // Lockouts double: 2, 4, 8, 16, 32, then 60 (the cap) and stay there.
        let mut at = s(1);
        for want in [2, 4, 8, 16, 32, 60, 60, 60] {
            assert!(matches!(
                t.budget(a, at, &p),
                GuessBudget::Left { left: 10, .. }
            ));
            let l = t.record_failures(a, K, at, &p).expect("a lockout");
            assert_eq!(l.duration, Duration::from_secs(want));
            at += l.duration;
        }
        assert_eq!(p.level_cap(), 7);
    }

    #[test]
    fn quiet_periods_decay_one_level_each_and_then_forget() {
        let p = policy();
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let a = ip("10.0.0.1");
        let mut at = t0;
        for _ in 0..3 {
            at += t.record_failures(a, K, at, &p).unwrap().duration;
        }
        // Level 3 (the last lockout 4 s) ended at `at`.
        assert_eq!(
            t.budget(a, at, &p),
            GuessBudget::Left {
                left: 10,
                then_secs: 8
            }
        );
        let later = at + Duration::from_secs(61);
        assert_eq!(
            t.budget(a, later, &p),
            GuessBudget::Left {
                left: 10,
                then_secs: 4
            }
        );
        // Failures below K are forgotten after C, too.
        t.record_failures(a, 4, later, &p);
        let after = later + Duration::from_secs(60);
        assert_eq!(
            t.budget(a, after, &p),
            GuessBudget::Left {
                left: 10,
                then_secs: 2
            }
        );
        assert_eq!(t.tracked(), 1);
        let _ = t.budget(a, after + Duration::from_secs(120), &p);
        assert_eq!(t.tracked(), 0, "nothing left to remember");
    }

    #[test]
    fn the_documented_bounds_hold_for_a_greedy_guesser() {
        let p = policy();
        let t0 = Instant::now();
        // 2 s: K at once, K after the 1 s lockout.
        assert_eq!(
            greedy(&mut Throttle::default(), ip("127.0.0.2"), 2, t0, &p),
            20
        );
        // The first minute: bursts at 0, 1, 3, 7, 15 and 31 s.
        assert_eq!(
            greedy(&mut Throttle::default(), ip("127.0.0.2"), 60, t0, &p),
            60
        );
        // An hour: then one burst a minute.
        let hour = greedy(&mut Throttle::default(), ip("127.0.0.2"), 3600, t0, &p);
        assert!(hour <= u64::from(K) * (6 + 60), "{hour}");
        // One /64 is one source, however many addresses it uses.
        let mut t = Throttle::default();
        let mut compared = 0;
        for i in 0..1000u16 {
            let who = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, i, 0, 0, 1));
            let mut b = t.budget(who, t0, &p);
            let mut n = 0;
            while n < 3 && b.take().is_ok() {
                n += 1;
            }
            compared += n;
            t.record_failures(who, n, t0, &p);
        }
        assert_eq!(compared, K);
    }

    #[test]
    fn waiting_for_decay_does_not_beat_guessing_at_the_cap() {
        let p = policy();
        let t0 = Instant::now();
        let a = ip("127.0.0.3");
        let mut t = Throttle::default();
        let mut at = t0;
        // Reach the cap.
        for _ in 0..7 {
            at += t.record_failures(a, K, at, &p).unwrap().duration;
        }
        // Wait out one quiet period, then guess: the lockout is still the cap.
        at += Duration::from_secs(60);
        let l = t.record_failures(a, K, at, &p).unwrap();
        assert_eq!(l.duration, Duration::from_secs(60));
    }

    #[test]
    fn the_table_is_bounded_and_a_lockout_survives_a_flood_of_other_addresses() {
        let p = policy();
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let victim = ip("127.9.9.9");
        t.record_failures(victim, K, t0, &p).expect("locked out");
        // Many other addresses fail once each.
        for i in 0..(MAX_TRACKED as u32 * 2) {
            let who = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            t.record_failures(who, 1, t0, &p);
            assert!(t.tracked() <= MAX_TRACKED + 1);
        }
        assert!(matches!(
            t.budget(victim, t0, &p),
            GuessBudget::Throttled { .. }
        ));
        // Every entry locked out: newcomers share one entry, throttled as a whole.
        let mut t = Throttle::default();
        for i in 0..MAX_TRACKED as u32 {
            let who = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            t.record_failures(who, K, t0, &p).expect("locked out");
        }
        let mut compared = 0;
        for i in 0..1000u32 {
            let who = IpAddr::V4(Ipv4Addr::from(0x0c00_0000 + i));
            let mut b = t.budget(who, t0, &p);
            let mut n = 0;
            while n < 3 && b.take().is_ok() {
                n += 1;
            }
            compared += n;
            t.record_failures(who, n, t0, &p);
        }
        assert_eq!(compared, K, "the overflow is one budget");
        assert_eq!(t.tracked(), MAX_TRACKED + 1);
        assert_eq!(t.overflowed, u64::from(K));
        // Once the lockouts are over and decayed, the table empties again.
        let later = t0 + Duration::from_secs(3600);
        for i in 0..MAX_TRACKED as u32 {
            let _ = t.budget(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), later, &p);
        }
        // The shared entry goes with the next sweep.
        t.record_failures(ip("12.0.0.1"), 1, later, &p);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn off_means_unlimited_and_nothing_kept() {
        let p = Policy {
            failures_before_backoff: 0,
            backoff_max: Duration::from_secs(60),
        };
        let mut t = Throttle::default();
        let now = Instant::now();
        assert_eq!(t.budget(ip("127.0.0.1"), now, &p), GuessBudget::Unlimited);
        assert_eq!(t.record_failures(ip("127.0.0.1"), 1000, now, &p), None);
        assert_eq!(t.tracked(), 0);
        let mut b = GuessBudget::Unlimited;
        assert_eq!(b.take(), Ok(()));
        let mut b = GuessBudget::Left {
            left: 1,
            then_secs: 4,
        };
        assert_eq!((b.take(), b.take()), (Ok(()), Err(4)));
    }
}

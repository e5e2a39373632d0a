//! Takeover with `session.unique_names`: whether a newcomer's `CLIENT SETNAME x` may replace
//! the session holding `x` ([`decide`]), and the watch for names that keep changing hands
//! ([`Flapping`]).
//!
//! The purpose of takeover is to free the half-open session of a device that reconnected
//! before keepalive found the old connection dead, not to let two live clients that share a
//! name (a copy-pasted config, two replicas of one service) evict each other: every client
//! library reconnects and re-sends its name, so with "newest always wins" they fight for ever
//! (19 to 50 `replaced` reaps in 5 s). With `session.takeover = "stale"` (the default) the
//! holder is replaced only when it is plausibly stale:
//!
//! - its TCP state says it is in trouble: keepalive (or zero-window) probes outstanding, or
//!   data unacknowledged (`tcpi_probes`, `tcpi_retransmits`, `tcpi_backoff`: the `state=suspect`
//!   of `CLIENT INFO`), or the connection is no longer established (the peer's FIN is waiting),
//!   or `TCP_INFO` cannot be read at all;
//! - or it has been silent longer than `session.takeover_after` (when set): nothing received,
//!   neither data nor an ACK. The ACK matters: a live client that sends nothing still answers
//!   every keepalive probe, so its `tcpi_last_ack_recv_ms` never grows past `keepalive.idle`,
//!   while a dead peer's grows without end. Silence is the smaller of the two, the same measure
//!   the kernel's keepalive timer uses for idleness.
//!
//! `TCP_INFO` is read only here, at takeover time (one `getsockopt` per holder). The decision
//! is one function of facts passed in (the holder's last receive, its `TCP_INFO`, the config,
//! `now`), so it is unit-tested without sockets, and the rule can grow in one place when
//! sessions carry identities (a TLS certificate, a token): a newcomer proving the holder's
//! identity would replace it whatever its state.
//!
//! Flapping: a name replaced more than `session.flap_threshold` times within a minute is
//! reported once per name per minute (the caller logs a warning and counts it). The table is
//! bounded ([`MAX_FLAP_NAMES`] names, the oldest window evicted) and forgets windows older
//! than a minute.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use crate::config::{SessionConfig, TakeoverPolicy};
use crate::os::sys::TcpInfo;

/// `TCP_ESTABLISHED` in `tcpi_state`.
const TCP_ESTABLISHED: u8 = 1;

/// The window over which replacements of one name are counted.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// Names the flapping table follows at most; past it the oldest window is dropped. Names are
/// kept as keyed 64-bit hashes, not copies (a name may be 64 KiB), so 1024 windows are about
/// 40 KiB whatever `session.max_name_bytes`; a collision only merges two names' counts.
pub const MAX_FLAP_NAMES: usize = 1024;

/// What is known about the session holding the name, read at takeover time.
#[derive(Debug, Clone, Copy)]
pub struct Holder {
    /// When it last received data (`Session::last_rx`).
    pub last_rx: Instant,
    /// Its `TCP_INFO`, `None` when it could not be read (the socket is broken).
    pub tcp: Option<TcpInfo>,
}

/// Why a holder may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// `session.takeover = "newest"`: the holder's state was not looked at.
    Newest,
    /// Probes outstanding or data unacknowledged.
    Suspect {
        probes: u8,
        retransmits: u8,
        backoff: u8,
    },
    /// The connection is no longer established (`tcpi_state`).
    Closing(u8),
    /// `TCP_INFO` could not be read.
    Unreadable,
    /// Nothing received, data or ACK, for this long (past `session.takeover_after`).
    Silent(Duration),
    /// A session on another node of the fleet claimed the name ([`decide_remote`]).
    Remote,
    /// The holder has no identity and the newcomer has one (`session/identity.rs`).
    NoIdentity,
}

impl fmt::Display for Stale {
    /// The reason as the takeover log line shows it (`key=value` words).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Stale::Newest => f.write_str("takeover=newest"),
            Stale::Suspect {
                probes,
                retransmits,
                backoff,
            } => write!(
                f,
                "stale=suspect tcpi_probes={probes} tcpi_retransmits={retransmits} \
                 tcpi_backoff={backoff}"
            ),
            Stale::Closing(state) => write!(f, "stale=closing tcpi_state={state}"),
            Stale::Unreadable => f.write_str("stale=no-tcp-info"),
            Stale::Silent(d) => write!(f, "stale=silent silent_ms={}", d.as_millis()),
            Stale::Remote => f.write_str("takeover=remote"),
            Stale::NoIdentity => f.write_str("holder=without-identity"),
        }
    }
}

/// What a newcomer's `CLIENT SETNAME` does to one holder of the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Reap the holder (`replaced`) and give the name to the newcomer.
    Replace(Stale),
    /// The holder is live: it keeps the name; the newcomer is refused. Carries the holder's
    /// silence (data or ACK) for the log line.
    Refuse { silent: Duration },
}

/// Decides whether a newcomer may take the name from `holder`, under `config`'s
/// `takeover` and `takeover_after`.
pub fn decide(holder: &Holder, config: &SessionConfig, now: Instant) -> Decision {
    if config.takeover == TakeoverPolicy::Newest {
        return Decision::Replace(Stale::Newest);
    }
    let Some(tcp) = holder.tcp else {
        return Decision::Replace(Stale::Unreadable);
    };
    if tcp.probes > 0 || tcp.retransmits > 0 || tcp.backoff > 0 {
        return Decision::Replace(Stale::Suspect {
            probes: tcp.probes,
            retransmits: tcp.retransmits,
            backoff: tcp.backoff,
        });
    }
    if tcp.state != TCP_ESTABLISHED {
        return Decision::Replace(Stale::Closing(tcp.state));
    }
    let data = now.saturating_duration_since(holder.last_rx);
    let ack = Duration::from_millis(u64::from(tcp.last_ack_recv_ms));
    let silent = data.min(ack);
    match config.takeover_after {
        Some(after) if silent >= after => Decision::Replace(Stale::Silent(silent)),
        _ => Decision::Refuse { silent },
    }
}

/// Decides whether a claim of the holder's name from another node of the fleet
/// (`[fleet]` with unique names, docs/fleet.md) replaces the holder. A holder that proved an
/// identity (a certificate, a token) follows the local rule, [`decide`], so a stolen
/// credential used on another node cannot evict a live device; any other holder yields to
/// the newest claim, as the fleet issue asks (one name, one holder, fleet-wide, the newest).
/// The claimant's node already told its client `+OK` (the loop never waits for Redis): when
/// the holder keeps the name, the claimant is reaped there (`name-refused`). The identity
/// match itself was checked before the request was sent: the script that queued it refuses a
/// claimant whose identity differs from an identified holder's (src/fleet/scripts.rs,
/// `outranked`), and the claimant's node refuses one at `CLIENT SETNAME` when its view
/// already shows that holder.
pub fn decide_remote(
    holder: &Holder,
    identified: bool,
    config: &SessionConfig,
    now: Instant,
) -> Decision {
    if !identified {
        return Decision::Replace(Stale::Remote);
    }
    match decide(holder, config, now) {
        Decision::Replace(Stale::Newest) => Decision::Replace(Stale::Remote),
        d => d,
    }
}

/// Takeover counters (statistics line, `INFO`, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakeoverCounters {
    /// `CLIENT SETNAME`s that took a held name, reaping its holder(s).
    pub replaced: u64,
    /// `CLIENT SETNAME`s refused because the holder was live.
    pub refused: u64,
    /// Times a name was found flapping (at most once per name per minute).
    pub flapping: u64,
    /// Names refused because they are not the session's identity, or it has none while
    /// identities are in use (`session/identity.rs`).
    pub identity_refused: u64,
}

/// One name's replacements in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
    reported: bool,
}

/// Recent replacements per name, to tell flapping. Windows are fixed: a name's window opens
/// at its first replacement and lasts [`FLAP_WINDOW`]; so a burst cut in two by a window's end
/// may go unreported once, and is reported in the next window if it goes on.
#[derive(Debug, Default)]
pub struct Flapping {
    /// By the name's hash under `keys`.
    names: HashMap<u64, Window>,
    keys: RandomState,
    /// When ended windows were last forgotten: at most once a window, on a replacement.
    swept: Option<Instant>,
}

impl Flapping {
    /// Records one replacement of `name`. Returns the count in the window when this one takes
    /// it past `threshold` (once per window: report it), `None` otherwise or when
    /// `threshold` is 0 (off: nothing is kept).
    pub fn record(&mut self, name: &str, threshold: u32, now: Instant) -> Option<u32> {
        if threshold == 0 {
            self.names.clear();
            return None;
        }
        if self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= FLAP_WINDOW)
        {
            self.expire(now);
            self.swept = Some(now);
        }
        let key = self.keys.hash_one(name);
        if let Some(w) = self.names.get_mut(&key) {
            if now.saturating_duration_since(w.start) >= FLAP_WINDOW {
                *w = Window {
                    start: now,
                    count: 0,
                    reported: false,
                };
            }
            w.count = w.count.saturating_add(1);
            if w.count > threshold && !w.reported {
                w.reported = true;
                return Some(w.count);
            }
            return None;
        }
        if self.names.len() >= MAX_FLAP_NAMES {
            self.names
                .retain(|_, w| now.saturating_duration_since(w.start) < FLAP_WINDOW);
        }
        if self.names.len() >= MAX_FLAP_NAMES {
            let oldest = self
                .names
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.names.remove(&k);
            }
        }
        self.names.insert(
            key,
            Window {
                start: now,
                count: 1,
                reported: false,
            },
        );
        None
    }

    /// Forgets windows that ended.
    pub fn expire(&mut self, now: Instant) {
        self.names
            .retain(|_, w| now.saturating_duration_since(w.start) < FLAP_WINDOW);
    }

    /// Names followed now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn established() -> TcpInfo {
        TcpInfo {
            state: TCP_ESTABLISHED,
            ..TcpInfo::default()
        }
    }

    fn config(takeover: TakeoverPolicy, after: Option<Duration>) -> SessionConfig {
        SessionConfig {
            unique_names: true,
            takeover,
            takeover_after: after,
            ..SessionConfig::default()
        }
    }

    #[test]
    fn across_nodes_only_an_identified_holder_follows_the_local_rule() {
        let now = Instant::now() + Duration::from_secs(3600);
        let live = Holder {
            last_rx: now,
            tcp: Some(established()),
        };
        let stale = config(TakeoverPolicy::Stale, None);
        let newest = config(TakeoverPolicy::Newest, None);
        // A plain name goes to the newest claim, whatever the policy.
        for c in [&stale, &newest] {
            assert_eq!(
                decide_remote(&live, false, c, now),
                Decision::Replace(Stale::Remote)
            );
        }
        // An identity's name: a live holder keeps it under "stale"; "newest" gives it up.
        assert_eq!(
            decide_remote(&live, true, &stale, now),
            Decision::Refuse { silent: ms(0) }
        );
        assert_eq!(
            decide_remote(&live, true, &newest, now),
            Decision::Replace(Stale::Remote)
        );
        let mut probed = established();
        probed.probes = 2;
        let troubled = Holder {
            last_rx: now,
            tcp: Some(probed),
        };
        assert!(matches!(
            decide_remote(&troubled, true, &stale, now),
            Decision::Replace(Stale::Suspect { probes: 2, .. })
        ));
    }

    #[test]
    fn a_live_holder_keeps_its_name_and_a_troubled_one_is_replaced() {
        let now = Instant::now() + Duration::from_secs(3600);
        let stale = config(TakeoverPolicy::Stale, None);
        let holder = |silent_ms: u64, tcp: Option<TcpInfo>| Holder {
            last_rx: now - ms(silent_ms),
            tcp,
        };
        // Silent for an hour, but its ACKs are fresh (it answers keepalive): live.
        let mut idle = established();
        idle.last_ack_recv_ms = 30_000;
        assert_eq!(
            decide(&holder(3_600_000, Some(idle)), &stale, now),
            Decision::Refuse { silent: ms(30_000) }
        );
        let mut probed = established();
        probed.probes = 1;
        assert_eq!(
            decide(&holder(0, Some(probed)), &stale, now),
            Decision::Replace(Stale::Suspect {
                probes: 1,
                retransmits: 0,
                backoff: 0
            })
        );
        let mut unacked = established();
        unacked.retransmits = 2;
        assert!(matches!(
            decide(&holder(0, Some(unacked)), &stale, now),
            Decision::Replace(Stale::Suspect { retransmits: 2, .. })
        ));
        let mut backoff = established();
        backoff.backoff = 1;
        assert!(matches!(
            decide(&holder(0, Some(backoff)), &stale, now),
            Decision::Replace(Stale::Suspect { backoff: 1, .. })
        ));
        let close_wait = TcpInfo {
            state: 8,
            ..TcpInfo::default()
        };
        assert_eq!(
            decide(&holder(0, Some(close_wait)), &stale, now),
            Decision::Replace(Stale::Closing(8))
        );
        assert_eq!(
            decide(&holder(0, None), &stale, now),
            Decision::Replace(Stale::Unreadable)
        );
        // "newest" looks at nothing.
        let newest = config(TakeoverPolicy::Newest, None);
        assert_eq!(
            decide(&holder(0, Some(established())), &newest, now),
            Decision::Replace(Stale::Newest)
        );
    }

    #[test]
    fn silence_is_neither_data_nor_ack_for_takeover_after() {
        let now = Instant::now() + Duration::from_secs(3600);
        let after = config(TakeoverPolicy::Stale, Some(Duration::from_secs(1)));
        let tcp = |ack_ms: u32| {
            let mut t = established();
            t.last_ack_recv_ms = ack_ms;
            Some(t)
        };
        let h = |data_ms: u64, ack_ms: u32| Holder {
            last_rx: now - ms(data_ms),
            tcp: tcp(ack_ms),
        };
        assert_eq!(
            decide(&h(1500, 1500), &after, now),
            Decision::Replace(Stale::Silent(ms(1500)))
        );
        assert_eq!(
            decide(&h(1000, 5000), &after, now),
            Decision::Replace(Stale::Silent(ms(1000))),
            "at the threshold"
        );
        // Data recent, or an ACK recent (a keepalive answer): live.
        assert_eq!(
            decide(&h(999, 5000), &after, now),
            Decision::Refuse { silent: ms(999) }
        );
        assert_eq!(
            decide(&h(60_000, 200), &after, now),
            Decision::Refuse { silent: ms(200) }
        );
        // "0s": no silence test at all.
        let off = config(TakeoverPolicy::Stale, None);
        assert!(matches!(
            decide(&h(10_000_000, u32::MAX), &off, now),
            Decision::Refuse { .. }
        ));
        assert_eq!(
            Stale::Silent(ms(1500)).to_string(),
            "stale=silent silent_ms=1500"
        );
    }

    #[test]
    fn flapping_is_reported_once_per_name_per_window() {
        let t0 = Instant::now();
        let mut f = Flapping::default();
        let reports: Vec<Option<u32>> = (0..8)
            .map(|i| f.record("dev-1", 5, t0 + ms(i * 100)))
            .collect();
        assert_eq!(
            reports,
            [None, None, None, None, None, Some(6), None, None],
            "the sixth in a minute passes 5, once"
        );
        // Another name is counted on its own.
        assert_eq!(f.record("dev-2", 5, t0), None);
        // A new window: counted again from one, reported again past the threshold.
        let later = t0 + FLAP_WINDOW + ms(1000);
        let again: Vec<Option<u32>> = (0..6)
            .map(|i| f.record("dev-1", 5, later + ms(i)))
            .collect();
        assert_eq!(again.last(), Some(&Some(6)));
        assert_eq!(again.iter().flatten().count(), 1);
        // Expired windows are forgotten; 0 turns it off and empties the table.
        f.expire(later + FLAP_WINDOW);
        assert_eq!(f.len(), 0);
        f.record("dev-3", 5, later);
        assert_eq!(f.record("dev-3", 0, later), None);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn the_flapping_table_is_bounded_and_evicts_the_oldest_window() {
        let t0 = Instant::now();
        let mut f = Flapping::default();
        for i in 0..MAX_FLAP_NAMES as u64 {
            f.record(&format!("n{i}"), 1, t0 + ms(i));
        }
        assert_eq!(f.len(), MAX_FLAP_NAMES);
        f.record("newcomer", 1, t0 + ms(5000));
        assert_eq!(f.len(), MAX_FLAP_NAMES);
        // n0 was the oldest: gone, so its next replacement starts a fresh window.
        assert_eq!(f.record("n0", 1, t0 + ms(5001)), None);
        assert_eq!(
            f.record("n1", 1, t0 + ms(5002)),
            None,
            "n1 was evicted next"
        );
        assert_eq!(
            f.record("n5", 1, t0 + ms(5003)),
            Some(2),
            "n5 kept its window"
        );
        // Past a minute, full of expired windows: they are cleared, not evicted one by one.
        f.record("late", 1, t0 + FLAP_WINDOW + ms(6000));
        assert!(f.len() < 10, "{}", f.len());
    }
}

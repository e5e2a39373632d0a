//! Reaper statistics: one struct, owned by the event loop, updated on accept, reject and reap.
//!
//! The statistics line is logfmt (`key=value`, space separated, no spaces inside values), so
//! `grep 'stats '` and any logfmt parser read it:
//!
//! ```text
//! stats live=3 peak=5 accepted=12 rejected=1 reaped=8 reap.closed=6 reap.keepalive-timeout=2 \
//!   latency_ms.keepalive-timeout=5012/5030/5101/5101 lifetime_ms.closed=20/41/90/90 ...
//! ```
//!
//! `auth.failed=N` (present once a password was wrong) counts failed `AUTH` attempts;
//! `auth.lockouts` and `auth.tracked` (present once an address failed) count addresses locked
//! out and those in the failure table now. Throttled attempts and auth timeouts are reaps
//! (`reap.auth-throttled`, `reap.auth-timeout`).
//! `latency_ms.R` (detection reasons only) is the time from the last byte received to the reap;
//! `lifetime_ms.R` is accept to reap. Both are `min/p50/p99/max`. Reasons with no reaps are
//! left out of the line. The line ends with the presence counters (docs/presence.md):
//! `presence.events` (events published, = the last sequence number), `presence.subscribers`
//! and `presence.dropped` (slow subscribers disconnected). With `session.unique_names`, once a
//! name changed hands or was refused: `takeover.replaced`, `takeover.refused` and
//! `takeover.flapping` (src/session/takeover.rs) before the presence counters.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::session::reap::ReapReason;
use crate::session::takeover::TakeoverCounters;
use crate::session::tls_layer::FailureCause;
use crate::telemetry::command_rate::CommandRate;
use crate::telemetry::histogram::Histogram;
use crate::telemetry::last_hour::LastHour;
use crate::telemetry::presence_events::PresenceCounters;

/// Busy-poll windows (`server.busy_poll_us`) opened and windows that caught an event, since
/// start; kept in the statistics and
/// shown by `INFO` and the metrics so an operator can see whether busy polling pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub opened: u64,
    pub caught: u64,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCause {
    /// `server.max_connections` reached.
    MaxConnections,
    /// `server.max_connections_per_ip` reached for the peer's address.
    PerIp,
    /// The process ran out of descriptors (`EMFILE`/`ENFILE`).
    Descriptors,
}

impl RejectCause {
    pub const ALL: [RejectCause; 3] = [
        RejectCause::MaxConnections,
        RejectCause::PerIp,
        RejectCause::Descriptors,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            RejectCause::MaxConnections => "max-connections",
            RejectCause::PerIp => "per-ip",
            RejectCause::Descriptors => "descriptors",
        }
    }
}

/// Why a PROXY protocol connection or header was refused (`server/proxy_phase.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// The connection came from a source not in `server.proxy_trusted` (refused at accept).
    Untrusted,
    /// Not a header of an accepted version, or one that does not parse.
    Malformed,
    /// Not complete within `server.proxy_header_timeout`.
    Timeout,
    /// Past the bound (v1: 107 bytes; v2: 1 KiB of TLVs).
    TooLarge,
}

impl ProxyRefusal {
    pub const ALL: [ProxyRefusal; 4] = [
        ProxyRefusal::Untrusted,
        ProxyRefusal::Malformed,
        ProxyRefusal::Timeout,
        ProxyRefusal::TooLarge,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ProxyRefusal::Untrusted => "untrusted",
            ProxyRefusal::Malformed => "malformed",
            ProxyRefusal::Timeout => "timeout",
            ProxyRefusal::TooLarge => "too-large",
        }
    }
}

/// PROXY protocol headers taken, and connections or headers refused by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    pub accepted: u64,
    refused: [u64; ProxyRefusal::ALL.len()],
}

impl ProxyCounters {
    pub fn on_refused(&mut self, cause: ProxyRefusal) {
        self.refused[cause as usize] += 1;
    }

    pub fn refused(&self, cause: ProxyRefusal) -> u64 {
        self.refused[cause as usize]
    }
}

/// Counters and distributions for one reap reason.
#[derive(Debug, Clone, Default)]
pub struct ReasonStats {
    pub count: u64,
    /// Last byte received → reap; kept for detection reasons only.
    pub latency: Histogram,
    /// Accept → reap.
    pub lifetime: Histogram,
}

/// All reaper statistics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub live: u64,
    pub peak: u64,
    pub accepted: u64,
    rejected: [u64; RejectCause::ALL.len()],
    reasons: [ReasonStats; ReapReason::ALL.len()],
    /// SIGHUP reloads attempted, successful or not.
    pub reloads: u64,
    /// Stored negated so that `Default` means "the start-up load succeeded".
    last_reload_failed: bool,
    /// Presence events and subscribers.
    pub presence: PresenceCounters,
    /// Wrong passwords sent with `AUTH` (or `HELLO ... AUTH`).
    pub auth_failures: u64,
    /// Times an address was locked out after failed passwords (`auth_throttle.rs`).
    pub auth_lockouts: u64,
    /// Addresses in the failure table now (at most `auth_throttle::MAX_TRACKED` + 1).
    pub auth_tracked: u64,
    /// Busy-polling windows (`server.busy_poll_us`), counted by `BusyPoll`.
    pub busy_poll: WindowCounts,
    /// Client-port commands run (`total_commands_processed`), and their recent rate.
    pub commands: u64,
    pub command_rate: CommandRate,
    /// Names taken from a holder, refused, and found flapping (`session.unique_names`).
    pub takeover: TakeoverCounters,
    /// PROXY protocol headers (`server.proxy_protocol`).
    pub proxy: ProxyCounters,
    /// Accepts and reaps by reason, per minute over the last hour (the status page).
    pub last_hour: LastHour,
    /// TLS handshakes and failures (`[tls]`).
    pub tls: TlsCounts,
    /// Signed tokens accepted, refreshed, refused by cause (`[token]`).
    pub tokens: crate::protocol::token_check::TokenCounts,
}

/// TLS sessions: handshakes done (full and resumed), failures by cause, sessions live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCounts {
    pub live: u64,
    pub full_handshakes: u64,
    pub resumed_handshakes: u64,
    pub failures: [u64; FailureCause::ALL.len()],
    /// Certificate, key and CA reloads that were refused (the previous files stay in use).
    pub reload_failures: u64,
    /// The served certificate's `notAfter` (Unix seconds), while TLS is on.
    pub certificate_not_after: Option<i64>,
}

impl TlsCounts {
    pub fn failed(&mut self, cause: FailureCause) {
        self.failures[cause.index()] += 1;
    }

    /// Every failure, whatever its cause.
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().sum()
    }

    /// Seconds until the served certificate expires at `now` (negative once it has).
    pub fn certificate_expires_in(&self, now: std::time::SystemTime) -> Option<i64> {
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.certificate_not_after.map(|t| t - now)
    }

    /// `(cause name, count)` for every cause.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FailureCause::ALL
            .iter()
            .map(|c| (c.name(), self.failures[c.index()]))
    }
}

impl Stats {
    pub fn on_accept(&mut self, now: Instant) {
        self.last_hour.on_accept(now);
        self.accepted += 1;
        self.live += 1;
        self.peak = self.peak.max(self.live);
    }

    pub fn on_reject(&mut self, cause: RejectCause) {
        self.rejected[cause as usize] += 1;
    }

    /// A connection accepted and then refused once its PROXY header gave its real address
    /// (over `max_connections_per_ip`): counted as refused, and no longer as accepted (in the
    /// last hour's minute of `accepted_at` too) or live.
    pub fn on_late_reject(&mut self, cause: RejectCause, accepted_at: Instant) {
        self.last_hour.undo_accept(accepted_at);
        self.accepted = self.accepted.saturating_sub(1);
        self.live = self.live.saturating_sub(1);
        self.on_reject(cause);
    }

    /// Records one reap at `now`. `silent` is the time since the session last received data.
    pub fn on_reap(
        &mut self,
        reason: ReapReason,
        lifetime: Duration,
        silent: Duration,
        now: Instant,
    ) {
        self.last_hour.on_reap(reason, now);
        self.live = self.live.saturating_sub(1);
        let r = &mut self.reasons[reason.index()];
        r.count += 1;
        r.lifetime.record(lifetime);
        if reason.is_detection() {
            r.latency.record(silent);
        }
    }

    /// Records one reload attempt and whether the new file was taken.
    pub fn on_reload(&mut self, ok: bool) {
        self.reloads += 1;
        self.last_reload_failed = !ok;
    }

    /// Whether the last reload (or, before any, the start-up load) succeeded.
    pub fn last_reload_ok(&self) -> bool {
        !self.last_reload_failed
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn rejected(&self, cause: RejectCause) -> u64 {
        self.rejected[cause as usize]
    }

    pub fn reaped_total(&self) -> u64 {
        self.reasons.iter().map(|r| r.count).sum()
    }

    pub fn reason(&self, reason: ReapReason) -> &ReasonStats {
        &self.reasons[reason.index()]
    }

    /// The statistics line (without a trailing newline).
    pub fn line(&self) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "stats live={} peak={} accepted={} rejected={} reaped={}",
            self.live,
            self.peak,
            self.accepted,
            self.rejected_total(),
            self.reaped_total()
        );
        for cause in RejectCause::ALL {
            let n = self.rejected(cause);
            if n > 0 {
                let _ = write!(s, " rejected.{}={n}", cause.name());
            }
        }
        if self.auth_failures > 0 {
            let _ = write!(s, " auth.failed={}", self.auth_failures);
        }
        if self.auth_lockouts > 0 || self.auth_tracked > 0 {
            let _ = write!(
                s,
                " auth.lockouts={} auth.tracked={}",
                self.auth_lockouts, self.auth_tracked
            );
        }
        for reason in ReapReason::ALL {
            let r = self.reason(reason);
            if r.count > 0 {
                let _ = write!(s, " reap.{}={}", reason.name(), r.count);
            }
        }
        for reason in ReapReason::ALL {
            if let Some(q) = self.reason(reason).latency.summary() {
                let _ = write!(
                    s,
                    " latency_ms.{}={}/{}/{}/{}",
                    reason.name(),
                    q.min,
                    q.p50,
                    q.p99,
                    q.max
                );
            }
        }
        for reason in ReapReason::ALL {
            if let Some(q) = self.reason(reason).lifetime.summary() {
                let _ = write!(
                    s,
                    " lifetime_ms.{}={}/{}/{}/{}",
                    reason.name(),
                    q.min,
                    q.p50,
                    q.p99,
                    q.max
                );
            }
        }
        let t = &self.takeover;
        if *t != TakeoverCounters::default() {
            let _ = write!(
                s,
                " takeover.replaced={} takeover.refused={} takeover.flapping={}",
                t.replaced, t.refused, t.flapping
            );
        }
        if self.proxy != ProxyCounters::default() {
            let _ = write!(s, " proxy.accepted={}", self.proxy.accepted);
            for cause in ProxyRefusal::ALL {
                let _ = write!(s, " proxy.{}={}", cause.name(), self.proxy.refused(cause));
            }
        }
        let p = &self.presence;
        let _ = write!(
            s,
            " presence.events={} presence.subscribers={} presence.dropped={}",
            p.seq, p.subscribers, p.dropped
        );
        s
    }
}

/// The one-line status `systemctl status` shows: sessions now and reaps so far, by reason.
pub fn status_line(stats: &Stats) -> String {
    let mut s = format!(
        "live={} peak={} accepted={} rejected={} reaped={}",
        stats.live,
        stats.peak,
        stats.accepted,
        stats.rejected_total(),
        stats.reaped_total()
    );
    for reason in ReapReason::ALL {
        let n = stats.reason(reason).count;
        if n > 0 {
            let _ = write!(s, " reap.{}={n}", reason.name());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn counts_add_up() {
        let mut st = Stats::default();
        for _ in 0..5 {
            st.on_accept(Instant::now());
        }
        st.on_reject(RejectCause::MaxConnections);
        st.on_reap(ReapReason::Closed, secs(1.0), secs(0.1), Instant::now());
        st.on_reap(
            ReapReason::KeepaliveTimeout,
            secs(10.0),
            secs(5.02),
            Instant::now(),
        );
        assert_eq!(st.live, 3);
        assert_eq!(st.peak, 5);
        assert_eq!(st.accepted, st.live + st.reaped_total());
        assert_eq!(st.rejected_total(), 1);
        assert_eq!(st.reason(ReapReason::KeepaliveTimeout).latency.count(), 1);
        // `closed` is not a detection: no latency is kept for it.
        assert_eq!(st.reason(ReapReason::Closed).latency.count(), 0);
        assert!(st.last_reload_ok(), "the start-up load counts as a success");
        st.on_reload(false);
        assert!(!st.last_reload_ok());
        st.on_reload(true);
        assert!(st.last_reload_ok());
        assert_eq!(st.reloads, 2);
    }

    #[test]
    fn line_is_logfmt_and_lists_only_seen_reasons() {
        let mut st = Stats::default();
        st.on_accept(Instant::now());
        st.on_accept(Instant::now());
        st.on_reap(
            ReapReason::KeepaliveTimeout,
            secs(7.0),
            secs(5.02),
            Instant::now(),
        );
        let line = st.line();
        assert!(
            line.starts_with("stats live=1 peak=2 accepted=2 rejected=0 reaped=1"),
            "{line}"
        );
        assert!(line.contains(" reap.keepalive-timeout=1"), "{line}");
        assert!(
            line.contains(" latency_ms.keepalive-timeout=5020/5020/5020/5020"),
            "{line}"
        );
        assert!(
            line.contains(" lifetime_ms.keepalive-timeout=7000/7000/7000/7000"),
            "{line}"
        );
        assert!(!line.contains("reap.closed"), "{line}");
        assert!(
            line.ends_with(" presence.events=0 presence.subscribers=0 presence.dropped=0"),
            "{line}"
        );
        for field in line.split(' ').skip(1) {
            let (k, v) = field.split_once('=').expect("key=value");
            assert!(!k.is_empty() && !v.is_empty(), "{field}");
        }
    }

    #[test]
    fn status_line_counts_reaps_by_reason() {
        let mut st = Stats::default();
        st.on_accept(Instant::now());
        st.on_accept(Instant::now());
        st.on_reap(
            ReapReason::KeepaliveTimeout,
            Duration::from_secs(9),
            Duration::from_secs(8),
            Instant::now(),
        );
        assert_eq!(
            status_line(&st),
            "live=1 peak=2 accepted=2 rejected=0 reaped=1 reap.keepalive-timeout=1"
        );
    }
}

//! Prometheus metrics: every metric name (as constants, here and nowhere else), the histogram
//! bucket bounds, and the rendering of the statistics in the text exposition format 0.0.4.
//!
//! Every label value is listed on every scrape, zeros included (all reap reasons, all reject
//! causes, all detection reasons), so `rate()` and alerts see a series from the first scrape
//! instead of one that appears with its first event.
//!
//! The histograms come from the statistics' own log-linear millisecond histograms
//! (src/telemetry/histogram.rs). Their bucket bounds are chosen on that histogram's bucket boundaries
//! (0.1 s × 2^k has at most six significant bits in milliseconds), so every cumulative count is
//! exact, not interpolated; a compile-time check keeps it so. Durations are whole milliseconds.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::admin::{OpsCounters, OPS_LISTENERS};
use crate::session::reap::ReapReason;
use crate::telemetry::histogram::{self, Histogram};
use crate::telemetry::stats::{ProxyRefusal, RejectCause, Stats};

/// The metric names.
pub mod names {
    pub const SESSIONS_LIVE: &str = "vigild_sessions_live";
    pub const SESSIONS_PEAK: &str = "vigild_sessions_peak";
    pub const ACCEPTED: &str = "vigild_accepted_total";
    pub const REJECTED: &str = "vigild_rejected_total";
    pub const REAPED: &str = "vigild_reaped_total";
    pub const DETECTION_LATENCY: &str = "vigild_detection_latency_seconds";
    pub const SESSION_LIFETIME: &str = "vigild_session_lifetime_seconds";
    pub const RELOADS: &str = "vigild_reloads_total";
    pub const AUTH_FAILURES: &str = "vigild_auth_failures_total";
    pub const AUTH_LOCKOUTS: &str = "vigild_auth_lockouts_total";
    pub const AUTH_TRACKED: &str = "vigild_auth_tracked_addresses";
    pub const BUSY_POLL_WINDOWS: &str = "vigild_busy_poll_windows_total";
    pub const BUSY_POLL_CAUGHT: &str = "vigild_busy_poll_windows_caught_total";
    pub const LAST_RELOAD_SUCCESS: &str = "vigild_last_reload_success";
    pub const BUILD_INFO: &str = "vigild_build_info";
    pub const START_TIME: &str = "vigild_start_time_seconds";
    pub const PRESENCE_EVENTS: &str = "vigild_presence_events_total";
    pub const PRESENCE_MESSAGES: &str = "vigild_presence_messages_total";
    pub const PRESENCE_SUBSCRIBERS: &str = "vigild_presence_subscribers";
    pub const PRESENCE_DROPPED: &str = "vigild_presence_subscribers_dropped_total";
    pub const TAKEOVER_REPLACED: &str = "vigild_takeover_replaced_total";
    pub const TAKEOVER_REFUSED: &str = "vigild_takeover_refused_total";
    pub const TAKEOVER_FLAPPING: &str = "vigild_takeover_flapping_total";
    pub const PROXY_HEADERS: &str = "vigild_proxy_headers_total";
    pub const PROXY_REFUSED: &str = "vigild_proxy_refused_total";
    pub const TAKEOVER_IDENTITY_REFUSED: &str = "vigild_takeover_identity_refused_total";
    pub const TLS_SESSIONS: &str = "vigild_tls_sessions";
    pub const TLS_HANDSHAKES: &str = "vigild_tls_handshakes_total";
    pub const TLS_FAILURES: &str = "vigild_tls_failures_total";
    pub const TLS_RELOAD_FAILURES: &str = "vigild_tls_reload_failures_total";
    pub const TLS_CERTIFICATE_EXPIRY: &str = "vigild_tls_certificate_expiry_seconds";
    pub const TOKENS_ACCEPTED: &str = "vigild_tokens_accepted_total";
    pub const TOKENS_REFRESHED: &str = "vigild_tokens_refreshed_total";
    pub const TOKENS_REFUSED: &str = "vigild_tokens_refused_total";
    pub const OPS_CONNECTIONS: &str = "vigild_ops_connections";
    pub const OPS_REJECTED: &str = "vigild_ops_rejected_total";
    pub const OPS_CLOSED: &str = "vigild_ops_closed_total";
}

/// The `Content-Type` of a scrape: the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `first`, `2 × first`, `4 × first`, ...: Prometheus's exponential buckets.
const fn doubling<const N: usize>(first: u64) -> [u64; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = first << i;
        i += 1;
    }
    out
}

/// Detection latency bounds: 0.1 s to 13107.2 s (3.6 h, beyond the kernel's 2 h 11 min
/// keepalive default), doubling.
pub const LATENCY_BUCKETS_MS: [u64; 18] = doubling(100);
/// Session lifetime bounds: 0.1 s to 419430.4 s (4.9 days), doubling.
pub const LIFETIME_BUCKETS_MS: [u64; 23] = doubling(100);

const fn all_on_boundaries(bounds: &[u64]) -> bool {
    let mut i = 0;
    while i < bounds.len() {
        if !histogram::is_boundary(bounds[i]) {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = assert!(all_on_boundaries(&LATENCY_BUCKETS_MS));
const _: () = assert!(all_on_boundaries(&LIFETIME_BUCKETS_MS));

/// Appends the whole exposition. `ops` are the operator listeners' counters; `started` is
/// when the daemon started.
pub fn render(stats: &Stats, ops: &OpsCounters, started: SystemTime, out: &mut String) {
    scalar(
        out,
        names::SESSIONS_LIVE,
        "gauge",
        "Client sessions open now.",
        stats.live,
    );
    scalar(
        out,
        names::SESSIONS_PEAK,
        "gauge",
        "Most client sessions open at once since start.",
        stats.peak,
    );
    scalar(
        out,
        names::ACCEPTED,
        "counter",
        "Client sessions accepted (accepted = reaped + live).",
        stats.accepted,
    );
    counters_by(
        out,
        names::REJECTED,
        "Client connections refused at accept, by cause.",
        "cause",
        RejectCause::ALL.map(|c| (c.name(), stats.rejected(c))),
    );
    counters_by(
        out,
        names::REAPED,
        "Client sessions ended, by reap reason.",
        "reason",
        ReapReason::ALL.map(|r| (r.name(), stats.reason(r).count)),
    );
    family(
        out,
        names::DETECTION_LATENCY,
        "histogram",
        "Time from the last byte received to the reap, for reasons where a silent or dead peer had to be detected.",
    );
    for reason in ReapReason::ALL.into_iter().filter(|r| r.is_detection()) {
        let h = &stats.reason(reason).latency;
        histogram(
            out,
            names::DETECTION_LATENCY,
            reason,
            h,
            &LATENCY_BUCKETS_MS,
        );
    }
    family(
        out,
        names::SESSION_LIFETIME,
        "histogram",
        "Time from accept to reap of ended client sessions, by reap reason.",
    );
    for reason in ReapReason::ALL {
        let h = &stats.reason(reason).lifetime;
        histogram(
            out,
            names::SESSION_LIFETIME,
            reason,
            h,
            &LIFETIME_BUCKETS_MS,
        );
    }
    auth(stats, out);
    scalar(
        out,
        names::BUSY_POLL_WINDOWS,
        "counter",
        "Busy-polling windows opened after a busy loop turn (server.busy_poll_us).",
        stats.busy_poll.opened,
    );
    scalar(
        out,
        names::BUSY_POLL_CAUGHT,
        "counter",
        "Busy-polling windows that caught an event before they closed, sparing a wakeup.",
        stats.busy_poll.caught,
    );
    scalar(
        out,
        names::RELOADS,
        "counter",
        "Config reloads attempted (SIGHUP), successful or not.",
        stats.reloads,
    );
    scalar(
        out,
        names::LAST_RELOAD_SUCCESS,
        "gauge",
        "1 if the last config reload (or the start-up load) succeeded, 0 if it was refused.",
        u8::from(stats.last_reload_ok()),
    );
    presence(stats, out);
    takeover(stats, out);
    proxy(stats, out);
    tls(stats, out);
    tokens(stats, out);
    operator(ops, out);
    family(
        out,
        names::BUILD_INFO,
        "gauge",
        "Always 1; the version is in the label.",
    );
    let _ = writeln!(
        out,
        "{}{{version=\"{}\"}} 1",
        names::BUILD_INFO,
        env!("CARGO_PKG_VERSION")
    );
    family(
        out,
        names::START_TIME,
        "gauge",
        "Start time of the daemon, in seconds since the Unix epoch.",
    );
    let since_epoch = started.duration_since(UNIX_EPOCH).unwrap_or_default();
    let _ = write!(out, "{} ", names::START_TIME);
    seconds(
        out,
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
    );
    out.push('\n');
}

/// Failed passwords and the per-address lockouts (src/session/auth_throttle.rs); throttled attempts
/// and auth timeouts are reap reasons.
fn auth(stats: &Stats, out: &mut String) {
    scalar(
        out,
        names::AUTH_FAILURES,
        "counter",
        "Wrong passwords compared (AUTH, HELLO ... AUTH).",
        stats.auth_failures,
    );
    scalar(
        out,
        names::AUTH_LOCKOUTS,
        "counter",
        "Times a source address (IPv6: a /64) was locked out after server.auth_failures_before_backoff wrong passwords.",
        stats.auth_lockouts,
    );
    scalar(
        out,
        names::AUTH_TRACKED,
        "gauge",
        "Source addresses in the table of failed passwords now (bounded).",
        stats.auth_tracked,
    );
}

/// `[fleet]` (docs/fleet.md): the link to Redis, after everything else (nothing when off).
pub fn render_fleet(f: &crate::fleet::Status, out: &mut String) {
    if !f.on {
        return;
    }
    let series: [(&str, &str, &str, u64); 11] = [
        (
            "vigild_fleet_redis_up",
            "gauge",
            "1 while the fleet's Redis connection is up.",
            u64::from(f.up),
        ),
        (
            "vigild_fleet_queue_depth",
            "gauge",
            "Presence events and snapshots waiting for the fleet's Redis thread.",
            f.queue_depth,
        ),
        (
            "vigild_fleet_events_written_total",
            "counter",
            "Presence events written to the fleet stream.",
            f.written,
        ),
        (
            "vigild_fleet_events_dropped_total",
            "counter",
            "Presence events not written (queue full, Redis away); repaired by a resync.",
            f.dropped,
        ),
        (
            "vigild_fleet_write_batches_total",
            "counter",
            "Script calls that wrote presence events.",
            f.batches,
        ),
        (
            "vigild_fleet_nodes_lost_total",
            "counter",
            "Lost nodes whose sessions this node published as left node-lost.",
            f.nodes_lost,
        ),
        (
            "vigild_fleet_sessions_lost_total",
            "counter",
            "Sessions this node published as left node-lost.",
            f.sessions_lost,
        ),
        (
            "vigild_fleet_resyncs_total",
            "counter",
            "Times this node re-announced its live sessions.",
            f.resyncs,
        ),
        (
            "vigild_fleet_lease_lapses_total",
            "counter",
            "Times this node's fleet lease lapsed.",
            f.lapses,
        ),
        (
            "vigild_fleet_errors_total",
            "counter",
            "Failed Redis calls (each drops the connection).",
            f.errors,
        ),
        (
            "vigild_fleet_redirects_total",
            "counter",
            "Redis Cluster MOVED replies followed to the owner of the fleet's slot.",
            f.redirects,
        ),
    ];
    for (name, kind, help, value) in series {
        scalar(out, name, kind, help, value);
    }
    family(
        out,
        "vigild_fleet_write_max_seconds",
        "gauge",
        "Longest script call that wrote presence events, since start.",
    );
    let _ = writeln!(
        out,
        "vigild_fleet_write_max_seconds {:.6}",
        f.write_us_max as f64 / 1e6
    );
    family(
        out,
        "vigild_fleet_write_seconds",
        "summary",
        "Time spent in script calls that wrote presence events (_sum), and their number (_count).",
    );
    let _ = write!(out, "vigild_fleet_write_seconds_sum ");
    let _ = writeln!(out, "{:.6}", f.write_us_total as f64 / 1e6);
    let _ = writeln!(out, "vigild_fleet_write_seconds_count {}", f.batches);
}

/// The presence counters (docs/presence.md).
fn presence(stats: &Stats, out: &mut String) {
    let p = &stats.presence;
    let series: [(&str, &str, &str, u64); 4] = [
        (
            names::PRESENCE_EVENTS,
            "counter",
            "Presence events published (joined, named, left); equals the last sequence number.",
            p.seq,
        ),
        (
            names::PRESENCE_MESSAGES,
            "counter",
            "Presence messages queued to subscribers (one per event per subscriber).",
            p.delivered,
        ),
        (
            names::PRESENCE_SUBSCRIBERS,
            "gauge",
            "Admin connections subscribed to presence events now.",
            p.subscribers,
        ),
        (
            names::PRESENCE_DROPPED,
            "counter",
            "Presence subscribers disconnected as slow consumers (pending output above session.max_output_bytes).",
            p.dropped,
        ),
    ];
    for (name, kind, help, value) in series {
        scalar(out, name, kind, help, value);
    }
}

/// Names taken from a holder, refused, and found flapping (`session.unique_names`,
/// docs/presence.md).
fn takeover(stats: &Stats, out: &mut String) {
    let t = &stats.takeover;
    let series: [(&str, &str, u64); 4] = [
        (
            names::TAKEOVER_REPLACED,
            "CLIENT SETNAMEs that took a held name, reaping its holder (reason replaced).",
            t.replaced,
        ),
        (
            names::TAKEOVER_REFUSED,
            "CLIENT SETNAMEs refused because a live session held the name (session.takeover = stale).",
            t.refused,
        ),
        (
            names::TAKEOVER_FLAPPING,
            "Times a name was replaced more than session.flap_threshold times within a minute (once per name per minute).",
            t.flapping,
        ),
        (
            names::TAKEOVER_IDENTITY_REFUSED,
            "Names refused because they were not the session's identity, or it had none while identities are in use.",
            t.identity_refused,
        ),
    ];
    for (name, help, value) in series {
        scalar(out, name, "counter", help, value);
    }
}

/// PROXY protocol headers taken, and refusals by cause (`server.proxy_protocol`).
fn proxy(stats: &Stats, out: &mut String) {
    scalar(
        out,
        names::PROXY_HEADERS,
        "counter",
        "PROXY protocol headers taken (server.proxy_protocol).",
        stats.proxy.accepted,
    );
    counters_by(
        out,
        names::PROXY_REFUSED,
        "PROXY protocol connections refused: untrusted source (at accept), or a header malformed, too large or late (reaped protocol-error).",
        "cause",
        ProxyRefusal::ALL.map(|c| (c.name(), stats.proxy.refused(c))),
    );
}

/// TLS sessions, handshakes by kind, failures by cause, refused reloads, and the served
/// certificate's remaining validity (only while TLS is on) (docs/tls.md).
fn tls(stats: &Stats, out: &mut String) {
    let t = &stats.tls;
    scalar(
        out,
        names::TLS_SESSIONS,
        "gauge",
        "TLS client sessions open now.",
        t.live,
    );
    family(
        out,
        names::TLS_HANDSHAKES,
        "counter",
        "TLS handshakes completed, by kind (full, or resumed from a ticket or session id).",
    );
    let _ = writeln!(
        out,
        "{}{{kind=\"full\"}} {}",
        names::TLS_HANDSHAKES,
        t.full_handshakes
    );
    let _ = writeln!(
        out,
        "{}{{kind=\"resumed\"}} {}",
        names::TLS_HANDSHAKES,
        t.resumed_handshakes
    );
    counters_by(
        out,
        names::TLS_FAILURES,
        "TLS sessions that failed, by cause (reaped tls-handshake or tls-error).",
        "cause",
        t.failures(),
    );
    scalar(
        out,
        names::TLS_RELOAD_FAILURES,
        "counter",
        "Reloads whose certificate, key or CA file was refused (the previous ones stayed in use).",
        t.reload_failures,
    );
    if let Some(left) = t.certificate_expires_in(SystemTime::now()) {
        scalar(
            out,
            names::TLS_CERTIFICATE_EXPIRY,
            "gauge",
            "Seconds until the served TLS certificate expires (negative once it has).",
            left,
        );
    }
}

/// Signed tokens (docs/tokens.md): accepted, refreshed, refused by cause.
fn tokens(stats: &Stats, out: &mut String) {
    let t = &stats.tokens;
    scalar(
        out,
        names::TOKENS_ACCEPTED,
        "counter",
        "Signed tokens that authenticated a session.",
        t.accepted,
    );
    scalar(
        out,
        names::TOKENS_REFRESHED,
        "counter",
        "Fresh tokens for the identity a session already had.",
        t.refreshed,
    );
    counters_by(
        out,
        names::TOKENS_REFUSED,
        "Signed tokens refused, by cause.",
        "cause",
        t.refusals(),
    );
}

/// The operator listeners' connections (docs/admin.md), by `listener`.
fn operator(ops: &OpsCounters, out: &mut String) {
    family(
        out,
        names::OPS_CONNECTIONS,
        "gauge",
        "Operator connections open now, by listener (admin, metrics).",
    );
    for (i, l) in OPS_LISTENERS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{{listener=\"{l}\"}} {}",
            names::OPS_CONNECTIONS,
            ops.open[i]
        );
    }
    family(
        out,
        names::OPS_REJECTED,
        "counter",
        "Operator connections refused because the listener's max_connections was reached.",
    );
    for (i, l) in OPS_LISTENERS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{{listener=\"{l}\"}} {}",
            names::OPS_REJECTED,
            ops.refused[i]
        );
    }
    family(
        out,
        names::OPS_CLOSED,
        "counter",
        "Operator connections closed by the daemon: idle-timeout, or slow-consumer (output that did not drain).",
    );
    for (i, l) in OPS_LISTENERS.iter().enumerate() {
        for (reason, n) in [
            ("idle-timeout", ops.idle_closed[i]),
            ("slow-consumer", ops.slow_closed[i]),
        ] {
            let _ = writeln!(
                out,
                "{}{{listener=\"{l}\",reason=\"{reason}\"}} {n}",
                names::OPS_CLOSED
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A counter family with one sample per `label` value, in `values`' order.
fn counters_by<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    family(out, name, "counter", help);
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// A family with one unlabelled sample.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// One labelled histogram: cumulative buckets, `+Inf`, `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, reason: ReapReason, h: &Histogram, bounds_ms: &[u64]) {
    let reason = reason.name();
    for &bound in bounds_ms {
        let _ = write!(out, "{name}_bucket{{reason=\"{reason}\",le=\"");
        seconds(out, bound);
        let _ = writeln!(out, "\"}} {}", h.count_below(bound));
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{reason=\"{reason}\",le=\"+Inf\"}} {}",
        h.count()
    );
    let _ = write!(out, "{name}_sum{{reason=\"{reason}\"}} ");
    seconds(out, h.sum_ms());
    let _ = writeln!(out, "\n{name}_count{{reason=\"{reason}\"}} {}", h.count());
}

/// Milliseconds as decimal seconds, exactly and without trailing zeros: 1600 → `1.6`.
fn seconds(out: &mut String, ms: u64) {
    let (whole, frac) = (ms / 1000, ms % 1000);
    let _ = write!(out, "{whole}");
    if frac != 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs_text(ms: u64) -> String {
        let mut s = String::new();
        seconds(&mut s, ms);
        s
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(secs_text(0), "0");
        assert_eq!(secs_text(100), "0.1");
        assert_eq!(secs_text(1600), "1.6");
        assert_eq!(secs_text(1005), "1.005");
        assert_eq!(secs_text(102_400), "102.4");
        assert_eq!(secs_text(419_430_400), "419430.4");
    }

    #[test]
    fn bounds() {
        assert_eq!(LATENCY_BUCKETS_MS[0], 100);
        assert_eq!(LATENCY_BUCKETS_MS[17], 13_107_200);
        assert_eq!(LIFETIME_BUCKETS_MS[22], 419_430_400);
    }

    #[test]
    fn every_series_is_present_with_zeros() {
        let mut out = String::new();
        render(
            &Stats::default(),
            &OpsCounters::default(),
            SystemTime::now(),
            &mut out,
        );
        for zero in [
            "vigild_ops_connections{listener=\"admin\"} 0\n",
            "vigild_ops_rejected_total{listener=\"metrics\"} 0\n",
            "vigild_ops_closed_total{listener=\"admin\",reason=\"slow-consumer\"} 0\n",
            "vigild_ops_closed_total{listener=\"metrics\",reason=\"idle-timeout\"} 0\n",
        ] {
            assert!(out.contains(zero), "{zero}");
        }
        for reason in ReapReason::ALL {
            assert!(
                out.contains(&format!("vigild_reaped_total{{reason=\"{}\"}} 0\n", reason)),
                "{reason}"
            );
            assert!(out.contains(&format!(
                "vigild_session_lifetime_seconds_count{{reason=\"{reason}\"}} 0\n"
            )));
            assert_eq!(
                out.contains(&format!(
                    "vigild_detection_latency_seconds_count{{reason=\"{reason}\"}}"
                )),
                reason.is_detection()
            );
        }
        for cause in RejectCause::ALL {
            assert!(out.contains(&format!(
                "vigild_rejected_total{{cause=\"{}\"}} 0\n",
                cause.name()
            )));
        }
        assert!(out.contains("vigild_last_reload_success 1\n"));
        for zero in [
            "vigild_presence_events_total 0\n",
            "vigild_presence_messages_total 0\n",
            "vigild_presence_subscribers 0\n",
            "vigild_presence_subscribers_dropped_total 0\n",
            "vigild_takeover_replaced_total 0\n",
            "vigild_takeover_refused_total 0\n",
            "vigild_takeover_flapping_total 0\n",
            "vigild_proxy_headers_total 0\n",
            "vigild_proxy_refused_total{cause=\"too-large\"} 0\n",
        ] {
            assert!(out.contains(zero), "{zero}");
        }
        assert!(out.contains("vigild_build_info{version=\""));
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_exact() {
        let mut stats = Stats::default();
        let now = std::time::Instant::now();
        for _ in 0..3 {
            stats.on_accept(now);
        }
        let ka = ReapReason::KeepaliveTimeout;
        stats.on_reap(
            ka,
            Duration::from_millis(9000),
            Duration::from_millis(5031),
            now,
        );
        stats.on_reap(
            ka,
            Duration::from_millis(9000),
            Duration::from_millis(6399),
            now,
        );
        stats.on_reap(
            ka,
            Duration::from_millis(9000),
            Duration::from_millis(6400),
            now,
        );
        let mut out = String::new();
        render(&stats, &OpsCounters::default(), SystemTime::now(), &mut out);
        let l = "vigild_detection_latency_seconds_bucket{reason=\"keepalive-timeout\",le=";
        assert!(out.contains(&format!("{l}\"3.2\"}} 0\n")), "{out}");
        assert!(
            out.contains(&format!("{l}\"6.4\"}} 2\n")),
            "6.4 s itself is not below 6.4 s"
        );
        assert!(out.contains(&format!("{l}\"12.8\"}} 3\n")));
        assert!(out.contains(&format!("{l}\"+Inf\"}} 3\n")));
        assert!(out.contains(
            "vigild_detection_latency_seconds_sum{reason=\"keepalive-timeout\"} 17.83\n"
        ));
        assert!(out.contains("vigild_reaped_total{reason=\"keepalive-timeout\"} 3\n"));
        assert!(out.contains("vigild_sessions_live 0\n"));
        assert!(out.contains("vigild_sessions_peak 3\n"));
    }
}

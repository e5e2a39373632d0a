//! `INFO [section ...]` on the admin listener, in Redis's format: `# Section` headers, then
//! `key:value` lines, CRLF line ends, one blank line between sections.
//!
//! Keys are unique across sections (redis-py folds every section into one dictionary), and
//! reason names are the same as in logs and metrics (`reaped_keepalive-timeout`). Distribution
//! lines use Redis's `key:field=value,field=value` form, which Redis clients parse into maps.
//! Counters list every reason, zeros included; distributions only the reasons seen so far.

use std::fmt::Write as _;

use super::{View, OPS_LISTENERS};
use crate::config::duration::format_duration;
use crate::config::UserTimeout;
use crate::session::reap::ReapReason;
use crate::telemetry::histogram::Histogram;
use crate::telemetry::stats::{ProxyRefusal, RejectCause};

/// The sections, in order. `INFO`, `INFO all`, `INFO default` and `INFO everything` give all.
pub const SECTIONS: [&str; 10] = [
    "server",
    "clients",
    "memory",
    "stats",
    "keepalive",
    "reaper",
    "presence",
    "fleet",
    "tls",
    "keyspace",
];

/// Renders the sections named in `wanted` (case-insensitive; all of them when empty). An
/// unknown name selects nothing, as in Redis.
pub fn render(view: &View<'_>, wanted: &[&[u8]], out: &mut String) {
    let mut first = true;
    for section in SECTIONS {
        if !crate::protocol::probe::info_selects(wanted, section) {
            continue;
        }
        if !first {
            out.push_str("\r\n");
        }
        first = false;
        let mut title = section.to_string();
        title[..1].make_ascii_uppercase();
        let _ = write!(out, "# {title}\r\n");
        match section {
            "server" => server(view, out),
            "clients" => clients(view, out),
            "stats" => stats(view, out),
            "keepalive" => keepalive(view, out),
            "reaper" => reaper(view, out),
            "memory" => memory(out),
            "presence" => presence(view, out),
            "fleet" => fleet(view, out),
            "tls" => tls(view, out),
            // No keys: the section is there (empty) because tools that sum `dbN:keys=` expect it.
            _ => {}
        }
    }
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{key}:{value}\r\n");
}

fn server(v: &View<'_>, out: &mut String) {
    let uptime = v.now.saturating_duration_since(v.started).as_secs();
    line(out, "vigild_version", env!("CARGO_PKG_VERSION"));
    line(
        out,
        "os",
        format_args!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    );
    line(out, "arch_bits", usize::BITS);
    line(out, "multiplexing_api", "epoll");
    line(out, "process_id", std::process::id());
    line(out, "uptime_in_seconds", uptime);
    line(out, "uptime_in_days", uptime / 86_400);
    line(out, "config_file", v.config_path.display());
    line(out, "tcp_port", v.listeners.first().map_or(0, |a| a.port()));
    let listeners: Vec<String> = v.listeners.iter().map(|a| a.to_string()).collect();
    line(out, "listeners", listeners.join(","));
    line(out, "admin_listener", v.admin_listener.unwrap_or("off"));
    line(out, "metrics_listener", v.metrics_listener.unwrap_or("off"));
}

fn clients(v: &View<'_>, out: &mut String) {
    line(out, "connected_clients", v.sessions.len());
    line(out, "peak_clients", v.stats.peak);
    line(out, "maxclients", v.config.server.max_connections);
    line(
        out,
        "maxclients_per_ip",
        v.config.server.max_connections_per_ip,
    );
    // No command blocks here; the field is what `redis-cli --stat` and dashboards read.
    line(out, "blocked_clients", 0);
    line(out, "admin_clients", v.admin_clients);
    // Per operator listener: open now, its cap, and what was refused or closed by timer.
    let ops = v.ops;
    for (i, name) in OPS_LISTENERS.iter().enumerate() {
        let config = if i == 0 {
            &v.config.admin
        } else {
            &v.config.metrics
        };
        line(out, &format!("{name}_connections"), ops.open[i]);
        line(
            out,
            &format!("{name}_max_connections"),
            config.max_connections,
        );
        line(out, &format!("{name}_rejected_connections"), ops.refused[i]);
        line(out, &format!("{name}_idle_closed"), ops.idle_closed[i]);
        line(
            out,
            &format!("{name}_slow_consumers_closed"),
            ops.slow_closed[i],
        );
    }
}

/// Redis's `used_memory` (the allocator's bytes in use) and `used_memory_rss`, read when asked.
fn memory(out: &mut String) {
    let heap = crate::os::sys::heap_in_use().unwrap_or(0);
    line(out, "used_memory", heap);
    line(out, "used_memory_human", human(heap));
    line(
        out,
        "used_memory_rss",
        crate::os::sys::resident_bytes().unwrap_or(0),
    );
    line(out, "maxmemory", 0);
}

/// Bytes as Redis shows them in `*_human` fields: `870.23K`, `1.50M`.
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes}B"),
        1024..1_048_576 => format!("{:.2}K", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.2}M", b / 1_048_576.0),
        _ => format!("{:.2}G", b / 1_073_741_824.0),
    }
}

fn stats(v: &View<'_>, out: &mut String) {
    let s = v.stats;
    line(out, "total_connections_received", s.accepted);
    line(out, "total_commands_processed", s.commands);
    line(
        out,
        "instantaneous_ops_per_sec",
        s.command_rate.per_second(v.now, s.commands),
    );
    line(out, "rejected_connections", s.rejected_total());
    for cause in RejectCause::ALL {
        line(
            out,
            &format!("rejected_{}", cause.name()),
            s.rejected(cause),
        );
    }
    line(out, "reaped_sessions", s.reaped_total());
    for reason in ReapReason::ALL {
        line(
            out,
            &format!("reaped_{}", reason.name()),
            s.reason(reason).count,
        );
    }
    // Unique names (docs/presence.md): names taken from a holder, refused, found flapping.
    line(out, "takeover_replaced", s.takeover.replaced);
    line(out, "takeover_refused", s.takeover.refused);
    line(out, "takeover_flapping", s.takeover.flapping);
    line(out, "auth_failures", s.auth_failures);
    line(out, "auth_lockouts", s.auth_lockouts);
    line(out, "auth_tracked_addresses", s.auth_tracked);
    // PROXY protocol headers (server.proxy_protocol): taken, and refused by cause.
    line(out, "proxy_headers_accepted", s.proxy.accepted);
    for cause in ProxyRefusal::ALL {
        line(
            out,
            &format!("proxy_refused_{}", cause.name().replace('-', "_")),
            s.proxy.refused(cause),
        );
    }
    line(out, "busy_poll_windows", s.busy_poll.opened);
    line(out, "busy_poll_windows_caught", s.busy_poll.caught);
    line(out, "config_reloads", s.reloads);
    line(out, "last_reload_ok", u8::from(s.last_reload_ok()));
}

fn keepalive(v: &View<'_>, out: &mut String) {
    let ka = &v.config.keepalive;
    line(out, "keepalive_enabled", u8::from(ka.enabled));
    line(out, "keepalive_idle_seconds", ka.idle.as_secs());
    line(out, "keepalive_interval_seconds", ka.interval.as_secs());
    line(out, "keepalive_probes", ka.probes);
    let configured = match ka.user_timeout {
        UserTimeout::Auto => "auto".to_string(),
        UserTimeout::Off => "off".to_string(),
        UserTimeout::Fixed(d) => format_duration(d),
    };
    line(out, "keepalive_user_timeout", configured);
    line(
        out,
        "keepalive_user_timeout_ms",
        ka.effective_user_timeout().map_or(0, |d| d.as_millis()),
    );
    line(
        out,
        "keepalive_detection_bound_seconds",
        ka.detection_bound().as_secs(),
    );
    line(
        out,
        "session_idle_timeout_ms",
        v.config.session.idle_timeout.map_or(0, |d| d.as_millis()),
    );
}

fn reaper(v: &View<'_>, out: &mut String) {
    let detections: u64 = ReapReason::ALL
        .into_iter()
        .filter(|r| r.is_detection())
        .map(|r| v.stats.reason(r).count)
        .sum();
    line(out, "reaped_detections", detections);
    for reason in ReapReason::ALL {
        distribution(out, "latency", reason, &v.stats.reason(reason).latency);
    }
    for reason in ReapReason::ALL {
        distribution(out, "lifetime", reason, &v.stats.reason(reason).lifetime);
    }
}

/// Presence events (docs/presence.md): the last sequence number (= events published), the
/// subscribers, those dropped as slow consumers, and the name index.
fn presence(v: &View<'_>, out: &mut String) {
    let p = &v.stats.presence;
    line(out, "presence_seq", p.seq);
    line(out, "presence_events_published", p.seq);
    line(out, "presence_messages_delivered", p.delivered);
    line(out, "presence_subscribers", p.subscribers);
    line(out, "presence_subscribers_dropped", p.dropped);
    line(
        out,
        "presence_unique_names",
        u8::from(v.config.session.unique_names),
    );
    line(out, "presence_names_held", v.sessions.names());
}

/// TLS (docs/tls.md): listeners, sessions live, handshakes full and resumed, failures by
/// cause, the certificate's remaining validity, refused reloads; then signed tokens
/// (docs/tokens.md): accepted, refreshed, refused by cause, and distinct identities live.
fn tls(v: &View<'_>, out: &mut String) {
    let t = &v.stats.tls;
    line(out, "tls_listeners", v.config.tls.listen.len());
    line(out, "tls_client_auth", v.config.tls.client_auth.name());
    line(out, "tls_sessions", t.live);
    line(out, "tls_handshakes_full", t.full_handshakes);
    line(out, "tls_handshakes_resumed", t.resumed_handshakes);
    line(out, "tls_handshake_failures", t.failures_total());
    for (cause, n) in t.failures() {
        let _ = write!(out, "tls_failures_{}:{n}\r\n", cause.replace('-', "_"));
    }
    if let Some(left) = t.certificate_expires_in(std::time::SystemTime::now()) {
        line(out, "tls_certificate_expiry_seconds", left);
    }
    line(out, "tls_reload_failures", t.reload_failures);
    let k = &v.stats.tokens;
    line(out, "token_auth", u8::from(v.config.token.enabled()));
    line(out, "token_keys", v.config.token.keys.keys.len());
    line(out, "token_accepted", k.accepted);
    line(out, "token_refreshed", k.refreshed);
    for (why, n) in k.refusals() {
        let _ = write!(out, "token_refused_{}:{n}\r\n", why.replace('-', "_"));
    }
    line(out, "identities", v.sessions.identities());
}

/// `[fleet]` (docs/fleet.md): the link to Redis and what went through it.
fn fleet(v: &View<'_>, out: &mut String) {
    let f = v.fleet.status();
    line(out, "fleet_enabled", u8::from(f.on));
    line(out, "fleet_node", &f.node);
    line(out, "fleet_epoch", f.epoch);
    line(out, "fleet_redis_up", u8::from(f.up));
    line(out, "fleet_queue_depth", f.queue_depth);
    line(out, "fleet_events_written", f.written);
    line(out, "fleet_events_dropped", f.dropped);
    line(out, "fleet_write_batches", f.batches);
    line(
        out,
        "fleet_write_latency_avg_us",
        f.write_us_total.checked_div(f.batches).unwrap_or(0),
    );
    line(out, "fleet_write_latency_max_us", f.write_us_max);
    line(out, "fleet_nodes_lost", f.nodes_lost);
    line(out, "fleet_sessions_lost", f.sessions_lost);
    line(out, "fleet_resyncs", f.resyncs);
    line(out, "fleet_lease_lapses", f.lapses);
    line(out, "fleet_takeovers", f.takeovers);
    line(out, "fleet_sessions_fenced", f.fenced);
    line(out, "fleet_errors", f.errors);
    line(out, "fleet_redirects", f.redirects);
    line(out, "fleet_nodes", v.fleet.view().nodes.len());
}

/// `latency_keepalive-timeout:count=2,min_ms=5012,p50_ms=5030,p99_ms=5101,max_ms=5101,mean_ms=5056`
fn distribution(out: &mut String, what: &str, reason: ReapReason, h: &Histogram) {
    let Some(q) = h.summary() else {
        return;
    };
    let _ = write!(
        out,
        "{what}_{}:count={},min_ms={},p50_ms={},p99_ms={},max_ms={},mean_ms={}\r\n",
        reason.name(),
        h.count(),
        q.min,
        q.p50,
        q.p99,
        q.max,
        h.sum_ms() / h.count().max(1),
    );
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes_read_as_redis_writes_them() {
        assert_eq!(human(870), "870B");
        assert_eq!(human(891_116), "870.23K");
        assert_eq!(human(1_572_864), "1.50M");
        assert_eq!(human(3 << 30), "3.00G");
    }
}

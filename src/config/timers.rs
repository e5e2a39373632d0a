//! What a config's timers mean for an operator, in a few lines: how soon a dead peer is reaped,
//! how long an outage a healthy idle session survives, and what keepalive costs on the wire.
//! `vigild --check-config` prints it and the daemon logs it once at start-up.
//!
//! A pure function of [`Config`]: the numbers follow from the keys and from what Linux does
//! with them, not from this host's state. Linux's keepalive timer (net/ipv4/tcp_timer.c)
//! sends the first probe after `idle` without a received packet and one every `interval`
//! after that; a probe answered resets the wait, so a healthy idle session costs one probe and
//! one ACK every `idle`. Without a user timeout it resets the connection when `probes` probes
//! went unanswered; with one it ignores the count and resets at the first timer run at least
//! the user timeout after the last received packet, with at least one probe out.
//!
//! Bytes are counted at the IP layer: a probe is a bare TCP segment (no payload, sequence one
//! below the peer's next expected) and so is its ACK, each 20 bytes of TCP header, 12 of
//! timestamp option (Linux's default `net.ipv4.tcp_timestamps = 1`, negotiated by every common
//! peer) and 20 of IPv4 header (40 of IPv6), measured on loopback as 52 bytes each way.
//! Link-layer framing is left out, since it depends on the medium.

use std::time::Duration;

use crate::config::duration::format_duration;
use crate::config::{Config, KeepaliveConfig, UserTimeout};

/// IP + TCP header with the timestamp option, no payload: one keepalive probe, or its ACK.
const PROBE_BYTES_IPV4: u64 = 20 + 20 + 12;
/// The same over IPv6.
const PROBE_BYTES_IPV6: u64 = 40 + 20 + 12;
const SECONDS_PER_DAY: u64 = 86_400;

/// One line naming the listeners, the session limit and whether keepalive is on: what follows
/// `vigild: FILE is valid: `.
pub fn headline(config: &Config) -> String {
    let listen: Vec<String> = config
        .server
        .listen
        .iter()
        .map(|a| a.to_string())
        .chain(config.tls.listen.iter().map(|a| format!("{a} (TLS)")))
        .collect();
    let listen = if listen.is_empty() {
        "no listener of its own (socket activation only)".to_owned()
    } else {
        format!("listens on {}", listen.join(", "))
    };
    format!(
        "{listen}, up to {} sessions, keepalive {}",
        config.server.max_connections,
        if config.keepalive.enabled {
            "on"
        } else {
            "off"
        }
    )
}

/// The timer summary: three lines (detection bounds, glitch tolerance, probe cost), and with
/// the PROXY protocol on a fourth saying what keepalive cannot see; no trailing newlines.
pub fn summary(config: &Config) -> Vec<String> {
    let mut lines = keepalive_lines(config);
    lines.extend(through_a_proxy(config));
    lines
}

/// With `server.proxy_protocol` on, the sessions come through a proxy that ends TCP: the
/// kernel's probes reach only the proxy (HAProxy's manual: keepalive packets are not
/// forwarded to the other side), so a client that vanishes behind it is seen only when the
/// proxy gives up on it. What to set instead (measured in docs/detection.md).
fn through_a_proxy(config: &Config) -> Option<String> {
    let proxy = &config.server.proxy;
    if !proxy.mode.is_on() {
        return None;
    }
    let app = match config.session.idle_timeout {
        Some(t) => format!(
            "session.idle_timeout {} applies: clients must send something (a PING) more often \
             than that",
            format_duration(t)
        ),
        None => "set session.idle_timeout (now off) and have clients PING more often than it \
                 (every Redis client can, e.g. redis-py's health_check_interval)"
            .to_owned(),
    };
    Some(format!(
        "through a proxy: server.proxy_protocol = \"{}\", so keepalive probes reach only the \
         proxy, not the clients behind it, and a client that vanishes there is reaped only when \
         the proxy gives up on it; {app}; and turn on the proxy's client-side keepalive \
         (HAProxy: option clitcpka with clitcpka-idle, clitcpka-intvl, clitcpka-cnt, and \
         tcp-ut on the bind line)",
        proxy.mode.name()
    ))
}

/// The three keepalive lines of [`summary`].
fn keepalive_lines(config: &Config) -> Vec<String> {
    let ka = &config.keepalive;
    let app_idle = match config.session.idle_timeout {
        Some(t) => format!(
            "any session silent for {} is reaped (session.idle_timeout)",
            format_duration(t)
        ),
        None => "no application idle timeout (session.idle_timeout off)".to_owned(),
    };
    let in_flight = match ka.effective_user_timeout() {
        Some(t) => format!(
            "one that dies with a reply in flight after {} (keepalive.user_timeout {})",
            format_duration(t),
            user_timeout_word(ka.user_timeout)
        ),
        None => format!(
            "one that dies with a reply in flight after the kernel's retransmissions \
             (net.ipv4.tcp_retries2, about 15m at its default), as no user timeout is set \
             (keepalive.user_timeout {})",
            user_timeout_word(ka.user_timeout)
        ),
    };
    if !ka.enabled {
        return vec![
            format!(
                "detection: keepalive off, so an idle dead peer is found only by \
                 session.idle_timeout; {in_flight}; {app_idle}"
            ),
            "glitch tolerance: keepalive off, so no outage cuts an idle session".to_owned(),
            "probe cost: none (keepalive off)".to_owned(),
        ];
    }
    let reap_after = idle_reap_after(ka);
    let how = match ka.user_timeout {
        UserTimeout::Fixed(ut) if ut != ka.detection_bound() => format!(
            "keepalive.user_timeout {} ends the probing of idle {} + interval {} × {} probes",
            format_duration(ut),
            format_duration(ka.idle),
            format_duration(ka.interval),
            ka.probes
        ),
        _ => format!(
            "idle {} + interval {} × {} probes",
            format_duration(ka.idle),
            format_duration(ka.interval),
            ka.probes
        ),
    };
    let tolerance = reap_after.saturating_sub(ka.idle);
    let (bytes, family) =
        if config.server.listen.iter().all(|a| a.is_ipv6()) && !config.server.listen.is_empty() {
            (PROBE_BYTES_IPV6, "IPv6")
        } else {
            (PROBE_BYTES_IPV4, "IPv4")
        };
    // One probe and one ACK every `idle`; idle is at least 1 s (validated; hand-built configs
    // are clamped rather than divided by zero).
    let per_day = SECONDS_PER_DAY * 2 * bytes / ka.idle.as_secs().max(1);
    let sessions = config.server.max_connections as u64;
    vec![
        format!(
            "detection: an idle dead peer is reaped after {} ({how}); {in_flight}; {app_idle}",
            format_duration(reap_after)
        ),
        format!(
            "glitch tolerance: a healthy idle session is cut if the network drops every packet \
             for longer than {} (interval {} × {}); a shorter outage is survived",
            format_duration(tolerance),
            format_duration(ka.interval),
            probes(tolerance.as_secs() / ka.interval.as_secs().max(1))
        ),
        format!(
            "probe cost: a probe and its ACK every {} per idle session, {bytes} bytes each \
             ({family} + TCP header with timestamps, no payload): {} a day per session, {} a day \
             for {sessions} (server.max_connections)",
            format_duration(ka.idle),
            format_bytes(per_day),
            format_bytes(per_day.saturating_mul(sessions))
        ),
    ]
}

/// When Linux resets an idle connection whose peer is gone, counted from the last packet
/// received (see the module docs).
pub fn idle_reap_after(ka: &KeepaliveConfig) -> Duration {
    match ka.user_timeout {
        UserTimeout::Fixed(ut) => {
            // The timer runs at idle + k × interval, k >= 1, and resets at the first run at
            // least `ut` after the last packet received.
            let interval = ka.interval.max(Duration::from_secs(1));
            let past_idle = ut.saturating_sub(ka.idle);
            let k = past_idle.as_nanos().div_ceil(interval.as_nanos()).max(1);
            let k = u32::try_from(k).unwrap_or(u32::MAX);
            ka.idle.saturating_add(interval.saturating_mul(k))
        }
        UserTimeout::Auto | UserTimeout::Off => ka.detection_bound(),
    }
}

/// `1 probe`, `6 probes`.
fn probes(n: u64) -> String {
    format!("{n} probe{}", if n == 1 { "" } else { "s" })
}

fn user_timeout_word(ut: UserTimeout) -> &'static str {
    match ut {
        UserTimeout::Auto => "auto",
        UserTimeout::Off => "off",
        UserTimeout::Fixed(_) => "fixed",
    }
}

/// Bytes with a binary unit and one decimal past KiB: `999 B`, `146.2 KiB`, `1.4 GiB`.
fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap().config
    }

    #[test]
    fn defaults() {
        let c = config("");
        assert_eq!(
            headline(&c),
            "listens on 127.0.0.1:7379, up to 10000 sessions, keepalive on"
        );
        assert_eq!(
            summary(&c),
            [
                "detection: an idle dead peer is reaped after 2m (idle 1m + interval 10s × 6 \
                 probes); one that dies with a reply in flight after 2m (keepalive.user_timeout \
                 auto); no application idle timeout (session.idle_timeout off)",
                "glitch tolerance: a healthy idle session is cut if the network drops every \
                 packet for longer than 1m (interval 10s × 6 probes); a shorter outage is \
                 survived",
                "probe cost: a probe and its ACK every 1m per idle session, 52 bytes each (IPv4 \
                 + TCP header with timestamps, no payload): 146.2 KiB a day per session, 1.4 GiB \
                 a day for 10000 (server.max_connections)",
            ]
        );
    }

    #[test]
    fn tight_keepalive_with_an_idle_timeout_over_ipv6() {
        let c = config(
            "[server]\nlisten = [\"[::1]:7379\"]\nmax_connections = 500\n\
             [keepalive]\nidle = \"10s\"\ninterval = \"2s\"\nprobes = 3\n\
             [session]\nidle_timeout = \"5m\"\n",
        );
        assert_eq!(
            summary(&c),
            [
                "detection: an idle dead peer is reaped after 16s (idle 10s + interval 2s × 3 \
                 probes); one that dies with a reply in flight after 16s \
                 (keepalive.user_timeout auto); any session silent for 5m is reaped \
                 (session.idle_timeout)",
                "glitch tolerance: a healthy idle session is cut if the network drops every \
                 packet for longer than 6s (interval 2s × 3 probes); a shorter outage is \
                 survived",
                "probe cost: a probe and its ACK every 10s per idle session, 72 bytes each (IPv6 \
                 + TCP header with timestamps, no payload): 1.2 MiB a day per session, 593.3 MiB \
                 a day for 500 (server.max_connections)",
            ]
        );
    }

    #[test]
    fn a_fixed_user_timeout_decides_when_probing_ends() {
        // Below the bound: the first timer run past 25s is idle 1m + 1 × 10s.
        let c = config("[keepalive]\nuser_timeout = \"25s\"\n");
        let lines = summary(&c);
        assert!(
            lines[0].starts_with(
                "detection: an idle dead peer is reaped after 1m10s (keepalive.user_timeout 25s \
                 ends the probing of idle 1m + interval 10s × 6 probes); one that dies with a \
                 reply in flight after 25s (keepalive.user_timeout fixed);"
            ),
            "{lines:?}"
        );
        assert!(lines[1].contains("longer than 10s (interval 10s × 1 probe)"));
        // Above it: probing goes on past the count, to the first run at least 125s in.
        let c = config("[keepalive]\nuser_timeout = \"125s\"\n");
        assert!(
            summary(&c)[0].contains("reaped after 2m10s"),
            "{:?}",
            summary(&c)
        );
        // Equal to it: the same as auto.
        let c = config("[keepalive]\nuser_timeout = \"2m\"\n");
        assert!(summary(&c)[0].contains("after 2m (idle 1m + interval 10s × 6 probes)"));
    }

    #[test]
    fn keepalive_off() {
        let c = config("[keepalive]\nenabled = false\n");
        assert_eq!(
            summary(&c),
            [
                "detection: keepalive off, so an idle dead peer is found only by \
                 session.idle_timeout; one that dies with a reply in flight after the kernel's \
                 retransmissions (net.ipv4.tcp_retries2, about 15m at its default), as no user \
                 timeout is set (keepalive.user_timeout auto); no application idle timeout \
                 (session.idle_timeout off)",
                "glitch tolerance: keepalive off, so no outage cuts an idle session",
                "probe cost: none (keepalive off)",
            ]
        );
        assert!(headline(&c).ends_with("keepalive off"));
    }

    #[test]
    fn bytes_read_as_a_person_would_write_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(149_760), "146.2 KiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
    }
}

//! What every fault case asserts, in one place: the reap line's reason, the detection time by
//! the test's clock and by the daemon's own `silent_ms` (both inside the case's bound), and the
//! statistics counters for that reason. Also the daemon config the matrix uses and the
//! nftables rules that make the faults.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::util::{fields, netns, Daemon};

/// Before a cut: waits until the session(s) on the daemon's `port` (from `peer`, when given)
/// are quiet, the peer's delayed ACK of the last reply out, so the cut finds an idle
/// connection (otherwise it is a retransmission death).
pub fn wait_quiet(port: u16, peer: Option<&str>) {
    netns::wait_acked(port, peer);
}

/// The matrix's keepalive settings (idle 2 s, interval 1 s, 3 probes: bound 5 s), the given
/// user timeout, statistics only on demand, plus `extra` sections.
pub fn config(user_timeout: &str, extra: &str) -> String {
    format!(
        "[keepalive]\nidle = \"2s\"\ninterval = \"1s\"\nprobes = 3\nuser_timeout = \"{user_timeout}\"\n\
         [stats]\ninterval = \"0s\"\n{extra}"
    )
}

/// Starts vigild in the calling thread's namespace; it dies with that thread.
pub fn start(config: &str) -> Daemon {
    Daemon::start_with(config, netns::kill_with_parent)
}

/// A detection bound: `nominal_ms`, not earlier than `early_ms` before it nor later than
/// `late_ms` after it.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub nominal_ms: u64,
    pub early_ms: u64,
    pub late_ms: u64,
}

impl Bound {
    pub const fn around(nominal_ms: u64, early_ms: u64, late_ms: u64) -> Bound {
        Bound {
            nominal_ms,
            early_ms,
            late_ms,
        }
    }

    /// Anything from 0 to `ms`.
    pub const fn under(ms: u64) -> Bound {
        Bound::around(0, 0, ms)
    }

    pub fn lo(&self) -> u64 {
        self.nominal_ms.saturating_sub(self.early_ms)
    }

    pub fn hi(&self) -> u64 {
        self.nominal_ms + self.late_ms
    }

    pub fn check(&self, what: &str, ms: u64, context: &str) {
        assert!(
            (self.lo()..=self.hi()).contains(&ms),
            "{what} = {ms} ms is outside {self} ({}..={} ms)\n{context}",
            self.lo(),
            self.hi()
        );
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nominal_ms == 0 {
            write!(f, "< {} ms", self.late_ms)
        } else {
            write!(
                f,
                "{:.1} s (-{:.1}/+{:.1})",
                self.nominal_ms as f64 / 1000.0,
                self.early_ms as f64 / 1000.0,
                self.late_ms as f64 / 1000.0
            )
        }
    }
}

/// One row of the printed matrix.
#[derive(Debug, Clone)]
pub struct Row {
    pub expected: &'static str,
    pub got: String,
    /// Detection time by the test's clock.
    pub test_ms: u64,
    /// The daemon's `silent_ms` (or `None` when nothing was reaped).
    pub daemon_ms: Option<u64>,
    pub bound: String,
    pub note: String,
}

/// A reap line, parsed, with both detection times.
pub struct Reap {
    pub line: String,
    pub fields: HashMap<String, String>,
    pub test_ms: u64,
    pub silent_ms: u64,
}

impl Reap {
    pub fn field(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .map_or_else(|| panic!("no {key} in {}", self.line), String::as_str)
    }

    pub fn num(&self, key: &str) -> u64 {
        self.field(key)
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {}: {e}", self.line))
    }

    pub fn row(&self, expected: &'static str, bound: Bound, note: String) -> Row {
        Row {
            expected,
            got: self.field("reason").to_string(),
            test_ms: self.test_ms,
            daemon_ms: Some(self.silent_ms),
            bound: bound.to_string(),
            note,
        }
    }
}

/// Selects the reap line of the session with this id.
pub fn by_id(id: i64) -> String {
    format!(" id={id} ")
}

/// Selects the reap line of the session whose peer (the client's local address) is `peer`.
pub fn by_peer(peer: SocketAddr) -> String {
    format!(" peer={peer} ")
}

/// Is `line` a reap line selected by `key` (from [`by_id`] or [`by_peer`])?
pub fn is_reap(line: &str, key: &str) -> bool {
    line.contains(" reap ") && line.contains(key)
}

/// Waits for the reap line selected by `key`; asserts its reason, and that the detection time
/// by the test's clock (from `since`, the peer's last packet as the test knows it) and the
/// daemon's `silent_ms` both lie inside `bound`.
pub fn expect_reap(d: &Daemon, key: &str, reason: &str, since: Instant, bound: Bound) -> Reap {
    let timeout = Duration::from_millis(bound.hi() + 3_000).saturating_sub(since.elapsed());
    let (line, at) = d
        .log
        .wait_for_at(timeout, |l| is_reap(l, key))
        .unwrap_or_else(|| {
            panic!(
                "no reap line for{key}within {timeout:?}; log:\n{}",
                d.log.text()
            )
        });
    let f = fields(&line);
    assert_eq!(
        f.get("reason").map(String::as_str),
        Some(reason),
        "wrong reason: {line}"
    );
    let silent_ms = f
        .get("silent_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no silent_ms in {line}"));
    let reap = Reap {
        test_ms: at.saturating_duration_since(since).as_millis() as u64,
        silent_ms,
        fields: f,
        line,
    };
    bound.check(
        "detection time by the test's clock",
        reap.test_ms,
        &reap.line,
    );
    bound.check("the daemon's silent_ms", reap.silent_ms, &reap.line);
    reap
}

/// Asks for a statistics line (SIGUSR1) and asserts the counter of `reason` is `count`; for
/// detection reasons also that the daemon's latency distribution lies inside `bound`.
pub fn expect_stats(
    d: &Daemon,
    reason: &str,
    count: u64,
    bound: Option<Bound>,
) -> HashMap<String, String> {
    let s = d.stats();
    let key = format!("reap.{reason}");
    assert_eq!(
        s.get(&key).map(String::as_str),
        Some(count.to_string().as_str()),
        "{key} in stats {s:?}"
    );
    if let Some(bound) = bound {
        let key = format!("latency_ms.{reason}");
        let summary = s
            .get(&key)
            .unwrap_or_else(|| panic!("no {key} in stats {s:?}"));
        let parts: Vec<u64> = summary.split('/').filter_map(|v| v.parse().ok()).collect();
        assert_eq!(parts.len(), 4, "{key}={summary} is min/p50/p99/max");
        bound.check(&format!("{key} min"), parts[0], summary);
        bound.check(&format!("{key} max"), parts[3], summary);
    }
    s
}

/// nftables on the input hook (never output: a local drop there gives the sender an error
/// and TCP switches to the persist timer). Loopback traffic passes input in both directions.
fn input_rules(rules: &str) {
    let text = format!(
        "table inet fault {{\n chain i {{\n  type filter hook input priority -300; policy accept;\n{rules} }}\n}}\n"
    );
    netns::nft(&text).unwrap_or_else(|e| panic!("{e}"));
}

/// Partition: every packet to or from the daemon's port is dropped.
pub fn cut_port(port: u16) {
    input_rules(&format!(
        "  tcp sport {port} drop\n  tcp dport {port} drop\n"
    ));
}

/// Only daemon → client packets are dropped: requests arrive, replies are never acknowledged.
pub fn drop_replies(port: u16) {
    input_rules(&format!("  tcp sport {port} drop\n"));
}

/// Daemon → client packets are answered with ICMP host-unreachable, as a router would.
pub fn reject_replies(port: u16) {
    input_rules(&format!(
        "  tcp sport {port} reject with icmpx type host-unreachable\n"
    ));
}

/// Partition of one source address: everything from or to `ip` is dropped.
pub fn cut_address(ip: &str) {
    input_rules(&format!("  ip saddr {ip} drop\n  ip daddr {ip} drop\n"));
}

//! Presence events: what subscribers of the `presence` channel receive (docs/presence.md).
//!
//! One event per change, in the order the event loop saw them, each a flat JSON object with a
//! per-daemon sequence number `seq` (1, 2, 3, ... with no gaps: a watcher that sees a gap
//! missed something) and the wall-clock time `at` (Unix milliseconds):
//!
//! - `joined`: a session was accepted (`id`, `addr`, `laddr`);
//! - `named`: `CLIENT SETNAME` changed its name (`name`, `previous`; `null` for none);
//! - `left`: it was reaped (`addr`, `name`, `reason`, `errno`, `lifetime_ms`, `silent_ms`, and
//!   the `TCP_INFO` snapshot taken at reap under the log line's names, `tcpi_*`).
//!
//! Names are carried whole: they are at most `session.max_name_bytes` when set (a reload that
//! lowers the bound leaves names already held as they are, so `left` matches `named`).
//!
//! The JSON is written by hand: the objects are flat, their strings are addresses, reason names
//! and client names (printable ASCII by `CLIENT SETNAME`'s rule), so a 20-line escaper does what
//! a serializer would, writes straight into the loop's scratch buffer, and adds no dependency.
//! The escaper is still complete (quotes, backslashes, control characters), and the unit tests
//! check every event against a real JSON parser.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reap::{errno_name, ReapReason};
use crate::sys::TcpInfo;

/// The presence counters, kept with the loop's statistics.
#[derive(Debug, Clone, Default)]
pub struct PresenceCounters {
    /// Sequence number of the last event, which is also the number of events published since
    /// start (events are numbered whether or not anyone listens).
    pub seq: u64,
    /// Admin connections receiving presence events now.
    pub subscribers: u64,
    /// Subscribers disconnected because their pending output passed `max_output_bytes`.
    pub dropped: u64,
    /// Messages queued to subscribers (an event counts once per subscriber).
    pub delivered: u64,
}

/// One change to the set of live sessions.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Joined {
        id: u64,
        addr: SocketAddr,
        /// The client listener's address (`None` if the socket could not tell).
        laddr: Option<SocketAddr>,
    },
    Named {
        id: u64,
        name: Option<&'a str>,
        previous: Option<&'a str>,
    },
    Left(Left<'a>),
}

/// What a `left` event reports: the reap log line's facts.
#[derive(Debug, Clone, Copy)]
pub struct Left<'a> {
    pub id: u64,
    pub addr: SocketAddr,
    pub name: Option<&'a str>,
    pub reason: ReapReason,
    /// 0 when the reap had no socket error.
    pub errno: i32,
    pub lifetime: Duration,
    /// Time since the last byte received: the detection latency.
    pub silent: Duration,
    /// `None` when the snapshot could not be taken.
    pub tcp_info: Option<&'a TcpInfo>,
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Appends the event's JSON object to `out`.
pub fn encode(seq: u64, at_ms: u64, event: &Event<'_>, out: &mut Vec<u8>) {
    let mut o = Object::new(out);
    o.num("seq", seq);
    match event {
        Event::Joined { id, addr, laddr } => {
            o.str("event", "joined");
            o.num("id", *id);
            o.display("addr", addr);
            match laddr {
                Some(a) => o.display("laddr", a),
                None => o.null("laddr"),
            }
        }
        Event::Named { id, name, previous } => {
            o.str("event", "named");
            o.num("id", *id);
            o.opt_str("name", *name);
            o.opt_str("previous", *previous);
        }
        Event::Left(l) => {
            o.str("event", "left");
            o.num("id", l.id);
            o.display("addr", &l.addr);
            o.opt_str("name", l.name);
            o.str("reason", l.reason.name());
            match (l.errno, errno_name(l.errno)) {
                (0, _) => o.null("errno"),
                // A code without a name of its own: the number, as text.
                (n, "errno") => o.display("errno", &n),
                (_, name) => o.str("errno", name),
            }
            o.num("lifetime_ms", millis(l.lifetime));
            o.num("silent_ms", millis(l.silent));
        }
    }
    o.num("at", at_ms);
    if let Event::Left(l) = event {
        tcp_fields(&mut o, l.tcp_info);
    }
    o.end();
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `TCP_INFO` fields of the reap line, under the same names; all `null` without a snapshot.
fn tcp_fields(o: &mut Object<'_>, info: Option<&TcpInfo>) {
    let i = info.copied();
    let fields: [(&str, Option<u64>); 11] = [
        ("tcpi_state", i.map(|i| u64::from(i.state))),
        ("tcpi_probes", i.map(|i| u64::from(i.probes))),
        ("tcpi_retransmits", i.map(|i| u64::from(i.retransmits))),
        ("tcpi_backoff", i.map(|i| u64::from(i.backoff))),
        ("tcpi_unacked", i.map(|i| u64::from(i.unacked))),
        ("tcpi_rtt_us", i.map(|i| u64::from(i.rtt_us))),
        ("tcpi_total_retrans", i.map(|i| u64::from(i.total_retrans))),
        (
            "tcpi_last_data_recv_ms",
            i.map(|i| u64::from(i.last_data_recv_ms)),
        ),
        (
            "tcpi_last_ack_recv_ms",
            i.map(|i| u64::from(i.last_ack_recv_ms)),
        ),
        ("tcpi_notsent_bytes", i.map(|i| u64::from(i.notsent_bytes))),
        ("tcpi_snd_wnd", i.and_then(|i| i.snd_wnd).map(u64::from)),
    ];
    for (k, v) in fields {
        match v {
            Some(n) => o.num(k, n),
            None => o.null(k),
        }
    }
}

/// A flat JSON object being written.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        escape(k, self.out);
        self.out.push(b':');
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{v}");
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape(v, self.out);
    }

    /// A string written through `Display` (addresses, numbers as text).
    fn display(&mut self, k: &str, v: &dyn std::fmt::Display) {
        self.str(k, &v.to_string());
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(s) => self.str(k, s),
            None => self.null(k),
        }
    }

    fn null(&mut self, k: &str) {
        self.key(k);
        self.out.extend_from_slice(b"null");
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Appends `s` as a JSON string literal: `"`, `\` and control characters escaped (RFC 8259),
/// everything else (valid UTF-8, since it is a `str`) as is.
pub fn escape(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json(seq: u64, event: &Event<'_>) -> Value {
        let mut out = Vec::new();
        encode(seq, 1_700_000_000_123, event, &mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn escaper_round_trips_every_character_class() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{1f}h\u{7f}é😀/";
        let mut out = Vec::new();
        escape(nasty, &mut out);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, nasty);
        assert!(!out[1..out.len() - 1].contains(&b'\n'));
    }

    #[test]
    fn joined_and_named() {
        let addr: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let v = json(
            1,
            &Event::Joined {
                id: 5,
                addr,
                laddr: Some("[::1]:7379".parse().unwrap()),
            },
        );
        assert_eq!(v["seq"], 1);
        assert_eq!(v["event"], "joined");
        assert_eq!(v["id"], 5);
        assert_eq!(v["addr"], "127.0.0.1:5555");
        assert_eq!(v["laddr"], "[::1]:7379");
        assert_eq!(v["at"], 1_700_000_000_123u64);
        let v = json(
            2,
            &Event::Named {
                id: 5,
                name: Some("sensor-\"7\""),
                previous: None,
            },
        );
        assert_eq!(v["event"], "named");
        assert_eq!(v["name"], "sensor-\"7\"");
        assert!(v["previous"].is_null());
    }

    #[test]
    fn left_carries_the_reap_facts() {
        let info = TcpInfo {
            state: 7,
            probes: 3,
            rtt_us: 41,
            snd_wnd: Some(65_536),
            ..TcpInfo::default()
        };
        let left = Left {
            id: 9,
            addr: "10.0.0.2:40000".parse().unwrap(),
            name: Some("x"),
            reason: ReapReason::KeepaliveTimeout,
            errno: libc::ETIMEDOUT,
            lifetime: Duration::from_millis(8_012),
            silent: Duration::from_millis(5_012),
            tcp_info: Some(&info),
        };
        let v = json(7, &Event::Left(left));
        assert_eq!(v["event"], "left");
        assert_eq!(v["reason"], "keepalive-timeout");
        assert_eq!(v["errno"], "ETIMEDOUT");
        assert_eq!(v["lifetime_ms"], 8_012);
        assert_eq!(v["silent_ms"], 5_012);
        assert_eq!(v["tcpi_state"], 7);
        assert_eq!(v["tcpi_probes"], 3);
        assert_eq!(v["tcpi_rtt_us"], 41);
        assert_eq!(v["tcpi_snd_wnd"], 65_536);
        assert_eq!(v.as_object().unwrap().len(), 21, "{v}");

        let quit = Left {
            reason: ReapReason::Quit,
            errno: 0,
            name: None,
            tcp_info: None,
            ..left
        };
        let v = json(8, &Event::Left(quit));
        assert!(v["errno"].is_null() && v["name"].is_null());
        assert!(v["tcpi_probes"].is_null() && v["tcpi_snd_wnd"].is_null());
        let odd = Left {
            reason: ReapReason::Error,
            errno: 71,
            ..left
        };
        assert_eq!(json(9, &Event::Left(odd))["errno"], "71");
    }

    #[test]
    fn unix_ms_of_the_epoch_and_before() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_500)), 1_500);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}

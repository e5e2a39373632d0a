//! Presence events: what subscribers of the `presence` channel receive (docs/presence.md).
//!
//! One event per change, in the order the event loop saw them, each a flat JSON object with a
//! per-daemon sequence number `seq` (1, 2, 3, ... with no gaps: a watcher that sees a gap
//! missed something) and the wall-clock time `at` (Unix milliseconds):
//!
//! - `joined`: a session was accepted (`id`, `addr`, `laddr`);
//! - `named`: `CLIENT SETNAME` changed its name (`name`, `previous`; `null` for none), or a
//!   client certificate named it (then `identity` too);
//! - `left`: it was reaped (`addr`, `name`, `reason`, `errno`, `lifetime_ms`, `silent_ms`, and
//!   the `TCP_INFO` snapshot taken at reap under the log line's names, `tcpi_*`; `identity`
//!   after `name` for a session that had one).
//!
//! Names are carried whole: they are at most `session.max_name_bytes` when set (a reload that
//! lowers the bound leaves names already held as they are, so `left` matches `named`).
//!
//! The JSON is written by `serde_json` from one struct per event, straight into the loop's
//! scratch buffer. The bytes are the ones the hand-written encoder of earlier releases produced
//! (a unit test holds them).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::os::sys::TcpInfo;
use crate::session::reap::{errno_name, ReapReason};
use serde::Serialize;

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
        /// The identity the session proved (a client certificate), if any.
        identity: Option<&'a str>,
    },
    Left(Left<'a>),
}

/// What a `left` event reports: the reap log line's facts.
#[derive(Debug, Clone, Copy)]
pub struct Left<'a> {
    pub id: u64,
    pub addr: SocketAddr,
    pub name: Option<&'a str>,
    /// The identity the session proved, if any.
    pub identity: Option<&'a str>,
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
    let result = match event {
        Event::Joined { id, addr, laddr } => serde_json::to_writer(
            &mut *out,
            &Joined {
                seq,
                event: "joined",
                id: *id,
                addr,
                laddr: laddr.as_ref(),
                at: at_ms,
            },
        ),
        Event::Named {
            id,
            name,
            previous,
            identity,
        } => serde_json::to_writer(
            &mut *out,
            &Named {
                seq,
                event: "named",
                id: *id,
                name: *name,
                previous: *previous,
                identity: *identity,
                at: at_ms,
            },
        ),
        Event::Left(l) => serde_json::to_writer(&mut *out, &LeftJson::of(seq, at_ms, l)),
    };
    // Serializing plain fields into a Vec cannot fail.
    debug_assert!(result.is_ok(), "{result:?}");
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// The wire objects. Field order is the order subscribers have always seen; `Option`s are
// `null`, never left out. Addresses serialize through `Display` (`127.0.0.1:5555`,
// `[::1]:7379`).

#[derive(Serialize)]
struct Joined<'a> {
    seq: u64,
    event: &'static str,
    id: u64,
    addr: &'a SocketAddr,
    laddr: Option<&'a SocketAddr>,
    at: u64,
}

#[derive(Serialize)]
struct Named<'a> {
    seq: u64,
    event: &'static str,
    id: u64,
    name: Option<&'a str>,
    previous: Option<&'a str>,
    /// Present only for a session with an identity, so other events keep their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    at: u64,
}

/// A `left` event: the reap log line's facts, then its `TCP_INFO` fields under the same names
/// (all `null` without a snapshot).
#[derive(Serialize)]
struct LeftJson<'a> {
    seq: u64,
    event: &'static str,
    id: u64,
    addr: &'a SocketAddr,
    name: Option<&'a str>,
    /// Present only for a session with an identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    reason: &'static str,
    /// `null` without a socket error; a code without a name of its own as its number, in text.
    errno: Option<Cow<'static, str>>,
    lifetime_ms: u64,
    silent_ms: u64,
    at: u64,
    tcpi_state: Option<u8>,
    tcpi_probes: Option<u8>,
    tcpi_retransmits: Option<u8>,
    tcpi_backoff: Option<u8>,
    tcpi_unacked: Option<u32>,
    tcpi_rtt_us: Option<u32>,
    tcpi_total_retrans: Option<u32>,
    tcpi_last_data_recv_ms: Option<u32>,
    tcpi_last_ack_recv_ms: Option<u32>,
    tcpi_notsent_bytes: Option<u32>,
    tcpi_snd_wnd: Option<u32>,
}

impl<'a> LeftJson<'a> {
    fn of(seq: u64, at: u64, l: &'a Left<'a>) -> LeftJson<'a> {
        let i = l.tcp_info;
        LeftJson {
            seq,
            event: "left",
            id: l.id,
            addr: &l.addr,
            name: l.name,
            identity: l.identity,
            reason: l.reason.name(),
            errno: match (l.errno, errno_name(l.errno)) {
                (0, _) => None,
                (n, "errno") => Some(Cow::Owned(n.to_string())),
                (_, name) => Some(Cow::Borrowed(name)),
            },
            lifetime_ms: millis(l.lifetime),
            silent_ms: millis(l.silent),
            at,
            tcpi_state: i.map(|i| i.state),
            tcpi_probes: i.map(|i| i.probes),
            tcpi_retransmits: i.map(|i| i.retransmits),
            tcpi_backoff: i.map(|i| i.backoff),
            tcpi_unacked: i.map(|i| i.unacked),
            tcpi_rtt_us: i.map(|i| i.rtt_us),
            tcpi_total_retrans: i.map(|i| i.total_retrans),
            tcpi_last_data_recv_ms: i.map(|i| i.last_data_recv_ms),
            tcpi_last_ack_recv_ms: i.map(|i| i.last_ack_recv_ms),
            tcpi_notsent_bytes: i.map(|i| i.notsent_bytes),
            tcpi_snd_wnd: i.and_then(|i| i.snd_wnd),
        }
    }
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

    /// The bytes the hand-written encoder of earlier releases wrote for the same events:
    /// subscribers parse them, so `serde_json` must write exactly these.
    #[test]
    fn the_wire_bytes_are_those_of_earlier_releases() {
        let info = TcpInfo {
            state: 7,
            probes: 3,
            rtt_us: 41,
            snd_wnd: Some(65_536),
            ..TcpInfo::default()
        };
        let left = Left {
            identity: None,
            id: 9,
            addr: "[fe80::1%3]:40000".parse().unwrap(),
            name: Some("sensor-\"7\"\\"),
            reason: ReapReason::KeepaliveTimeout,
            errno: libc::ETIMEDOUT,
            lifetime: Duration::from_millis(8_012),
            silent: Duration::from_millis(5_012),
            tcp_info: Some(&info),
        };
        let events = [
            Event::Joined {
                id: 5,
                addr: "127.0.0.1:5555".parse().unwrap(),
                laddr: Some("[::1]:7379".parse().unwrap()),
            },
            Event::Joined {
                id: 6,
                addr: "[::ffff:1.2.3.4]:1".parse().unwrap(),
                laddr: None,
            },
            Event::Named {
                identity: None,
                id: 5,
                name: Some("a\u{1}\u{7f}é😀/\t"),
                previous: None,
            },
            Event::Left(left),
            Event::Left(Left {
                reason: ReapReason::Quit,
                errno: 0,
                name: None,
                tcp_info: None,
                ..left
            }),
            Event::Left(Left {
                reason: ReapReason::Error,
                errno: 71,
                ..left
            }),
        ];
        let expected = [
            r#"{"seq":1,"event":"joined","id":5,"addr":"127.0.0.1:5555","laddr":"[::1]:7379","at":1700000000123}"#,
            r#"{"seq":2,"event":"joined","id":6,"addr":"[::ffff:1.2.3.4]:1","laddr":null,"at":1700000000123}"#,
            r#"{"seq":3,"event":"named","id":5,"name":"a\u0001é😀/\t","previous":null,"at":1700000000123}"#,
            r#"{"seq":4,"event":"left","id":9,"addr":"[fe80::1%3]:40000","name":"sensor-\"7\"\\","reason":"keepalive-timeout","errno":"ETIMEDOUT","lifetime_ms":8012,"silent_ms":5012,"at":1700000000123,"tcpi_state":7,"tcpi_probes":3,"tcpi_retransmits":0,"tcpi_backoff":0,"tcpi_unacked":0,"tcpi_rtt_us":41,"tcpi_total_retrans":0,"tcpi_last_data_recv_ms":0,"tcpi_last_ack_recv_ms":0,"tcpi_notsent_bytes":0,"tcpi_snd_wnd":65536}"#,
            r#"{"seq":5,"event":"left","id":9,"addr":"[fe80::1%3]:40000","name":null,"reason":"quit","errno":null,"lifetime_ms":8012,"silent_ms":5012,"at":1700000000123,"tcpi_state":null,"tcpi_probes":null,"tcpi_retransmits":null,"tcpi_backoff":null,"tcpi_unacked":null,"tcpi_rtt_us":null,"tcpi_total_retrans":null,"tcpi_last_data_recv_ms":null,"tcpi_last_ack_recv_ms":null,"tcpi_notsent_bytes":null,"tcpi_snd_wnd":null}"#,
            r#"{"seq":6,"event":"left","id":9,"addr":"[fe80::1%3]:40000","name":"sensor-\"7\"\\","reason":"error","errno":"71","lifetime_ms":8012,"silent_ms":5012,"at":1700000000123,"tcpi_state":7,"tcpi_probes":3,"tcpi_retransmits":0,"tcpi_backoff":0,"tcpi_unacked":0,"tcpi_rtt_us":41,"tcpi_total_retrans":0,"tcpi_last_data_recv_ms":0,"tcpi_last_ack_recv_ms":0,"tcpi_notsent_bytes":0,"tcpi_snd_wnd":65536}"#,
        ];
        for (i, (event, want)) in events.iter().zip(expected).enumerate() {
            let mut out = Vec::new();
            encode(i as u64 + 1, 1_700_000_000_123, event, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
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
                identity: None,
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
            identity: None,
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

//! Peers that vanish without a word: partition (idle, and with a reply in flight), crash and
//! reboot, ICMP host-unreachable (with a reply in flight, and idle). Keepalive 2/1/3, so the
//! idle bound is 2 + 1 × 3 = 5 s and `user_timeout = "auto"` is 5 s too.

use std::time::{Duration, Instant};

use crate::check::{self, by_id, by_peer, expect_reap, expect_stats, Bound, Row};
use crate::client::Client;
use crate::util::{client_id, netns, Daemon};

/// idle + interval × probes, with the tolerance.
const IDLE_BOUND: Bound = Bound::around(5_000, 500, 1_000);
/// The user timeout after the reply was sent. Kernel timers never fire early; the 100 ms
/// margin covers jiffy rounding and the test's clock reading after the send.
const USER_TIMEOUT_BOUND: Bound = Bound::around(5_000, 100, 1_000);
/// The first keepalive probe (idle 2 s) is answered with RST.
const FIRST_PROBE_BOUND: Bound = Bound::around(2_000, 100, 1_000);

/// A redis-crate client pings, goes quiet, and the daemon's port is cut both ways: the
/// probes go unanswered. Also proves the probes went out: the namespace's
/// `TcpExtTCPKeepAlive` counter rises by the probe count.
pub fn partition_idle() -> Row {
    let d = check::start(&check::config("auto", ""));
    let mut con = d.redis();
    let id = client_id(&mut con);
    let _: String = redis::cmd("PING").query(&mut con).expect("PING");
    let last = Instant::now();
    check::wait_quiet(d.addr.port(), None);
    let before = netns::tcp_ext("TCPKeepAlive").expect("TcpExt counters");
    check::cut_port(d.addr.port());
    let r = expect_reap(&d, &by_id(id), "keepalive-timeout", last, IDLE_BOUND);
    let sent = netns::tcp_ext("TCPKeepAlive").expect("TcpExt counters") - before;
    assert_eq!(r.field("errno"), "ETIMEDOUT", "{}", r.line);
    assert_eq!(r.num("tcpi_probes"), 3, "probes counted: {}", r.line);
    assert_eq!(sent, 3, "TcpExtTCPKeepAlive must rise by the probe count");
    expect_stats(&d, "keepalive-timeout", 1, Some(IDLE_BOUND));
    r.row(
        "keepalive-timeout",
        IDLE_BOUND,
        format!("TcpExtTCPKeepAlive +{sent}, tcpi_probes=3"),
    )
}

/// The client's host crashes and comes back: its socket vanishes without FIN or RST, and
/// the daemon's first keepalive probe is answered with RST.
pub fn crash_and_reboot() -> Row {
    let d = check::start(&check::config("auto", ""));
    let mut c = Client::connect(d.addr);
    let last = c.ping();
    check::wait_quiet(d.addr.port(), None);
    let peer = c.local;
    c.vanish();
    let r = expect_reap(&d, &by_peer(peer), "reset", last, FIRST_PROBE_BOUND);
    assert_eq!(r.field("errno"), "ECONNRESET", "{}", r.line);
    assert_eq!(
        r.num("tcpi_probes"),
        1,
        "reset by the first probe: {}",
        r.line
    );
    expect_stats(&d, "reset", 1, Some(FIRST_PROBE_BOUND));
    r.row(
        "reset",
        FIRST_PROBE_BOUND,
        "TCP_REPAIR close; tcpi_probes=1".into(),
    )
}

/// A session with `user_timeout`, quiet long enough that no delayed ACK is pending, then
/// `fault` applied to the daemon's replies (by its port) and a request sent into it: the
/// reply is in flight from the returned instant on.
fn reply_into_fault(user_timeout: &str, fault: fn(u16)) -> (Daemon, Client, Instant) {
    let d = check::start(&check::config(user_timeout, ""));
    let mut c = Client::connect(d.addr);
    c.ping();
    check::wait_quiet(d.addr.port(), None);
    fault(d.addr.port());
    c.send(b"PING\r\n").expect("send PING");
    (d, c, Instant::now())
}

/// Daemon → client packets are dropped, then the client sends a request: the reply stays
/// unacknowledged until `TCP_USER_TIMEOUT` ends it.
pub fn reply_in_flight() -> Row {
    let (d, c, sent) = reply_into_fault("auto", check::drop_replies);
    let r = expect_reap(
        &d,
        &by_peer(c.local),
        "retransmit-timeout",
        sent,
        USER_TIMEOUT_BOUND,
    );
    assert_eq!(r.field("errno"), "ETIMEDOUT", "{}", r.line);
    assert!(r.num("tcpi_retransmits") > 0, "retransmitted: {}", r.line);
    expect_stats(&d, "retransmit-timeout", 1, Some(USER_TIMEOUT_BOUND));
    r.row(
        "retransmit-timeout",
        USER_TIMEOUT_BOUND,
        format!("tcpi_retransmits={}", r.num("tcpi_retransmits")),
    )
}

/// How long the no-user-timeout case watches: twice the bound the user timeout would give.
const NO_USER_TIMEOUT_WATCH: Duration = Duration::from_secs(10);

/// The same fault with `user_timeout = "0s"`: keepalive does not run while data is in flight,
/// so only tcp_retries2 (about 15 minutes) would end it. Not reaped within 10 s.
pub fn reply_in_flight_without_user_timeout() -> Row {
    let (d, c, sent) = reply_into_fault("0s", check::drop_replies);
    let key = by_peer(c.local);
    let reaped = d
        .log
        .wait_for(NO_USER_TIMEOUT_WATCH, |l| check::is_reap(l, &key));
    assert_eq!(reaped, None, "reaped although no user timeout is set");
    let watched = sent.elapsed().as_millis() as u64;
    let s = d.stats();
    assert_eq!(s.get("live").map(String::as_str), Some("1"), "stats {s:?}");
    assert_eq!(
        s.get("reaped").map(String::as_str),
        Some("0"),
        "stats {s:?}"
    );
    assert!(!s.contains_key("reap.retransmit-timeout"), "stats {s:?}");
    Row {
        expected: "not reaped in 10 s",
        got: "not reaped".into(),
        test_ms: watched,
        daemon_ms: None,
        bound: "none reaped in 10 s".into(),
        note: "stats live=1 reaped=0".into(),
    }
}

/// Daemon → client packets are answered with ICMP host-unreachable while a reply is in
/// flight: the kernel keeps the ICMP as a soft error and reports it when the user timeout
/// fires.
pub fn icmp_reply_in_flight() -> Row {
    let (d, c, sent) = reply_into_fault("auto", check::reject_replies);
    let r = expect_reap(
        &d,
        &by_peer(c.local),
        "unreachable",
        sent,
        USER_TIMEOUT_BOUND,
    );
    assert_eq!(r.field("errno"), "EHOSTUNREACH", "{}", r.line);
    expect_stats(&d, "unreachable", 1, Some(USER_TIMEOUT_BOUND));
    r.row(
        "unreachable",
        USER_TIMEOUT_BOUND,
        "errno=EHOSTUNREACH".into(),
    )
}

/// The same ICMP for an idle session: the kernel ignores ICMP answering a keepalive probe
/// (its sequence number lies outside the window), so the session dies like a partition.
pub fn icmp_idle() -> Row {
    let d = check::start(&check::config("auto", ""));
    let mut con = d.redis();
    let id = client_id(&mut con);
    let _: String = redis::cmd("PING").query(&mut con).expect("PING");
    let last = Instant::now();
    check::wait_quiet(d.addr.port(), None);
    check::reject_replies(d.addr.port());
    let r = expect_reap(&d, &by_id(id), "keepalive-timeout", last, IDLE_BOUND);
    assert_eq!(r.field("errno"), "ETIMEDOUT", "ICMP ignored: {}", r.line);
    assert_eq!(r.num("tcpi_probes"), 3, "{}", r.line);
    expect_stats(&d, "keepalive-timeout", 1, Some(IDLE_BOUND));
    r.row(
        "keepalive-timeout",
        IDLE_BOUND,
        "errno=ETIMEDOUT, ICMP ignored".into(),
    )
}

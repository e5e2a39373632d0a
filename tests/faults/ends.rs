//! Endings the peer announces (FIN, RST, half-close) and the application-level idle timeout:
//! the baseline the dead-peer cases are compared with.

use std::time::Instant;

use crate::check::{self, by_id, by_peer, expect_reap, expect_stats, Bound, Row};
use crate::client::Client;
use crate::util::client_id;

/// An announced ending is seen at once.
const AT_ONCE: Bound = Bound::under(100);

/// `close()`: FIN, `recv` returns 0.
pub fn graceful_close() -> Row {
    let d = check::start(&check::config("auto", ""));
    let mut c = Client::connect(d.addr);
    c.ping();
    let peer = c.local;
    drop(c);
    let closed = Instant::now();
    let r = expect_reap(&d, &by_peer(peer), "closed", closed, AT_ONCE);
    assert_eq!(r.field("errno"), "-", "{}", r.line);
    // `closed` is not a detection: counted, but no latency is kept for it.
    let s = expect_stats(&d, "closed", 1, None);
    assert!(!s.contains_key("latency_ms.closed"), "stats {s:?}");
    r.row("closed", AT_ONCE, "FIN".into())
}

/// `SO_LINGER` {on, 0} then `close()`: RST, `recv` fails with `ECONNRESET`.
pub fn abortive_close() -> Row {
    let d = check::start(&check::config("auto", ""));
    let mut c = Client::connect(d.addr);
    c.ping();
    let peer = c.local;
    c.abort();
    let aborted = Instant::now();
    let r = expect_reap(&d, &by_peer(peer), "reset", aborted, AT_ONCE);
    assert_eq!(r.field("errno"), "ECONNRESET", "{}", r.line);
    expect_stats(&d, "reset", 1, Some(AT_ONCE));
    r.row("reset", AT_ONCE, "SO_LINGER 0".into())
}

/// `PING` then `shutdown(SHUT_WR)`: the daemon reads the request and EOF in one go, must
/// deliver `+PONG` first, then close (the client reads the reply, then EOF).
pub fn half_close() -> Row {
    let d = check::start(&check::config("auto", ""));
    let mut c = Client::connect(d.addr);
    c.send(b"PING\r\n").expect("send PING");
    c.half_close();
    let shut = Instant::now();
    let (got, eof) = c.read_to_eof();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+PONG\r\n",
        "the reply is delivered before the close"
    );
    let r = expect_reap(&d, &by_peer(c.local), "closed", shut, AT_ONCE);
    let eof_ms = eof.saturating_duration_since(shut).as_millis();
    expect_stats(&d, "closed", 1, None);
    r.row(
        "+PONG, then closed",
        AT_ONCE,
        format!("+PONG then EOF after {eof_ms} ms"),
    )
}

/// `session.idle_timeout = "3s"` (below the 5 s keepalive bound, so it decides): a live but
/// silent client is reaped by the application timer, its keepalive probes answered.
pub fn idle_timeout() -> Row {
    const IDLE: Bound = Bound::around(3_000, 100, 1_000);
    let d = check::start(&check::config("auto", "[session]\nidle_timeout = \"3s\"\n"));
    let mut con = d.redis();
    let id = client_id(&mut con);
    let _: String = redis::cmd("PING").query(&mut con).expect("PING");
    let last = Instant::now();
    let r = expect_reap(&d, &by_id(id), "idle-timeout", last, IDLE);
    assert!(
        r.silent_ms >= 3_000,
        "never before the configured value: {}",
        r.line
    );
    expect_stats(&d, "idle-timeout", 1, Some(IDLE));
    r.row("idle-timeout", IDLE, "session.idle_timeout = 3s".into())
}

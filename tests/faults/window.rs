//! A peer that is alive but never reads: its receive window closes while replies pile up.
//! Above `session.max_output_bytes` the daemon drops it at once (`slow-consumer`); below it,
//! the kernel probes the zero window, the peer answers each probe with window 0, and
//! `TCP_USER_TIMEOUT` ends the connection: reason `stalled`, not a dead-peer reason.

use std::time::{Duration, Instant};

use crate::check::{self, by_peer, expect_reap, expect_stats, Bound, Row};
use crate::client::{echo_request, Client};

/// Each request asks for a reply this large (under the default 64 KiB request limit).
const PAYLOAD: usize = 60_000;
/// The user timeout ("auto" = 5 s) counted from the first zero-window probe, which follows
/// the closed window by one RTO (about 200 ms on loopback).
const STALL_BOUND: Bound = Bound::around(5_000, 500, 1_000);

/// Sends `total` bytes of `ECHO` requests without reading a reply; returns when the last
/// byte was written (or the first write error).
fn flood(c: &mut Client, total: usize, give_up: Duration) -> (usize, Instant) {
    let req = echo_request(PAYLOAD);
    let start = Instant::now();
    let mut sent = 0;
    while sent < total && start.elapsed() < give_up {
        if c.send(&req).is_err() {
            // The daemon closed the session (slow consumer): the RST ends the flood.
            break;
        }
        sent += req.len();
    }
    (sent, Instant::now())
}

/// Replies pile up past `max_output_bytes` (1 MiB): reaped as a slow consumer at once, while
/// the client is still sending.
pub fn slow_consumer() -> Row {
    const MAX_OUTPUT: usize = 1 << 20;
    const AT_ONCE: Bound = Bound::under(2_000);
    let d = check::start(&check::config(
        "auto",
        &format!("[session]\nmax_output_bytes = {MAX_OUTPUT}\n"),
    ));
    let mut c = Client::connect(d.addr);
    c.ping();
    let start = Instant::now();
    let (sent, _) = flood(&mut c, 256 << 20, Duration::from_secs(10));
    let r = expect_reap(&d, &by_peer(c.local), "slow-consumer", start, AT_ONCE);
    assert!(
        sent > MAX_OUTPUT,
        "reaped after only {sent} bytes of requests: {}",
        r.line
    );
    assert!(
        r.silent_ms < 100,
        "reaped while the client was still sending: {}",
        r.line
    );
    expect_stats(&d, "slow-consumer", 1, None);
    r.row(
        "slow-consumer",
        AT_ONCE,
        format!(
            "max_output_bytes=1MiB, reaped after {} KiB of requests",
            sent >> 10
        ),
    )
}

/// The shared body of the two `stalled` cases: `backlog` bytes of replies for a client that
/// never reads, `max_output_bytes` far above it.
fn stalled(backlog: usize) -> (check::Reap, Row) {
    let d = check::start(&check::config(
        "auto",
        "[session]\nmax_output_bytes = 67108864\n",
    ));
    let mut c = Client::connect(d.addr);
    c.ping();
    let (sent, last) = flood(&mut c, backlog, Duration::from_secs(10));
    assert!(sent >= backlog, "the daemon stopped reading requests");
    let r = expect_reap(&d, &by_peer(c.local), "stalled", last, STALL_BOUND);
    assert_eq!(r.field("errno"), "ETIMEDOUT", "{}", r.line);
    assert_eq!(r.num("tcpi_retransmits"), 0, "{}", r.line);
    assert_eq!(
        r.field("tcpi_snd_wnd"),
        "0",
        "the window was shut: {}",
        r.line
    );
    expect_stats(&d, "stalled", 1, Some(STALL_BOUND));
    let row = r.row(
        "stalled",
        STALL_BOUND,
        format!(
            "{} KiB of replies unread; tcpi_snd_wnd=0 tcpi_notsent_bytes={}",
            sent >> 10,
            r.num("tcpi_notsent_bytes")
        ),
    );
    (r, row)
}

/// 16 MiB of replies: the kernel's buffers fill and the rest waits in the daemon.
pub fn stalled_in_user_space() -> Row {
    stalled(16 << 20).1
}

/// 512 KiB of replies: more than the client's receive window, less than the daemon's send
/// buffer, so everything waits in the kernel and nothing in the daemon. Before the fix this
/// death read as keepalive-timeout: nothing retransmitted, no output pending in user space.
pub fn stalled_in_kernel() -> Row {
    let (r, row) = stalled(512 << 10);
    assert!(
        r.num("tcpi_notsent_bytes") > 0,
        "the replies waited in the kernel: {}",
        r.line
    );
    row
}

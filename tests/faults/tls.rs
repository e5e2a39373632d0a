//! The same deaths for TLS sessions (issue 15): detection stays on the TCP socket, so a TLS
//! session that dies silently is reaped with the same reasons and bounds as a plain one. The
//! client is the rustls client of `util/tls_client.rs`, run in the case's namespace (its
//! sockets are the thread's); certificates are made by the case (`util/certs.rs`). Keepalive
//! 2/1/3 as in `dead.rs`.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::check::{self, by_peer, expect_reap, expect_stats, Bound, Row};
use crate::util::certs::Setup;
use crate::util::tls_client::{self, tls_addr, TlsClient, Versions};
use crate::util::{Daemon, TempDir};

const IDLE_BOUND: Bound = Bound::around(5_000, 500, 1_000);
const USER_TIMEOUT_BOUND: Bound = Bound::around(5_000, 100, 1_000);
const AT_ONCE: Bound = Bound::under(100);
/// `tls.handshake_timeout = "2s"`, counted from accept; the deadline heap is checked every
/// turn, so only scheduling adds to it.
const HANDSHAKE_BOUND: Bound = Bound::around(2_000, 100, 1_000);

/// A daemon with a TLS listener (keepalive 2/1/3), its certificates, and a client config.
struct TlsCase {
    d: Daemon,
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    _dir: TempDir,
}

fn start(tls_extra: &str) -> TlsCase {
    let dir = TempDir::new("faults-tls");
    let setup = Setup::new(dir.path());
    let d = check::start(&check::config("auto", &setup.table(tls_extra)));
    let addr = tls_addr(&d);
    let config = tls_client::config(&setup.ca.pem(), None, Versions::Both);
    TlsCase {
        d,
        addr,
        config,
        _dir: dir,
    }
}

impl TlsCase {
    fn client(&self) -> TlsClient {
        let mut c = TlsClient::connect(self.addr, &self.config).expect("TLS connect");
        c.ping().expect("PING over TLS");
        c
    }
}

fn no_tls_failure(r: &check::Reap) {
    assert!(
        !r.line.contains("tls_cause="),
        "a TCP death is not a TLS failure: {}",
        r.line
    );
}

/// An idle TLS session, its port cut both ways: keepalive finds it.
pub fn tls_partition_idle() -> Row {
    let t = start("");
    let c = t.client();
    let last = Instant::now();
    check::wait_quiet(t.addr.port(), None);
    check::cut_port(t.addr.port());
    let r = expect_reap(
        &t.d,
        &by_peer(c.local),
        "keepalive-timeout",
        last,
        IDLE_BOUND,
    );
    assert_eq!(r.field("errno"), "ETIMEDOUT", "{}", r.line);
    assert_eq!(r.num("tcpi_probes"), 3, "{}", r.line);
    no_tls_failure(&r);
    expect_stats(&t.d, "keepalive-timeout", 1, Some(IDLE_BOUND));
    r.row(
        "keepalive-timeout",
        IDLE_BOUND,
        "TLS 1.3, tcpi_probes=3".into(),
    )
}

/// A request over TLS whose encrypted reply is never acknowledged: `TCP_USER_TIMEOUT`.
pub fn tls_reply_in_flight() -> Row {
    let t = start("");
    let mut c = t.client();
    check::wait_quiet(t.addr.port(), None);
    check::drop_replies(t.addr.port());
    c.send(&["PING"]).expect("send PING");
    let sent = Instant::now();
    let r = expect_reap(
        &t.d,
        &by_peer(c.local),
        "retransmit-timeout",
        sent,
        USER_TIMEOUT_BOUND,
    );
    assert_eq!(r.field("errno"), "ETIMEDOUT", "{}", r.line);
    assert!(r.num("tcpi_retransmits") > 0, "{}", r.line);
    no_tls_failure(&r);
    expect_stats(&t.d, "retransmit-timeout", 1, Some(USER_TIMEOUT_BOUND));
    r.row(
        "retransmit-timeout",
        USER_TIMEOUT_BOUND,
        format!("TLS, tcpi_retransmits={}", r.num("tcpi_retransmits")),
    )
}

/// The TCP connection under a TLS session reset (`SO_LINGER` 0): `reset` at once.
pub fn tls_reset() -> Row {
    let t = start("");
    let c = t.client();
    let peer = c.local;
    let sock = c.tls.sock;
    SockRef::from(&sock)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(sock);
    let aborted = Instant::now();
    let r = expect_reap(&t.d, &by_peer(peer), "reset", aborted, AT_ONCE);
    assert_eq!(r.field("errno"), "ECONNRESET", "{}", r.line);
    no_tls_failure(&r);
    expect_stats(&t.d, "reset", 1, Some(AT_ONCE));
    r.row("reset", AT_ONCE, "TLS, SO_LINGER 0".into())
}

/// The client's `close_notify`: `closed` at once, not a failure.
pub fn tls_close_notify() -> Row {
    let t = start("");
    let mut c = t.client();
    c.close_notify().expect("close_notify");
    let sent = Instant::now();
    let r = expect_reap(&t.d, &by_peer(c.local), "closed", sent, AT_ONCE);
    no_tls_failure(&r);
    expect_stats(&t.d, "closed", 1, None);
    r.row("closed", AT_ONCE, "close_notify".into())
}

/// A handshake cut by the network: the client sent the start of its ClientHello, then its
/// port is cut. Reaped `tls-handshake`, cause `timeout`, at `tls.handshake_timeout`.
pub fn tls_handshake_stall() -> Row {
    let t = start("handshake_timeout = \"2s\"");
    let connected = Instant::now();
    let mut s = TcpStream::connect(t.addr).expect("connect");
    let peer = s.local_addr().unwrap();
    // A ClientHello record header announcing 512 bytes, and 5 of them.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .expect("send");
    check::cut_port(t.addr.port());
    let r = expect_reap(
        &t.d,
        &by_peer(peer),
        "tls-handshake",
        connected,
        HANDSHAKE_BOUND,
    );
    assert_eq!(r.field("tls_cause"), "timeout", "{}", r.line);
    expect_stats(&t.d, "tls-handshake", 1, None);
    drop(s);
    r.row(
        "tls-handshake",
        HANDSHAKE_BOUND,
        "tls_cause=timeout, handshake_timeout 2s".into(),
    )
}

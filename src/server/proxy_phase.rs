//! The PROXY protocol phase: with `server.proxy_protocol` on, the first thing on every client
//! connection is a header from a trusted proxy saying whose connection it is
//! (src/protocol/proxy_header.rs parses it). Until it is taken, nothing else happens on the
//! session: no request is read, no presence event is published, and its address is the proxy's.
//!
//! - **At accept** a connection from a source outside `server.proxy_trusted` is refused (told
//!   one `-ERR` line, closed, counted `untrusted`): the spec forbids guessing whether a header
//!   is present, and a client that could connect directly could write any address it likes.
//!   `server.max_connections_per_ip` is not checked there (the address is the proxy's).
//! - **The header** is read with `peek` (`MSG_PEEK`) into the loop's read buffer, at most
//!   [`MAX_HEADER_BYTES`], and only once it is complete is exactly its length consumed. No byte
//!   after it is ever taken from the socket here, so the next phase (RESP today, a TLS
//!   handshake on a TLS listener) finds the stream as the client sent it and needs nothing
//!   handed over. The phase uses only the `TcpStream`, so it is the same for any transport
//!   above it. Peeking again from the start on each edge costs at most 1.2 KiB copied per
//!   readable edge, for a header that normally arrives in one segment.
//! - **A refused header** (malformed, too large, cut short by the peer's FIN) gets one `-ERR`
//!   line and the session is reaped `protocol-error`, counted by cause; so is a header not
//!   complete within `server.proxy_header_timeout` (counted `timeout`): a min-heap of
//!   (accept + timeout, token, id) like the idle and `auth_timeout` heaps, an entry stale once
//!   its session took its header or ended.
//! - **A taken header** gives the session its client's address (`SessionTable::move_peer`
//!   moves the per-address count, and the proxy's address becomes `proxy=`), re-checks
//!   `max_connections_per_ip` against the real address (over it, the connection is refused as
//!   at accept: told, closed, counted `rejected{per-ip}`, and no longer counted as accepted),
//!   then publishes `joined`. `LOCAL` (v2, a proxy's health check) and `UNKNOWN` (v1) keep the
//!   proxy's address, as the spec says.
//!
//! A reload applies to connections accepted after it: `proxy_trusted` and `proxy_protocol` are
//! checked at accept, and a session accepted to send a header keeps its deadline and may still
//! send it (in either version, if the reload turned the protocol off).
//!
//! Every refusal is logged within the log budget, at most one warning a second per cause with
//! the count it stands for.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Instant;

use log::Level;
use mio::net::TcpStream;
use mio::Token;

use super::deadlines::Deadlines;
use super::scratch::READ_BUF_BYTES;
use super::Server;
use crate::config::ProxyMode;
use crate::protocol::proxy_header::{self, Header, Origin, Parse, Refusal, MAX_HEADER_BYTES};
use crate::session::reap::{classify, Cause, IoClass, ReapReason};
use crate::session::ProxyStage;
use crate::telemetry::log_throttle::{budgeted, LineKind, RateLimited};
use crate::telemetry::logging::clipped;
use crate::telemetry::stats::{ProxyRefusal, RejectCause};

// The header is peeked into the loop's read buffer.
const _: () = assert!(MAX_HEADER_BYTES <= READ_BUF_BYTES);

/// Late headers reaped per turn at most (like the other deadline heaps).
const REAPS_PER_TURN: usize = 64;

/// The loop's PROXY protocol state: the header deadlines and the warnings' rate limits.
#[derive(Debug, Default)]
pub(super) struct ProxyPhase {
    deadlines: Deadlines,
    warn: [RateLimited; ProxyRefusal::ALL.len()],
}

/// Where a session's phase stands after this turn's look at it.
pub(super) enum Phase {
    /// The header is not complete yet: nothing more to do for the session this turn.
    Waiting,
    /// The header was taken: go on to the session's input (there may be some already).
    Done,
    /// The session ended (refused, or its socket failed).
    Ended,
}

impl ProxyPhase {
    /// The nearest header deadline, for the poll timeout.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// A session that must send its header by `at`.
    pub(super) fn push(&mut self, at: Instant, token: Token, id: u64) {
        self.deadlines.push(at, token, id);
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Token, u64)> {
        self.deadlines.pop_due(now)
    }
}

/// The line a refused connection or header is told before it is closed.
fn refusal_line(cause: ProxyRefusal) -> &'static [u8] {
    match cause {
        ProxyRefusal::Untrusted => b"-ERR connections are accepted only from a trusted proxy\r\n",
        ProxyRefusal::Malformed => b"-ERR invalid PROXY protocol header\r\n",
        ProxyRefusal::Timeout => b"-ERR PROXY protocol header not received in time\r\n",
        ProxyRefusal::TooLarge => b"-ERR PROXY protocol header too large\r\n",
    }
}

/// One `peek` of the socket, `Interrupted` retried.
enum Peeked {
    Bytes(usize),
    Closed,
    WouldBlock,
    Failed(i32),
}

fn peek(stream: &TcpStream, buf: &mut [u8]) -> Peeked {
    loop {
        return match stream.peek(buf) {
            Ok(0) => Peeked::Closed,
            Ok(n) => Peeked::Bytes(n),
            Err(e) => match classify(&e) {
                IoClass::Retry => continue,
                IoClass::WouldBlock => Peeked::WouldBlock,
                IoClass::Exhausted(errno) | IoClass::Fatal(errno) => Peeked::Failed(errno),
            },
        };
    }
}

/// Consumes exactly `len` bytes, which a `peek` has just shown are in the socket.
fn consume(mut stream: &TcpStream, buf: &mut [u8], len: usize) -> Result<(), i32> {
    let mut done = 0;
    while done < len {
        match stream.read(&mut buf[done..len]) {
            Ok(0) => return Err(libc::ECONNRESET),
            Ok(n) => done += n,
            Err(e) => match classify(&e) {
                IoClass::Retry => continue,
                // The kernel showed these bytes a moment ago; not finding them is a failure.
                IoClass::WouldBlock => return Err(libc::EIO),
                IoClass::Exhausted(errno) | IoClass::Fatal(errno) => return Err(errno),
            },
        }
    }
    Ok(())
}

impl Server {
    /// At accept, with the protocol on: whether `peer` may connect. A source that may not is
    /// told why, closed and counted here.
    pub(super) fn proxy_admits(
        &mut self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) -> bool {
        if self.config.server.proxy.trusts(peer.ip()) {
            return true;
        }
        let _ = stream.write(refusal_line(ProxyRefusal::Untrusted));
        self.proxy_refusal_counted(ProxyRefusal::Untrusted, peer, None, now);
        false
    }

    /// Counts and logs a refusal (a debug line per refusal, a warning a second per cause).
    fn proxy_refusal_counted(
        &mut self,
        cause: ProxyRefusal,
        peer: SocketAddr,
        id: Option<u64>,
        now: Instant,
    ) {
        self.stats.proxy.on_refused(cause);
        let id = id.map_or_else(|| "-".to_owned(), |i| i.to_string());
        budgeted!(
            self.log_budget,
            LineKind::Connect,
            Level::Debug,
            now,
            "proxy protocol: refused id={id} peer={peer}: {}",
            cause.name()
        );
        if let Some(n) = self.proxy.warn[cause as usize].hit(now) {
            let what = match cause {
                ProxyRefusal::Untrusted => "a connection from a source not in server.proxy_trusted",
                ProxyRefusal::Malformed => "an invalid PROXY protocol header",
                ProxyRefusal::Timeout => {
                    "a PROXY protocol header not complete within server.proxy_header_timeout"
                }
                ProxyRefusal::TooLarge => "a PROXY protocol header past its bound",
            };
            budgeted!(
                self.log_budget,
                LineKind::Connect,
                Level::Warn,
                now,
                "proxy protocol: refused {what} from {peer} ({n} refused for {} since the last warning; total {})",
                cause.name(),
                self.stats.proxy.refused(cause)
            );
        }
    }

    /// A header refused: told, counted, reaped `protocol-error`.
    fn refuse_header(&mut self, token: Token, cause: ProxyRefusal, now: Instant) {
        let Some(session) = self.sessions.get_mut(token) else {
            return;
        };
        let _ = (&session.stream).write(refusal_line(cause));
        let (peer, id) = (session.peer, session.id);
        self.proxy_refusal_counted(cause, peer, Some(id), now);
        self.reap(token, Cause::Reason(ReapReason::ProtocolError), now);
    }

    /// Looks for the session's header; takes it when it is complete. `hung_up`: the poller
    /// reported a hang-up or error (the caller's deferred queue), after which a header that
    /// is still incomplete never will be.
    pub(super) fn proxy_phase(&mut self, token: Token, now: Instant, hung_up: bool) -> Phase {
        let Some(session) = self.sessions.get(token) else {
            return Phase::Ended;
        };
        let buf = &mut self.scratch.read[..MAX_HEADER_BYTES];
        let n = match peek(&session.stream, buf) {
            Peeked::Bytes(n) => n,
            Peeked::WouldBlock => return Phase::Waiting,
            Peeked::Closed => {
                // Gone before a header: a TCP health check, or a proxy that gave up.
                self.reap(token, Cause::Reason(ReapReason::Closed), now);
                return Phase::Ended;
            }
            Peeked::Failed(errno) => {
                self.reap(token, Cause::Errno(errno), now);
                return Phase::Ended;
            }
        };
        // A reload that turned the protocol off meanwhile: the header this session was
        // accepted to send is still taken, in either version.
        let mode = match self.config.server.proxy.mode {
            ProxyMode::Off => ProxyMode::Any,
            m => m,
        };
        match proxy_header::parse(&buf[..n], mode) {
            Parse::Incomplete if hung_up => {
                // Cut short by the peer's FIN.
                self.refuse_header(token, ProxyRefusal::Malformed, now);
                Phase::Ended
            }
            Parse::Incomplete => Phase::Waiting,
            Parse::Refused(Refusal::Malformed) => {
                self.refuse_header(token, ProxyRefusal::Malformed, now);
                Phase::Ended
            }
            Parse::Refused(Refusal::TooLarge) => {
                self.refuse_header(token, ProxyRefusal::TooLarge, now);
                Phase::Ended
            }
            Parse::Done(header) => {
                if let Err(errno) = consume(&session.stream, buf, header.len) {
                    self.reap(token, Cause::Errno(errno), now);
                    return Phase::Ended;
                }
                self.take_header(token, header, now)
            }
        }
    }

    /// The header was consumed: the session gets its client's address (and is checked against
    /// the per-address limit with it), then `joined` is published.
    fn take_header(&mut self, token: Token, header: Header, now: Instant) -> Phase {
        self.stats.proxy.accepted += 1;
        let Some(session) = self.sessions.get_mut(token) else {
            return Phase::Ended;
        };
        session.proxy = ProxyStage::Received;
        session.bytes_in += header.len as u64;
        session.last_rx = now;
        let (id, hop) = (session.id, session.peer);
        if let Origin::Client(client) = header.origin {
            let Ok(count) = self.sessions.move_peer(token, client) else {
                return Phase::Ended;
            };
            let limit = self.config.server.max_connections_per_ip;
            if limit > 0 && count as usize > limit {
                self.refuse_admitted(token, RejectCause::PerIp, now);
                return Phase::Ended;
            }
        }
        let peer = self.sessions.get(token).map_or(hop, |s| s.peer);
        budgeted!(
            self.log_budget,
            LineKind::Connect,
            Level::Debug,
            now,
            "proxy protocol: id={id} peer={peer} proxy={hop} v{}",
            header.version
        );
        self.publish_joined(token, now);
        Phase::Done
    }

    /// Over a limit once the real address is known: the connection is refused as it would
    /// have been at accept (told, closed, counted under `rejected`, and taken back out of
    /// `accepted` and `live`): it never joined, so it is not reaped either.
    fn refuse_admitted(&mut self, token: Token, cause: RejectCause, now: Instant) {
        let Some(mut session) = self.sessions.remove(token) else {
            return;
        };
        let _ = (&session.stream).write(b"-ERR max connections per address reached\r\n");
        let _ = self.poll.registry().deregister(&mut session.stream);
        self.stats.on_late_reject(cause, session.connected_at);
        if session.tls().is_some() {
            self.stats.tls.live = self.stats.tls.live.saturating_sub(1);
        }
        budgeted!(
            self.log_budget,
            LineKind::Connect,
            Level::Debug,
            now,
            "refused {} proxy={}: {}",
            session.peer,
            clipped(
                &session
                    .proxy_hop()
                    .map_or_else(String::new, |h| h.to_string())
            ),
            cause.name()
        );
        if let Some(n) = self.accept.limit_warn_hit(now) {
            log::warn!(
                "refusing connections: server.max_connections_per_ip reached ({n} refused since the last warning; live={})",
                self.sessions.len()
            );
        }
        drop(session);
        if self.accept.descriptor_freed() {
            self.pending.accept_again();
        }
    }

    /// Reaps sessions whose header did not arrive within `server.proxy_header_timeout`, at
    /// most [`REAPS_PER_TURN`] a turn.
    pub(super) fn reap_late_headers(&mut self, now: Instant) {
        let mut reaped = 0;
        while reaped < REAPS_PER_TURN {
            let Some((token, id)) = self.proxy.pop_due(now) else {
                break;
            };
            let late = self
                .sessions
                .get(token)
                .is_some_and(|s| s.id == id && s.proxy == ProxyStage::AwaitingHeader);
            if late {
                self.refuse_header(token, ProxyRefusal::Timeout, now);
                reaped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_in_order_and_only_when_due() {
        let mut p = ProxyPhase::default();
        let t0 = Instant::now();
        let s = std::time::Duration::from_secs(1);
        p.push(t0 + 3 * s, Token(70_000), 2);
        p.push(t0 + s, Token(70_001), 1);
        assert_eq!(p.deadline(), Some(t0 + s));
        assert_eq!(p.pop_due(t0), None);
        assert_eq!(p.pop_due(t0 + 2 * s), Some((Token(70_001), 1)));
        assert_eq!(p.pop_due(t0 + 2 * s), None);
        assert_eq!(p.pop_due(t0 + 3 * s), Some((Token(70_000), 2)));
        assert_eq!(p.deadline(), None);
    }
}

//! The reaper: the only place a session ends ([`Server::reap`]), and the two queues that feed
//! it besides the I/O path: the idle deadlines and the deferred dead peers.
//!
//! Whoever decides that a session is over (its I/O in `session_io.rs`, a timer here or in
//! `auth_guard.rs`, a takeover in `naming.rs`, `CLIENT KILL` on the operator side, shutdown)
//! calls [`Server::reap`] with a [`Cause`]; it takes the `TCP_INFO` snapshot, decides the
//! reason, closes the socket, counts, writes the one `reap` line and publishes `left`.
//!
//! **Idle deadlines** (`session.idle_timeout`): a min-heap of (deadline, token, id). Entries go
//! stale when a session receives data or is reaped; they are checked against the session when
//! they come due, and a session that received data since is queued again at its new deadline.
//!
//! **Deferred dead peers.** When a network path is cut, the kernel gives up on every session
//! whose keepalive timers are in phase within a few milliseconds of each other (its timer wheel
//! fires them in batches), and epoll reports thousands of errors at once. Ending a session is
//! the most expensive thing the loop does for it (`TCP_INFO`, a log line, statistics, close:
//! about 6 µs here), so ending thousands before the next `poll` held every live session behind
//! them: a client's `PING` waited 10–15 ms per batch in the benchmark (docs/benchmarks.md, mass
//! reap).
//!
//! Instead, a session whose event says error or hang-up is queued (on the loop's pending work,
//! `pending.rs`), and at most [`PER_TURN`] of them are serviced per turn (the ordinary
//! [`Server::service`] path, so the read that reports the error, the reason and the reap line
//! are unchanged); live sessions in the same and the following turns are served in between,
//! and the poll timeout is zero while the queue is not empty. Entries are `(token, id)`: a
//! token can be given to a new session before its entry comes up, an id cannot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use mio::Token;

use super::session_io::Wake;
use super::Server;
use crate::os::sys;
use crate::session::reap::{errno_name, reason_for_errno, Cause, ReapReason};
use crate::session::{ProxyStage, Session, SessionTable};
use crate::telemetry::log_throttle::{budgeted, LineKind};
use crate::telemetry::logging::clipped;
use crate::telemetry::presence_events::{Event, Left};

/// Sessions with an error or hang-up serviced per turn: about 0.4 ms of reaping.
pub(super) const PER_TURN: usize = 64;

/// The idle deadlines: a min-heap of (deadline, token, id), stale entries skipped when due.
#[derive(Debug, Default)]
pub(super) struct IdleTimers {
    heap: BinaryHeap<Reverse<(Instant, Token, u64)>>,
}

impl IdleTimers {
    /// A session's deadline (at accept, or after it received data and its entry came due).
    pub(super) fn push(&mut self, at: Instant, token: Token, id: u64) {
        self.heap.push(Reverse((at, token, id)));
    }

    /// The nearest deadline, for the poll timeout.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the next entry due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Token, u64)> {
        let Reverse((at, token, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((token, id))
    }

    /// Forgets every deadline (`session.idle_timeout` is off).
    fn clear(&mut self) {
        self.heap.clear();
    }

    /// Rebuilds the heap from the live sessions (after a reload changed the timeout).
    pub(super) fn rebuild(&mut self, sessions: &SessionTable, limit: Option<Duration>) {
        self.heap.clear();
        if let Some(limit) = limit {
            for (token, s) in sessions.iter() {
                self.push(s.idle_deadline(limit), token, s.id);
            }
        }
    }
}

impl Server {
    /// Ends a session: snapshot `TCP_INFO`, decide the reason, deregister, close, count, log
    /// (one line, within the log budget: `log.reap_lines_per_second`, `log.bytes_per_second`),
    /// publish `left`. The only place a session ends.
    pub(super) fn reap(&mut self, token: Token, cause: Cause, now: Instant) {
        let Some(mut session) = self.sessions.remove(token) else {
            return;
        };
        let info = sys::tcp_info(&session.stream).ok();
        let (reason, errno) = match cause {
            Cause::Reason(r) => (r, 0),
            Cause::Errno(errno) => (
                reason_for_errno(errno, info.as_ref(), session.pending_output() > 0),
                errno,
            ),
        };
        // Deregistering a socket whose peer is gone still succeeds; closing it (the drop
        // below) would remove it from epoll anyway.
        let _ = self.poll.registry().deregister(&mut session.stream);
        let lifetime = session.age(now);
        let silent = session.idle_for(now);
        self.stats.on_reap(reason, lifetime, silent, now);
        let mut tls_note = String::new();
        let no_output = session.output.is_empty();
        if let Some(tls) = session
            .extras
            .as_deref_mut()
            .and_then(|e| e.tls.as_deref_mut())
        {
            self.stats.tls.live = self.stats.tls.live.saturating_sub(1);
            if let Some(f) = &tls.failure {
                tls_note = format!(" tls_cause={} tls_error={:?}", f.cause.name(), &*f.detail);
            } else if tls.is_open() && no_output && errno == 0 {
                // A clean end the peer can tell from a cut connection (best effort: one
                // non-blocking write to a socket that is about to close).
                let mut wire = Vec::new();
                tls.close_notify(&mut wire);
                let _ = std::io::Write::write(&mut session.stream, &wire);
            }
        }
        let i = info.unwrap_or_default();
        budgeted!(
            self.log_budget,
            LineKind::Reap(reason),
            reason.log_level(),
            now,
            "reap id={} peer={}{} name={} reason={} errno={} lifetime_ms={} silent_ms={} \
             tcpi_state={} tcpi_probes={} tcpi_retransmits={} tcpi_backoff={} tcpi_unacked={} \
             tcpi_rtt_us={} tcpi_total_retrans={} tcpi_last_data_recv_ms={} \
             tcpi_last_ack_recv_ms={} tcpi_notsent_bytes={} tcpi_snd_wnd={}{}",
            session.id,
            session.peer,
            // The hop, for a session whose PROXY header gave it its address.
            session
                .proxy_hop()
                .map_or_else(String::new, |h| format!(" proxy={h}")),
            clipped(session.name.as_deref().unwrap_or("-")),
            reason,
            errno_name(errno),
            lifetime.as_millis(),
            silent.as_millis(),
            i.state,
            i.probes,
            i.retransmits,
            i.backoff,
            i.unacked,
            i.rtt_us,
            i.total_retrans,
            i.last_data_recv_ms,
            i.last_ack_recv_ms,
            i.notsent_bytes,
            i.snd_wnd.map_or_else(|| "-".to_string(), |w| w.to_string()),
            tls_note,
        );
        // A session still waiting for its PROXY header was never announced.
        let joined = session.proxy != ProxyStage::AwaitingHeader;
        if joined {
            self.publish_left(
                &session,
                reason,
                errno,
                lifetime,
                silent,
                info.as_ref(),
                now,
            );
        }
        drop(session);
        // A descriptor came free: connections refused for lack of them can be taken now.
        if self.accept.descriptor_freed() {
            self.pending.accept_again();
        }
    }

    /// Publishes the `left` event of a session just removed.
    #[allow(clippy::too_many_arguments)]
    fn publish_left(
        &mut self,
        session: &Session,
        reason: ReapReason,
        errno: i32,
        lifetime: Duration,
        silent: Duration,
        info: Option<&sys::TcpInfo>,
        now: Instant,
    ) {
        self.publish(
            &Event::Left(Left {
                id: session.id,
                addr: session.peer,
                name: session.name.as_deref(),
                identity: session.identity().map(|i| &*i.name),
                reason,
                errno,
                lifetime,
                silent,
                tcp_info: info,
            }),
            now,
        );
    }

    /// Reaps sessions whose idle deadline passed; re-queues those that received data since.
    pub(super) fn reap_idle(&mut self, now: Instant) {
        let Some(limit) = self.config.session.idle_timeout else {
            self.idle.clear();
            return;
        };
        while let Some((token, id)) = self.idle.pop_due(now) {
            let Some(session) = self.sessions.get(token) else {
                continue;
            };
            if session.id != id {
                continue;
            }
            let due = session.idle_deadline(limit);
            if due <= now {
                self.reap(token, Cause::Reason(ReapReason::IdleTimeout), now);
            } else {
                self.idle.push(due, token, id);
            }
        }
    }

    /// Queues a session whose peer failed or hung up; false if `token` is not a live session
    /// (a listener, the signal pipe, or a session already reaped), which is then dispatched
    /// as usual.
    pub(super) fn defer(&mut self, token: Token) -> bool {
        let Some(session) = self.sessions.get(token) else {
            return false;
        };
        self.pending.defer(token, session.id);
        true
    }

    /// Services up to [`PER_TURN`] queued sessions (each normally ends in [`Server::reap`]).
    pub(super) fn service_deferred(&mut self, now: Instant) {
        for _ in 0..PER_TURN {
            let Some((token, id)) = self.pending.next_deferred() else {
                return;
            };
            if self.sessions.get(token).is_some_and(|s| s.id == id) {
                self.service(token, now, Wake::Drain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::PathBuf;

    use mio::Interest;

    use super::*;
    use crate::config::Config;
    use crate::session::reap::ReapReason;
    use crate::session::Session;
    use crate::telemetry::logging::LevelSource;

    /// A server on 127.0.0.1:0 holding `n` sessions whose clients have reset their
    /// connections, so every read on them fails with `ECONNRESET`.
    fn server_with_reset_sessions(n: usize) -> (Server, Vec<Token>) {
        let mut config = Config::default();
        config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let mut server = Server::new(
            config,
            PathBuf::from("test.toml"),
            LevelSource::Config,
            None,
        )
        .expect("server");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let now = Instant::now();
        let mut tokens = Vec::new();
        for _ in 0..n {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, peer): (_, SocketAddr) = listener.accept().unwrap();
            accepted.set_nonblocking(true).unwrap();
            let stream = mio::net::TcpStream::from_std(accepted);
            let token = server
                .sessions
                .insert(|id| Session::new(id, stream, peer, now));
            let s = server.sessions.get_mut(token).unwrap();
            server
                .poll
                .registry()
                .register(&mut s.stream, token, Interest::READABLE)
                .unwrap();
            server.stats.on_accept(now);
            // SO_LINGER 0 then close: the server side sees a reset, as from a rebooted peer.
            socket2::SockRef::from(&client)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
            drop(client);
            tokens.push(token);
        }
        (server, tokens)
    }

    #[test]
    fn at_most_per_turn_sessions_are_reaped_per_call() {
        let n = PER_TURN * 2 + 5;
        let (mut server, tokens) = server_with_reset_sessions(n);
        for &t in &tokens {
            assert!(server.defer(t));
        }
        let now = Instant::now();
        server.service_deferred(now);
        assert_eq!(server.sessions.len(), n - PER_TURN);
        assert_eq!(
            server.stats.reason(ReapReason::Reset).count,
            PER_TURN as u64
        );
        server.service_deferred(now);
        server.service_deferred(now);
        assert_eq!(server.sessions.len(), 0);
        assert!(server.pending.next_deferred().is_none());
        assert_eq!(server.stats.reason(ReapReason::Reset).count, n as u64);
        assert_eq!(server.stats.live, 0);
    }

    #[test]
    fn a_reused_token_is_not_reaped_for_its_old_session() {
        let (mut server, tokens) = server_with_reset_sessions(2);
        let (old, other) = (tokens[0], tokens[1]);
        assert!(server.defer(old));
        // The queued session ends by another path, and a new session gets its token.
        server.reap(old, Cause::Reason(ReapReason::Quit), Instant::now());
        // The new session's peer has reset too, so servicing it by mistake would reap it.
        let (mut fresh, fresh_tokens) = server_with_reset_sessions(1);
        let session = fresh.sessions.remove(fresh_tokens[0]).unwrap();
        let reused = server.sessions.insert(|id| Session { id, ..session });
        assert_eq!(reused, old, "the slab hands out the freed key first");
        server.service_deferred(Instant::now());
        assert!(
            server.sessions.get(reused).is_some(),
            "the new session was left alone"
        );
        assert!(
            server.sessions.get(other).is_some(),
            "only queued sessions are serviced"
        );
        assert!(!server.defer(Token(1)), "a listener token is not a session");
    }
}

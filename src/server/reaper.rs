//! Sessions whose peer is gone are ended a bounded number per turn.
//!
//! When a network path is cut, the kernel gives up on every session whose keepalive timers are
//! in phase within a few milliseconds of each other (its timer wheel fires them in batches),
//! and epoll reports thousands of errors at once. Ending a session is the most expensive thing
//! the loop does for it (`TCP_INFO`, a log line, statistics, close: about 6 µs here), so
//! ending thousands before the next `poll` held every live session behind them: a client's
//! `PING` waited 10–15 ms per batch in the benchmark (docs/benchmarks.md, mass reap).
//!
//! Instead, a session whose event says error or hang-up is queued here, and at most
//! [`PER_TURN`] of them are serviced per turn (the ordinary [`Server::service`] path, so the
//! read that reports the error, the reason and the reap line are unchanged); live sessions in
//! the same and the following turns are served in between, and the poll timeout is zero while
//! the queue is not empty. Entries are `(token, id)`: a token can be given to a new session
//! before its entry comes up, an id cannot.

use std::collections::VecDeque;
use std::time::Instant;

use mio::Token;

use super::Server;

/// Sessions with an error or hang-up serviced per turn: about 0.4 ms of reaping.
pub(super) const PER_TURN: usize = 64;

/// The queue of sessions waiting for their turn to be serviced.
pub(super) type Deferred = VecDeque<(Token, u64)>;

impl Server {
    /// Queues a session whose peer failed or hung up; false if `token` is not a live session
    /// (a listener, the signal pipe, or a session already reaped), which is then dispatched
    /// as usual.
    pub(super) fn defer(&mut self, token: Token) -> bool {
        let Some(session) = self.sessions.get(token) else {
            return false;
        };
        self.deferred.push_back((token, session.id));
        true
    }

    /// Services up to [`PER_TURN`] queued sessions (each normally ends in [`Server::reap`]).
    pub(super) fn service_deferred(&mut self, now: Instant) {
        for _ in 0..PER_TURN {
            let Some((token, id)) = self.deferred.pop_front() else {
                return;
            };
            if self.sessions.get(token).is_some_and(|s| s.id == id) {
                self.service(token, now, super::session_io::Wake::Drain);
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
    use crate::logging::LevelSource;
    use crate::reap::ReapReason;
    use crate::session::Session;

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
            server.stats.on_accept();
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
        assert!(server.deferred.is_empty());
        assert_eq!(server.stats.reason(ReapReason::Reset).count, n as u64);
        assert_eq!(server.stats.live, 0);
    }

    #[test]
    fn a_reused_token_is_not_reaped_for_its_old_session() {
        let (mut server, tokens) = server_with_reset_sessions(2);
        let (old, other) = (tokens[0], tokens[1]);
        assert!(server.defer(old));
        // The queued session ends by another path, and a new session gets its token.
        server.reap(
            old,
            super::super::session_io::Cause::Reason(ReapReason::Quit),
            Instant::now(),
        );
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

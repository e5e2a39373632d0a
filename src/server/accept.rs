//! Accepting connections: limits, rejections, and descriptor exhaustion.
//!
//! Over `max_connections` (or `max_connections_per_ip`) a connection is accepted, told
//! `-ERR max connections reached`, closed and counted as rejected. When the process runs out
//! of descriptors (`EMFILE`/`ENFILE`), a reserve descriptor held for the purpose is released,
//! the waiting connection is accepted, told why, and closed, and the reserve is taken again:
//! clients learn at once instead of hanging in the backlog, and the loop cannot spin on a
//! listener that stays readable. If even that fails, accepting pauses briefly. The condition is
//! logged at most once a second, with a count.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{error, info, warn, Level};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::tokens::LISTENER_BASE;
use super::{Server, StartError};
use crate::config::ServerConfig;
use crate::os::activation::Activated;
use crate::os::bind::{self, MAX_ACCEPTS_PER_TURN};
use crate::os::sockopt;
use crate::session::reap::Cause;
use crate::session::reap::{classify, IoClass};
use crate::session::{ProxyStage, Session};
use crate::telemetry::log_throttle::{budgeted, LineKind, RateLimited};
use crate::telemetry::stats::RejectCause;

/// How long to stop accepting when descriptors are gone and the reserve could not help.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// A bound client listener.
#[derive(Debug)]
pub(super) struct Listener {
    pub(super) addr: SocketAddr,
    pub(super) socket: TcpListener,
    /// A `tls.listen` listener: its sessions start with a TLS handshake.
    pub(super) tls: bool,
}

/// Accept-side state: the client listeners, the reserve descriptor, the pause, and the rate
/// limits.
#[derive(Debug)]
pub(super) struct AcceptState {
    /// Listener tokens are `LISTENER_BASE + key`.
    pub(super) listeners: Slab<Listener>,
    reserve: Option<File>,
    retry_at: Option<Instant>,
    exhausted_warn: RateLimited,
    limit_warn: RateLimited,
    error_warn: RateLimited,
}

impl AcceptState {
    pub(super) fn new() -> AcceptState {
        AcceptState {
            listeners: Slab::new(),
            reserve: File::open("/dev/null").ok(),
            retry_at: None,
            exhausted_warn: RateLimited::default(),
            limit_warn: RateLimited::default(),
            error_warn: RateLimited::default(),
        }
    }

    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub(super) fn clear_retry(&mut self) {
        self.retry_at = None;
    }
    /// Binds a listener and registers it.
    pub(super) fn add_listener(
        &mut self,
        registry: &Registry,
        server: &ServerConfig,
        addr: SocketAddr,
        tls: bool,
    ) -> io::Result<()> {
        let socket = bind::bind(addr, server.backlog, server.reuse_port)?;
        self.register_listener(registry, addr, socket, tls)
    }

    /// Registers a bound listener with the poller and the listener table.
    fn register_listener(
        &mut self,
        registry: &Registry,
        addr: SocketAddr,
        mut socket: TcpListener,
        tls: bool,
    ) -> io::Result<()> {
        let entry = self.listeners.vacant_entry();
        let token = Token(LISTENER_BASE + entry.key());
        registry.register(&mut socket, token, Interest::READABLE)?;
        let bound = socket.local_addr().unwrap_or(addr);
        entry.insert(Listener { addr, socket, tls });
        info!("listening on {bound}{}", if tls { " (TLS)" } else { "" });
        Ok(())
    }

    /// Serves on the listeners passed by socket activation instead of `server.listen`.
    pub(super) fn add_activated(
        &mut self,
        registry: &Registry,
        passed: Vec<Activated>,
    ) -> Result<(), StartError> {
        for a in passed {
            info!(
                "socket activation: listener fd={} name={} addr={} passed by the service manager (server.listen is ignored)",
                a.fd,
                a.name.as_deref().unwrap_or("-"),
                a.addr
            );
            self.register_listener(registry, a.addr, a.listener, false)
                .map_err(|source| StartError::Bind {
                    addr: a.addr,
                    source,
                })?;
        }
        Ok(())
    }

    /// Opens listeners the new config adds and closes those it dropped (`plain` true for
    /// `server.listen`, false for `tls.listen`: each reconciles its own). A listener that
    /// cannot be bound is logged and left out; the others keep working.
    pub(super) fn reconcile_listeners(
        &mut self,
        registry: &Registry,
        server: &ServerConfig,
        wanted: &[SocketAddr],
        tls: bool,
    ) {
        let key_name = if tls { "tls.listen" } else { "server.listen" };
        let want: HashSet<SocketAddr> = wanted.iter().copied().collect();
        let stale: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.tls == tls && !want.contains(&l.addr))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            let mut l = self.listeners.remove(key);
            let _ = registry.deregister(&mut l.socket);
            // A warning: a truncated or mistaken file can drop a listener clients rely on.
            warn!(
                "reload: closed listener {} (no longer in {key_name}); new clients cannot connect there",
                l.addr
            );
        }
        let have: HashSet<SocketAddr> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.tls == tls)
            .map(|(_, l)| l.addr)
            .collect();
        for &addr in wanted {
            if have.contains(&addr) {
                continue;
            }
            if let Err(e) = self.add_listener(registry, server, addr, tls) {
                error!("reload: cannot listen on {addr}: {e}; other listeners keep running");
            }
        }
    }

    /// Stops accepting: every client listener is closed.
    pub(super) fn close_listeners(&mut self, registry: &Registry) {
        for (_, mut l) in std::mem::take(&mut self.listeners) {
            let _ = registry.deregister(&mut l.socket);
        }
    }

    /// A session ended, so a descriptor came free: take the reserve back if it was lost.
    /// Returns true when connections waited for lack of descriptors: accept them now.
    /// The rate limit of the "refusing connections" warning, for a refusal decided later
    /// (`proxy_phase.rs`, once a PROXY header gave the real address).
    pub(super) fn limit_warn_hit(&mut self, now: Instant) -> Option<u64> {
        self.limit_warn.hit(now)
    }

    pub(super) fn descriptor_freed(&mut self) -> bool {
        if self.reserve.is_none() {
            self.reserve = File::open("/dev/null").ok();
        }
        if self.retry_at().is_some() {
            self.clear_retry();
            return true;
        }
        false
    }
}

/// Writes a one-line error to a connection that is about to be closed. Best effort: the
/// socket is fresh, so the line fits in its send buffer; a failure changes nothing.
fn refuse(mut stream: TcpStream, line: &[u8]) {
    let _ = stream.write(line);
}

impl Server {
    /// Accepts from every listener (after a pause, or when descriptors were freed).
    pub(super) fn accept_all(&mut self, now: Instant) {
        let keys: Vec<usize> = self.accept.listeners.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.accept_from(key, now);
        }
    }

    /// Accepts until `WouldBlock`, the per-turn cap, or descriptor exhaustion.
    pub(super) fn accept_from(&mut self, key: usize, now: Instant) {
        if self.stopping || self.accept.retry_at.is_some() {
            return;
        }
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(listener) = self.accept.listeners.get(key) else {
                return;
            };
            let tls = listener.tls;
            match listener.socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, tls, now),
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return,
                    IoClass::Retry => continue,
                    IoClass::Exhausted(errno) => {
                        if !self.shed_one(key, errno, now) {
                            return;
                        }
                    }
                    // The peer gave up between SYN and accept: nothing to do.
                    IoClass::Fatal(errno) if errno == libc::ECONNABORTED => continue,
                    IoClass::Fatal(_) => {
                        if let Some(n) = self.accept.error_warn.hit(now) {
                            warn!("accept on {} failed ({n} times): {e}", listener.addr);
                        }
                        // Unknown trouble: do not spin on it; try again shortly.
                        self.accept.retry_at = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                },
            }
        }
        // The cap was reached with connections still waiting: come back next turn.
        self.pending.accept_again();
    }

    /// Out of descriptors: frees the reserve, accepts one waiting connection, tells it why and
    /// closes it. Returns false when accepting should stop for now.
    fn shed_one(&mut self, key: usize, errno: i32, now: Instant) -> bool {
        if let Some(n) = self.accept.exhausted_warn.hit(now) {
            warn!(
                "out of file descriptors ({}), live={}: refusing new connections until sessions end ({n} refused since the last warning)",
                crate::session::reap::errno_name(errno),
                self.sessions.len()
            );
        }
        let Some(reserve) = self.accept.reserve.take() else {
            self.accept.retry_at = Some(now + ACCEPT_PAUSE);
            return false;
        };
        drop(reserve);
        let accepted = self.accept.listeners.get(key).map(|l| l.socket.accept());
        let shed = match accepted {
            Some(Ok((stream, peer))) => {
                budgeted!(
                    self.log_budget,
                    LineKind::Connect,
                    Level::Debug,
                    now,
                    "refused {peer}: out of file descriptors"
                );
                // `refuse` consumes and closes the stream: its descriptor is free again below.
                refuse(
                    stream,
                    b"-ERR server out of file descriptors, try again later\r\n",
                );
                self.stats.on_reject(RejectCause::Descriptors);
                true
            }
            _ => false,
        };
        // Only now, with the refused connection closed, is there a descriptor to take back.
        // (Re-opening while it was still open failed with EMFILE and lost the reserve for good:
        // every later exhaustion then left clients hanging in the backlog.)
        self.accept.reserve = File::open("/dev/null").ok();
        if !shed || self.accept.reserve.is_none() {
            self.accept.retry_at = Some(now + ACCEPT_PAUSE);
            return false;
        }
        true
    }

    /// Takes in one accepted connection, or refuses it over a limit.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, tls: bool, now: Instant) {
        // With the PROXY protocol, only trusted proxies connect, and the per-address limit
        // waits for the header's address (src/server/proxy_phase.rs).
        let proxied = self.config.server.proxy.mode.is_on();
        if proxied && !self.proxy_admits(&mut stream, peer, now) {
            return;
        }
        let limits = &self.config.server;
        let cause = if self.sessions.len() >= limits.max_connections {
            Some(RejectCause::MaxConnections)
        } else if !proxied
            && limits.max_connections_per_ip > 0
            && self.sessions.count_for_ip(peer.ip()) as usize >= limits.max_connections_per_ip
        {
            Some(RejectCause::PerIp)
        } else {
            None
        };
        if let Some(cause) = cause {
            self.stats.on_reject(cause);
            budgeted!(
                self.log_budget,
                LineKind::Connect,
                Level::Debug,
                now,
                "refused {peer}: {}",
                cause.name()
            );
            if let Some(n) = self.accept.limit_warn.hit(now) {
                warn!(
                    "refusing connections: {} reached ({n} refused since the last warning; live={})",
                    match cause {
                        RejectCause::PerIp => "server.max_connections_per_ip",
                        _ => "server.max_connections",
                    },
                    self.sessions.len()
                );
            }
            let line: &[u8] = match cause {
                RejectCause::PerIp => b"-ERR max connections per address reached\r\n",
                _ => b"-ERR max connections reached\r\n",
            };
            refuse(stream, line);
            return;
        }

        // A TLS session gets its connection state now; the handshake runs on its first reads.
        let tls_state = match tls.then(|| self.tls.session()) {
            None => None,
            Some(Some(state)) => Some(state),
            Some(None) => {
                // No usable credentials (cannot happen after a good start; a reload never
                // drops them): refused like any other failed handshake.
                self.stats
                    .tls
                    .failed(crate::session::tls_layer::FailureCause::Protocol);
                return;
            }
        };
        let is_tls = tls_state.is_some();
        let token = self.sessions.insert(|id| {
            let mut session = Session::new(id, stream, peer, now);
            if tls_state.is_some() {
                session.extras_mut().tls = tls_state;
            }
            session
        });
        self.stats.on_accept(now);
        if is_tls {
            self.stats.tls.live += 1;
        }
        if proxied {
            // Announced once its header gave its address (proxy_phase.rs).
            if let Some(s) = self.sessions.get_mut(token) {
                s.proxy = ProxyStage::AwaitingHeader;
            }
        } else {
            // Announced before the socket setup: a session that fails it still gets its `left`.
            self.publish_joined(token, now);
        }
        let Some(session) = self.sessions.get_mut(token) else {
            return;
        };
        let id = session.id;
        session.authenticated = !self.config.auth_required();
        let setup = sockopt::apply(&session.stream, &self.config.keepalive).and_then(|()| {
            self.poll
                .registry()
                .register(&mut session.stream, token, Interest::READABLE)
        });
        if let Err(e) = setup {
            // The socket died before it could be set up (or the poller refused it): it is
            // accounted for like any other session that ended in error.
            self.reap(token, Cause::Errno(e.raw_os_error().unwrap_or(0)), now);
            return;
        }
        budgeted!(
            self.log_budget,
            LineKind::Connect,
            Level::Debug,
            now,
            "accepted id={id} peer={peer}"
        );
        if let Some(limit) = self.config.session.idle_timeout {
            self.idle.push(now + limit, token, id);
        }
        if is_tls {
            self.tls
                .handshake_started(token, id, now, self.config.tls.handshake_timeout);
        }
        self.auth_guard.admitted(&self.config, token, id, now);
        if proxied {
            let at = now + self.config.server.proxy.header_timeout;
            self.proxy.push(at, token, id);
        }
        // Bytes that arrived before registration are not lost: adding a ready socket to
        // epoll reports it at once, so the first request is read on the next turn.
    }
}

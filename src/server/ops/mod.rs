//! The operator side of the event loop: the admin listener (RESP, src/admin.rs), the metrics
//! listener (HTTP, src/metrics.rs), and the connections accepted from them.
//!
//! Operator connections are not client sessions: they live in their own slab (tokens
//! `OPS_BASE..SESSION_BASE`), have their own ids, are not counted in the session statistics,
//! and never go through `Server::reap`, which they only call to kill sessions.
//!
//! Invariants:
//! - Accepts and reads drain to `WouldBlock` under per-turn caps, like sessions; a capped token
//!   goes on the loop's revisit list.
//! - Each connection owns its input and output buffers. Replies (and, later, pushed events such
//!   as presence messages for `SUBSCRIBE`) are appended to `output` and written as the socket
//!   takes them. While more than `OUTPUT_PAUSE_BYTES` (1 MiB) wait, no further input is read or
//!   executed: a client pipelining `CLIENT LIST` cannot grow our memory faster than it reads.
//! - Interest is derived from state in one function (`OpsConn::wanted_interest`).
//! - Metrics connections are closed when a request head stalls (10 s) or the connection idles
//!   (120 s); admin connections (interactive `redis-cli`, and subscribers later) have no
//!   timeout.
//! - An HTTP connection ends with FIN after its last response, then a bounded drain of what
//!   the client still sends ("lingering close"), so the client reads our response (a 400 or
//!   431 included) instead of a reset.
//!
//! - Presence events for `SUBSCRIBE` are appended to subscribers' `output` in the order they
//!   happen (`deliver.rs`); a subscriber whose pending output passes
//!   `session.max_output_bytes` is disconnected and counted, never skipped over.
//!
//! This file holds the listeners, accepting, timers and closing; `conn.rs` one connection's
//! I/O; `deliver.rs` presence delivery.

mod conn;
mod deliver;

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::{Interest, Token};
use slab::Slab;

use self::conn::{OpsConn, Protocol};
use super::{Server, StartError};
use crate::admin::AdminClient;
use crate::config::{Config, Endpoint};
use crate::http::{self, Status};
use crate::ops_listener::{OpsListener, OpsStream};
use crate::reap::{classify, IoClass};
use crate::resp;
use crate::session::SESSION_BASE;

/// Operator tokens start here; client listener tokens stay below it.
const OPS_BASE: usize = 1 << 15;
const ADMIN_LISTENER: Token = Token(OPS_BASE);
const METRICS_LISTENER: Token = Token(OPS_BASE + 1);
/// Connection tokens are `CONN_BASE + slab key`.
const CONN_BASE: usize = OPS_BASE + 2;
/// Operator connections held at once; more are told so and closed.
const MAX_OPS_CONNECTIONS: usize = 1024;
const _: () = assert!(CONN_BASE + MAX_OPS_CONNECTIONS <= SESSION_BASE);

const MAX_ACCEPTS_PER_TURN: usize = 64;
/// At most one warning of each kind per this period.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Whether `token` belongs to the operator side.
pub(super) fn owns(token: Token) -> bool {
    (OPS_BASE..SESSION_BASE).contains(&token.0)
}

/// Which operator listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Metrics,
}

impl Role {
    const ALL: [Role; 2] = [Role::Admin, Role::Metrics];

    fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Metrics => "metrics",
        }
    }

    fn token(self) -> Token {
        match self {
            Role::Admin => ADMIN_LISTENER,
            Role::Metrics => METRICS_LISTENER,
        }
    }

    fn endpoint(self, config: &Config) -> Option<&Endpoint> {
        match self {
            Role::Admin => config.admin.listen.as_ref(),
            Role::Metrics => config.metrics.listen.as_ref(),
        }
    }
}

/// A bound operator listener.
struct Bound {
    socket: OpsListener,
    /// Where it listens, as bound (the real port when 0 was configured).
    local: String,
}

/// The operator side's state, owned by the `Server`.
pub(super) struct Ops {
    admin: Option<Bound>,
    metrics: Option<Bound>,
    conns: Slab<OpsConn>,
    next_id: u64,
    /// When the daemon started, for uptime and the start-time metric.
    started: Instant,
    started_at: SystemTime,
    last_warn: Option<Instant>,
    /// Scratch for one presence event: its JSON, and its `message` frame.
    json_buf: Vec<u8>,
    frame_buf: Vec<u8>,
    /// Subscribers given events this turn, to be written at its end.
    dirty: Vec<usize>,
    /// Events waiting for the next turn's delivery budget (`deliver.rs`).
    backlog: deliver::Backlog,
}

impl Ops {
    pub(super) fn new() -> Ops {
        Ops {
            admin: None,
            metrics: None,
            conns: Slab::new(),
            next_id: 1,
            started: Instant::now(),
            started_at: SystemTime::now(),
            last_warn: None,
            json_buf: Vec::new(),
            frame_buf: Vec::new(),
            dirty: Vec::new(),
            backlog: deliver::Backlog::default(),
        }
    }

    fn bound(&self, role: Role) -> Option<&Bound> {
        match role {
            Role::Admin => self.admin.as_ref(),
            Role::Metrics => self.metrics.as_ref(),
        }
    }

    fn slot(&mut self, role: Role) -> &mut Option<Bound> {
        match role {
            Role::Admin => &mut self.admin,
            Role::Metrics => &mut self.metrics,
        }
    }

    /// Rate limit for warnings: true when one may be logged now.
    fn may_warn(&mut self, now: Instant) -> bool {
        if self
            .last_warn
            .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
        {
            return false;
        }
        self.last_warn = Some(now);
        true
    }
}

fn conn_key(token: Token) -> Option<usize> {
    token.0.checked_sub(CONN_BASE)
}

impl Server {
    /// Opens the configured operator listeners at start-up.
    pub(super) fn open_ops_listeners(&mut self) -> Result<(), StartError> {
        for role in Role::ALL {
            if let Some(endpoint) = role.endpoint(&self.config).cloned() {
                self.bind_ops(role, &endpoint)
                    .map_err(|source| StartError::Ops {
                        role: role.name(),
                        endpoint,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    fn bind_ops(&mut self, role: Role, endpoint: &Endpoint) -> std::io::Result<()> {
        let mut socket = OpsListener::bind(endpoint)?;
        self.poll
            .registry()
            .register(&mut socket, role.token(), Interest::READABLE)?;
        let local = socket.local();
        let kind = match (&socket, role) {
            (OpsListener::Unix { .. }, _) => " (unix socket, mode 0600)",
            (_, Role::Metrics) => " (GET /metrics)",
            _ => "",
        };
        info!("{} listener on {local}{kind}", role.name());
        *self.ops.slot(role) = Some(Bound { socket, local });
        Ok(())
    }

    /// Closes an operator listener; a unix socket file is removed with it.
    fn unbind_ops(&mut self, role: Role) {
        if let Some(mut bound) = self.ops.slot(role).take() {
            let _ = self.poll.registry().deregister(&mut bound.socket);
            info!("{} listener on {} closed", role.name(), bound.local);
        }
    }

    /// After a reload: moves a listener whose `listen` changed, and retries one that could not
    /// be opened by an earlier reload. A listener that cannot be opened is logged and stays
    /// off; everything else keeps running.
    pub(super) fn reconcile_ops(&mut self, old: &Config) {
        for role in Role::ALL {
            let new = role.endpoint(&self.config).cloned();
            let open = self.ops.bound(role).is_some();
            if role.endpoint(old) == new.as_ref() && open == new.is_some() {
                continue;
            }
            self.unbind_ops(role);
            if let Some(endpoint) = new {
                if let Err(e) = self.bind_ops(role, &endpoint) {
                    log::error!(
                        "reload: cannot open the {} listener on {endpoint}: {e}; it stays off",
                        role.name()
                    );
                }
            }
        }
    }

    /// At shutdown, first: no more operator connections are accepted.
    pub(super) fn close_ops_listeners(&mut self) {
        for role in Role::ALL {
            self.unbind_ops(role);
        }
    }

    /// At shutdown, last: closes the operator listeners and connections.
    pub(super) fn close_ops(&mut self) {
        self.close_ops_listeners();
        let keys: Vec<usize> = self.ops.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.ops_close(key, "shutdown");
        }
    }

    /// Readiness (or a revisit) of an operator listener or connection.
    pub(super) fn ops_event(&mut self, token: Token, now: Instant) {
        if token == ADMIN_LISTENER {
            self.ops_accept(Role::Admin, now);
        } else if token == METRICS_LISTENER {
            self.ops_accept(Role::Metrics, now);
        } else if let Some(key) = conn_key(token) {
            self.ops_service(key, now);
        }
    }

    fn ops_accept(&mut self, role: Role, now: Instant) {
        if self.stopping {
            return;
        }
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(bound) = self.ops.bound(role) else {
                return;
            };
            match bound.socket.accept() {
                Ok((stream, peer)) => self.ops_admit(role, stream, peer, now),
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return,
                    IoClass::Retry => continue,
                    // The peer gave up between SYN and accept.
                    IoClass::Fatal(errno) if errno == libc::ECONNABORTED => continue,
                    // Out of descriptors, or worse: the connection waits in the backlog, and
                    // the next one to arrive brings us back (edge-triggered, so no spinning).
                    IoClass::Exhausted(_) | IoClass::Fatal(_) => {
                        if self.ops.may_warn(now) {
                            warn!("{} listener: accept failed: {e}", role.name());
                        }
                        return;
                    }
                },
            }
        }
        self.revisit.push(role.token());
    }

    fn ops_admit(&mut self, role: Role, mut stream: OpsStream, peer: String, now: Instant) {
        if self.ops.conns.len() >= MAX_OPS_CONNECTIONS {
            if self.ops.may_warn(now) {
                warn!(
                    "{} listener: refusing {peer}: {MAX_OPS_CONNECTIONS} admin and metrics connections are open",
                    role.name()
                );
            }
            let mut refusal = Vec::new();
            match role {
                Role::Admin => resp::write_error(&mut refusal, "ERR max admin connections reached"),
                Role::Metrics => {
                    http::write_response(&mut refusal, Status::UNAVAILABLE, &[], b"", false, false)
                }
            }
            // Best effort on a fresh socket: the few bytes fit in its send buffer.
            let _ = stream.write(&refusal);
            return;
        }
        let id = self.ops.next_id;
        self.ops.next_id += 1;
        let entry = self.ops.conns.vacant_entry();
        let token = Token(CONN_BASE + entry.key());
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            warn!("{} listener: cannot register {peer}: {e}", role.name());
            return;
        }
        let protocol = match role {
            Role::Admin => {
                let local = stream.local();
                Protocol::Admin(AdminClient::new(id, peer.clone(), local, now))
            }
            Role::Metrics => Protocol::Metrics,
        };
        debug!("{} connection id={id} peer={peer}", role.name());
        entry.insert(OpsConn::new(id, stream, peer, protocol, now));
    }

    fn ops_close(&mut self, key: usize, why: &str) {
        let Some(mut conn) = self.ops.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if conn.wants_presence() {
            self.stats.presence.subscribers = self.stats.presence.subscribers.saturating_sub(1);
        }
        debug!(
            "{} connection id={} peer={} ended: {why}",
            conn.role().name(),
            conn.id,
            conn.peer
        );
    }

    /// Whether presence events wait for the next turn (the poll timeout is then zero).
    pub(super) fn presence_backlog(&self) -> bool {
        self.ops.backlog.is_waiting()
    }

    /// The nearest operator timer, for the poll timeout.
    pub(super) fn ops_deadline(&self) -> Option<Instant> {
        self.ops
            .conns
            .iter()
            .filter_map(|(_, c)| c.deadline())
            .min()
    }

    /// Closes operator connections whose timer ran out.
    pub(super) fn ops_timers(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .ops
            .conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in due {
            self.ops_close(key, "timed out");
        }
    }
}

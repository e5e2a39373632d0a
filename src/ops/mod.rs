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
//! - Each connection owns its input and output buffers. Replies (and pushed events such as
//!   presence messages for `SUBSCRIBE`) are appended to `output` and written as the socket
//!   takes them.
//! - Output accounting per request: while 64 KiB (`OUTPUT_WINDOW_BYTES`) or more wait unsent,
//!   a connection's next request is not executed and its input is not read. It resumes as the
//!   socket drains; output that makes no progress for 60 s (or the listener's `idle_timeout`
//!   if shorter) closes the connection as `slow-consumer`, counted and logged at most once a
//!   second (presence subscribers are exempt: `deliver.rs` bounds them by
//!   `session.max_output_bytes`). So a connection holds at most the window plus one reply,
//!   plus a listing's snapshot while one is built.
//! - Replies that grow with the session table (`CLIENT LIST`, `CLIENT LOOKUP` of a shared
//!   name, above 256 sessions) are built turn by turn as the socket drains
//!   (src/admin/listing.rs): a snapshot of at most 80 bytes per session, then lines rendered
//!   into the output window. The other replies are bounded by constants (`/metrics` is about
//!   40 KiB whatever the number of sessions, so it keeps its `Content-Length`).
//! - Work per loop turn: all operator connections together spend at most `WORK_PER_TURN`
//!   (256) units: one per `CLIENT LIST` line rendered (about 12 µs in a debug build), one per
//!   512 reply bytes, one per request (40 for `CONFIG GET`). That is about 3 ms in a debug
//!   build, under 1 ms in release; one request may overrun it once (a `CLIENT LIST` snapshot
//!   of 10,000 sessions costs 626 units, a few ms in a debug build). A connection that runs out waits on the work queue, served
//!   round-robin on the next turn (a readiness event for a waiting connection only writes
//!   what is ready), so pipelined requests from many connections can neither freeze the loop
//!   nor starve each other.
//! - Interest is derived from state in one function (`OpsConn::wanted_interest`).
//! - Each listener has its own cap (`admin.max_connections`, `metrics.max_connections`) and
//!   idle timeout (`admin.idle_timeout`, `metrics.idle_timeout`; nothing received and nothing
//!   written for that long). Subscribed admin connections are exempt from the idle timeout,
//!   as Redis spares pub/sub clients. A reload applies new caps and timeouts at once
//!   (connections above a lowered cap stay; new ones are refused until below it). Metrics
//!   connections are also closed when a request head stalls (10 s).
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

mod connection;
mod deliver;

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::{Interest, Token};
use slab::Slab;

use self::connection::{Expiry, OpsConn, Protocol};
use super::{Server, StartError};
use crate::admin::{AdminClient, OpsCounters};
use crate::config::{Config, Endpoint, OpsListenerConfig, MAX_OPS_LISTENER_CONNECTIONS};
use crate::http::{self, Status};
use crate::ops_listener::{OpsListener, OpsStream};
use crate::reap::{classify, IoClass};
use crate::resp;
use crate::session::SESSION_BASE;

/// Operator tokens start here; client listener tokens stay below it.
const OPS_BASE: usize = 1 << 15;
const ADMIN_LISTENER: Token = Token(OPS_BASE);
const METRICS_LISTENER: Token = Token(OPS_BASE + 1);
/// On the revisit list while the work queue is not empty: serve it next turn.
const WORK: Token = Token(OPS_BASE + 2);
/// Connection tokens are `CONN_BASE + slab key`.
const CONN_BASE: usize = OPS_BASE + 3;
// Both listeners at their highest `max_connections` fit the token range.
const _: () = assert!(CONN_BASE + 2 * MAX_OPS_LISTENER_CONNECTIONS <= SESSION_BASE);

const MAX_ACCEPTS_PER_TURN: usize = 64;
/// At most one warning of each kind per this period.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// Work units all operator connections may spend in one loop turn (see the module docs).
const WORK_PER_TURN: usize = 256;

/// Kinds of warning, each rate-limited on its own.
#[derive(Debug, Clone, Copy)]
enum Warn {
    Accept = 0,
    Refuse = 1,
    Slow = 2,
}

/// The operator side's work budget for the current loop turn.
#[derive(Debug, Default)]
struct Budget {
    turn: Option<Instant>,
    left: usize,
}

impl Budget {
    /// What is left this turn; a new `now` is a new turn (the loop reads the clock once per
    /// turn).
    fn left(&mut self, now: Instant) -> &mut usize {
        if self.turn != Some(now) {
            self.turn = Some(now);
            self.left = WORK_PER_TURN;
        }
        &mut self.left
    }
}

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
        self.config(config).listen.as_ref()
    }

    fn config(self, config: &Config) -> &OpsListenerConfig {
        match self {
            Role::Admin => &config.admin,
            Role::Metrics => &config.metrics,
        }
    }

    /// Index in [`OpsCounters`]' arrays.
    pub(super) fn index(self) -> usize {
        match self {
            Role::Admin => 0,
            Role::Metrics => 1,
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
    last_warn: [Option<Instant>; 3],
    /// This turn's work budget.
    budget: Budget,
    /// Open, refused and closed connections by listener.
    counters: OpsCounters,
    /// Connections with work waiting for budget, served round-robin at the start of each
    /// turn (before readiness events), so no connection starves another.
    queue: VecDeque<usize>,
    /// Whether [`WORK`] is on the loop's revisit list.
    work_pending: bool,
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
            last_warn: [None; 3],
            budget: Budget::default(),
            counters: OpsCounters::default(),
            queue: VecDeque::new(),
            work_pending: false,
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

    /// Rate limit for warnings of one kind: true when one may be logged now.
    fn may_warn(&mut self, kind: Warn, now: Instant) -> bool {
        let last = &mut self.last_warn[kind as usize];
        if last.is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY) {
            return false;
        }
        *last = Some(now);
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
            // Caps and idle timeouts are read where they are used, so they apply at once.
            let (was, now) = (role.config(old), role.config(&self.config));
            if was.max_connections != now.max_connections {
                info!(
                    "reload: {}.max_connections {} -> {} ({} open)",
                    role.name(),
                    was.max_connections,
                    now.max_connections,
                    self.ops.counters.open[role.index()]
                );
            }
            if was.idle_timeout != now.idle_timeout {
                let show = |t: Option<Duration>| {
                    t.map_or("off".to_string(), crate::duration::format_duration)
                };
                info!(
                    "reload: {}.idle_timeout {} -> {}",
                    role.name(),
                    show(was.idle_timeout),
                    show(now.idle_timeout)
                );
            }
        }
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
        } else if token == WORK {
            self.ops_run_queue(now);
        } else if let Some(key) = conn_key(token) {
            let waits = self.ops.conns.get(key).is_some_and(|c| c.wants_budget());
            if waits && !self.ops.queue.is_empty() {
                // Others wait for the budget before it: write what is ready and keep to the
                // queue, so readiness cannot jump it.
                self.ops_settle(key, now);
            } else {
                self.ops_service(key, now);
            }
        }
    }

    /// Puts a connection on the work queue (once), and makes sure the loop comes back for it.
    fn ops_queue(&mut self, key: usize) {
        if let Some(conn) = self.ops.conns.get_mut(key) {
            if !conn.queued {
                conn.queued = true;
                self.ops.queue.push_back(key);
            }
        }
        if !self.ops.work_pending {
            self.ops.work_pending = true;
            self.revisit.push(WORK);
        }
    }

    /// Serves queued connections front to back while the turn's budget lasts; a connection
    /// that still has work goes to the back, those not reached keep their place.
    fn ops_run_queue(&mut self, now: Instant) {
        self.ops.work_pending = false;
        for _ in 0..self.ops.queue.len() {
            if *self.ops.budget.left(now) == 0 {
                break;
            }
            let Some(key) = self.ops.queue.pop_front() else {
                break;
            };
            match self.ops.conns.get_mut(key) {
                Some(conn) => conn.queued = false,
                // Closed since.
                None => continue,
            }
            self.ops_service(key, now);
        }
        if !self.ops.queue.is_empty() && !self.ops.work_pending {
            self.ops.work_pending = true;
            self.revisit.push(WORK);
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
                        if self.ops.may_warn(Warn::Accept, now) {
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
        let max = role.config(&self.config).max_connections;
        let i = role.index();
        if self.ops.counters.open[i] >= max as u64 {
            self.ops.counters.refused[i] += 1;
            if self.ops.may_warn(Warn::Refuse, now) {
                warn!(
                    "{0} listener: refusing {peer}: {0}.max_connections ({max}) reached; \
                     {1} refused so far",
                    role.name(),
                    self.ops.counters.refused[i]
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
        self.ops.counters.open[role.index()] += 1;
    }

    fn ops_close(&mut self, key: usize, why: &str) {
        let Some(mut conn) = self.ops.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let open = &mut self.ops.counters.open[conn.role().index()];
        *open = open.saturating_sub(1);
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
        let config = &self.config;
        self.ops
            .conns
            .iter()
            .filter_map(|(_, c)| c.deadline(c.role().config(config).idle_timeout))
            .map(|(at, _)| at)
            .min()
    }

    /// Closes operator connections whose timer ran out: counted by listener and reason, a
    /// slow consumer also logged (at most once a second, with the running count).
    pub(super) fn ops_timers(&mut self, now: Instant) {
        let config = &self.config;
        let due: Vec<(usize, Expiry)> = self
            .ops
            .conns
            .iter()
            .filter_map(|(k, c)| {
                let (at, why) = c.deadline(c.role().config(config).idle_timeout)?;
                (at <= now).then_some((k, why))
            })
            .collect();
        for (key, why) in due {
            let Some(conn) = self.ops.conns.get(key) else {
                continue;
            };
            let (role, i) = (conn.role(), conn.role().index());
            match why {
                Expiry::Linger | Expiry::Head => self.ops_close(key, "timed out"),
                Expiry::Idle => {
                    self.ops.counters.idle_closed[i] += 1;
                    self.ops_close(key, "idle-timeout");
                }
                Expiry::Stall => {
                    self.ops.counters.slow_closed[i] += 1;
                    let (id, peer, pending) = (conn.id, conn.peer.clone(), conn.pending());
                    if self.ops.may_warn(Warn::Slow, now) {
                        warn!(
                            "{} connection id={id} peer={peer} closed: reason=slow-consumer \
                             pending_bytes={pending} (its output did not drain); {} so far",
                            role.name(),
                            self.ops.counters.slow_closed[i]
                        );
                    }
                    self.ops_close(key, "slow-consumer");
                }
            }
        }
    }
}

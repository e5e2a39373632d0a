//! The operator side: the admin listener (RESP, `admin/`), the metrics listener (HTTP,
//! `metrics.rs` over `http.rs`), and the connections accepted from them, all owned by [`Ops`].
//!
//! Operator connections are not client sessions: they live in their own slab (tokens
//! `OPS_BASE..SESSION_BASE`), have their own ids, are not counted in the session statistics,
//! and never go through the loop's reaper; they only ask it to kill sessions.
//!
//! The event loop owns an [`Ops`] and talks to it through a few calls: [`Ops::ready`] for
//! readiness (or a revisit) of any operator token, [`Ops::deadline`] folded into its poll
//! timeout, [`Ops::expire`] on its timers, [`Ops::publish`] for each presence event and
//! [`Ops::end_turn`] at the end of each turn, plus start-up, reload and shutdown. What the
//! operator side reads of the loop (sessions, stats, config, the log budget, `now`) comes in
//! a [`Context`] of borrows; what it needs the loop to do comes back as an [`Action`]
//! (`CLIENT KILL`: the loop reaps the sessions, then calls [`Ops::resume`] so the rest of the
//! connection's pipeline sees them gone). This module never imports the loop (`crate::server`).
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
//!   (src/ops/admin/listing.rs): a snapshot of at most 80 bytes per session, then lines rendered
//!   into the output window. The other replies are bounded by constants (`/metrics` is about
//!   40 KiB whatever the number of sessions, so it keeps its `Content-Length`).
//! - Work per loop turn: all operator connections together spend at most `WORK_PER_TURN`
//!   (256) units: one per `CLIENT LIST` line rendered (about 12 µs in a debug build), one per
//!   512 reply bytes, one per request (40 for `CONFIG GET`). That is about 3 ms in a debug
//!   build, under 1 ms in release; one request may overrun it once (a `CLIENT LIST` snapshot
//!   of 10,000 sessions costs 626 units, a few ms in a debug build). The status page's sweep
//!   of the session table (`session_watch.rs`) takes at most 128 units a turn (512 sessions,
//!   one `TCP_INFO` each, about 1 ms) and is continued on the `WORK` revisit. A connection that runs
//!   out waits on the work queue, served round-robin on the next turn (a readiness event for a
//!   waiting connection only writes what is ready), so pipelined requests from many
//!   connections can neither freeze the loop nor starve each other.
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
//! This file holds [`Ops`], the listeners, accepting, timers and closing; `work.rs` the work
//! budget and queue; `connection.rs` one connection's I/O (`connection/requests.rs` running its
//! requests); `deliver.rs` presence delivery; `listener.rs` the sockets; `admin/` the
//! admin commands (and `INFO`); `http.rs` and `metrics.rs` the metrics endpoint;
//! `status_page.rs`, `status.rs` and `session_watch.rs` the status page (docs/status.md).

mod admin;
mod connection;
mod deliver;
mod http;
mod listener;
mod metrics;
mod session_watch;
mod status;
mod status_page;
mod work;

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::{Interest, Poll, Registry, Token};
use slab::Slab;

use self::admin::{AdminClient, OpsCounters};
use self::connection::{Expiry, OpsConn, Protocol};
use self::http::Status;
use self::listener::{OpsListener, OpsStream};
use self::work::Budget;
use crate::config::{Config, Endpoint, OpsListenerConfig, MAX_OPS_LISTENER_CONNECTIONS};
use crate::protocol::resp;
use crate::session::reap::{classify, IoClass};
use crate::session::{SessionTable, SESSION_BASE};
use crate::telemetry::log_throttle::{LogBudget, RateLimited};
use crate::telemetry::stats::Stats;

/// Operator tokens start here; client listener tokens stay below it.
pub(crate) const OPS_BASE: usize = 1 << 15;
pub(crate) const ADMIN_LISTENER: Token = Token(OPS_BASE);
pub(crate) const METRICS_LISTENER: Token = Token(OPS_BASE + 1);
/// On the revisit list while the work queue is not empty: serve it next turn.
pub(crate) const WORK: Token = Token(OPS_BASE + 2);
/// Connection tokens are `CONN_BASE + slab key`.
pub(crate) const CONN_BASE: usize = OPS_BASE + 3;
// Both listeners at their highest `max_connections` fit the token range.
const _: () = assert!(CONN_BASE + 2 * MAX_OPS_LISTENER_CONNECTIONS <= SESSION_BASE);

use crate::os::bind::MAX_ACCEPTS_PER_TURN;

/// Kinds of warning, each rate-limited on its own (at most one a second).
#[derive(Debug, Clone, Copy)]
enum Warn {
    Accept = 0,
    Refuse = 1,
    Slow = 2,
}

/// What the operator side borrows from the event loop for one call. The loop owns all of it;
/// the operator side keeps none of it between calls.
pub(crate) struct Context<'a> {
    /// The loop's clock for this turn.
    pub now: Instant,
    /// The poller: its registry for operator sockets, and polling itself only in the shutdown
    /// drain ([`Ops::drain_subscribers`]).
    pub poll: &'a mut Poll,
    pub config: &'a Config,
    pub config_path: &'a Path,
    /// The sessions, read-only (`CLIENT LIST`, `CLIENT KILL`'s filters, `INFO`).
    pub sessions: &'a SessionTable,
    /// Read by `INFO` and the metrics; presence subscribers, deliveries and drops are counted
    /// here.
    pub stats: &'a mut Stats,
    /// The budget for lines a client can cause (a scraper's request path).
    pub log_budget: &'a mut LogBudget,
    /// The client listeners' bound addresses (`INFO`), asked for only when an admin request
    /// runs (each costs a `getsockname`).
    pub listeners: &'a dyn Fn() -> Vec<SocketAddr>,
    /// Tokens the loop dispatches again this turn, after the events (per-turn caps, the work
    /// queue, a lingering close).
    pub revisit: &'a mut Vec<Token>,
    /// The daemon is shutting down: nothing more is accepted, delivery has no budget.
    pub stopping: bool,
}

impl Context<'_> {
    fn registry(&self) -> &Registry {
        self.poll.registry()
    }
}

/// What the event loop must do for the operator side. The loop applies it at once and then
/// calls [`Ops::resume`], again until that returns `None`: the connection's turn is paused in
/// between (its next request must see the effect).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// `CLIENT KILL`: reap these sessions with reason `killed` (its reply is already written).
    Kill(Vec<Token>),
}

/// An operator listener could not be opened at start-up (the loop words it, as a `StartError`).
#[derive(Debug)]
pub(crate) struct OpenError {
    /// `admin` or `metrics`.
    pub role: &'static str,
    pub endpoint: Endpoint,
    pub source: std::io::Error,
}

/// Whether `token` belongs to the operator side.
pub(crate) fn owns(token: Token) -> bool {
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
    fn index(self) -> usize {
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

/// Where a connection's turn stopped for an [`Action`], so [`Ops::resume`] goes on from there.
#[derive(Debug, Clone, Copy)]
struct Paused {
    key: usize,
    /// Reads left of the connection's per-turn cap, after its remaining input is executed.
    reads_left: usize,
    /// Queued connections left to serve, when it was paused while serving the work queue.
    queue_left: Option<usize>,
}

/// The operator side: its listeners, connections, ids, work budget and queue, and presence
/// delivery. Owned by the event loop, called with a [`Context`].
pub(crate) struct Ops {
    admin: Option<Bound>,
    metrics: Option<Bound>,
    conns: Slab<OpsConn>,
    next_id: u64,
    /// When the daemon started, for uptime and the start-time metric.
    started: Instant,
    started_at: SystemTime,
    /// One throttle per [`Warn`] kind.
    warns: [RateLimited; 3],
    /// This turn's work budget.
    budget: Budget,
    /// Open, refused and closed connections by listener.
    counters: OpsCounters,
    /// Connections with work waiting for budget, served round-robin at the start of each
    /// turn (before readiness events), so no connection starves another.
    queue: VecDeque<usize>,
    /// Whether [`WORK`] is on the loop's revisit list.
    work_pending: bool,
    /// A connection's turn stopped for an [`Action`] the loop is applying.
    paused: Option<Paused>,
    /// Reads land here (allocated at the first read); only unfinished requests are copied
    /// into a connection.
    read_buf: Vec<u8>,
    /// Argument ranges of the admin request being executed.
    args: Vec<Range<usize>>,
    /// Scratch for one presence event: its JSON, and its `message` frame.
    json_buf: Vec<u8>,
    frame_buf: Vec<u8>,
    /// Subscribers given events this turn, to be written at its end.
    dirty: Vec<usize>,
    /// Events waiting for the next turn's delivery budget (`deliver.rs`).
    backlog: deliver::Backlog,
    /// The status page's sweeps of the session table (`session_watch.rs`).
    watch: session_watch::SessionWatch,
}

fn conn_key(token: Token) -> Option<usize> {
    token.0.checked_sub(CONN_BASE)
}

impl Ops {
    pub(crate) fn new() -> Ops {
        Ops {
            admin: None,
            metrics: None,
            conns: Slab::new(),
            next_id: 1,
            started: Instant::now(),
            started_at: SystemTime::now(),
            warns: Default::default(),
            budget: Budget::default(),
            counters: OpsCounters::default(),
            queue: VecDeque::new(),
            work_pending: false,
            paused: None,
            read_buf: Vec::new(),
            args: Vec::with_capacity(16),
            json_buf: Vec::new(),
            frame_buf: Vec::new(),
            dirty: Vec::new(),
            backlog: deliver::Backlog::default(),
            watch: session_watch::SessionWatch::default(),
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
        self.warns[kind as usize].hit(now).is_some()
    }

    /// Opens the configured operator listeners at start-up.
    pub(crate) fn open(&mut self, config: &Config, registry: &Registry) -> Result<(), OpenError> {
        for role in Role::ALL {
            if let Some(endpoint) = role.endpoint(config).cloned() {
                self.bind(role, &endpoint, registry)
                    .map_err(|source| OpenError {
                        role: role.name(),
                        endpoint,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    fn bind(
        &mut self,
        role: Role,
        endpoint: &Endpoint,
        registry: &Registry,
    ) -> std::io::Result<()> {
        let mut socket = OpsListener::bind(endpoint)?;
        registry.register(&mut socket, role.token(), Interest::READABLE)?;
        let local = socket.local();
        let kind = match (&socket, role) {
            (OpsListener::Unix { .. }, _) => " (unix socket, mode 0600)",
            (_, Role::Metrics) => " (GET /metrics, status page at /)",
            _ => "",
        };
        info!("{} listener on {local}{kind}", role.name());
        *self.slot(role) = Some(Bound { socket, local });
        Ok(())
    }

    /// Closes an operator listener; a unix socket file is removed with it.
    fn unbind(&mut self, role: Role, registry: &Registry) {
        if let Some(mut bound) = self.slot(role).take() {
            let _ = registry.deregister(&mut bound.socket);
            info!("{} listener on {} closed", role.name(), bound.local);
        }
    }

    /// After a reload (`cx.config` is the new config): moves a listener whose `listen`
    /// changed, and retries one that could not be opened by an earlier reload. A listener that
    /// cannot be opened is logged and stays off; everything else keeps running.
    pub(crate) fn reconcile(&mut self, old: &Config, cx: &mut Context<'_>) {
        for role in Role::ALL {
            // Caps and idle timeouts are read where they are used, so they apply at once.
            let (was, now) = (role.config(old), role.config(cx.config));
            if was.max_connections != now.max_connections {
                info!(
                    "reload: {}.max_connections {} -> {} ({} open)",
                    role.name(),
                    was.max_connections,
                    now.max_connections,
                    self.counters.open[role.index()]
                );
            }
            if was.idle_timeout != now.idle_timeout {
                let show = |t: Option<Duration>| {
                    t.map_or("off".to_string(), crate::config::duration::format_duration)
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
            let new = role.endpoint(cx.config).cloned();
            let open = self.bound(role).is_some();
            if role.endpoint(old) == new.as_ref() && open == new.is_some() {
                continue;
            }
            self.unbind(role, cx.registry());
            if let Some(endpoint) = new {
                if let Err(e) = self.bind(role, &endpoint, cx.registry()) {
                    log::error!(
                        "reload: cannot open the {} listener on {endpoint}: {e}; it stays off",
                        role.name()
                    );
                }
            }
        }
    }

    /// At shutdown, first: no more operator connections are accepted.
    pub(crate) fn close_listeners(&mut self, registry: &Registry) {
        for role in Role::ALL {
            self.unbind(role, registry);
        }
    }

    /// At shutdown, last: closes the operator listeners and connections.
    pub(crate) fn close(&mut self, cx: &mut Context<'_>) {
        self.close_listeners(cx.registry());
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_conn(key, "shutdown", cx);
        }
    }

    /// Readiness (or a revisit) of an operator listener or connection, or the work queue's
    /// turn. `Some` when the loop must act; it then calls [`Ops::resume`].
    pub(crate) fn ready(&mut self, token: Token, cx: &mut Context<'_>) -> Option<Action> {
        if token == ADMIN_LISTENER {
            self.accept(Role::Admin, cx);
        } else if token == METRICS_LISTENER {
            self.accept(Role::Metrics, cx);
        } else if token == WORK {
            self.work_pending = false;
            // A status page's sweep first, within its share of the budget, then the queue.
            if self
                .watch
                .advance(cx.sessions, cx.now, self.budget.left(cx.now))
            {
                self.work_pending = true;
                cx.revisit.push(WORK);
            }
            return self.run_queue(self.queue.len(), cx);
        } else if let Some(key) = conn_key(token) {
            let waits = self.conns.get(key).is_some_and(|c| c.wants_budget());
            if waits && !self.queue.is_empty() {
                // Others wait for the budget before it: write what is ready and keep to the
                // queue, so readiness cannot jump it.
                self.settle(key, cx);
            } else {
                return self.service(key, cx);
            }
        }
        None
    }

    /// After the loop applied an [`Action`]: goes on where the connection's turn stopped (the
    /// rest of its input, its reads, then the rest of the work queue).
    pub(crate) fn resume(&mut self, cx: &mut Context<'_>) -> Option<Action> {
        let paused = self.paused.take()?;
        if let Some(action) = self.service_from(paused.key, paused.reads_left, cx) {
            return Some(self.pause_queue(action, paused.queue_left));
        }
        match paused.queue_left {
            Some(left) => self.run_queue(left, cx),
            None => None,
        }
    }

    fn accept(&mut self, role: Role, cx: &mut Context<'_>) {
        if cx.stopping {
            return;
        }
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let Some(bound) = self.bound(role) else {
                return;
            };
            match bound.socket.accept() {
                Ok((stream, peer)) => self.admit(role, stream, peer, cx),
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return,
                    IoClass::Retry => continue,
                    // The peer gave up between SYN and accept.
                    IoClass::Fatal(errno) if errno == libc::ECONNABORTED => continue,
                    // Out of descriptors, or worse: the connection waits in the backlog, and
                    // the next one to arrive brings us back (edge-triggered, so no spinning).
                    IoClass::Exhausted(_) | IoClass::Fatal(_) => {
                        if self.may_warn(Warn::Accept, cx.now) {
                            warn!("{} listener: accept failed: {e}", role.name());
                        }
                        return;
                    }
                },
            }
        }
        cx.revisit.push(role.token());
    }

    fn admit(&mut self, role: Role, mut stream: OpsStream, peer: String, cx: &mut Context<'_>) {
        let now = cx.now;
        let max = role.config(cx.config).max_connections;
        let i = role.index();
        if self.counters.open[i] >= max as u64 {
            self.counters.refused[i] += 1;
            if self.may_warn(Warn::Refuse, now) {
                warn!(
                    "{0} listener: refusing {peer}: {0}.max_connections ({max}) reached; \
                     {1} refused so far",
                    role.name(),
                    self.counters.refused[i]
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
        let id = self.next_id;
        self.next_id += 1;
        let entry = self.conns.vacant_entry();
        let token = Token(CONN_BASE + entry.key());
        if let Err(e) = cx
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
        self.counters.open[role.index()] += 1;
    }

    fn close_conn(&mut self, key: usize, why: &str, cx: &mut Context<'_>) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = cx.registry().deregister(&mut conn.stream);
        let open = &mut self.counters.open[conn.role().index()];
        *open = open.saturating_sub(1);
        if conn.wants_presence() {
            let subscribers = &mut cx.stats.presence.subscribers;
            *subscribers = subscribers.saturating_sub(1);
        }
        debug!(
            "{} connection id={} peer={} ended: {why}",
            conn.role().name(),
            conn.id,
            conn.peer
        );
    }

    /// The nearest operator timer, for the poll timeout; `now` itself while presence events
    /// wait for the next turn's delivery budget.
    pub(crate) fn deadline(&self, now: Instant, config: &Config) -> Option<Instant> {
        if self.backlog.is_waiting() {
            return Some(now);
        }
        self.conns
            .iter()
            .filter_map(|(_, c)| c.deadline(c.role().config(config).idle_timeout))
            .map(|(at, _)| at)
            .min()
    }

    /// Closes operator connections whose timer ran out: counted by listener and reason, a
    /// slow consumer also logged (at most once a second, with the running count).
    pub(crate) fn expire(&mut self, cx: &mut Context<'_>) {
        let (now, config) = (cx.now, cx.config);
        let due: Vec<(usize, Expiry)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                let (at, why) = c.deadline(c.role().config(config).idle_timeout)?;
                (at <= now).then_some((k, why))
            })
            .collect();
        for (key, why) in due {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            let (role, i) = (conn.role(), conn.role().index());
            match why {
                Expiry::Linger | Expiry::Head => self.close_conn(key, "timed out", cx),
                Expiry::Idle => {
                    self.counters.idle_closed[i] += 1;
                    self.close_conn(key, "idle-timeout", cx);
                }
                Expiry::Stall => {
                    self.counters.slow_closed[i] += 1;
                    let (id, peer, pending) = (conn.id, conn.peer.clone(), conn.pending());
                    if self.may_warn(Warn::Slow, now) {
                        warn!(
                            "{} connection id={id} peer={peer} closed: reason=slow-consumer \
                             pending_bytes={pending} (its output did not drain); {} so far",
                            role.name(),
                            self.counters.slow_closed[i]
                        );
                    }
                    self.close_conn(key, "slow-consumer", cx);
                }
            }
        }
    }
}

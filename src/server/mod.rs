//! The event loop: one thread, one `mio::Poll`, and a `Server` that owns every piece of state.
//!
//! Invariants kept here:
//! - Readiness is a hint. Accept, read and write loops run until `WouldBlock` (or a per-turn
//!   cap, after which the token is revisited on the next turn with a zero poll timeout).
//! - Time is read once per turn and passed down as `now`.
//! - The poll timeout is the nearest deadline (idle reaps, `auth_timeout` reaps, statistics,
//!   accept retry, the systemd watchdog ping); the loop never sleeps and never busy-waits.
//! - A session ends only in [`Server::reap`].
//! - Sessions whose event reports an error or hang-up are serviced at most
//!   `deferred::PER_TURN` per turn, after the live ones.
//!
//! Submodules add `impl Server` blocks: `accept` (listeners, limits, descriptor exhaustion),
//! `conn` (reading, writing, reaping), `control` (signals, reload, statistics, shutdown),
//! `ops` (admin and metrics listeners), `presence` (events and names), `deferred` (the
//! bounded queue of dead or departing peers).

/// The operator side's borrow of the loop for one call ([`ops::Context`]): disjoint fields, so
/// it can be lent while `self.ops` is borrowed mutably.
macro_rules! ops_cx {
    ($server:expr, $now:expr) => {
        &mut crate::ops::Context {
            now: $now,
            listeners: &|| crate::server::listener_addrs(&$server.listeners),
            poll: &mut $server.poll,
            config: &$server.config,
            config_path: &$server.config_path,
            sessions: &$server.sessions,
            stats: &mut $server.stats,
            log_budget: &mut $server.log_budget,
            revisit: &mut $server.revisit,
            stopping: $server.stopping,
        }
    };
}

mod accept;
mod auth;
mod conn;
mod control;
mod deferred;
mod presence;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::activation::Activated;
use crate::busy_poll::BusyPoll;
use crate::config::Config;
use crate::logging::LevelSource;
use crate::notify::{status_line, Notifier};
use crate::ops::{self, Ops};
use crate::session::{SessionTable, SESSION_BASE};
use crate::stats::Stats;
use conn::Wake;

/// Token of the signal pipe.
const SIGNAL: Token = Token(0);
/// Listener tokens are `LISTENER_BASE + slab key`.
const LISTENER_BASE: usize = 1;
/// Bytes read per `read` call, into the loop's own buffer.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Events taken per `poll`. A turn's work is bounded by the per-turn caps on accepts, reads and
/// deferred dead peers, not by this: events that say error or hang-up cost only a queue push.
/// A larger batch matters when thousands of peers die at once: epoll hands out ready items in
/// order, and a live client's event behind 5,000 dead ones waits for as many polls. With 256 a
/// mass reap of 10,000 held a live PING for 6.4-8.8 ms at p99, with 1024 for 4.1-6.2 ms (release,
/// alternating A/B); and 1024 took about 5 % less CPU per request at `-c 1000 -P 1`. (256 was
/// chosen before dead peers were deferred, when a flood of resets was reaped inside the turn.)
const EVENTS_CAPACITY: usize = 1024;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    Poll(io::Error),
    Signals(io::Error),
    /// The admin or metrics listener could not be opened.
    Ops {
        role: &'static str,
        endpoint: crate::config::Endpoint,
        source: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { addr, source } => {
                let hint = match source.kind() {
                    io::ErrorKind::AddrInUse => {
                        " (another process holds it: stop it or change server.listen)"
                    }
                    io::ErrorKind::PermissionDenied => {
                        " (ports below 1024 need CAP_NET_BIND_SERVICE)"
                    }
                    io::ErrorKind::AddrNotAvailable => " (no local interface has that address)",
                    _ => "",
                };
                write!(f, "cannot listen on {addr}: {source}{hint}")
            }
            StartError::Poll(e) => write!(f, "cannot create the poller: {e}"),
            StartError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            StartError::Ops {
                role,
                endpoint,
                source,
            } => {
                let hint = match source.kind() {
                    io::ErrorKind::AddrInUse => format!(" (stop it or change {role}.listen)"),
                    io::ErrorKind::NotFound => {
                        " (create the directory first, e.g. RuntimeDirectory= in the unit)".into()
                    }
                    io::ErrorKind::PermissionDenied => " (vigild's user cannot bind there)".into(),
                    _ => String::new(),
                };
                write!(
                    f,
                    "cannot open the {role} listener on {endpoint}: {source}{hint}"
                )
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A bound client listener.
struct Listener {
    addr: SocketAddr,
    socket: TcpListener,
}

/// The client listeners' bound addresses (the real port when 0 was configured).
fn listener_addrs(listeners: &Slab<Listener>) -> Vec<SocketAddr> {
    listeners
        .iter()
        .map(|(_, l)| l.socket.local_addr().unwrap_or(l.addr))
        .collect()
}

/// An entry of the idle-deadline heap. Entries go stale when a session receives data or is
/// reaped; they are checked against the session when they come due.
type IdleEntry = Reverse<(Instant, Token, u64)>;

/// The event loop and everything it owns.
pub struct Server {
    poll: Poll,
    config_path: PathBuf,
    config: Config,
    level_source: LevelSource,
    listeners: Slab<Listener>,
    signals: Signals,
    sessions: SessionTable,
    stats: Stats,
    /// Reads land here; only unfinished requests are copied into a session.
    read_buf: Vec<u8>,
    /// Replies of the current request batch; only what the kernel refuses is copied.
    out_buf: Vec<u8>,
    /// Argument ranges of the request being executed.
    args: Vec<Range<usize>>,
    idle_heap: BinaryHeap<IdleEntry>,
    /// `auth_timeout` deadlines and the per-address failure table (see `auth.rs`).
    auth_guard: auth::AuthGuard,
    next_stats: Option<Instant>,
    /// Sessions whose input was not drained this turn (per-turn read cap).
    revisit: Vec<Token>,
    /// Listeners to accept from again next turn (per-turn accept cap).
    accept_revisit: bool,
    /// Sessions with an error or hang-up, serviced a bounded number per turn.
    deferred: deferred::Deferred,
    accept: accept::AcceptState,
    /// The admin and metrics listeners and their connections.
    ops: Ops,
    /// Failed `AUTH` warnings, at most one a second.
    auth_warn: crate::rate_limit::RateLimited,
    /// Every line a client can cause is written within it (`log.reap_lines_per_second`,
    /// `log.bytes_per_second`); the rest are counted by kind (see `rate_limit.rs`).
    log_budget: crate::rate_limit::LogBudget,
    /// Recent replacements per name, to tell flapping (`session.flap_threshold`).
    flapping: crate::takeover::Flapping,
    stopping: bool,
    /// Poll without sleeping for a while after a busy turn (`server.busy_poll_us`).
    busy_poll: BusyPoll,
    /// The service manager (`sd_notify`); a no-op without `NOTIFY_SOCKET`.
    notify: Notifier,
    /// Listeners came from socket activation: reloads leave them alone.
    socket_activated: bool,
}

impl Server {
    /// Binds the listeners (or takes the socket-activated ones) and installs signal
    /// handlers. Nothing is served until [`run`].
    ///
    /// [`run`]: Server::run
    pub fn new(
        config: Config,
        config_path: PathBuf,
        level_source: LevelSource,
        activated: Option<Vec<Activated>>,
    ) -> Result<Server, StartError> {
        // Before the first large buffer: see there why.
        crate::sys::fix_mmap_threshold();
        let poll = Poll::new().map_err(StartError::Poll)?;
        let mut signals = Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGUSR1,
        ])
        .map_err(StartError::Signals)?;
        poll.registry()
            .register(&mut signals, SIGNAL, Interest::READABLE)
            .map_err(StartError::Signals)?;
        let mut server = Server {
            poll,
            config_path,
            level_source,
            listeners: Slab::new(),
            signals,
            sessions: SessionTable::with_capacity(config.server.max_connections.min(65_536)),
            stats: Stats::default(),
            read_buf: vec![0; READ_BUF_BYTES],
            out_buf: Vec::with_capacity(READ_BUF_BYTES),
            args: Vec::with_capacity(16),
            idle_heap: BinaryHeap::new(),
            auth_guard: Default::default(),
            next_stats: None,
            revisit: Vec::new(),
            accept_revisit: false,
            deferred: deferred::Deferred::new(),
            accept: accept::AcceptState::new(),
            ops: Ops::new(),
            auth_warn: Default::default(),
            log_budget: crate::rate_limit::LogBudget::new(
                config.log.reap_lines_per_second,
                config.log.bytes_per_second,
            ),
            flapping: Default::default(),
            stopping: false,
            busy_poll: BusyPoll::default(),
            notify: Notifier::from_env(),
            socket_activated: activated.is_some(),
            config,
        };
        match activated {
            Some(passed) => server.add_activated(passed)?,
            None => {
                for addr in server.config.server.listen.clone() {
                    server
                        .add_listener(addr)
                        .map_err(|source| StartError::Bind { addr, source })?;
                }
            }
        }
        server
            .ops
            .open(&server.config, server.poll.registry())
            .map_err(|e| StartError::Ops {
                role: e.role,
                endpoint: e.endpoint,
                source: e.source,
            })?;
        Ok(server)
    }

    /// Runs until SIGTERM or SIGINT, then closes every session and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut now = Instant::now();
        self.next_stats = self.config.stats.interval.map(|i| now + i);
        self.notify.ready(now, &status_line(&self.stats));
        loop {
            let mut timeout = self.poll_timeout(now);
            if self.busy_poll.wants_clock() {
                let window = self.config.server.busy_poll;
                let counts = &mut self.stats.busy_poll;
                timeout = self
                    .busy_poll
                    .timeout(Instant::now(), window, timeout, counts);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                // A signal interrupted the wait; the signal pipe reports it on the next turn.
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            now = Instant::now();
            self.busy_poll.after_poll(
                !events.is_empty(),
                self.config.server.busy_poll,
                &mut self.stats.busy_poll,
            );
            for event in events.iter() {
                // A dead or departing peer waits its turn, so a burst of thousands of them
                // cannot hold up live sessions (see deferred.rs).
                if (event.is_error() || event.is_read_closed()) && self.defer(event.token()) {
                    continue;
                }
                self.dispatch(event.token(), now, Wake::Edge);
            }
            self.revisit_pending(now);
            self.run_timers(now);
            // Last: every source of presence events has run this turn.
            self.ops.end_turn(ops_cx!(self, now));
            if self.stopping {
                self.shutdown(now);
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, token: Token, now: Instant, wake: Wake) {
        if token == SIGNAL {
            self.handle_signals(now);
        } else if token.0 >= SESSION_BASE {
            self.service(token, now, wake);
        } else if ops::owns(token) {
            self.dispatch_ops(token, now);
        } else if let Some(key) = token.0.checked_sub(LISTENER_BASE) {
            self.accept_from(key, now);
        }
    }

    /// Time until the nearest deadline; zero when work was left over from this turn.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.revisit.is_empty() || self.accept_revisit || !self.deferred.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadlines = [
            self.idle_heap.peek().map(|Reverse((at, _, _))| *at),
            self.auth_guard.deadline(),
            self.next_stats,
            self.accept.retry_at(),
            self.ops.deadline(now, &self.config),
            self.notify.watchdog_deadline(),
            self.log_budget.report_due(),
        ];
        deadlines
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Readiness of an operator token: the operator side does its part, and the loop applies
    /// what it asks for (reaping killed sessions) before it goes on.
    fn dispatch_ops(&mut self, token: Token, now: Instant) {
        let mut action = self.ops.ready(token, ops_cx!(self, now));
        while let Some(ops::Action::Kill(tokens)) = action {
            for token in tokens {
                self.reap(
                    token,
                    conn::Cause::Reason(crate::reap::ReapReason::Killed),
                    now,
                );
            }
            action = self.ops.resume(ops_cx!(self, now));
        }
    }

    fn revisit_pending(&mut self, now: Instant) {
        for token in std::mem::take(&mut self.revisit) {
            self.dispatch(token, now, Wake::Drain);
        }
        self.service_deferred(now);
        if std::mem::take(&mut self.accept_revisit) {
            self.accept_all(now);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        self.stats.command_rate.tick(now, self.stats.commands);
        self.reap_idle(now);
        self.reap_unauthenticated(now);
        self.ops.expire(ops_cx!(self, now));
        self.log_budget.report_left_out(now);
        if self.accept.retry_at().is_some_and(|at| at <= now) {
            self.accept.clear_retry();
            self.accept_all(now);
        }
        if let Some(at) = self.next_stats {
            if at <= now {
                self.log_stats();
                self.next_stats = self.config.stats.interval.map(|i| now + i);
            }
        }
        // Only here, on the loop's own timer: a loop that stops turning stops pinging.
        let stats = &self.stats;
        self.notify.watchdog_tick(now, || status_line(stats));
    }

    /// Reaps sessions whose idle deadline passed; re-queues those that received data since.
    fn reap_idle(&mut self, now: Instant) {
        let Some(limit) = self.config.session.idle_timeout else {
            self.idle_heap.clear();
            return;
        };
        while let Some(Reverse((at, token, id))) = self.idle_heap.peek().copied() {
            if at > now {
                break;
            }
            self.idle_heap.pop();
            let Some(session) = self.sessions.get(token) else {
                continue;
            };
            if session.id != id {
                continue;
            }
            let due = session.idle_deadline(limit);
            if due <= now {
                self.reap(
                    token,
                    conn::Cause::Reason(crate::reap::ReapReason::IdleTimeout),
                    now,
                );
            } else {
                self.idle_heap.push(Reverse((due, token, id)));
            }
        }
    }

    /// Rebuilds the idle heap from the live sessions (after a reload changed the timeout).
    fn rebuild_idle_heap(&mut self) {
        self.idle_heap.clear();
        if let Some(limit) = self.config.session.idle_timeout {
            for (token, s) in self.sessions.iter() {
                self.idle_heap
                    .push(Reverse((s.idle_deadline(limit), token, s.id)));
            }
        }
    }
}

impl Server {
    /// The effective keepalive settings, for the start-up line.
    pub fn keepalive_summary(&self) -> String {
        let ka = &self.config.keepalive;
        if !ka.enabled {
            return "keepalive off".into();
        }
        format!(
            "keepalive idle={}s interval={}s probes={} user_timeout={} (an idle dead peer is found after {}s)",
            ka.idle.as_secs(),
            ka.interval.as_secs(),
            ka.probes,
            ka.effective_user_timeout()
                .map_or_else(|| "off".to_string(), |d| format!("{}ms", d.as_millis())),
            ka.detection_bound().as_secs(),
        )
    }
}

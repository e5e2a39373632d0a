//! The event loop: one thread, one `mio::Poll`, and a `Server` that owns every piece of state
//! as a short list of parts, each a type in its own file.
//!
//! Invariants kept here:
//! - Readiness is a hint. Accepts and writes run until `WouldBlock`, reads too, with one
//!   exception: a session woken by a plain readable edge whose read came back shorter than the
//!   buffer is not read again (that read emptied the socket, and anything arriving after it
//!   raises a new edge; see `session_io::Wake`). Every loop is capped per turn; a capped token
//!   is revisited on the next turn with a zero poll timeout (`pending.rs`).
//! - Time is read once per turn and passed down as `now`.
//! - The poll timeout is the nearest deadline (idle reaps, `auth_timeout` reaps, PROXY header
//!   deadlines, statistics,
//!   accept retry, the operator side's timers, the systemd watchdog ping, the log budget's
//!   report), or zero while work is pending; the loop never sleeps, and polls without
//!   waiting only for `server.busy_poll_us` after a busy turn (`busy_poll.rs`, off by default).
//! - A session ends only in [`Server::reap`] (`reaper.rs`).
//! - Sessions whose event reports an error or hang-up are serviced at most
//!   `reaper::PER_TURN` per turn, after the live ones.
//!
//! The parts: `tokens` (the token layout), `accept` (listeners, limits, descriptor
//! exhaustion: `AcceptState`), `session_io` (one session's reads, requests and writes, over
//! the loop's `Scratch` buffers in `scratch`), `reaper` (ending sessions, idle deadlines,
//! deferred dead peers), `pending` (work left for the next turn), `auth_guard` (`AUTH`
//! timeouts, the per-address failure table, their warnings), `naming` (presence events and
//! `CLIENT SETNAME` with unique names and takeover), `proxy_phase` (the PROXY protocol header
//! before anything else on a session, its deadlines), `control` (signals, reload, statistics,
//! shutdown: `Control`), `busy_poll`, and `ops` (the admin and metrics listeners). The
//! behaviour that needs several parts at once (a reap touches the session table, statistics,
//! the log budget, presence and the accept reserve) is still written as `impl Server` blocks
//! in those files, each next to the part it is about.

/// The operator side's borrow of the loop for one call ([`ops::Context`]): disjoint fields, so
/// it can be lent while `self.ops` is borrowed mutably.
macro_rules! ops_cx {
    ($server:expr, $now:expr) => {
        &mut crate::ops::Context {
            now: $now,
            listeners: &|| crate::server::listener_addrs(&$server.accept.listeners),
            poll: &mut $server.poll,
            config: &$server.config,
            config_path: &$server.control.config_path,
            sessions: &$server.sessions,
            stats: &mut $server.stats,
            log_budget: &mut $server.log_budget,
            revisit: &mut $server.pending.revisit,
            stopping: $server.stopping,
            fleet: &$server.fleet,
        }
    };
}

mod accept;
mod auth_guard;
pub(crate) mod busy_poll;
mod control;
mod deadlines;
mod fleet_link;
mod naming;
mod pending;
mod proxy_phase;
mod reaper;
mod scratch;
mod session_io;
mod tls_guard;
pub(crate) mod tokens;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::ops::{self, Ops};
use crate::os::activation::Activated;
use crate::os::sd_notify::Notifier;
use crate::session::SessionTable;
use crate::telemetry::logging::LevelSource;
use crate::telemetry::stats::status_line;
use crate::telemetry::stats::Stats;
use busy_poll::BusyPoll;
use session_io::Wake;
use tokens::{LISTENER_BASE, SESSION_BASE, SIGNAL};

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
    /// The fleet's side thread or its waker could not be started.
    Fleet(io::Error),
    /// The admin or metrics listener could not be opened.
    Ops {
        role: &'static str,
        endpoint: crate::config::Endpoint,
        source: io::Error,
    },
    /// A TLS listener's certificate, key or CA file cannot be used.
    Tls(crate::config::credentials::CredentialError),
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
            StartError::Tls(e) => write!(f, "cannot serve TLS: {e}"),
            StartError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            StartError::Fleet(e) => write!(f, "cannot start the fleet's Redis thread: {e}"),
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

/// The client listeners' bound addresses (the real port when 0 was configured).
fn listener_addrs(listeners: &slab::Slab<accept::Listener>) -> Vec<SocketAddr> {
    listeners
        .iter()
        .map(|(_, l)| l.socket.local_addr().unwrap_or(l.addr))
        .collect()
}

/// The event loop and everything it owns.
pub struct Server {
    poll: Poll,
    config: Config,
    /// Signals, the config file, the service manager and the statistics timer.
    control: control::Control,
    sessions: SessionTable,
    stats: Stats,
    /// The read, reply and argument buffers every session uses in turn.
    scratch: scratch::Scratch,
    /// `session.idle_timeout` deadlines (see `reaper.rs`).
    idle: reaper::IdleTimers,
    /// `auth_timeout` deadlines and the per-address failure table (see `auth_guard.rs`); also the `auth failed` warnings.
    auth_guard: auth_guard::AuthGuard,
    /// `server.proxy_header_timeout` deadlines and the PROXY refusal warnings (`proxy_phase.rs`).
    proxy: proxy_phase::ProxyPhase,
    /// Work left for the next turn: revisits, accepts, deferred dead peers.
    pending: pending::Pending,
    /// The client listeners, and what accepting needs when descriptors run out.
    accept: accept::AcceptState,
    /// The admin and metrics listeners and their connections.
    ops: Ops,
    /// Every line a client can cause is written within it (`log.reap_lines_per_second`,
    /// `log.bytes_per_second`); the rest are counted by kind (see `telemetry/log_throttle.rs`).
    log_budget: crate::telemetry::log_throttle::LogBudget,
    /// Recent replacements per name, to tell flapping (`session.flap_threshold`).
    flapping: crate::session::takeover::Flapping,
    /// SIGTERM or SIGINT arrived: the loop ends after this turn.
    stopping: bool,
    /// Poll without sleeping for a while after a busy turn (`server.busy_poll_us`).
    busy_poll: BusyPoll,
    /// `[fleet]`: presence shared through Redis by a side thread (`fleet_link.rs`).
    fleet: crate::fleet::Fleet,
    /// One presence event's JSON, encoded once for subscribers and the fleet.
    event_json: Vec<u8>,
    /// TLS credentials and handshake deadlines (`tls_guard.rs`).
    tls: tls_guard::TlsGuard,
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
        crate::os::sys::fix_mmap_threshold();
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
        // New at every start: in every presence event and `CLIENT LIST` line (issue 17).
        let epoch = crate::telemetry::presence_events::unix_ms(std::time::SystemTime::now());
        let mut server = Server {
            fleet: crate::fleet::Fleet::off(epoch),
            event_json: Vec::new(),
            poll,
            control: control::Control {
                signals,
                config_path,
                level_source,
                socket_activated: activated.is_some(),
                notify: Notifier::from_env(),
                next_stats: None,
            },
            sessions: SessionTable::with_capacity(config.server.max_connections.min(65_536)),
            stats: Stats::default(),
            scratch: scratch::Scratch::new(),
            idle: Default::default(),
            auth_guard: Default::default(),
            proxy: Default::default(),
            pending: Default::default(),
            accept: accept::AcceptState::new(),
            ops: Ops::new(),
            log_budget: crate::telemetry::log_throttle::LogBudget::new(
                config.log.reap_lines_per_second,
                config.log.bytes_per_second,
            ),
            flapping: Default::default(),
            stopping: false,
            busy_poll: BusyPoll::default(),
            tls: Default::default(),
            config,
        };
        server.tls = tls_guard::TlsGuard::start(
            &server.config.tls,
            &mut server.stats,
            std::time::SystemTime::now(),
        )
        .map_err(StartError::Tls)?;
        match activated {
            Some(passed) => server
                .accept
                .add_activated(server.poll.registry(), passed)?,
            None => {
                for &addr in &server.config.server.listen {
                    let registry = server.poll.registry();
                    server
                        .accept
                        .add_listener(registry, &server.config.server, addr, false)
                        .map_err(|source| StartError::Bind { addr, source })?;
                }
            }
        }
        // TLS listeners are always vigild's own: socket activation passes plain ones.
        for &addr in &server.config.tls.listen {
            let registry = server.poll.registry();
            server
                .accept
                .add_listener(registry, &server.config.server, addr, true)
                .map_err(|source| StartError::Bind { addr, source })?;
        }
        server
            .ops
            .open(&server.config, server.poll.registry())
            .map_err(|e| StartError::Ops {
                role: e.role,
                endpoint: e.endpoint,
                source: e.source,
            })?;
        server.stats.presence.epoch = epoch;
        let port = listener_addrs(&server.accept.listeners)
            .first()
            .map_or(0, |a| a.port());
        server.fleet =
            crate::fleet::Fleet::start(&server.config, port, epoch, server.poll.registry())
                .map_err(StartError::Fleet)?;
        Ok(server)
    }

    /// Runs until SIGTERM or SIGINT, then closes every session and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut now = Instant::now();
        self.control.next_stats = self.config.stats.interval.map(|i| now + i);
        self.control.notify.ready(now, &status_line(&self.stats));
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
            self.tls.new_turn();
            self.busy_poll.after_poll(
                !events.is_empty(),
                self.config.server.busy_poll,
                &mut self.stats.busy_poll,
            );
            for event in events.iter() {
                // A dead or departing peer waits its turn, so a burst of thousands of them
                // cannot hold up live sessions (see reaper.rs).
                if (event.is_error() || event.is_read_closed()) && self.defer(event.token()) {
                    continue;
                }
                self.dispatch(event.token(), now, Wake::Edge);
            }
            self.revisit_pending(now);
            self.run_timers(now);
            // Last: every source of presence events has run this turn.
            self.ops.end_turn(ops_cx!(self, now));
            self.fleet_end_turn(now);
            if self.stopping {
                self.shutdown(now);
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, token: Token, now: Instant, wake: Wake) {
        if token == SIGNAL {
            self.handle_signals(now);
        } else if token == crate::fleet::FLEET {
            self.fleet_ready(now);
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
        if self.pending.any() {
            return Some(Duration::ZERO);
        }
        let deadlines = [
            self.idle.deadline(),
            self.auth_guard.next_deadline(),
            self.proxy.deadline(),
            self.tls.deadline(),
            self.control.next_stats,
            self.accept.retry_at(),
            self.ops.deadline(now, &self.config),
            self.control.notify.watchdog_deadline(),
            self.log_budget.report_due(),
            self.fleet.deadline(now),
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
                    crate::session::reap::Cause::Reason(crate::session::reap::ReapReason::Killed),
                    now,
                );
            }
            action = self.ops.resume(ops_cx!(self, now));
        }
    }

    fn revisit_pending(&mut self, now: Instant) {
        for token in self.pending.take_revisits() {
            self.dispatch(token, now, Wake::Drain);
        }
        self.service_deferred(now);
        if self.pending.take_accept() {
            self.accept_all(now);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        self.stats.command_rate.tick(now, self.stats.commands);
        self.reap_idle(now);
        self.reap_unauthenticated(now);
        self.reap_late_headers(now);
        self.reap_expired_tokens(now);
        self.expire_handshakes(now);
        self.ops.expire(ops_cx!(self, now));
        self.fence_if_lapsed(now);
        self.log_budget.report_left_out(now);
        if self.accept.retry_at().is_some_and(|at| at <= now) {
            self.accept.clear_retry();
            self.accept_all(now);
        }
        if let Some(at) = self.control.next_stats {
            if at <= now {
                self.log_stats();
                self.control.next_stats = self.config.stats.interval.map(|i| now + i);
            }
        }
        // Only here, on the loop's own timer: a loop that stops turning stops pinging.
        let stats = &self.stats;
        self.control
            .notify
            .watchdog_tick(now, || status_line(stats));
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

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
//!   takes them. While more than [`OUTPUT_PAUSE_BYTES`] wait, no further input is read or
//!   executed: a client pipelining `CLIENT LIST` cannot grow our memory faster than it reads.
//! - Interest is derived from state in one function ([`OpsConn::wanted_interest`]).
//! - Metrics connections are closed when a request head stalls ([`HTTP_HEAD_TIMEOUT`]) or the
//!   connection idles ([`HTTP_IDLE_TIMEOUT`]); admin connections (interactive `redis-cli`, and
//!   subscribers later) have no timeout.
//! - An HTTP connection ends with FIN after its last response, then a bounded drain of what
//!   the client still sends ("lingering close"), so the client reads our response (a 400 or
//!   431 included) instead of a reset.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::{Interest, Token};
use slab::Slab;

use super::conn::Cause;
use super::{Server, StartError};
use crate::admin::{self, AdminClient, AdminStep, View};
use crate::command::Args;
use crate::config::{Config, Endpoint};
use crate::http::{self, Method, Status};
use crate::metrics;
use crate::ops_listener::{OpsListener, OpsStream};
use crate::reap::{classify, IoClass, ReapReason};
use crate::resp::{self, Parsed};
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
const MAX_READS_PER_TURN: usize = 16;
/// Above this much unsent output, a connection's input waits.
pub(super) const OUTPUT_PAUSE_BYTES: usize = 1 << 20;
/// A request head must arrive within this time of the connection's last bytes.
const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive HTTP connection is closed after this; longer than common scrape
/// intervals, so Prometheus keeps its connection.
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Lingering close: how long, and how much, to drain after the FIN.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1 << 20;
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

/// What a connection speaks.
#[derive(Debug)]
enum Protocol {
    Admin(AdminClient),
    Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// No more input is taken; close once the output is written.
    Closing,
    /// FIN sent; reading and discarding until the client closes or `until`.
    Lingering {
        until: Instant,
        discarded: usize,
    },
}

struct OpsConn {
    id: u64,
    stream: OpsStream,
    peer: String,
    protocol: Protocol,
    /// Received bytes not yet executed.
    input: Vec<u8>,
    /// Bytes for the peer, from `output_pos` on.
    output: Vec<u8>,
    output_pos: usize,
    phase: Phase,
    interest: Interest,
    last_rx: Instant,
}

impl OpsConn {
    fn role(&self) -> Role {
        match self.protocol {
            Protocol::Admin(_) => Role::Admin,
            Protocol::Metrics => Role::Metrics,
        }
    }

    fn pending(&self) -> usize {
        self.output.len() - self.output_pos
    }

    /// Whether input may be executed now.
    fn accepts_input(&self) -> bool {
        self.phase == Phase::Open && self.pending() <= OUTPUT_PAUSE_BYTES
    }

    /// The interest this connection needs; `None` when it is done and must be closed. The one
    /// place interest is derived from state.
    fn wanted_interest(&self) -> Option<Interest> {
        let writable = self.pending() > 0;
        let readable = match self.phase {
            Phase::Open => self.pending() <= OUTPUT_PAUSE_BYTES,
            Phase::Closing => false,
            Phase::Lingering { .. } => true,
        };
        match (readable, writable) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// When a timer must close this connection.
    fn deadline(&self) -> Option<Instant> {
        match (self.phase, &self.protocol) {
            (Phase::Lingering { until, .. }, _) => Some(until),
            (_, Protocol::Admin(_)) => None,
            (_, Protocol::Metrics) if !self.input.is_empty() => {
                Some(self.last_rx + HTTP_HEAD_TIMEOUT)
            }
            (_, Protocol::Metrics) => Some(self.last_rx + HTTP_IDLE_TIMEOUT),
        }
    }
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

    /// At shutdown: closes the operator listeners and connections.
    pub(super) fn close_ops(&mut self) {
        for role in Role::ALL {
            self.unbind_ops(role);
        }
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
        entry.insert(OpsConn {
            id,
            stream,
            peer,
            protocol,
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            phase: Phase::Open,
            interest: Interest::READABLE,
            last_rx: now,
        });
    }

    /// Flush, read, execute, re-arm: the whole turn of one operator connection.
    fn ops_service(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.ops.conns.get_mut(key) else {
            // A stale event for a connection closed earlier this turn.
            return;
        };
        if let Err(e) = flush(conn) {
            return self.ops_close(key, &format!("write failed: {e}"));
        }
        let phase = conn.phase;
        match phase {
            Phase::Lingering { .. } => return self.ops_linger(key, now),
            Phase::Closing => {}
            Phase::Open => {
                // Input held back while output was pending may run now.
                self.ops_execute(key, now);
                if let Err(why) = self.ops_read(key, now) {
                    return self.ops_close(key, &why);
                }
            }
        }
        self.ops_settle(key, now);
    }

    /// Reads until `WouldBlock`, executing as requests complete. `Err` closes the connection.
    fn ops_read(&mut self, key: usize, now: Instant) -> Result<(), String> {
        for _ in 0..MAX_READS_PER_TURN {
            let Server { ops, read_buf, .. } = self;
            let Some(conn) = ops.conns.get_mut(key) else {
                return Ok(());
            };
            if !conn.accepts_input() {
                return Ok(());
            }
            match conn.stream.read(read_buf) {
                Ok(0) => {
                    // The client is done sending; answer what it sent, then close.
                    conn.phase = Phase::Closing;
                    return Ok(());
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&read_buf[..n]);
                    conn.last_rx = now;
                }
                Err(e) => match classify(&e) {
                    IoClass::Retry => continue,
                    IoClass::WouldBlock => return Ok(()),
                    IoClass::Exhausted(_) | IoClass::Fatal(_) => {
                        return Err(format!("read failed: {e}"))
                    }
                },
            }
            self.ops_execute(key, now);
        }
        self.revisit.push(Token(CONN_BASE + key));
        Ok(())
    }

    /// Executes the complete requests in a connection's input.
    fn ops_execute(&mut self, key: usize, now: Instant) {
        match self.ops.conns.get(key).map(OpsConn::role) {
            Some(Role::Admin) => self.admin_execute(key, now),
            Some(Role::Metrics) => self.metrics_execute(key),
            None => {}
        }
    }

    fn admin_execute(&mut self, key: usize, now: Instant) {
        let listeners: Vec<SocketAddr> = self
            .listeners
            .iter()
            .map(|(_, l)| l.socket.local_addr().unwrap_or(l.addr))
            .collect();
        let admin_clients = self
            .ops
            .conns
            .iter()
            .filter(|(_, c)| c.role() == Role::Admin)
            .count();
        let max_request = self.config.session.max_request_bytes;
        let mut pos = 0;
        loop {
            let Server {
                ops,
                sessions,
                stats,
                config,
                config_path,
                args,
                ..
            } = self;
            let Ops {
                conns,
                admin,
                metrics,
                started,
                ..
            } = ops;
            let Some(conn) = conns.get_mut(key) else {
                return;
            };
            if !conn.accepts_input() {
                break;
            }
            let OpsConn {
                input,
                output,
                protocol,
                phase,
                id,
                peer,
                ..
            } = conn;
            let Protocol::Admin(client) = protocol else {
                return;
            };
            let rest = &input[pos..];
            let step = match resp::parse(rest, max_request, args) {
                Ok(Parsed::Incomplete) => break,
                Ok(Parsed::Request { consumed }) => {
                    pos += consumed;
                    let view = View {
                        now,
                        sessions,
                        stats,
                        config,
                        config_path,
                        started: *started,
                        listeners: &listeners,
                        admin_listener: admin.as_ref().map(|b| b.local.as_str()),
                        metrics_listener: metrics.as_ref().map(|b| b.local.as_str()),
                        admin_clients,
                    };
                    admin::execute(Args::new(rest, args), client, &view, output)
                }
                Err(e) => {
                    resp::write_error(output, &format!("ERR {e}"));
                    debug!("admin id={id} peer={peer}: {e}");
                    pos = input.len();
                    *phase = Phase::Closing;
                    break;
                }
            };
            match step {
                AdminStep::Continue => {}
                AdminStep::Close => {
                    *phase = Phase::Closing;
                    break;
                }
                AdminStep::Kill(tokens) => {
                    info!(
                        "admin id={id} peer={peer}: CLIENT KILL reaps {} session(s)",
                        tokens.len()
                    );
                    for token in tokens {
                        self.reap(token, Cause::Reason(ReapReason::Killed), now);
                    }
                }
            }
        }
        if let Some(conn) = self.ops.conns.get_mut(key) {
            conn.input.drain(..pos.min(conn.input.len()));
        }
    }

    fn metrics_execute(&mut self, key: usize) {
        let Server { ops, stats, .. } = self;
        let Ops {
            conns, started_at, ..
        } = ops;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        let mut pos = 0;
        while conn.accepts_input() {
            let rest = &conn.input[pos..];
            match http::parse(rest) {
                Ok(None) => break,
                Ok(Some(req)) => {
                    pos += req.consumed;
                    let path = rest.get(req.path.clone()).unwrap_or_default();
                    let status = respond(&req, path, stats, *started_at, &mut conn.output);
                    debug!(
                        "metrics id={} peer={}: {} {} -> {}",
                        conn.id,
                        conn.peer,
                        match req.method {
                            Method::Get => "GET",
                            Method::Head => "HEAD",
                            Method::Other => "(other)",
                        },
                        String::from_utf8_lossy(path),
                        status.0
                    );
                    if !req.keep_alive {
                        conn.phase = Phase::Closing;
                    }
                }
                Err(e) => {
                    let status = e.status();
                    debug!(
                        "metrics id={} peer={}: bad request -> {}",
                        conn.id, conn.peer, status.0
                    );
                    let body = format!("{} {}\n", status.0, status.1);
                    http::write_response(
                        &mut conn.output,
                        status,
                        &[("Content-Type", "text/plain; charset=utf-8")],
                        body.as_bytes(),
                        false,
                        false,
                    );
                    pos = conn.input.len();
                    conn.phase = Phase::Closing;
                }
            }
        }
        conn.input.drain(..pos.min(conn.input.len()));
    }

    /// After the FIN: discards input until the client closes, the cap, or the timer.
    fn ops_linger(&mut self, key: usize, now: Instant) {
        let Server { ops, read_buf, .. } = self;
        let Some(conn) = ops.conns.get_mut(key) else {
            return;
        };
        for _ in 0..MAX_READS_PER_TURN {
            let Phase::Lingering { until, discarded } = conn.phase else {
                return;
            };
            match conn.stream.read(read_buf) {
                Ok(0) => return self.ops_close(key, "closed by peer"),
                Ok(n) if discarded + n > LINGER_MAX_BYTES || now >= until => {
                    return self.ops_close(key, "lingering close: limit reached")
                }
                Ok(n) => {
                    conn.phase = Phase::Lingering {
                        until,
                        discarded: discarded + n,
                    }
                }
                Err(e) => match classify(&e) {
                    IoClass::Retry => continue,
                    IoClass::WouldBlock => return,
                    IoClass::Exhausted(_) | IoClass::Fatal(_) => {
                        return self.ops_close(key, "closed by peer")
                    }
                },
            }
        }
        self.revisit.push(Token(CONN_BASE + key));
    }

    /// After I/O: write what is queued, close a finished connection, or re-arm interest.
    fn ops_settle(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.ops.conns.get_mut(key) else {
            return;
        };
        if let Err(e) = flush(conn) {
            return self.ops_close(key, &format!("write failed: {e}"));
        }
        if conn.phase == Phase::Closing && conn.pending() == 0 {
            if conn.role() == Role::Admin {
                return self.ops_close(key, "closed");
            }
            // HTTP: FIN now, then drain, so the response is read rather than reset away.
            if conn.stream.shutdown_write().is_err() {
                return self.ops_close(key, "closed");
            }
            conn.phase = Phase::Lingering {
                until: now + LINGER_TIMEOUT,
                discarded: 0,
            };
            // Bytes that arrived before the FIN are read on the next readiness or revisit.
            self.revisit.push(Token(CONN_BASE + key));
        }
        let Some(conn) = self.ops.conns.get_mut(key) else {
            return;
        };
        let Some(wanted) = conn.wanted_interest() else {
            return self.ops_close(key, "done");
        };
        if wanted != conn.interest {
            conn.interest = wanted;
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(CONN_BASE + key), wanted)
            {
                self.ops_close(key, &format!("cannot re-register: {e}"));
            }
        }
    }

    fn ops_close(&mut self, key: usize, why: &str) {
        let Some(mut conn) = self.ops.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        debug!(
            "{} connection id={} peer={} ended: {why}",
            conn.role().name(),
            conn.id,
            conn.peer
        );
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

/// Writes queued output until done or `WouldBlock`; frees the buffer once it is empty.
fn flush(conn: &mut OpsConn) -> std::io::Result<()> {
    while conn.output_pos < conn.output.len() {
        match conn.stream.write(&conn.output[conn.output_pos..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.output_pos += n,
            Err(e) => match classify(&e) {
                IoClass::Retry => continue,
                IoClass::WouldBlock => break,
                IoClass::Exhausted(_) | IoClass::Fatal(_) => return Err(e),
            },
        }
    }
    if conn.output_pos == conn.output.len() {
        conn.output = Vec::new();
        conn.output_pos = 0;
    } else if conn.output_pos > conn.output.len() / 2 {
        conn.output.drain(..conn.output_pos);
        conn.output_pos = 0;
    }
    Ok(())
}

/// Routes one HTTP request: `GET`/`HEAD /metrics`, 404 for other paths, 405 for other methods.
fn respond(
    req: &http::Request,
    path: &[u8],
    stats: &crate::stats::Stats,
    started_at: SystemTime,
    out: &mut Vec<u8>,
) -> Status {
    let head_only = req.method == Method::Head;
    let text = [("Content-Type", "text/plain; charset=utf-8")];
    let (status, headers, body): (Status, &[(&str, &str)], Vec<u8>) = match req.method {
        Method::Other => (
            Status::METHOD_NOT_ALLOWED,
            &[
                ("Allow", "GET, HEAD"),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
            b"405 Method Not Allowed: use GET\n".to_vec(),
        ),
        Method::Get | Method::Head if path == b"/metrics" => {
            let mut body = String::with_capacity(32 * 1024);
            metrics::render(stats, started_at, &mut body);
            (
                Status::OK,
                &[("Content-Type", metrics::CONTENT_TYPE)],
                body.into_bytes(),
            )
        }
        Method::Get | Method::Head => (
            Status::NOT_FOUND,
            &text,
            b"404 Not Found: the metrics are at /metrics\n".to_vec(),
        ),
    };
    http::write_response(out, status, headers, &body, head_only, req.keep_alive);
    status
}

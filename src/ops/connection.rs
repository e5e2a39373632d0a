//! One operator connection's I/O: flushing, reading, building long listings as the socket
//! drains, lingering close, timers, and re-arming interest; `connection/requests.rs` runs the
//! requests it reads. See the parent module (`src/ops/mod.rs`) for the invariants.

mod requests;

use std::io::Read as _;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::admin::{AdminClient, Listing};
use super::listener::OpsStream;
use super::{Action, Context, Ops, Paused, Role, CONN_BASE};
use crate::session::reap::{classify, IoClass};

const MAX_READS_PER_TURN: usize = 16;
/// Bytes read per `read` call, into the operator side's own buffer (as much as the loop's).
pub(super) const READ_BUF_BYTES: usize = 64 * 1024;
/// The output window: while this much output waits unsent, a connection's next request is
/// not executed (nor its input read) and a listing in progress writes nothing more. One
/// request's reply may go past it, so a connection holds at most this plus one reply (a
/// listing chunk ends at the window, plus one line).
pub(super) const OUTPUT_WINDOW_BYTES: usize = 64 * 1024;
use crate::session::Output;
/// Pending output that makes no progress this long (or the listener's `idle_timeout`, if
/// shorter) closes the connection as a slow consumer. Presence subscribers are exempt: their
/// bound is `session.max_output_bytes` (`deliver.rs`).
pub(super) const OUTPUT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head must arrive within this time of the connection's last bytes.
const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Lingering close: how long, and how much, to drain after the FIN.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1 << 20;
/// What a connection speaks.
#[derive(Debug)]
pub(super) enum Protocol {
    Admin(AdminClient),
    Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Open,
    /// No more input is taken; close once the output is written.
    Closing,
    /// FIN sent; reading and discarding until the client closes or `until`.
    Lingering {
        until: Instant,
        discarded: usize,
    },
}

/// Why a connection's timer closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// The lingering close ran its course.
    Linger,
    /// An HTTP request head did not complete in time.
    Head,
    /// Nothing received or written for the listener's `idle_timeout`.
    Idle,
    /// Pending output made no progress (reason `slow-consumer`).
    Stall,
}

pub(super) struct OpsConn {
    pub(super) id: u64,
    pub(super) stream: OpsStream,
    pub(super) peer: String,
    protocol: Protocol,
    /// Received bytes not yet executed.
    input: Vec<u8>,
    /// Bytes for the peer not yet written.
    output: Output,
    phase: Phase,
    /// Input waits unexecuted (output over [`OUTPUT_WINDOW_BYTES`], a listing in progress, or
    /// the turn's work budget spent): once it may run, the connection is revisited, since no
    /// readiness event will come for bytes that were already read.
    held: bool,
    /// A `CLIENT LIST` being built; the connection's next request waits for it.
    listing: Option<Box<Listing>>,
    /// Whether it is on the operator work queue.
    pub(super) queued: bool,
    interest: Interest,
    last_rx: Instant,
    /// When output last made progress (or became pending).
    last_tx: Instant,
    /// Bytes written so far, and as of the last settle (to see progress).
    written: u64,
    written_seen: u64,
    /// Since when pending output has made no progress.
    stalled_since: Option<Instant>,
}

impl OpsConn {
    /// A fresh connection, registered for `READABLE`.
    pub(super) fn new(
        id: u64,
        stream: OpsStream,
        peer: String,
        protocol: Protocol,
        now: Instant,
    ) -> OpsConn {
        OpsConn {
            id,
            stream,
            peer,
            protocol,
            input: Vec::new(),
            output: Output::new(),
            phase: Phase::Open,
            held: false,
            listing: None,
            queued: false,
            interest: Interest::READABLE,
            last_rx: now,
            last_tx: now,
            written: 0,
            written_seen: 0,
            stalled_since: None,
        }
    }

    pub(super) fn role(&self) -> Role {
        match self.protocol {
            Protocol::Admin(_) => Role::Admin,
            Protocol::Metrics => Role::Metrics,
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.output.pending()
    }

    /// Whether presence events reach this connection (an admin connection subscribed to them).
    pub(super) fn wants_presence(&self) -> bool {
        match &self.protocol {
            Protocol::Admin(client) => client.subscriptions.wants_presence(),
            Protocol::Metrics => false,
        }
    }

    /// Whether a presence event is to be queued to this connection now: it is subscribed, and
    /// still open (after `QUIT`, a protocol error or the client's FIN it only finishes what is
    /// queued, as Redis stops delivering to a client it is closing).
    pub(super) fn takes_events(&self) -> bool {
        self.phase == Phase::Open && self.wants_presence()
    }

    /// Appends one presence event's frames (see `Subscriptions::frames`); returns how many.
    pub(super) fn push_presence(&mut self, message: &[u8], payload: &[u8]) -> u64 {
        match &self.protocol {
            Protocol::Admin(client) => {
                client
                    .subscriptions
                    .frames(message, payload, client.proto, self.output.append())
            }
            Protocol::Metrics => 0,
        }
    }

    /// Whether input may be read and executed now.
    fn accepts_input(&self) -> bool {
        self.phase == Phase::Open && self.pending() < OUTPUT_WINDOW_BYTES && self.listing.is_none()
    }

    /// After executing: whether input was left unexecuted for a reason other than an
    /// incomplete request (see `held`). While held, nothing more is read, so unexecuted input
    /// cannot pile up and a FIN behind it is seen only once everything before it is answered.
    fn note_held(&mut self, incomplete: bool) {
        self.held = self.phase == Phase::Open && !self.input.is_empty() && !incomplete;
    }

    /// Whether it has work that waits for the turn's budget (a listing, or held input).
    pub(super) fn wants_budget(&self) -> bool {
        self.listing.is_some() || self.held
    }

    /// Whether this is an admin connection with a subscription (idle by nature).
    fn subscribed(&self) -> bool {
        match &self.protocol {
            Protocol::Admin(client) => client.subscriptions.active(),
            Protocol::Metrics => false,
        }
    }

    /// The interest this connection needs; `None` when it is done and must be closed. The one
    /// place interest is derived from state.
    fn wanted_interest(&self) -> Option<Interest> {
        let writable = self.pending() > 0;
        let readable = match self.phase {
            Phase::Open => self.accepts_input() && !self.held,
            Phase::Closing => false,
            Phase::Lingering { .. } => true,
        };
        match (readable, writable) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            // Work waiting for the next turn's budget: the work queue brings it back; mio
            // needs some interest meanwhile.
            (false, false) if self.listing.is_some() || self.held => Some(Interest::READABLE),
            (false, false) => None,
        }
    }

    /// When a timer must close this connection, and why. `idle` is the listener's
    /// `idle_timeout`.
    pub(super) fn deadline(&self, idle: Option<Duration>) -> Option<(Instant, Expiry)> {
        if let Phase::Lingering { until, .. } = self.phase {
            return Some((until, Expiry::Linger));
        }
        if self.subscribed() {
            // Quiet by nature; a subscriber's output is bounded by deliver.rs instead.
            return None;
        }
        if self.pending() > 0 {
            let stall = idle.map_or(OUTPUT_STALL_TIMEOUT, |i| i.min(OUTPUT_STALL_TIMEOUT));
            let since = self.stalled_since.unwrap_or(self.last_tx);
            return Some((since + stall, Expiry::Stall));
        }
        if self.listing.is_some() {
            // Being built turn by turn (it waits only for the next turn's budget).
            return None;
        }
        if matches!(self.protocol, Protocol::Metrics) && !self.input.is_empty() {
            let head = idle.map_or(HTTP_HEAD_TIMEOUT, |i| i.min(HTTP_HEAD_TIMEOUT));
            return Some((self.last_rx + head, Expiry::Head));
        }
        idle.map(|i| (self.last_rx.max(self.last_tx) + i, Expiry::Idle))
    }

    /// After a flush: notes output progress for the idle and stall timers.
    fn note_progress(&mut self, now: Instant) {
        if self.written != self.written_seen {
            self.written_seen = self.written;
            self.last_tx = now;
            self.stalled_since = None;
        }
        if self.pending() == 0 {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }
}

impl Ops {
    /// Flush, read, execute, re-arm: the whole turn of one operator connection. `Some` when it
    /// stopped for an [`Action`] (see [`Ops::resume`]).
    pub(super) fn service(&mut self, key: usize, cx: &mut Context<'_>) -> Option<Action> {
        let Some(conn) = self.conns.get_mut(key) else {
            // A stale event for a connection closed earlier this turn.
            return None;
        };
        if let Err(e) = flush(conn) {
            self.close_conn(key, &format!("write failed: {e}"), cx);
            return None;
        }
        match conn.phase {
            Phase::Lingering { .. } => {
                self.linger(key, cx);
                return None;
            }
            Phase::Closing => self.produce(key, cx),
            Phase::Open => {
                // A listing in progress first, then input held back meanwhile.
                self.produce(key, cx);
                return self.service_from(key, MAX_READS_PER_TURN, cx);
            }
        }
        self.settle(key, cx);
        None
    }

    /// An open connection's turn from its held input on: execute it, read (at most
    /// `reads_left` times), then settle. Where [`Ops::resume`] picks a paused turn up.
    pub(super) fn service_from(
        &mut self,
        key: usize,
        reads_left: usize,
        cx: &mut Context<'_>,
    ) -> Option<Action> {
        if !self.conns.contains(key) {
            return None;
        }
        if let Some(tokens) = self.execute(key, cx) {
            return Some(self.pause(key, reads_left, tokens));
        }
        match self.read(key, reads_left, cx) {
            Err(why) => {
                self.close_conn(key, &why, cx);
                return None;
            }
            Ok(Some(action)) => return Some(action),
            Ok(None) => {}
        }
        self.settle(key, cx);
        None
    }

    /// Stops a connection's turn so the loop can kill `tokens`; it goes on in [`Ops::resume`].
    fn pause(&mut self, key: usize, reads_left: usize, tokens: Vec<Token>) -> Action {
        self.paused = Some(Paused {
            key,
            reads_left,
            queue_left: None,
        });
        Action::Kill(tokens)
    }

    /// Builds more of a connection's listing, while its output is under the window and the
    /// turn's budget lasts; what the budget leaves for later goes on the work queue
    /// (`settle`).
    fn produce(&mut self, key: usize, cx: &Context<'_>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(listing) = conn.listing.as_mut() else {
            return;
        };
        let budget = self.budget.left(cx.now);
        let start = conn.output.start();
        let done = listing.advance(
            cx.sessions,
            budget,
            conn.output.append(),
            |out| out.len() - start,
            OUTPUT_WINDOW_BYTES,
        );
        if done {
            conn.listing = None;
        }
        // Not done and under the window: out of budget; `settle` queues it.
    }

    /// Reads until `WouldBlock` (at most `reads_left` times), executing as requests complete.
    /// `Err` closes the connection; `Ok(Some)` is a pause for an [`Action`].
    fn read(
        &mut self,
        key: usize,
        reads_left: usize,
        cx: &mut Context<'_>,
    ) -> Result<Option<Action>, String> {
        if self.read_buf.is_empty() {
            self.read_buf = vec![0; READ_BUF_BYTES];
        }
        for round in 0..reads_left {
            let Some(conn) = self.conns.get_mut(key) else {
                return Ok(None);
            };
            if !conn.accepts_input() || conn.held {
                return Ok(None);
            }
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    // The client is done sending; answer what it sent, then close.
                    conn.phase = Phase::Closing;
                    return Ok(None);
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&self.read_buf[..n]);
                    conn.last_rx = cx.now;
                }
                Err(e) => match classify(&e) {
                    IoClass::Retry => continue,
                    IoClass::WouldBlock => return Ok(None),
                    IoClass::Exhausted(_) | IoClass::Fatal(_) => {
                        return Err(format!("read failed: {e}"))
                    }
                },
            }
            if let Some(tokens) = self.execute(key, cx) {
                return Ok(Some(self.pause(key, reads_left - round - 1, tokens)));
            }
        }
        cx.revisit.push(Token(CONN_BASE + key));
        Ok(None)
    }

    /// After the FIN: discards input until the client closes, the cap, or the timer.
    fn linger(&mut self, key: usize, cx: &mut Context<'_>) {
        let now = cx.now;
        if self.read_buf.is_empty() {
            self.read_buf = vec![0; READ_BUF_BYTES];
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        for _ in 0..MAX_READS_PER_TURN {
            let Phase::Lingering { until, discarded } = conn.phase else {
                return;
            };
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => return self.close_conn(key, "closed by peer", cx),
                Ok(n) if discarded + n > LINGER_MAX_BYTES || now >= until => {
                    return self.close_conn(key, "lingering close: limit reached", cx)
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
                        return self.close_conn(key, "closed by peer", cx)
                    }
                },
            }
        }
        cx.revisit.push(Token(CONN_BASE + key));
    }

    /// After I/O: write what is queued, close a finished connection, or re-arm interest.
    pub(super) fn settle(&mut self, key: usize, cx: &mut Context<'_>) {
        let now = cx.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Err(e) = flush(conn) {
            return self.close_conn(key, &format!("write failed: {e}"), cx);
        }
        conn.note_progress(now);
        if conn.phase == Phase::Closing && conn.pending() == 0 && conn.listing.is_none() {
            if conn.role() == Role::Admin {
                return self.close_conn(key, "closed", cx);
            }
            // HTTP: FIN now, then drain, so the response is read rather than reset away.
            if conn.stream.shutdown_write().is_err() {
                return self.close_conn(key, "closed", cx);
            }
            conn.phase = Phase::Lingering {
                until: now + LINGER_TIMEOUT,
                discarded: 0,
            };
            // Bytes that arrived before the FIN are read on the next readiness or revisit.
            cx.revisit.push(Token(CONN_BASE + key));
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if (conn.held && conn.accepts_input())
            || (conn.listing.is_some() && conn.pending() < OUTPUT_WINDOW_BYTES)
        {
            // Work that no readiness event will bring back (bytes already read, or a listing
            // whose output the socket took at once): the work queue, served in turn.
            self.enqueue(key, cx);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(wanted) = conn.wanted_interest() else {
            return self.close_conn(key, "done", cx);
        };
        if wanted != conn.interest {
            conn.interest = wanted;
            if let Err(e) =
                cx.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(CONN_BASE + key), wanted)
            {
                self.close_conn(key, &format!("cannot re-register: {e}"), cx);
            }
        }
    }
}

/// Writes queued output until done or `WouldBlock`; frees the buffer once it is empty.
pub(super) fn flush(conn: &mut OpsConn) -> std::io::Result<()> {
    conn.output.write_to(&mut conn.stream, &mut conn.written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(protocol: Protocol, now: Instant) -> (std::net::TcpStream, OpsConn) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let stream = OpsStream::Tcp(mio::net::TcpStream::from_std(s));
        (c, OpsConn::new(1, stream, peer.to_string(), protocol, now))
    }

    #[test]
    fn interest_follows_output_and_phase() {
        let now = Instant::now();
        let (_c, mut conn) = conn(Protocol::Metrics, now);
        assert_eq!(conn.wanted_interest(), Some(Interest::READABLE));
        conn.output.push(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            conn.wanted_interest(),
            Some(Interest::READABLE | Interest::WRITABLE)
        );
        conn.output.append().resize(OUTPUT_WINDOW_BYTES, b'x');
        assert_eq!(
            conn.wanted_interest(),
            Some(Interest::WRITABLE),
            "backpressure from a full window on"
        );
        assert!(!conn.accepts_input());
        conn.phase = Phase::Closing;
        conn.output.clear();
        assert_eq!(
            conn.wanted_interest(),
            None,
            "closing with nothing to write: done"
        );
        conn.phase = Phase::Lingering {
            until: now,
            discarded: 0,
        };
        assert_eq!(conn.wanted_interest(), Some(Interest::READABLE));
    }

    #[test]
    fn deadlines_per_protocol_phase_and_idle_timeout() {
        let now = Instant::now();
        let idle = Some(Duration::from_secs(120));
        let (_c, mut http) = conn(Protocol::Metrics, now);
        assert_eq!(
            http.deadline(idle),
            Some((now + Duration::from_secs(120), Expiry::Idle))
        );
        assert_eq!(http.deadline(None), None, "idle_timeout = 0s: never");
        http.input.extend_from_slice(b"GET /met");
        assert_eq!(
            http.deadline(idle),
            Some((now + HTTP_HEAD_TIMEOUT, Expiry::Head))
        );
        let short = Some(Duration::from_secs(3));
        assert_eq!(
            http.deadline(short),
            Some((now + Duration::from_secs(3), Expiry::Head)),
            "a shorter idle timeout also bounds the head"
        );
        let until = now + LINGER_TIMEOUT;
        http.phase = Phase::Lingering {
            until,
            discarded: 0,
        };
        assert_eq!(http.deadline(idle), Some((until, Expiry::Linger)));

        let client = AdminClient::new(2, "p".into(), "l".into(), now);
        let (_c2, mut admin) = conn(Protocol::Admin(client), now);
        assert_eq!(admin.deadline(None), None, "no idle timeout: never");
        let later = now + Duration::from_secs(5);
        admin.last_rx = later;
        assert_eq!(
            admin.deadline(short),
            Some((later + Duration::from_secs(3), Expiry::Idle)),
            "idle counts from the last bytes received"
        );
        // Output waiting: the stall timer, from when it stopped moving.
        admin.output.push(b"+OK\r\n");
        admin.note_progress(later);
        assert_eq!(
            admin.deadline(None),
            Some((later + OUTPUT_STALL_TIMEOUT, Expiry::Stall))
        );
        assert_eq!(
            admin.deadline(short),
            Some((later + Duration::from_secs(3), Expiry::Stall))
        );
        // Progress restarts it.
        admin.written += 2;
        let then = later + Duration::from_secs(2);
        admin.note_progress(then);
        assert_eq!(
            admin.deadline(short),
            Some((then + Duration::from_secs(3), Expiry::Stall))
        );
    }
}

//! One session's I/O: reading and answering requests, writing replies, and deciding when the
//! session is over (it ends in `reaper.rs`).
//!
//! Reads land in the loop's buffer and are parsed in place; only an unfinished request is
//! copied into the session. Replies go into the loop's output buffer and are written straight
//! away; only what the kernel does not take is copied into the session. So an idle session
//! holds no buffers, and a fast client costs no allocation per request.
//!
//! Output is accounted per request, not per read. Before each request, the session's pending
//! output (queued in the session, plus its replies built so far in the loop's buffer) is
//! compared with `session.max_output_bytes`; at the limit the session is *paused*: the rest of
//! its input waits unparsed in its unfinished bytes (marked held), and runs, before anything
//! else is read, once a write brings the output below the limit again (the writable event
//! after the client reads). A reply is never cut, so pending output stays below the limit plus
//! one reply. One session also builds at most `OUTPUT_PER_TURN` (64 KiB, one read's worth) of
//! replies per loop turn; the rest waits for the next turn. Before this, one 13 KB
//! write of `CLIENT INFO` × 1000 built 170 MiB of replies in one go.
//!
//! When a paused session is a slow consumer: while paused it is still read, but not run, up to
//! [`held_input_limit`] (`max_request_bytes` + 256 KiB) of waiting input; a client that sends
//! more than that while its replies wait at the limit is not reading them, and is reaped
//! (`slow-consumer`) in the same turn. This keeps the old promise (a client pipelining without
//! reading is dropped at once, while it is still sending) and lets a client that sent a long
//! pipeline and then reads get every reply, in order. A paused client that neither reads nor
//! sends costs at most `max_output_bytes` + one reply + the held input, and is ended by the
//! kernel (`TCP_USER_TIMEOUT` on the zero window: `stalled`) or `session.idle_timeout`. The
//! kernel's own unsent bytes (`tcpi_notsent_bytes`) are not counted: that would cost a
//! `getsockopt` per batch, and that memory is the kernel's, bounded by `net.ipv4.tcp_wmem`,
//! not the daemon's RSS.
//!
//! The loop's buffers are `scratch.rs` (given back after a spike); a session's output queue
//! is a `session::Output` (freed when it drains).

use std::io::Read as _;
use std::ops::Range;
use std::time::Instant;

use super::proxy_phase::Phase;
use super::scratch::Scratch;
use super::scratch::READ_BUF_BYTES;
use super::tls_guard;
use super::Server;
use crate::config::Config;
use crate::protocol::args::Args;
use crate::protocol::auth_gate::{self, Gate};
use crate::protocol::command;
use crate::protocol::resp::{self, Parsed, Resume};
use crate::protocol::step::Step;
use crate::protocol::token_check::TokenCounts;
use crate::session::reap::Cause;
use crate::session::reap::{classify, IoClass, ReapReason};
use crate::session::tls_layer::{Failure, FailureCause};
use crate::session::{write_until_blocked, Output, ProxyStage, Session, Unfinished};
use mio::Token;

/// Reads per session per turn (of up to 64 KiB each): a client that keeps its socket full
/// cannot starve the others. 256 KiB of pipelined requests is about 1 ms of work in a release
/// build; 16 reads (1 MiB) made a debug build stall other clients for 60-85 ms per turn while
/// one client pipelined thousands of ECHOs (tests/hostile.rs, slow consumer).
const MAX_READS_PER_TURN: usize = 4;

/// What the caller knows about a session's socket when it services it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// An edge just reported it readable, with no hang-up or error: a read shorter than the
    /// buffer emptied the socket, and any byte or FIN that arrives after it raises a new edge
    /// (epoll re-queues an edge-triggered item on every wakeup). So the read that would only
    /// return `WouldBlock` is skipped: one `recv` less per request for a one-request-per-turn
    /// client, the common case at `-P 1`.
    Edge,
    /// A revisit after the per-turn cap, or a deferred error or hang-up: read until
    /// `WouldBlock`, as the readiness contract asks when nothing more is known.
    Drain,
}

/// What happened to a session's input this turn.
enum Input {
    /// Drained to `WouldBlock`.
    Drained,
    /// The per-turn cap was reached; more may be waiting.
    Capped,
    /// The session must end (after its pending output is delivered, for `Closing`).
    Closing(ReapReason),
    /// The socket failed.
    Failed(i32),
    /// The TLS layer failed.
    Tls(Failure),
}

/// What every request of a session is checked against: the size limits and the password.
#[derive(Clone, Copy)]
struct Policy<'a> {
    max_request_bytes: usize,
    /// At or above this much pending output, the session's requests wait unexecuted.
    max_output_bytes: usize,
    /// Bytes of replies this batch may add before the rest of the input waits: what is left
    /// below `max_output_bytes`, and of the session's share of this loop turn.
    room: usize,
    auth: auth_gate::Auth<'a>,
    fields: command::FieldLimits,
}

impl<'a> Policy<'a> {
    fn of(config: &'a Config) -> Policy<'a> {
        Policy {
            max_request_bytes: config.session.max_request_bytes,
            max_output_bytes: config.session.max_output_bytes,
            room: usize::MAX,
            auth: auth_gate::Auth {
                password: config.server.password.as_ref(),
                tokens: config.token.enabled().then_some(&config.token),
            },
            fields: command::FieldLimits::of(&config.session),
        }
    }

    /// With [`Policy::room`] set for `session`, which built `built` bytes of replies this turn.
    fn for_batch(mut self, session: &Session, built: usize) -> Policy<'a> {
        let below_limit = self
            .max_output_bytes
            .saturating_sub(session.pending_output());
        self.room = below_limit.min(OUTPUT_PER_TURN.saturating_sub(built));
        self
    }
}

/// How much unexecuted input a paused session may hold (see the module docs): one request at
/// the limit plus one turn's reads. A client that sends more than this while it does not read
/// its replies is a slow consumer.
pub(super) fn held_input_limit(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(MAX_READS_PER_TURN * READ_BUF_BYTES)
}

/// Bytes of replies one session may have built per loop turn (then it is revisited next turn):
/// one read's worth. Replies can cost far more per byte than requests (`CLIENT INFO` asks the
/// kernel a dozen `getsockopt`s for 450 bytes), so the 256 KiB read cap alone does not bound
/// a turn. With only the `max_output_bytes` limit, a pipeline of `CLIENT INFO`s drained by a
/// fast reader ran 1 MiB of replies per resume, up to 4 MiB per turn, and held a control
/// client's `PING` for 135 ms; with 256 KiB a turn, 60-90 ms on a loaded machine; with 64 KiB,
/// 22-39 ms (debug build).
const OUTPUT_PER_TURN: usize = READ_BUF_BYTES;

/// How far [`run_requests`] got.
struct Ran {
    /// Bytes of input consumed.
    used: usize,
    step: Step,
    /// It stopped before the next request because the session's pending output reached
    /// `max_output_bytes`: the rest of the input waits (paused), unparsed.
    held: bool,
}

/// One `read` of a session's socket (`Interrupted` retried), through its TLS layer if it has
/// one. The bytes are counted and `last_rx` set here.
enum Received {
    /// This many bytes of input are at the start of the read buffer (for TLS, the plaintext:
    /// possibly none, when the read carried only handshake records).
    Bytes(usize),
    /// The TLS handshake finished in this read; this many bytes of input followed it.
    Established(usize),
    /// FIN.
    Closed,
    WouldBlock,
    Failed(i32),
    /// The TLS layer failed (its alert, if any, was sent).
    Tls(Failure),
}

/// What a plaintext client on a TLS port is told, in the clear, before it is closed.
const PLAINTEXT_ON_TLS_PORT: &[u8] =
    b"-ERR this port speaks TLS; connect with TLS (for example redis-cli --tls)\r\n";

fn read_socket(stream: &mut mio::net::TcpStream, buf: &mut [u8]) -> Result<usize, Received> {
    loop {
        return match stream.read(buf) {
            Ok(0) => Err(Received::Closed),
            Ok(n) => Ok(n),
            Err(e) => match classify(&e) {
                IoClass::Retry => continue,
                IoClass::WouldBlock => Err(Received::WouldBlock),
                IoClass::Exhausted(errno) | IoClass::Fatal(errno) => Err(Received::Failed(errno)),
            },
        };
    }
}

fn receive(session: &mut Session, scratch: &mut Scratch, now: Instant) -> Received {
    let Session {
        stream,
        extras,
        bytes_in,
        bytes_out,
        last_rx,
        closing,
        ..
    } = session;
    let Some(tls) = extras.as_deref_mut().and_then(|e| e.tls.as_deref_mut()) else {
        return match read_socket(stream, &mut scratch.read) {
            Ok(n) => {
                *bytes_in += n as u64;
                *last_rx = now;
                Received::Bytes(n)
            }
            Err(r) => r,
        };
    };
    // The kept part of a cut record goes in front of the new bytes; the read takes the rest
    // of the buffer, so the plaintext (never longer than the ciphertext) fits in it too.
    let kept = tls.partial_len();
    let n = match read_socket(stream, &mut scratch.read[kept..]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    *bytes_in += n as u64;
    *last_rx = now;
    tls.restore_partial(&mut scratch.read[..kept]);
    let (plain, wire) = (&mut scratch.plain, &mut scratch.wire);
    plain.clear();
    wire.clear();
    let fed = tls.feed(&mut scratch.read[..kept + n], plain, wire);
    if let Err(failure) = &fed {
        if failure.cause == FailureCause::Plaintext {
            let _ = write_until_blocked(stream, PLAINTEXT_ON_TLS_PORT, bytes_out);
        }
    }
    if let Ok(progress) = &fed {
        if progress.peer_closed {
            // `close_notify`: what came before it is answered, then the session ends `closed`.
            closing.get_or_insert(ReapReason::Closed);
        }
    }
    if !scratch.wire.is_empty() {
        // Handshake flights, tickets, alerts: in order, before any reply.
        if let Err(errno) = send(session, &scratch.wire) {
            return Received::Failed(errno);
        }
    }
    let progress = match fed {
        Ok(progress) => progress,
        Err(failure) => return Received::Tls(failure),
    };
    let m = scratch.plain.len();
    scratch.read[..m].copy_from_slice(&scratch.plain);
    if progress.established {
        Received::Established(m)
    } else {
        Received::Bytes(m)
    }
}

/// Sends `bytes` (wire bytes: ciphertext for TLS) after what is queued: straight to the socket
/// when nothing waits, and whatever the kernel does not take is kept in the session.
fn send(session: &mut Session, bytes: &[u8]) -> Result<(), i32> {
    if session.output.is_empty() {
        let written = write_until_blocked(&mut session.stream, bytes, &mut session.bytes_out)
            .map_err(|e| write_errno(&e))?;
        if written < bytes.len() {
            session.output = Output::new();
            session.output.push(&bytes[written..]);
        }
    } else {
        session.output.push(bytes);
    }
    Ok(())
}

/// Parses and runs the complete requests in `input`, appending replies to `out` (which holds
/// only this session's replies), until the input is used up, a step needs the loop, or the
/// session's pending output (queued in the session plus `out`) reaches `max_output_bytes`:
/// then the rest waits, and [`Ran::held`] says so. A reply is never cut: the request that
/// crosses the limit is answered in full. `resume` must describe `input`'s first request
/// (`Fresh` unless `input` is an unfinished request grown by a read); it is left describing the
/// unfinished request after the consumed bytes (`Fresh` when none is).
// The loop's buffers, the session, its policy and the token counters are separate borrows of
// separate parts of the loop; bundling them would only move the list into a struct.
#[allow(clippy::too_many_arguments)]
fn run_requests(
    input: &[u8],
    resume: &mut Resume,
    session: &mut Session,
    args: &mut Vec<Range<usize>>,
    out: &mut Vec<u8>,
    policy: Policy<'_>,
    tokens: &mut TokenCounts,
    now: Instant,
) -> Ran {
    let Policy {
        max_request_bytes,
        room,
        auth,
        fields,
        ..
    } = policy;
    let mut pos = 0;
    let mut state = std::mem::take(resume);
    while pos < input.len() {
        // One comparison per request: the fast path pays nothing more.
        if out.len() >= room {
            // At a request boundary, so `state` is `Fresh`.
            *resume = state;
            return Ran {
                used: pos,
                step: Step::Continue,
                held: true,
            };
        }
        let rest = &input[pos..];
        // Per request: a session that authenticates mid-pipeline gets the full limit for the
        // requests after its AUTH.
        let limit = auth_gate::request_limit(session, auth, max_request_bytes);
        match resp::parse_resumable(rest, limit, args, &mut state) {
            Ok(Parsed::Incomplete) => {
                *resume = state;
                break;
            }
            Ok(Parsed::Request { consumed }) => {
                pos += consumed;
                if args.is_empty() {
                    continue;
                }
                let args = Args::new(rest, args);
                let step = match auth_gate::gate(args, session, auth, tokens, out) {
                    Gate::Run => command::execute(args, session, fields, now, out),
                    Gate::Answered(step) => step,
                };
                // A verified token: the loop binds it before anything else runs.
                let step = match step {
                    Step::Continue if session.identity_pending() => Step::BindIdentity,
                    step => step,
                };
                if step != Step::Continue {
                    // Close, or a rename the loop must apply before the next request runs.
                    return Ran {
                        used: pos,
                        step,
                        held: false,
                    };
                }
            }
            Err(e) => {
                match e {
                    resp::ProtocolError::TooLarge { limit } if limit < max_request_bytes => {
                        resp::write_error(out, &auth_gate::too_large_before_auth(limit));
                    }
                    e => resp::write_error(out, &format!("ERR {e}")),
                }
                return Ran {
                    used: input.len(),
                    step: Step::Close(ReapReason::ProtocolError),
                    held: false,
                };
            }
        }
    }
    Ran {
        used: pos,
        step: Step::Continue,
        held: false,
    }
}

/// Runs the requests waiting in the session's unfinished bytes; keeps what is left of them
/// unless the session is closing. Returns what to do next.
fn run_unfinished(
    session: &mut Session,
    args: &mut Vec<Range<usize>>,
    out: &mut Vec<u8>,
    policy: Policy<'_>,
    tokens: &mut TokenCounts,
    now: Instant,
) -> Step {
    let Some(mut pending) = session.unfinished.take() else {
        return Step::Continue;
    };
    let ran = run_requests(
        &pending.bytes,
        &mut pending.resume,
        session,
        args,
        out,
        policy,
        tokens,
        now,
    );
    if ran.step.keeps_input() && ran.used < pending.bytes.len() {
        pending.bytes.drain(..ran.used);
        // Something before it was consumed: the request now waiting started in this read.
        if ran.used > 0 {
            pending.since = now;
        }
        pending.held = ran.held;
        session.unfinished = Some(pending);
    }
    ran.step
}

/// Keeps `input` as the session's unfinished bytes (after any it had), unparsed, to be run
/// with [`run_unfinished`].
fn keep_unfinished(session: &mut Session, input: &[u8], now: Instant) {
    match session.unfinished.as_mut() {
        Some(pending) => pending.bytes.extend_from_slice(input),
        None if input.is_empty() => {}
        None => {
            session.unfinished = Some(Box::new(Unfinished {
                bytes: input.to_vec(),
                resume: Resume::Fresh,
                since: now,
                held: false,
            }))
        }
    }
}

/// Makes `queued` (an EXEC's requests) the next requests the session runs, before whatever
/// unfinished input it had (which then parses again from its start).
fn run_first(session: &mut Session, queued: &[u8], now: Instant) {
    match session.unfinished.as_mut() {
        Some(pending) => {
            pending.bytes.splice(0..0, queued.iter().copied());
            pending.resume = Resume::Fresh;
        }
        None => {
            session.unfinished = Some(Box::new(Unfinished {
                bytes: queued.to_vec(),
                resume: Resume::Fresh,
                since: now,
                held: false,
            }));
        }
    }
}

/// The errno a failed write reaps with: the socket's, or `EPIPE` for a write of zero bytes.
fn write_errno(e: &std::io::Error) -> i32 {
    match e.kind() {
        std::io::ErrorKind::WriteZero => libc::EPIPE,
        _ => e.raw_os_error().unwrap_or(0),
    }
}

impl Server {
    /// Handles readiness (or a revisit) for one session: flush, read, answer, re-arm.
    pub(super) fn service(&mut self, token: Token, now: Instant, mut wake: Wake) {
        let Some(session) = self.sessions.get(token) else {
            // A stale event for a session reaped earlier this turn.
            return;
        };
        if session.proxy == ProxyStage::AwaitingHeader {
            // Before anything else: the PROXY header (proxy_phase.rs).
            // Nothing but a deferred hang-up or error drains a session in this phase.
            match self.proxy_phase(token, now, wake == Wake::Drain) {
                Phase::Waiting | Phase::Ended => return,
                // Input may have come with the header, and no new edge will say so.
                Phase::Done => wake = Wake::Drain,
            }
        }
        // For a TLS session: whether its handshake is done.
        let tls_open = self
            .sessions
            .get(token)
            .and_then(|s| s.tls())
            .map(|t| t.is_open());
        if tls_open == Some(false) && !self.tls.take_handshake_turn() {
            // This turn's share of handshake work is used (a reconnect storm): the rest wait
            // for the next turn, after the established sessions' events.
            self.pending.revisit.push(token);
            return;
        }
        if let Some(session) = self.sessions.get_mut(token) {
            let stats = &mut self.stats;
            self.auth_guard
                .refresh_budget(session, &self.config, stats, now);
        }
        if let Err(errno) = self.flush_pending(token) {
            return self.reap(token, Cause::Errno(errno), now);
        }
        // TLS: a read's length says nothing about what is left in the socket (the plaintext is
        // shorter than the records), so the edge shortcut does not apply.
        if tls_open.is_some() {
            wake = Wake::Drain;
        }
        match self.read_input(token, now, wake) {
            Input::Failed(errno) => return self.reap(token, Cause::Errno(errno), now),
            Input::Tls(failure) => return self.tls_failed(token, failure, now),
            Input::Capped => self.pending.revisit.push(token),
            Input::Closing(reason) => {
                if let Some(s) = self.sessions.get_mut(token) {
                    s.closing.get_or_insert(reason);
                }
            }
            Input::Drained => {}
        }
        self.settle(token, now);
    }

    /// Reads until `WouldBlock` (or the cap), answering requests as they complete. Requests
    /// held back for lack of output room run first, once the output is below the limit again;
    /// while it is not, input is read (up to [`held_input_limit`]) but not executed.
    fn read_input(&mut self, token: Token, now: Instant, wake: Wake) -> Input {
        // Replies built for this session this turn (see OUTPUT_PER_TURN).
        let mut built = 0;
        'reads: for _ in 0..MAX_READS_PER_TURN {
            let Some(session) = self.sessions.get_mut(token) else {
                return Input::Drained;
            };
            let policy = Policy::of(&self.config).for_batch(session, built);
            let scratch = &mut self.scratch;
            let held = session.held_input();
            let over = session.pending_output() >= policy.max_output_bytes;
            if held.is_some() && !over && built >= OUTPUT_PER_TURN {
                // Its share of this turn is used: the held requests run on the next one.
                return Input::Capped;
            }
            let failures_before = session.auth_failures;
            let commands_before = session.commands;
            scratch.out.clear();
            let mut read = None;
            let mut step = if held.is_some() && !over {
                // Resume: the output drained below the limit (a FIN received meanwhile does
                // not cancel requests that arrived before it).
                run_unfinished(
                    session,
                    &mut scratch.args,
                    &mut scratch.out,
                    policy,
                    &mut self.stats.tokens,
                    now,
                )
            } else {
                'read: {
                    if session.closing.is_some() {
                        return Input::Drained;
                    }
                    if held.is_some_and(|n| n >= held_input_limit(policy.max_request_bytes)) {
                        // Paused and full: `settle` reaps it as a slow consumer.
                        return Input::Drained;
                    }
                    let n = match receive(session, scratch, now) {
                        // FIN: answer what was already received, then close.
                        Received::Closed => return Input::Closing(ReapReason::Closed),
                        Received::Bytes(n) => n,
                        Received::Established(n) => {
                            // The identity comes first: the requests that followed the handshake
                            // wait in the unfinished bytes until the loop has bound it.
                            keep_unfinished(session, &scratch.read[..n], now);
                            let (config, stats) = (&self.config, &mut self.stats);
                            let log = &mut self.log_budget;
                            if let Err(failure) =
                                tls_guard::established(session, config, stats, log, now)
                            {
                                return Input::Tls(failure);
                            }
                            break 'read Step::BindIdentity;
                        }
                        Received::WouldBlock => return Input::Drained,
                        Received::Failed(errno) => return Input::Failed(errno),
                        Received::Tls(failure) => return Input::Tls(failure),
                    };
                    read = Some(n);
                    if let (Some(pending), true) = (session.unfinished.as_mut(), over) {
                        // Paused: kept, not run (the output is at its limit); they run first
                        // once it drains.
                        pending.bytes.extend_from_slice(&scratch.read[..n]);
                        pending.held = true;
                        if wake == Wake::Edge && n < READ_BUF_BYTES {
                            return Input::Drained;
                        }
                        continue 'reads;
                    }
                    if let Some(pending) = session.unfinished.as_mut() {
                        pending.bytes.extend_from_slice(&scratch.read[..n]);
                        run_unfinished(
                            session,
                            &mut scratch.args,
                            &mut scratch.out,
                            policy,
                            &mut self.stats.tokens,
                            now,
                        )
                    } else {
                        let Scratch {
                            read, out, args, ..
                        } = scratch;
                        let input = &read[..n];
                        let mut resume = Resume::Fresh;
                        let tokens = &mut self.stats.tokens;
                        let ran = run_requests(
                            input,
                            &mut resume,
                            session,
                            args,
                            out,
                            policy,
                            tokens,
                            now,
                        );
                        if ran.step.keeps_input() && ran.used < n {
                            session.unfinished = Some(Box::new(Unfinished {
                                bytes: input[ran.used..].to_vec(),
                                resume,
                                since: now,
                                held: ran.held,
                            }));
                        }
                        ran.step
                    }
                }
            };
            // A rename needs the whole loop (the name index, events, maybe a reap); the
            // requests after it wait in the unfinished bytes until it is done. An EXEC puts
            // its queued requests in front of them.
            loop {
                match step {
                    // It writes the reply (success or refusal) in its place in `scratch.out`.
                    Step::Rename(rename) => self.rename_session(token, rename, now),
                    Step::Exec(queued) => {
                        if let Some(s) = self.sessions.get_mut(token) {
                            run_first(s, &queued, now);
                        }
                    }
                    Step::BindIdentity => {
                        let pending = self
                            .sessions
                            .get_mut(token)
                            .and_then(|s| s.extras.as_deref_mut())
                            .and_then(|e| e.pending_identity.take());
                        if let Some(p) = pending {
                            if !self.bind_identity(token, p.identity, now) {
                                step = Step::Close(ReapReason::IdentityLimit);
                                break;
                            }
                            if p.reply_ok {
                                resp::write_simple(&mut self.scratch.out, "OK");
                            }
                        }
                    }
                    _ => break,
                }
                let Some(session) = self.sessions.get_mut(token) else {
                    return Input::Drained;
                };
                let policy = Policy::of(&self.config).for_batch(session, built);
                let Scratch { out, args, .. } = &mut self.scratch;
                step = run_unfinished(session, args, out, policy, &mut self.stats.tokens, now);
            }
            let Some(session) = self.sessions.get_mut(token) else {
                return Input::Drained;
            };
            self.stats.commands += session.commands - commands_before;
            let failures = u32::from(session.auth_failures - failures_before);
            if failures > 0 {
                let (config, stats) = (&self.config, &mut self.stats);
                self.auth_guard
                    .failed(session, failures, config, stats, &mut self.log_budget, now);
            }
            built += self.scratch.out.len();
            if let Err(errno) = self.queue_output(token) {
                return Input::Failed(errno);
            }
            if let Step::Close(reason) = step {
                return Input::Closing(reason);
            }
            // Over its output limit with requests waiting: the next round reads without
            // running (or resumes, if the kernel took the batch).
            if read.is_some_and(|n| wake == Wake::Edge && n < READ_BUF_BYTES)
                && self
                    .sessions
                    .get(token)
                    .is_some_and(|s| s.held_input().is_none())
            {
                return Input::Drained;
            }
        }
        Input::Capped
    }

    /// Sends the replies in `out_buf`: straight to the socket when nothing is queued before
    /// them, otherwise behind the queue. What the kernel refuses is kept in the session.
    fn queue_output(&mut self, token: Token) -> Result<(), i32> {
        let Scratch { out, wire, .. } = &mut self.scratch;
        if out.is_empty() {
            return Ok(());
        }
        let Some(session) = self.sessions.get_mut(token) else {
            return Ok(());
        };
        let sent = match session.tls_mut() {
            None => send(session, out),
            Some(tls) => {
                wire.clear();
                match tls.encrypt(out, wire) {
                    Ok(()) => send(session, wire),
                    // Cannot happen on an open session; the replies cannot be delivered.
                    Err(_) => Err(libc::EPROTO),
                }
            }
        };
        self.scratch.batch_done();
        sent
    }

    /// Writes queued output. Frees the queue's memory once it is empty.
    fn flush_pending(&mut self, token: Token) -> Result<(), i32> {
        let Some(session) = self.sessions.get_mut(token) else {
            return Ok(());
        };
        if session.pending_output() == 0 {
            return Ok(());
        }
        // On a failed write the reaper still reads `pending_output()`: it is what tells a
        // stalled peer from a dead one.
        session
            .output
            .write_to(&mut session.stream, &mut session.bytes_out)
            .map_err(|e| write_errno(&e))
    }

    /// After I/O: reap a session that is done or a slow consumer, else re-arm interest.
    fn settle(&mut self, token: Token, now: Instant) {
        let max_output = self.config.session.max_output_bytes;
        let held_limit = held_input_limit(self.config.session.max_request_bytes);
        let Some(session) = self.sessions.get_mut(token) else {
            return;
        };
        let pending = session.pending_output();
        let held = session.held_input();
        if pending >= max_output && held.is_some_and(|n| n >= held_limit) {
            // Paused (output at its limit), and still sending: it does not read its replies.
            return self.reap(token, Cause::Reason(ReapReason::SlowConsumer), now);
        }
        if let (Some(reason), 0, None) = (session.closing, pending, held) {
            return self.reap(token, Cause::Reason(reason), now);
        }
        let wanted = session.wanted_interest();
        if wanted != session.interest {
            session.interest = wanted;
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut session.stream, token, wanted)
            {
                let errno = e.raw_os_error().unwrap_or(0);
                self.reap(token, Cause::Errno(errno), now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: Instant) -> (std::net::TcpStream, Session) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let mut session = Session::new(1, mio::net::TcpStream::from_std(s), peer, now);
        session.authenticated = true;
        (c, session)
    }

    #[test]
    fn requests_stop_at_the_output_room_and_resume_where_they_stopped() {
        let now = Instant::now();
        let (_c, mut s) = session(now);
        let config = Config::default();
        let input = b"PING\r\nPING\r\nPING\r\nPING\r\nPING\r\n";
        let (mut args, mut out, mut resume) = (Vec::new(), Vec::new(), Resume::Fresh);
        // "+PONG\r\n" is 7 bytes: after three replies (21 >= 20) the rest waits.
        let mut policy = Policy::of(&config);
        policy.room = 20;
        let t = &mut TokenCounts::default();
        let ran = run_requests(
            input,
            &mut resume,
            &mut s,
            &mut args,
            &mut out,
            policy,
            t,
            now,
        );
        assert_eq!((ran.used, ran.held, &ran.step), (18, true, &Step::Continue));
        assert_eq!(out, b"+PONG\r\n".repeat(3));
        assert_eq!(resume, Resume::Fresh, "stopped at a request boundary");
        // A reply is never cut: with room for one byte, one whole request still runs.
        out.clear();
        policy.room = 1;
        let ran = run_requests(
            &input[18..],
            &mut resume,
            &mut s,
            &mut args,
            &mut out,
            policy,
            t,
            now,
        );
        assert_eq!((ran.used, ran.held), (6, true));
        out.clear();
        let ran = run_requests(
            &input[24..],
            &mut resume,
            &mut s,
            &mut args,
            &mut out,
            Policy::of(&config),
            t,
            now,
        );
        assert_eq!((ran.used, ran.held), (6, false));
        assert_eq!(s.commands, 5, "each request ran once");
    }

    #[test]
    fn the_room_is_what_is_left_below_the_limit_and_of_the_turn() {
        let now = Instant::now();
        let (_c, mut s) = session(now);
        let mut config = Config::default();
        config.session.max_output_bytes = 4096;
        assert_eq!(Policy::of(&config).for_batch(&s, 0).room, 4096);
        s.output.push(&[b'x'; 1000]);
        assert_eq!(Policy::of(&config).for_batch(&s, 0).room, 3096);
        s.output.write_to(&mut std::io::sink(), &mut 0).unwrap();
        config.session.max_output_bytes = 1 << 30;
        let p = Policy::of(&config).for_batch(&s, OUTPUT_PER_TURN - 10);
        assert_eq!(p.room, 10, "the turn's share");
        assert_eq!(Policy::of(&config).for_batch(&s, OUTPUT_PER_TURN).room, 0);
        assert_eq!(held_input_limit(65_536), 65_536 + 256 * 1024);
    }
}

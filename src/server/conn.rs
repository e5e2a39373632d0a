//! One session's I/O: reading and answering requests, writing replies, and reaping.
//!
//! Reads land in the loop's buffer and are parsed in place; only an unfinished request is
//! copied into the session. Replies go into the loop's output buffer and are written straight
//! away; only what the kernel does not take is copied into the session. So an idle session
//! holds no buffers, and a fast client costs no allocation per request.

use std::io::{Read as _, Write as _};
use std::ops::Range;
use std::time::Instant;

use super::{Server, READ_BUF_BYTES};
use crate::auth::{self, Gate, Password};
use crate::command::{self, Args, Step};
use crate::config::Config;
use crate::logging::clipped;
use crate::presence::{Event, Left};
use crate::rate_limit::{budgeted, LineKind};
use crate::reap::{classify, errno_name, reason_for_errno, IoClass, ReapReason};
use crate::resp::{self, Parsed, Resume};
use crate::session::{Session, Unfinished};
use crate::sys;
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

/// Why a session is being reaped: a decided reason, or a socket error still to interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    Reason(ReapReason),
    Errno(i32),
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
}

/// What every request of a session is checked against: the size limit and the password.
#[derive(Clone, Copy)]
struct Policy<'a> {
    max_request_bytes: usize,
    password: Option<&'a Password>,
    fields: command::FieldLimits,
}

impl<'a> Policy<'a> {
    fn of(config: &'a Config) -> Policy<'a> {
        Policy {
            max_request_bytes: config.session.max_request_bytes,
            password: config.server.password.as_ref(),
            fields: command::FieldLimits::of(&config.session),
        }
    }
}

/// Parses and runs every complete request in `input`, appending replies to `out`. Returns the
/// number of bytes consumed and what to do next. `resume` must describe `input`'s first request
/// (`Fresh` unless `input` is an unfinished request grown by a read); it is left describing the
/// unfinished request after the consumed bytes (`Fresh` when none is).
fn run_requests(
    input: &[u8],
    resume: &mut Resume,
    session: &mut Session,
    args: &mut Vec<Range<usize>>,
    out: &mut Vec<u8>,
    policy: Policy<'_>,
    now: Instant,
) -> (usize, Step) {
    let Policy {
        max_request_bytes,
        password,
        fields,
    } = policy;
    let mut pos = 0;
    let mut state = std::mem::take(resume);
    while pos < input.len() {
        let rest = &input[pos..];
        // Per request: a session that authenticates mid-pipeline gets the full limit for the
        // requests after its AUTH.
        let limit = auth::request_limit(session, password, max_request_bytes);
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
                let step = match auth::gate(args, session, password, out) {
                    Gate::Run => command::execute(args, session, fields, now, out),
                    Gate::Answered(step) => step,
                };
                if step != Step::Continue {
                    // Close, or a rename the loop must apply before the next request runs.
                    return (pos, step);
                }
            }
            Err(e) => {
                match e {
                    resp::ProtocolError::TooLarge { limit } if limit < max_request_bytes => {
                        resp::write_error(out, &auth::too_large_before_auth(limit));
                    }
                    e => resp::write_error(out, &format!("ERR {e}")),
                }
                return (input.len(), Step::Close(ReapReason::ProtocolError));
            }
        }
    }
    (pos, Step::Continue)
}

/// Runs the requests waiting in the session's unfinished bytes; keeps what is left of them
/// unless the session is closing. Returns what to do next.
fn run_unfinished(
    session: &mut Session,
    args: &mut Vec<Range<usize>>,
    out: &mut Vec<u8>,
    policy: Policy<'_>,
    now: Instant,
) -> Step {
    let Some(mut pending) = session.unfinished.take() else {
        return Step::Continue;
    };
    let (used, step) = run_requests(
        &pending.bytes,
        &mut pending.resume,
        session,
        args,
        out,
        policy,
        now,
    );
    if step.keeps_input() && used < pending.bytes.len() {
        pending.bytes.drain(..used);
        // Something before it was consumed: the request now waiting started in this read.
        if used > 0 {
            pending.since = now;
        }
        session.unfinished = Some(pending);
    }
    step
}

/// Writes `data` until done or `WouldBlock`. Returns the bytes written, or the fatal errno.
fn write_some(session: &mut Session, data: &[u8]) -> Result<usize, i32> {
    let mut written = 0;
    while written < data.len() {
        match session.stream.write(&data[written..]) {
            Ok(0) => return Err(libc::EPIPE),
            Ok(n) => written += n,
            Err(e) => match classify(&e) {
                IoClass::Retry => continue,
                IoClass::WouldBlock => break,
                IoClass::Exhausted(errno) | IoClass::Fatal(errno) => return Err(errno),
            },
        }
    }
    session.bytes_out += written as u64;
    Ok(written)
}

impl Server {
    /// Handles readiness (or a revisit) for one session: flush, read, answer, re-arm.
    pub(super) fn service(&mut self, token: Token, now: Instant, wake: Wake) {
        if self.sessions.get(token).is_none() {
            // A stale event for a session reaped earlier this turn.
            return;
        }
        self.refresh_guess_budget(token, now);
        if let Err(errno) = self.flush_pending(token) {
            return self.reap(token, Cause::Errno(errno), now);
        }
        match self.read_input(token, now, wake) {
            Input::Failed(errno) => return self.reap(token, Cause::Errno(errno), now),
            Input::Capped => self.revisit.push(token),
            Input::Closing(reason) => {
                if let Some(s) = self.sessions.get_mut(token) {
                    s.closing.get_or_insert(reason);
                }
            }
            Input::Drained => {}
        }
        self.settle(token, now);
    }

    /// Reads until `WouldBlock` (or the cap), answering requests as they complete.
    fn read_input(&mut self, token: Token, now: Instant, wake: Wake) -> Input {
        for _ in 0..MAX_READS_PER_TURN {
            let Server {
                sessions,
                read_buf,
                out_buf,
                args,
                config,
                ..
            } = self;
            let policy = Policy::of(config);
            let Some(session) = sessions.get_mut(token) else {
                return Input::Drained;
            };
            if session.closing.is_some() {
                return Input::Drained;
            }
            let n = match session.stream.read(read_buf) {
                // FIN: answer what was already received, then close.
                Ok(0) => return Input::Closing(ReapReason::Closed),
                Ok(n) => n,
                Err(e) => match classify(&e) {
                    IoClass::Retry => continue,
                    IoClass::WouldBlock => return Input::Drained,
                    IoClass::Exhausted(errno) | IoClass::Fatal(errno) => {
                        return Input::Failed(errno)
                    }
                },
            };
            session.bytes_in += n as u64;
            session.last_rx = now;
            out_buf.clear();
            let failures_before = session.auth_failures;
            let mut step = if let Some(pending) = session.unfinished.as_mut() {
                pending.bytes.extend_from_slice(&read_buf[..n]);
                run_unfinished(session, args, out_buf, policy, now)
            } else {
                let input = &read_buf[..n];
                let mut resume = Resume::Fresh;
                let (used, step) =
                    run_requests(input, &mut resume, session, args, out_buf, policy, now);
                if step.keeps_input() && used < n {
                    session.unfinished = Some(Box::new(Unfinished {
                        bytes: input[used..].to_vec(),
                        resume,
                        since: now,
                    }));
                }
                step
            };
            // A rename needs the whole loop (the name index, events, maybe a reap); the
            // requests after it wait in the unfinished bytes until it is done.
            while let Step::Rename(name) = step {
                self.rename_session(token, name, now);
                let Server {
                    sessions,
                    out_buf,
                    args,
                    config,
                    ..
                } = self;
                let policy = Policy::of(config);
                let Some(session) = sessions.get_mut(token) else {
                    return Input::Drained;
                };
                step = run_unfinished(session, args, out_buf, policy, now);
            }
            let Some(session) = self.sessions.get(token) else {
                return Input::Drained;
            };
            let failures = session.auth_failures - failures_before;
            if failures > 0 {
                self.auth_failed(token, failures, now);
            }
            if let Err(errno) = self.queue_output(token) {
                return Input::Failed(errno);
            }
            if let Step::Close(reason) = step {
                return Input::Closing(reason);
            }
            // Over its output limit: it will be reaped as a slow consumer; reading (and
            // answering) more of its pipeline would only be wasted work.
            let max_output = self.config.session.max_output_bytes;
            if self
                .sessions
                .get(token)
                .is_some_and(|s| s.pending_output() > max_output)
            {
                return Input::Drained;
            }
            if wake == Wake::Edge && n < READ_BUF_BYTES {
                return Input::Drained;
            }
        }
        Input::Capped
    }

    /// Sends the replies in `out_buf`: straight to the socket when nothing is queued before
    /// them, otherwise behind the queue. What the kernel refuses is kept in the session.
    fn queue_output(&mut self, token: Token) -> Result<(), i32> {
        let Server {
            sessions, out_buf, ..
        } = self;
        if out_buf.is_empty() {
            return Ok(());
        }
        let Some(session) = sessions.get_mut(token) else {
            return Ok(());
        };
        if session.pending_output() == 0 {
            let written = write_some(session, out_buf)?;
            if written < out_buf.len() {
                session.output.clear();
                session.output_pos = 0;
                session.output.extend_from_slice(&out_buf[written..]);
            }
        } else {
            session.output.extend_from_slice(out_buf);
        }
        out_buf.clear();
        Ok(())
    }

    /// Writes queued output. Frees the queue's memory once it is empty.
    fn flush_pending(&mut self, token: Token) -> Result<(), i32> {
        let Some(session) = self.sessions.get_mut(token) else {
            return Ok(());
        };
        if session.pending_output() == 0 {
            return Ok(());
        }
        let queued = std::mem::take(&mut session.output);
        let result = write_some(session, &queued[session.output_pos..]);
        // Put the queue back before looking at the result: on a failed write the reaper still
        // reads `pending_output()` (it is what tells a stalled peer from a dead one), and
        // `output_pos` indexes into this queue.
        session.output = queued;
        session.output_pos += result?;
        if session.output_pos == session.output.len() {
            session.output = Vec::new();
            session.output_pos = 0;
        } else if session.output_pos > session.output.len() / 2 {
            let pos = session.output_pos;
            session.output.drain(..pos);
            session.output_pos = 0;
        }
        Ok(())
    }

    /// After I/O: reap a session that is done or over its output limit, else re-arm interest.
    fn settle(&mut self, token: Token, now: Instant) {
        let max_output = self.config.session.max_output_bytes;
        let Some(session) = self.sessions.get_mut(token) else {
            return;
        };
        let pending = session.pending_output();
        if pending > max_output {
            return self.reap(token, Cause::Reason(ReapReason::SlowConsumer), now);
        }
        if let (Some(reason), 0) = (session.closing, pending) {
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

    /// Ends a session: snapshot `TCP_INFO`, decide the reason, deregister, close, count, log
    /// (one line, within the log budget: `log.reap_lines_per_second`, `log.bytes_per_second`).
    /// The only place a session ends.
    pub(super) fn reap(&mut self, token: Token, cause: Cause, now: Instant) {
        let Some(mut session) = self.sessions.remove(token) else {
            return;
        };
        let info = sys::tcp_info(&session.stream).ok();
        let (reason, errno) = match cause {
            Cause::Reason(r) => (r, 0),
            Cause::Errno(errno) => (
                reason_for_errno(errno, info.as_ref(), session.pending_output() > 0),
                errno,
            ),
        };
        // Deregistering a socket whose peer is gone still succeeds; closing it (the drop
        // below) would remove it from epoll anyway.
        let _ = self.poll.registry().deregister(&mut session.stream);
        let lifetime = session.age(now);
        let silent = session.idle_for(now);
        self.stats.on_reap(reason, lifetime, silent);
        let i = info.unwrap_or_default();
        budgeted!(
            self.log_budget,
            LineKind::Reap(reason),
            reason.log_level(),
            now,
            "reap id={} peer={} name={} reason={} errno={} lifetime_ms={} silent_ms={} \
             tcpi_state={} tcpi_probes={} tcpi_retransmits={} tcpi_backoff={} tcpi_unacked={} \
             tcpi_rtt_us={} tcpi_total_retrans={} tcpi_last_data_recv_ms={} \
             tcpi_last_ack_recv_ms={} tcpi_notsent_bytes={} tcpi_snd_wnd={}",
            session.id,
            session.peer,
            clipped(session.name.as_deref().unwrap_or("-")),
            reason,
            errno_name(errno),
            lifetime.as_millis(),
            silent.as_millis(),
            i.state,
            i.probes,
            i.retransmits,
            i.backoff,
            i.unacked,
            i.rtt_us,
            i.total_retrans,
            i.last_data_recv_ms,
            i.last_ack_recv_ms,
            i.notsent_bytes,
            i.snd_wnd.map_or_else(|| "-".to_string(), |w| w.to_string()),
        );
        self.publish(&Event::Left(Left {
            id: session.id,
            addr: session.peer,
            name: session.name.as_deref(),
            reason,
            errno,
            lifetime,
            silent,
            tcp_info: info.as_ref(),
        }));
        drop(session);
        // A descriptor came free: connections refused for lack of them can be taken now.
        self.descriptor_freed();
    }
}

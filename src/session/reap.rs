//! Why a session ended, and the one place where socket errors are interpreted.
//!
//! Every session ends with exactly one [`ReapReason`]. Its name is what logs, statistics and
//! (later) metrics show. [`classify`] is the only function that looks inside an `io::Error`;
//! [`reason_for_errno`] turns a fatal errno into a reason, using the `TCP_INFO` snapshot to tell
//! a keepalive death from a retransmission death (after the kernel gives up, `tcpi_unacked`
//! already reads 0, but `tcpi_retransmits` survives: 0 for keepalive, > 0 for retransmission).

use std::fmt;
use std::io;

use log::Level;

use crate::os::sys::TcpInfo;

/// Why a session is being reaped: a decided reason, or a socket error still to interpret
/// (`reason_for_errno`, with the socket's `TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Reason(ReapReason),
    Errno(i32),
}

/// Why a session was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReapReason {
    /// `recv` returned 0: the peer sent FIN.
    Closed,
    /// The client sent `QUIT`.
    Quit,
    /// `ECONNRESET` / `EPIPE`: the peer rebooted or aborted.
    Reset,
    /// `ETIMEDOUT` with keepalive probes unanswered.
    KeepaliveTimeout,
    /// `ETIMEDOUT` with data unacknowledged: `TCP_USER_TIMEOUT` or retries ran out.
    RetransmitTimeout,
    /// `ETIMEDOUT` while replies were waiting for a peer that stopped reading (zero window):
    /// the peer may be alive but it is not consuming.
    Stalled,
    /// `EHOSTUNREACH` / `ENETUNREACH`.
    Unreachable,
    /// Nothing received for `session.idle_timeout`.
    IdleTimeout,
    /// A malformed or oversized request.
    ProtocolError,
    /// Pending output at `session.max_output_bytes` (its requests paused) while the client
    /// kept sending: more than `max_request_bytes` + 256 KiB of requests wait
    /// (`server/session_io.rs`).
    SlowConsumer,
    /// Too many wrong passwords (`auth::MAX_FAILURES`) on one session.
    AuthFailed,
    /// Not authenticated within `server.auth_timeout` of connecting (with a password set).
    AuthTimeout,
    /// Sent `AUTH` while its address was locked out after failed passwords
    /// (`server.auth_failures_before_backoff`); refused without comparing.
    AuthThrottled,
    /// Its signed token's `exp` (plus `token.expiry_grace`) passed without a fresh `AUTH`.
    AuthExpired,
    /// Its identity already had `session.max_sessions_per_identity` sessions (the newest is
    /// refused).
    IdentityLimit,
    /// An operator's `CLIENT KILL`.
    Killed,
    /// Another session took its name.
    Replaced,
    /// `[fleet]` with unique names: it took a name that a session on another node keeps (a
    /// live holder under `session.takeover = "stale"`, or one that proved another identity).
    /// Its node had answered `+OK` before Redis could tell (docs/fleet.md).
    NameRefused,
    /// `fleet.fence`: the node lost its fleet lease, so the fleet already counts its sessions
    /// as gone (docs/fleet.md).
    Fenced,
    /// The daemon is stopping.
    Shutdown,
    /// A TLS handshake failed or did not finish within `tls.handshake_timeout` (plaintext on a
    /// TLS port included); the reap line says why.
    TlsHandshake,
    /// A TLS protocol error after the handshake (a bad record, a fatal alert).
    TlsError,
    /// Any other socket error.
    Error,
}

impl ReapReason {
    /// Every reason, in the order statistics list them.
    pub const ALL: [ReapReason; 23] = [
        ReapReason::Closed,
        ReapReason::Quit,
        ReapReason::Reset,
        ReapReason::KeepaliveTimeout,
        ReapReason::RetransmitTimeout,
        ReapReason::Stalled,
        ReapReason::Unreachable,
        ReapReason::IdleTimeout,
        ReapReason::ProtocolError,
        ReapReason::SlowConsumer,
        ReapReason::AuthFailed,
        ReapReason::AuthTimeout,
        ReapReason::AuthThrottled,
        ReapReason::AuthExpired,
        ReapReason::IdentityLimit,
        ReapReason::Killed,
        ReapReason::Replaced,
        ReapReason::NameRefused,
        ReapReason::Fenced,
        ReapReason::Shutdown,
        ReapReason::TlsHandshake,
        ReapReason::TlsError,
        ReapReason::Error,
    ];

    /// The name used in logs, `INFO` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ReapReason::Closed => "closed",
            ReapReason::Quit => "quit",
            ReapReason::Reset => "reset",
            ReapReason::KeepaliveTimeout => "keepalive-timeout",
            ReapReason::RetransmitTimeout => "retransmit-timeout",
            ReapReason::Stalled => "stalled",
            ReapReason::Unreachable => "unreachable",
            ReapReason::IdleTimeout => "idle-timeout",
            ReapReason::ProtocolError => "protocol-error",
            ReapReason::SlowConsumer => "slow-consumer",
            ReapReason::AuthFailed => "auth-failed",
            ReapReason::AuthTimeout => "auth-timeout",
            ReapReason::AuthThrottled => "auth-throttled",
            ReapReason::AuthExpired => "auth-expired",
            ReapReason::IdentityLimit => "identity-limit",
            ReapReason::Killed => "killed",
            ReapReason::Replaced => "replaced",
            ReapReason::NameRefused => "name-refused",
            ReapReason::Fenced => "fenced",
            ReapReason::Shutdown => "shutdown",
            ReapReason::TlsHandshake => "tls-handshake",
            ReapReason::TlsError => "tls-error",
            ReapReason::Error => "error",
        }
    }

    /// Index into per-reason tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Reasons where the peer went silent and vigild had to detect it: their detection
    /// latency (last data received → reap) is what vigild exists to keep small.
    pub const fn is_detection(self) -> bool {
        matches!(
            self,
            ReapReason::KeepaliveTimeout
                | ReapReason::RetransmitTimeout
                | ReapReason::Stalled
                | ReapReason::Unreachable
                | ReapReason::IdleTimeout
                | ReapReason::Reset
        )
    }

    /// The log level of the reap line: ordinary endings are debug, aborts info, and
    /// everything that means a peer vanished or misbehaved is a warning.
    pub const fn log_level(self) -> Level {
        match self {
            ReapReason::Closed | ReapReason::Quit | ReapReason::Shutdown => Level::Debug,
            ReapReason::Reset
            | ReapReason::Killed
            | ReapReason::Replaced
            | ReapReason::NameRefused
            | ReapReason::Fenced
            | ReapReason::AuthExpired
            | ReapReason::IdentityLimit => Level::Info,
            ReapReason::KeepaliveTimeout
            | ReapReason::RetransmitTimeout
            | ReapReason::Stalled
            | ReapReason::Unreachable
            | ReapReason::IdleTimeout
            | ReapReason::ProtocolError
            | ReapReason::SlowConsumer
            | ReapReason::AuthFailed
            | ReapReason::AuthTimeout
            | ReapReason::AuthThrottled
            | ReapReason::TlsHandshake
            | ReapReason::TlsError
            | ReapReason::Error => Level::Warn,
        }
    }
}

impl fmt::Display for ReapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an I/O error means for the socket it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// Interrupted by a signal: try the same call again.
    Retry,
    /// Nothing more to do until the next readiness event.
    WouldBlock,
    /// The process or system ran out of a resource (descriptors, buffers, memory); the
    /// socket itself may be fine. Accept backs off on this.
    Exhausted(i32),
    /// The connection is unusable; the errno (0 when the error carried none).
    Fatal(i32),
}

/// The one place that interprets `io::Error` for session sockets.
pub fn classify(err: &io::Error) -> IoClass {
    match err.kind() {
        // A signal landed mid-call; nothing is lost by repeating it.
        io::ErrorKind::Interrupted => IoClass::Retry,
        // Readiness was a hint and is used up.
        io::ErrorKind::WouldBlock => IoClass::WouldBlock,
        _ => match err.raw_os_error().unwrap_or(0) {
            e @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                IoClass::Exhausted(e)
            }
            e => IoClass::Fatal(e),
        },
    }
}

/// The reason for a session whose socket failed with `errno`.
///
/// `info` is the `TCP_INFO` snapshot taken before close; `output_pending` says whether replies
/// were still queued in user space (the kernel's send buffer was full).
///
/// An `ETIMEDOUT` comes from one of three timers, told apart by what survives in `TCP_INFO`
/// after the kernel gave up (measured on Linux 6.18; `tcpi_unacked` and `tcpi_backoff` already
/// read 0 then):
/// - retransmission (data unacknowledged): `tcpi_retransmits > 0`;
/// - zero-window probing (the peer stopped reading, replies waited for its window):
///   `tcpi_retransmits == 0` and output was waiting, in user space or as `tcpi_notsent_bytes`
///   in the kernel. The peer may well be alive (it answered the probes with a zero window);
///   `TCP_USER_TIMEOUT` ended it. Keepalive never runs while output is queued, so this cannot
///   be a keepalive death;
/// - keepalive (idle, probes unanswered): nothing retransmitted and nothing waiting.
pub fn reason_for_errno(errno: i32, info: Option<&TcpInfo>, output_pending: bool) -> ReapReason {
    match errno {
        libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => ReapReason::Reset,
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN => {
            ReapReason::Unreachable
        }
        libc::ETIMEDOUT => {
            let retransmitted = info.is_some_and(|i| i.retransmits > 0 || i.unacked > 0);
            let waiting = output_pending || info.is_some_and(|i| i.notsent_bytes > 0);
            if retransmitted {
                ReapReason::RetransmitTimeout
            } else if waiting {
                ReapReason::Stalled
            } else {
                ReapReason::KeepaliveTimeout
            }
        }
        _ => ReapReason::Error,
    }
}

/// A short symbolic name for the errnos a reap line is likely to show.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        0 => "-",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNRESET => "ECONNRESET",
        libc::EPIPE => "EPIPE",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENOTCONN => "ENOTCONN",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EBADF => "EBADF",
        _ => "errno",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_match_all() {
        let mut names: Vec<_> = ReapReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ReapReason::ALL.len());
        for (i, r) in ReapReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn classify_splits_retry_wouldblock_fatal() {
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::Interrupted)),
            IoClass::Retry
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::WouldBlock)),
            IoClass::WouldBlock
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(libc::ETIMEDOUT)),
            IoClass::Fatal(libc::ETIMEDOUT)
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(libc::EMFILE)),
            IoClass::Exhausted(libc::EMFILE)
        );
    }

    #[test]
    fn timeouts_are_told_apart_by_tcp_info() {
        let keepalive = TcpInfo {
            probes: 3,
            ..TcpInfo::default()
        };
        let retrans = TcpInfo {
            retransmits: 4,
            ..TcpInfo::default()
        };
        assert_eq!(
            reason_for_errno(libc::ETIMEDOUT, Some(&keepalive), false),
            ReapReason::KeepaliveTimeout
        );
        assert_eq!(
            reason_for_errno(libc::ETIMEDOUT, Some(&retrans), false),
            ReapReason::RetransmitTimeout
        );
        assert_eq!(
            reason_for_errno(libc::ETIMEDOUT, Some(&keepalive), true),
            ReapReason::Stalled
        );
        assert_eq!(
            reason_for_errno(libc::ETIMEDOUT, None, false),
            ReapReason::KeepaliveTimeout
        );
    }

    #[test]
    fn zero_window_death_with_everything_in_the_kernel_is_stalled() {
        // What TCP_INFO read after a peer that never reads was timed out with the replies
        // all in the kernel's send queue (Linux 6.18): no retransmits, no probes counted,
        // the window shut and the unsent bytes still reported.
        let zero_window = TcpInfo {
            state: 7,
            total_retrans: 1,
            notsent_bytes: 2_872_000,
            snd_wnd: Some(0),
            ..TcpInfo::default()
        };
        assert_eq!(
            reason_for_errno(libc::ETIMEDOUT, Some(&zero_window), false),
            ReapReason::Stalled
        );
        // A keepalive death on the same kernel: probes counted, nothing waiting.
        let keepalive = TcpInfo {
            state: 7,
            probes: 3,
            snd_wnd: Some(65_536),
            ..TcpInfo::default()
        };
        assert_eq!(
            reason_for_errno(libc::ETIMEDOUT, Some(&keepalive), false),
            ReapReason::KeepaliveTimeout
        );
    }

    #[test]
    fn other_errnos() {
        assert_eq!(
            reason_for_errno(libc::ECONNRESET, None, false),
            ReapReason::Reset
        );
        assert_eq!(reason_for_errno(libc::EPIPE, None, true), ReapReason::Reset);
        assert_eq!(
            reason_for_errno(libc::EHOSTUNREACH, None, false),
            ReapReason::Unreachable
        );
        assert_eq!(
            reason_for_errno(libc::EINVAL, None, false),
            ReapReason::Error
        );
        assert_eq!(errno_name(libc::ETIMEDOUT), "ETIMEDOUT");
        assert_eq!(errno_name(0), "-");
    }

    /// vigild(8) lists every reason, and no other, each with the level of its reap line:
    /// a `.TP` / `.B name` entry whose text opens with `(debug)`, `(info)` or `(warning)`.
    #[test]
    fn man_page_lists_every_reason_at_its_level() {
        let page = include_str!("../../docs/vigild.8").replace("\\-", "-");
        let section = page
            .split("\n.SH ")
            .find(|s| s.starts_with("REAP REASONS"))
            .expect("docs/vigild.8 has a REAP REASONS section");
        let lines: Vec<&str> = section.lines().collect();
        let mut listed = Vec::new();
        for w in lines.windows(3) {
            if w[0] == ".TP" {
                let name = w[1]
                    .strip_prefix(".B ")
                    .expect("a reason entry is .TP, .B name");
                let level = w[2].split(')').next().unwrap_or("").trim_start_matches('(');
                listed.push((name.to_string(), level.to_string()));
            }
        }
        let expected: Vec<(String, String)> = ReapReason::ALL
            .iter()
            .map(|r| {
                let level = match r.log_level() {
                    Level::Warn => "warning".to_string(),
                    other => other.as_str().to_ascii_lowercase(),
                };
                (r.name().to_string(), level)
            })
            .collect();
        assert_eq!(
            listed, expected,
            "docs/vigild.8, REAP REASONS: (name, level) per entry, in ReapReason::ALL's order"
        );
    }
}

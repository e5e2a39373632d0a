//! Optional client authentication: `[server] password` (or `password_file`), required through
//! `AUTH` before any other command, as redis-server's `requirepass` does.
//!
//! Rules, following Redis so that every client library's `password` option works:
//! - Before a session authenticates, every command but `AUTH`, `HELLO` and `QUIT` is answered
//!   `-NOAUTH Authentication required.`; `HELLO` must carry `AUTH <user> <pass>`.
//! - `AUTH <pass>` or `AUTH default <pass>` (the only user is `default`); a wrong one gets
//!   `-WRONGPASS ...`. After [`MAX_FAILURES`] wrong passwords on one session the session is
//!   closed (reason `auth-failed`), so one connection cannot pipeline thousands of guesses.
//! - Passwords are compared in constant time (no early exit on the first differing byte).
//! - Failures are also limited per source address (`crate::auth_throttle`): the loop gives each
//!   session a [`GuessBudget`] before its requests run, and an `AUTH` past it is refused
//!   without comparing (`-ERR too many failed AUTH attempts ...`, session closed with
//!   `auth-throttled`). Unauthenticated sessions are also reaped after `server.auth_timeout`
//!   (the loop's deadline heap, `src/server/auth_guard.rs`).
//! - Before authenticating, a request may be at most [`MAX_UNAUTHENTICATED_REQUEST`] bytes.
//! - Sessions open when a password is turned on by a reload keep the access they had, as in
//!   Redis; turning the password off lets every session in at once.
//!
//! [`gate`] decides before a command runs; it only reads the session's flags and the request.
//! Counting failures in statistics and logging them (rate-limited) is the event loop's part.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub use crate::auth_throttle::GuessBudget;
use crate::command::{Args, Step};
use crate::reap::ReapReason;
use crate::resp;
use crate::session::Session;
use crate::small_file::{self, ReadError};

/// Wrong passwords one session may send before it is closed.
pub const MAX_FAILURES: u8 = 3;
/// Largest request a session may send before it authenticates (when a password is set): room
/// for `HELLO 2 AUTH default <password>` with the longest password, and little else, so an
/// unauthenticated connection can make vigild buffer 4 KiB, not `max_request_bytes`.
/// (redis-server limits unauthenticated requests too.)
pub const MAX_UNAUTHENTICATED_REQUEST: usize = 4096;
/// Longest accepted password. It must fit in one request; longer is a config mistake.
pub const MAX_PASSWORD_BYTES: usize = 1024;

const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
     client and select the RESP protocol version at the same time";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// The reply to an `AUTH` from a locked-out address, before `retry in Ns`.
pub const THROTTLED: &str = "ERR too many failed AUTH attempts from this address";
const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the \
     default user. Are you sure your configuration is correct?";

/// Where the password came from: shown by `--check-config` instead of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `server.password` in the config file.
    Inline,
    /// `server.password_file`, as resolved (relative paths against the config's directory).
    File(PathBuf),
}

/// The client password. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    secret: Box<[u8]>,
    pub source: PasswordSource,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Password(<{} bytes>, {:?})",
            self.secret.len(),
            self.source
        )
    }
}

impl Password {
    pub fn new(secret: impl Into<Box<[u8]>>, source: PasswordSource) -> Password {
        Password {
            secret: secret.into(),
            source,
        }
    }

    /// Whether two passwords are the same secret, wherever they came from.
    pub fn same_secret(&self, other: &Password) -> bool {
        constant_time_eq(&self.secret, &other.secret)
    }

    /// Whether `given` is the password, in time that depends on the lengths only.
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(given, &self.secret)
    }
}

/// Compares two byte strings without an early exit: every byte position up to the longer length
/// is visited and differences are OR-ed together, so timing reveals at most the lengths, never
/// where the first differing byte is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the fold back into a short-circuiting comparison.
    std::hint::black_box(diff) == 0
}

/// Reads `server.password_file`: a regular file (opened non-blocking and checked with
/// `fstat`, so a FIFO or device can neither block nor flood the loader), at most
/// [`MAX_PASSWORD_BYTES`] after one trailing line ending is dropped, not empty. The error text
/// follows the key's name in the config error.
pub fn read_password_file(path: &Path) -> Result<Box<[u8]>, String> {
    let shown = path.display();
    // Two bytes of slack for a line ending that is not part of the password.
    let cap = MAX_PASSWORD_BYTES as u64 + 2;
    let mut secret = small_file::read_regular(path, cap).map_err(|e| match e {
        ReadError::Io(e) => format!("cannot read {shown}: {e}"),
        ReadError::NotRegular(_) => {
            format!("{shown} {e}; point it at a file that holds the password")
        }
        ReadError::TooLarge => too_long(path),
        ReadError::Changed(_) => format!("{shown} {e}"),
    })?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(format!(
            "{shown} is empty; write the password into it, or remove server.password_file"
        ));
    }
    if secret.len() > MAX_PASSWORD_BYTES {
        return Err(too_long(path));
    }
    Ok(secret.into_boxed_slice())
}

fn too_long(path: &Path) -> String {
    format!(
        "{} holds more than {MAX_PASSWORD_BYTES} bytes; a password must fit in one AUTH request",
        path.display()
    )
}

/// A warning when the password file's mode lets other users read it or its group change it
/// (anything beyond 0640).
pub fn file_mode_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o027 != 0).then(|| {
        format!(
            "server.password_file {} has mode {:04o}: other users can read it; chmod 600 it",
            path.display(),
            mode & 0o7777
        )
    })
}

/// The `max_request_bytes` that applies to this session's next request.
pub fn request_limit(session: &Session, password: Option<&Password>, configured: usize) -> usize {
    if password.is_some() && !session.authenticated {
        configured.min(MAX_UNAUTHENTICATED_REQUEST)
    } else {
        configured
    }
}

/// The error reply for a request over [`MAX_UNAUTHENTICATED_REQUEST`] before `AUTH`.
pub fn too_large_before_auth(limit: usize) -> String {
    format!("ERR Protocol error: unauthenticated request exceeds {limit} bytes; send AUTH first")
}

/// What the loop does with a request, decided before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The session may run this command.
    Run,
    /// Answered here (the reply is in `out`); `Step` says whether the session goes on.
    Answered(Step),
}

/// Decides whether a request may run, and answers `AUTH` (and `HELLO ... AUTH` before
/// authentication). Failed passwords are counted in `session.auth_failures`.
pub fn gate(
    args: Args<'_>,
    session: &mut Session,
    password: Option<&Password>,
    out: &mut Vec<u8>,
) -> Gate {
    if args.is(0, "AUTH") {
        session.commands += 1;
        return Gate::Answered(auth(args, session, password, out));
    }
    let Some(password) = password else {
        return Gate::Run;
    };
    if session.authenticated || args.is(0, "QUIT") {
        return Gate::Run;
    }
    if args.is(0, "HELLO") {
        // A protocol version we do not speak is refused first, as Redis does.
        if args.len() >= 2 && args.get(1) != b"2" && args.get(1) != b"3" {
            return Gate::Run;
        }
        if args.is(2, "AUTH") && args.len() >= 5 {
            let checked = check(args.get(3), args.get(4), session, password);
            if checked == Checked::Right {
                return Gate::Run;
            }
            session.commands += 1;
            return Gate::Answered(refused(checked, session, out));
        }
        session.commands += 1;
        resp::write_error(out, NOAUTH_HELLO);
        return Gate::Answered(Step::Continue);
    }
    session.commands += 1;
    resp::write_error(out, NOAUTH);
    Gate::Answered(Step::Continue)
}

fn auth(
    args: Args<'_>,
    session: &mut Session,
    password: Option<&Password>,
    out: &mut Vec<u8>,
) -> Step {
    let (user, given) = match args.len() {
        2 => (&b"default"[..], args.get(1)),
        3 => (args.get(1), args.get(2)),
        1 => {
            resp::write_error(out, "ERR wrong number of arguments for 'auth' command");
            return Step::Continue;
        }
        _ => {
            resp::write_error(out, "ERR syntax error");
            return Step::Continue;
        }
    };
    let Some(password) = password else {
        resp::write_error(out, NO_PASSWORD);
        return Step::Continue;
    };
    match check(user, given, session, password) {
        Checked::Right => {
            resp::write_simple(out, "OK");
            Step::Continue
        }
        checked => refused(checked, session, out),
    }
}

/// The outcome of one `AUTH` attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    Right,
    Wrong,
    /// Not compared: the address is locked out for this many more seconds.
    Throttled(u16),
}

/// Checks a user and password, if the session's budget allows a comparison; on success the
/// session is authenticated.
fn check(user: &[u8], given: &[u8], session: &mut Session, password: &Password) -> Checked {
    if let Err(retry_secs) = session.guess_budget.take() {
        return Checked::Throttled(retry_secs);
    }
    // Both are always evaluated: no shortcut that would time the user name separately.
    let ok = password.matches(given) & user.eq_ignore_ascii_case(b"default");
    if ok {
        session.authenticated = true;
        Checked::Right
    } else {
        Checked::Wrong
    }
}

/// Answers an attempt that did not authenticate.
fn refused(checked: Checked, session: &mut Session, out: &mut Vec<u8>) -> Step {
    match checked {
        Checked::Throttled(secs) => {
            resp::write_error(out, &format!("{THROTTLED}; retry in {secs}s"));
            Step::Close(ReapReason::AuthThrottled)
        }
        _ => wrong_password(session, out),
    }
}

fn wrong_password(session: &mut Session, out: &mut Vec<u8>) -> Step {
    session.auth_failures = session.auth_failures.saturating_add(1);
    resp::write_error(out, WRONGPASS);
    if session.auth_failures >= MAX_FAILURES {
        Step::Close(ReapReason::AuthFailed)
    } else {
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn constant_time_eq_is_plain_equality() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b""),
            (b"", b"a"),
            (b"secret", b"secret"),
            (b"secret", b"secreT"),
            (b"secret", b"secret\0"),
            (b"secre", b"secret"),
            (b"\xff\x00", b"\xff\x00"),
        ];
        for (a, b) in cases {
            assert_eq!(constant_time_eq(a, b), a == b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let p = Password::new(&b"hunter2"[..], PasswordSource::Inline);
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"), "{shown}");
    }

    fn session() -> (std::net::TcpStream, Session) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let s = mio::net::TcpStream::from_std(s);
        (c, Session::new(1, s, peer, Instant::now()))
    }

    fn run(s: &mut Session, pw: Option<&Password>, words: &[&[u8]]) -> (Gate, String) {
        let (buf, ranges) = crate::command::test_words(words);
        let mut out = Vec::new();
        let g = gate(Args::new(&buf, &ranges), s, pw, &mut out);
        (g, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn without_a_password_everything_runs_and_auth_says_why_not() {
        let (_c, mut s) = session();
        assert_eq!(run(&mut s, None, &[b"PING"]).0, Gate::Run);
        let (g, reply) = run(&mut s, None, &[b"AUTH", b"x"]);
        assert_eq!(g, Gate::Answered(Step::Continue));
        assert!(
            reply.starts_with("-ERR AUTH <password> called without"),
            "{reply}"
        );
        assert_eq!(s.auth_failures, 0);
    }

    #[test]
    fn noauth_until_the_right_password() {
        let pw = Password::new(&b"s3cret"[..], PasswordSource::Inline);
        let pw = Some(&pw);
        let (_c, mut s) = session();
        let answered = Gate::Answered(Step::Continue);
        let noauth = "-NOAUTH Authentication required.\r\n".to_string();
        assert_eq!(
            run(&mut s, pw, &[b"PING"]),
            (answered.clone(), noauth.clone())
        );
        assert_eq!(
            run(&mut s, pw, &[b"CLIENT", b"ID"]),
            (answered.clone(), noauth)
        );
        assert_eq!(run(&mut s, pw, &[b"QUIT"]).0, Gate::Run);
        // HELLO: an unknown version is refused by HELLO itself; without AUTH it is NOAUTH.
        assert_eq!(run(&mut s, pw, &[b"HELLO", b"4"]).0, Gate::Run);
        let (g, reply) = run(&mut s, pw, &[b"HELLO"]);
        assert_eq!(g, answered);
        assert!(reply.starts_with("-NOAUTH HELLO must be called"), "{reply}");
        let (_, reply) = run(&mut s, pw, &[b"AUTH"]);
        assert!(reply.contains("wrong number of arguments"), "{reply}");
        let (_, reply) = run(&mut s, pw, &[b"AUTH", b"a", b"b", b"c"]);
        assert_eq!(reply, "-ERR syntax error\r\n");
        assert_eq!(s.auth_failures, 0, "malformed AUTH is not a guess");
        let (g, reply) = run(&mut s, pw, &[b"AUTH", b"s3cre"]);
        assert_eq!(g, answered);
        assert!(reply.starts_with("-WRONGPASS "), "{reply}");
        let (_, reply) = run(&mut s, pw, &[b"AUTH", b"admin", b"s3cret"]);
        assert!(reply.starts_with("-WRONGPASS "), "{reply}");
        assert_eq!(s.auth_failures, 2);
        assert!(!s.authenticated);
        let ok = run(&mut s, pw, &[b"auth", b"default", b"s3cret"]);
        assert_eq!(ok, (answered, "+OK\r\n".to_string()));
        assert!(s.authenticated);
        assert_eq!(run(&mut s, pw, &[b"PING"]).0, Gate::Run);
        // Answered here: 8; QUIT, HELLO 3 and the last PING are counted when they run.
        assert_eq!(s.commands, 8);
    }

    #[test]
    fn hello_with_auth_authenticates() {
        let pw = Password::new(&b"pw"[..], PasswordSource::Inline);
        let (_c, mut s) = session();
        let (g, reply) = run(
            &mut s,
            Some(&pw),
            &[b"HELLO", b"2", b"AUTH", b"default", b"no"],
        );
        assert_eq!(g, Gate::Answered(Step::Continue));
        assert!(reply.starts_with("-WRONGPASS"), "{reply}");
        let g = run(
            &mut s,
            Some(&pw),
            &[b"HELLO", b"2", b"AUTH", b"default", b"pw"],
        )
        .0;
        assert_eq!(g, Gate::Run);
        assert!(s.authenticated);
    }

    #[test]
    fn repeated_failures_close_the_session() {
        let pw = Password::new(&b"pw"[..], PasswordSource::Inline);
        let (_c, mut s) = session();
        for _ in 1..MAX_FAILURES {
            let g = run(&mut s, Some(&pw), &[b"AUTH", b"guess"]).0;
            assert_eq!(g, Gate::Answered(Step::Continue));
        }
        let (g, reply) = run(&mut s, Some(&pw), &[b"AUTH", b"guess"]);
        assert_eq!(g, Gate::Answered(Step::Close(ReapReason::AuthFailed)));
        assert!(reply.starts_with("-WRONGPASS"), "{reply}");
    }

    #[test]
    fn past_the_budget_auth_is_refused_without_comparing_and_closes() {
        let pw = Password::new(&b"pw"[..], PasswordSource::Inline);
        let (_c, mut s) = session();
        s.guess_budget = GuessBudget::Left {
            left: 1,
            then_secs: 4,
        };
        let (g, reply) = run(&mut s, Some(&pw), &[b"AUTH", b"guess"]);
        assert_eq!(g, Gate::Answered(Step::Continue));
        assert!(reply.starts_with("-WRONGPASS"), "{reply}");
        // The right password, but nothing left in the budget: not compared.
        let (g, reply) = run(&mut s, Some(&pw), &[b"AUTH", b"pw"]);
        assert_eq!(g, Gate::Answered(Step::Close(ReapReason::AuthThrottled)));
        assert_eq!(
            reply,
            "-ERR too many failed AUTH attempts from this address; retry in 4s\r\n"
        );
        assert!(!s.authenticated);
        assert_eq!(s.auth_failures, 1, "a refused attempt is not a failure");
        s.guess_budget = GuessBudget::Throttled { retry_secs: 9 };
        let (g, reply) = run(
            &mut s,
            Some(&pw),
            &[b"HELLO", b"3", b"AUTH", b"default", b"pw"],
        );
        assert_eq!(g, Gate::Answered(Step::Close(ReapReason::AuthThrottled)));
        assert!(reply.ends_with("retry in 9s\r\n"), "{reply}");
        assert!(!s.authenticated);
    }

    #[test]
    fn password_files() {
        let dir = std::env::temp_dir().join(format!("vigild-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, body: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        assert_eq!(&*read_password_file(&file("a", b"pw\n")).unwrap(), b"pw");
        assert_eq!(&*read_password_file(&file("b", b"pw\r\n")).unwrap(), b"pw");
        assert_eq!(
            &*read_password_file(&file("c", b"p w\n\n")).unwrap(),
            b"p w\n"
        );
        let max = vec![b'x'; MAX_PASSWORD_BYTES];
        assert_eq!(
            read_password_file(&file("d", &max)).unwrap().len(),
            max.len()
        );
        let long = vec![b'x'; MAX_PASSWORD_BYTES + 1];
        let err = read_password_file(&file("e", &long)).unwrap_err();
        assert!(err.contains("more than 1024 bytes"), "{err}");
        let err = read_password_file(&file("f", b"\n")).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        let err = read_password_file(&dir).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_password_file(&dir.join("missing")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let err = read_password_file(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        assert_eq!(file_mode_warning(&file("g", b"pw")), None);
        let open = file("h", b"pw");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = file_mode_warning(&open).expect("a warning for 0644");
        assert!(w.contains("mode 0644") && w.contains("chmod 600"), "{w}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

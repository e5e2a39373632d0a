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
//! - Failures are also limited per source address (`crate::session::auth_throttle`): the loop
//!   gives each session a [`GuessBudget`](crate::session::auth_throttle::GuessBudget) before
//!   its requests run, and an `AUTH` past it is refused without comparing (`-ERR too many
//!   failed AUTH attempts ...`, session closed with
//!   `auth-throttled`). Unauthenticated sessions are also reaped after `server.auth_timeout`
//!   (the loop's deadline heap, `src/server/auth_guard.rs`).
//! - Before authenticating, a request may be at most [`MAX_UNAUTHENTICATED_REQUEST`] bytes.
//! - Sessions open when a password is turned on by a reload keep the access they had, as in
//!   Redis; turning the password off lets every session in at once.
//!
//! [`gate`] decides before a command runs; it only reads the session's flags and the request.
//! Counting failures in statistics and logging them (rate-limited) is the event loop's part.

use crate::config::token::TokenConfig;
use crate::config::Password;
use crate::protocol::args::Args;
use crate::protocol::resp;
use crate::protocol::step::Step;
use crate::protocol::token_check::{self as token, TokenCounts};
use crate::session::identity::{self, Identity, IdentitySource};
use crate::session::reap::ReapReason;
use crate::session::Session;

/// What a session may authenticate with: the shared password, signed tokens, both, or
/// neither (then every session may run commands at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth<'a> {
    pub password: Option<&'a Password>,
    /// `Some` when tokens are on (a `[token]` key is configured).
    pub tokens: Option<&'a TokenConfig>,
}

impl Auth<'_> {
    /// Whether sessions must authenticate before running commands.
    pub fn required(&self) -> bool {
        self.password.is_some() || self.tokens.is_some()
    }
}

/// Wrong passwords one session may send before it is closed.
pub const MAX_FAILURES: u8 = 3;
/// Largest request a session may send before it authenticates (when a password is set): room
/// for `HELLO 2 AUTH default <password>` with the longest password, and little else, so an
/// unauthenticated connection can make vigild buffer 4 KiB, not `max_request_bytes`.
/// (redis-server limits unauthenticated requests too.)
pub const MAX_UNAUTHENTICATED_REQUEST: usize = 4096;

const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
     client and select the RESP protocol version at the same time";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// The reply to an `AUTH` from a locked-out address, before `retry in Ns`.
pub const THROTTLED: &str = "ERR too many failed AUTH attempts from this address";
const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the \
     default user. Are you sure your configuration is correct?";

/// The `max_request_bytes` that applies to this session's next request.
pub fn request_limit(session: &Session, auth: Auth<'_>, configured: usize) -> usize {
    if auth.required() && !session.authenticated {
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
    credentials: Auth<'_>,
    counts: &mut TokenCounts,
    out: &mut Vec<u8>,
) -> Gate {
    if args.is(0, "AUTH") {
        session.commands += 1;
        return Gate::Answered(auth(args, session, credentials, counts, out));
    }
    if !credentials.required() || session.authenticated || args.is(0, "QUIT") {
        return Gate::Run;
    }
    if args.is(0, "HELLO") {
        // A protocol version we do not speak is refused first, as Redis does.
        if args.len() >= 2 && args.get(1) != b"2" && args.get(1) != b"3" {
            return Gate::Run;
        }
        if args.is(2, "AUTH") && args.len() >= 5 {
            let (user, secret) = (args.get(3), args.get(4));
            let checked = match (credentials.tokens, credentials.password) {
                (Some(tokens), password) if is_token(user, secret, password) => {
                    // HELLO answers for itself; the loop binds the identity after it.
                    check_token(user, secret, session, tokens, counts, false)
                }
                (_, Some(password)) => check(user, secret, session, password),
                (_, None) => Checked::Wrong,
            };
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
    credentials: Auth<'_>,
    counts: &mut TokenCounts,
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
    if let Some(tokens) = credentials.tokens {
        if is_token(user, given, credentials.password) {
            // The loop answers `+OK` once it has bound the identity (`Step::BindIdentity`).
            return match check_token(user, given, session, tokens, counts, true) {
                Checked::Right => Step::Continue,
                Checked::Refreshed => {
                    resp::write_simple(out, "OK");
                    Step::Continue
                }
                Checked::OtherIdentity => {
                    resp::write_error(out, OTHER_IDENTITY);
                    Step::Continue
                }
                checked => refused(checked, session, out),
            };
        }
    }
    let Some(password) = credentials.password else {
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

const OTHER_IDENTITY: &str = "ERR this session already has another identity; a token for a \
     different identity needs a new connection";

/// Whether `AUTH <user> <secret>` is a token login: tokens are on, and either there is no
/// password, the user is not `default`, or the secret has a JWT's shape.
fn is_token(user: &[u8], secret: &[u8], password: Option<&Password>) -> bool {
    password.is_none() || !user.eq_ignore_ascii_case(b"default") || token::looks_like_jwt(secret)
}

/// Checks a token for the identity `name`, if the session's budget allows it. A session
/// without an identity gets it as pending (the loop binds it); one that has this identity
/// already has it refreshed (a later `exp`); one with another identity is refused.
fn check_token(
    name: &[u8],
    secret: &[u8],
    session: &mut Session,
    tokens: &TokenConfig,
    counts: &mut TokenCounts,
    reply_ok: bool,
) -> Checked {
    if let Err(retry_secs) = session.guess_budget.take() {
        return Checked::Throttled(retry_secs);
    }
    let verified = match token::verify(tokens, name, secret) {
        Ok(v) => v,
        Err(why) => {
            counts.refused(why);
            return Checked::Token(why);
        }
    };
    if let Some(held) = session.identity() {
        if held.name != verified.sub {
            return Checked::OtherIdentity;
        }
        counts.refreshed += 1;
        if let Some(e) = session.extras.as_deref_mut() {
            if let Some(identity) = e.identity.as_mut() {
                identity.expires = Some(verified.exp);
            }
        }
        session.authenticated = true;
        return Checked::Refreshed;
    }
    counts.accepted += 1;
    session.authenticated = true;
    session.extras_mut().pending_identity = Some(Box::new(identity::Pending {
        identity: Identity {
            name: verified.sub,
            source: IdentitySource::Token,
            expires: Some(verified.exp),
        },
        reply_ok,
    }));
    Checked::Right
}

/// The outcome of one `AUTH` attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    Right,
    Wrong,
    /// A token was refused.
    Token(token::Refusal),
    /// A fresh token for the identity the session has.
    Refreshed,
    /// A valid token for another identity than the session's.
    OtherIdentity,
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
        Checked::Token(why) => failed(session, &why.reply(), out),
        Checked::OtherIdentity => {
            resp::write_error(out, OTHER_IDENTITY);
            Step::Continue
        }
        _ => wrong_password(session, out),
    }
}

fn wrong_password(session: &mut Session, out: &mut Vec<u8>) -> Step {
    failed(session, WRONGPASS, out)
}

/// A failed attempt (password or token): counted on the session, closed at [`MAX_FAILURES`].
fn failed(session: &mut Session, line: &str, out: &mut Vec<u8>) -> Step {
    session.auth_failures = session.auth_failures.saturating_add(1);
    resp::write_error(out, line);
    if session.auth_failures >= MAX_FAILURES {
        Step::Close(ReapReason::AuthFailed)
    } else {
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PasswordSource;
    use crate::session::auth_throttle::GuessBudget;
    use std::time::Instant;

    fn session() -> (std::net::TcpStream, Session) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let s = mio::net::TcpStream::from_std(s);
        (c, Session::new(1, s, peer, Instant::now()))
    }

    fn run(s: &mut Session, pw: Option<&Password>, words: &[&[u8]]) -> (Gate, String) {
        let (buf, ranges) = crate::protocol::args::test_words(words);
        let mut out = Vec::new();
        let auth = Auth {
            password: pw,
            tokens: None,
        };
        let g = gate(
            Args::new(&buf, &ranges),
            s,
            auth,
            &mut TokenCounts::default(),
            &mut out,
        );
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
}

//! The event loop's part of authentication: failed passwords are counted in the statistics
//! (`auth.failed=N`) and logged as warnings, at most one line a second with the count it
//! stands for, so a password-guessing flood cannot fill the log. Deciding who may run what is
//! `crate::auth`'s job.
//!
//! Also here, and all of it inert without a password (no deadline pushed, no table touched):
//! - the `server.auth_timeout` deadlines: a min-heap of (connected + timeout, token, id), like
//!   the idle heap. A deadline never moves (it counts from the accept), so an entry is either
//!   due or stale (the session authenticated, or ended and its token was reused); at most
//!   [`REAPS_PER_TURN`] are reaped per turn, the rest come due on the next, zero-timeout turn;
//! - the per-address table of failures (`crate::session::auth_throttle`): each session's
//!   [`GuessBudget`](crate::session::auth_throttle::GuessBudget) is refreshed from it before its requests run,
//!   and its failures are recorded in it after.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::Level;
use mio::Token;

use super::deadlines::Deadlines;
use super::Server;
use crate::config::Config;
use crate::session::auth_throttle::{self, Lockout, Policy, Throttle};
use crate::session::reap::Cause;
use crate::session::reap::ReapReason;
use crate::session::{Session, SessionTable};
use crate::telemetry::log_throttle::{budgeted, LineKind, LogBudget, RateLimited};
use crate::telemetry::stats::Stats;

/// Unauthenticated sessions reaped per turn at most (like the deferred dead peers).
const REAPS_PER_TURN: usize = 64;

/// The loop's authentication state: deadlines, the failure table, and the rate limits of the
/// warnings about them.
#[derive(Debug, Default)]
pub(super) struct AuthGuard {
    deadlines: Deadlines,
    /// Token identities' ends (`exp` + `token.expiry_grace`), as (instant, token, id); an
    /// entry whose session refreshed its token is pushed again at the new end.
    expiries: Deadlines,
    throttle: Throttle,
    log: AuthLog,
}

impl AuthGuard {
    /// The nearest `auth_timeout` deadline, for the poll timeout.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Records `n` wrong passwords just sent by `session`: counted, warned about (at most one
    /// line a second, within the log budget), and held against its address.
    pub(super) fn failed(
        &mut self,
        session: &mut Session,
        n: u32,
        config: &Config,
        stats: &mut Stats,
        log_budget: &mut LogBudget,
        now: Instant,
    ) {
        stats.auth_failures += u64::from(n);
        for _ in 0..n {
            if let Some(count) = self.log.failed.hit(now) {
                budgeted!(
                    log_budget,
                    LineKind::Auth,
                    Level::Warn,
                    now,
                    "auth failed id={} peer={} session_failures={} ({count} failures since the last warning; total {})",
                    session.id, session.peer, session.auth_failures, stats.auth_failures
                );
            }
        }
        self.throttle_failures(session, n, config, stats, log_budget, now);
    }

    /// Counts the failures against the session's address, and gives the session what is left
    /// of the address's budget for the rest of its input.
    fn throttle_failures(
        &mut self,
        session: &mut Session,
        n: u32,
        config: &Config,
        stats: &mut Stats,
        log_budget: &mut LogBudget,
        now: Instant,
    ) {
        let policy = policy(config);
        let overflowed = self.throttle.overflowed;
        let lockout = self
            .throttle
            .record_failures(session.peer.ip(), n, now, &policy);
        session.guess_budget = self.throttle.budget(session.peer.ip(), now, &policy);
        stats.auth_tracked = self.throttle.tracked() as u64;
        if let Some(lockout) = lockout {
            stats.auth_lockouts += 1;
            let tracked = self.throttle.tracked();
            self.log
                .lockout(log_budget, &lockout, &policy, tracked, now);
        }
        if self.throttle.overflowed > overflowed {
            self.log.overflow(log_budget, now);
        }
    }

    /// Before a session's requests run: what its address may still attempt. Nothing to do
    /// without a password, or for a session that authenticated (its own limit of
    /// `auth::MAX_FAILURES` still applies), so their requests cost no lookup.
    pub(super) fn refresh_budget(
        &mut self,
        session: &mut Session,
        config: &Config,
        stats: &mut Stats,
        now: Instant,
    ) {
        if !config.auth_required() || session.authenticated {
            return;
        }
        let policy = policy(config);
        session.guess_budget = self.throttle.budget(session.peer.ip(), now, &policy);
        // A lookup may have forgotten a decayed entry.
        stats.auth_tracked = self.throttle.tracked() as u64;
    }

    /// A session was admitted: with a password and `auth_timeout`, it gets its deadline.
    pub(super) fn admitted(&mut self, config: &Config, token: Token, id: u64, now: Instant) {
        if let (true, Some(limit)) = (config.auth_required(), config.server.auth_timeout) {
            self.deadlines.push(now + limit, token, id);
        }
    }

    /// A token identity was bound to the session at `token`: it is reaped `auth-expired` at
    /// `exp` + `token.expiry_grace` unless a fresh token moves its `exp` first.
    pub(super) fn token_bound(
        &mut self,
        token: Token,
        id: u64,
        exp: u64,
        grace: Duration,
        now: Instant,
        wall: SystemTime,
    ) {
        self.expiries
            .push(expiry_instant(exp, grace, now, wall), token, id);
    }

    /// The nearest `auth_timeout` or token expiry, for the poll timeout.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.expiries.next();
        [self.deadline(), expiry].into_iter().flatten().min()
    }

    /// Takes the next deadline due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Token, u64)> {
        self.deadlines.pop_due(now)
    }

    /// After a reload changed the password or `auth_timeout`: deadlines for the sessions that
    /// are not authenticated, counted from their accept (so a shorter timeout reaps the
    /// overdue at once); the failure table is dropped when it no longer applies.
    pub(super) fn rebuild(&mut self, config: &Config, sessions: &SessionTable, stats: &mut Stats) {
        self.deadlines.clear();
        let server = &config.server;
        if !config.auth_required() || server.auth_failures_before_backoff == 0 {
            self.throttle = Throttle::default();
            stats.auth_tracked = 0;
        }
        let (true, Some(limit)) = (config.auth_required(), server.auth_timeout) else {
            return;
        };
        for (token, s) in sessions.iter() {
            if !s.authenticated {
                self.deadlines.push(s.connected_at + limit, token, s.id);
            }
        }
    }
}

/// The loop instant at which a token with `exp` (Unix seconds) plus `grace` ends, seen from
/// `now` / `wall` (the same moment on both clocks).
fn expiry_instant(exp: u64, grace: Duration, now: Instant, wall: SystemTime) -> Instant {
    let wall_secs = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let left = Duration::from_secs(exp.saturating_sub(wall_secs)) + grace;
    now.checked_add(left)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}

fn policy(config: &Config) -> Policy {
    Policy {
        failures_before_backoff: config.server.auth_failures_before_backoff,
        backoff_max: config.server.auth_backoff_max,
    }
}

impl Server {
    /// Reaps sessions whose token identity ended (`auth-expired`), at most [`REAPS_PER_TURN`]
    /// a turn; a session that refreshed its token meanwhile is queued again at its new end.
    pub(super) fn reap_expired_tokens(&mut self, now: Instant) {
        let wall = SystemTime::now();
        let grace = self.config.token.expiry_grace;
        let mut reaped = 0;
        while reaped < REAPS_PER_TURN {
            let Some((token, id)) = self.auth_guard.expiries.pop_due(now) else {
                break;
            };
            let Some(s) = self.sessions.get(token).filter(|s| s.id == id) else {
                continue;
            };
            let Some(exp) = s.identity().and_then(|i| i.expires) else {
                continue;
            };
            let end = expiry_instant(exp, grace, now, wall);
            if end > now {
                self.auth_guard.expiries.push(end, token, id);
                continue;
            }
            self.reap(token, Cause::Reason(ReapReason::AuthExpired), now);
            reaped += 1;
        }
    }

    /// Reaps sessions that did not authenticate within `server.auth_timeout`, at most
    /// [`REAPS_PER_TURN`] a turn.
    pub(super) fn reap_unauthenticated(&mut self, now: Instant) {
        let mut reaped = 0;
        while reaped < REAPS_PER_TURN {
            let Some((token, id)) = self.auth_guard.pop_due(now) else {
                break;
            };
            let due = self
                .sessions
                .get(token)
                .is_some_and(|s| s.id == id && !s.authenticated);
            if due {
                self.reap(token, Cause::Reason(ReapReason::AuthTimeout), now);
                reaped += 1;
            }
        }
    }
}

// ---- Log lines a client can cause: `auth failed` above, and these. ----
// Each is rate-limited (one line a second, with the count it stands for), then written within
// the loop's log budget (`crate::telemetry::log_throttle`, kind `auth`).

/// The rate limits of the `auth failed`, lockout and overflow warnings.
#[derive(Debug, Default)]
struct AuthLog {
    failed: RateLimited,
    lockout: RateLimited,
    overflow: RateLimited,
}

impl AuthLog {
    fn lockout(
        &mut self,
        budget: &mut LogBudget,
        l: &Lockout,
        policy: &Policy,
        tracked: usize,
        now: Instant,
    ) {
        if let Some(n) = self.lockout.hit(now) {
            budgeted!(
                budget,
                LineKind::Auth,
                Level::Warn,
                now,
                "auth throttled: {} locked out for {}s after {} wrong passwords (lockout {} in a row); its AUTH is refused until then ({n} lockouts since the last line; tracked={tracked})",
                l.source,
                l.duration.as_secs(),
                policy.failures_before_backoff,
                l.level
            );
        }
    }

    fn overflow(&mut self, budget: &mut LogBudget, now: Instant) {
        if let Some(n) = self.overflow.hit(now) {
            budgeted!(
                budget,
                LineKind::Auth,
                Level::Warn,
                now,
                "auth throttled: {} failing addresses tracked, all locked out; addresses not tracked share one limit ({n} failures since the last line)",
                auth_throttle::MAX_TRACKED
            );
        }
    }
}

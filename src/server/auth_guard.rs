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
//! - the per-address table of failures (`crate::auth_throttle`): each session's
//!   [`GuessBudget`](crate::auth::GuessBudget) is refreshed from it before its requests run,
//!   and its failures are recorded in it after.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use log::Level;
use mio::Token;

use super::reaper::Cause;
use super::Server;
use crate::auth_throttle::{self, Lockout, Policy, Throttle};
use crate::config::Config;
use crate::rate_limit::{budgeted, LineKind, LogBudget, RateLimited};
use crate::reap::ReapReason;

/// Unauthenticated sessions reaped per turn at most (like the deferred dead peers).
const REAPS_PER_TURN: usize = 64;

/// The loop's authentication state: deadlines, the failure table, and the rate limits of the
/// warnings about them.
#[derive(Debug, Default)]
pub(super) struct AuthGuard {
    deadlines: BinaryHeap<Reverse<(Instant, Token, u64)>>,
    throttle: Throttle,
    log: AuthLog,
}

impl AuthGuard {
    /// The nearest `auth_timeout` deadline, for the poll timeout.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }
}

fn policy(config: &Config) -> Policy {
    Policy {
        failures_before_backoff: config.server.auth_failures_before_backoff,
        backoff_max: config.server.auth_backoff_max,
    }
}

impl Server {
    /// Records `n` wrong passwords just sent by the session at `token`.
    pub(super) fn auth_failed(&mut self, token: Token, n: u32, now: Instant) {
        self.stats.auth_failures += u64::from(n);
        let Some(session) = self.sessions.get(token) else {
            return;
        };
        for _ in 0..n {
            if let Some(count) = self.auth_guard.log.failed.hit(now) {
                budgeted!(
                    self.log_budget,
                    LineKind::Auth,
                    Level::Warn,
                    now,
                    "auth failed id={} peer={} session_failures={} ({count} failures since the last warning; total {})",
                    session.id, session.peer, session.auth_failures, self.stats.auth_failures
                );
            }
        }
        self.throttle_failures(token, n, now);
    }

    /// Counts the failures against the session's address, and gives the session what is left
    /// of the address's budget for the rest of its input.
    fn throttle_failures(&mut self, token: Token, n: u32, now: Instant) {
        let policy = policy(&self.config);
        let Some(session) = self.sessions.get_mut(token) else {
            return;
        };
        let guard = &mut self.auth_guard;
        let overflowed = guard.throttle.overflowed;
        let lockout = guard
            .throttle
            .record_failures(session.peer.ip(), n, now, &policy);
        session.guess_budget = guard.throttle.budget(session.peer.ip(), now, &policy);
        self.stats.auth_tracked = guard.throttle.tracked() as u64;
        if let Some(lockout) = lockout {
            self.stats.auth_lockouts += 1;
            let tracked = guard.throttle.tracked();
            guard
                .log
                .lockout(&mut self.log_budget, &lockout, &policy, tracked, now);
        }
        if guard.throttle.overflowed > overflowed {
            guard.log.overflow(&mut self.log_budget, now);
        }
    }

    /// Before a session's requests run: what its address may still attempt. Nothing to do
    /// without a password, or for a session that authenticated (its own limit of
    /// `auth::MAX_FAILURES` still applies), so their requests cost no lookup.
    pub(super) fn refresh_guess_budget(&mut self, token: Token, now: Instant) {
        if self.config.server.password.is_none() {
            return;
        }
        let policy = policy(&self.config);
        if let Some(session) = self.sessions.get_mut(token).filter(|s| !s.authenticated) {
            let throttle = &mut self.auth_guard.throttle;
            session.guess_budget = throttle.budget(session.peer.ip(), now, &policy);
            // A lookup may have forgotten a decayed entry.
            self.stats.auth_tracked = throttle.tracked() as u64;
        }
    }

    /// A session was admitted: with a password and `auth_timeout`, it gets its deadline.
    pub(super) fn auth_admitted(&mut self, token: Token, id: u64, now: Instant) {
        let server = &self.config.server;
        if let (Some(_), Some(limit)) = (&server.password, server.auth_timeout) {
            self.auth_guard
                .deadlines
                .push(Reverse((now + limit, token, id)));
        }
    }

    /// Reaps sessions that did not authenticate within `server.auth_timeout`.
    pub(super) fn reap_unauthenticated(&mut self, now: Instant) {
        let mut reaped = 0;
        while let Some(Reverse((at, token, id))) = self.auth_guard.deadlines.peek().copied() {
            if at > now || reaped >= REAPS_PER_TURN {
                break;
            }
            self.auth_guard.deadlines.pop();
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

    /// After a reload changed the password or `auth_timeout`: deadlines for the sessions that
    /// are not authenticated, counted from their accept (so a shorter timeout reaps the
    /// overdue at once); the failure table is dropped when it no longer applies.
    pub(super) fn rebuild_auth_deadlines(&mut self) {
        let guard = &mut self.auth_guard;
        guard.deadlines.clear();
        let server = &self.config.server;
        if server.password.is_none() || server.auth_failures_before_backoff == 0 {
            guard.throttle = Throttle::default();
            self.stats.auth_tracked = 0;
        }
        let (Some(_), Some(limit)) = (&server.password, server.auth_timeout) else {
            return;
        };
        for (token, s) in self.sessions.iter() {
            if !s.authenticated {
                guard
                    .deadlines
                    .push(Reverse((s.connected_at + limit, token, s.id)));
            }
        }
    }
}

// ---- Log lines a client can cause: `auth failed` above, and these. ----
// Each is rate-limited (one line a second, with the count it stands for), then written within
// the loop's log budget (`crate::rate_limit`, kind `auth`).

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

//! The event loop's part of authentication: failed passwords are counted in the statistics
//! (`auth.failed=N`) and logged as warnings, at most one line a second with the count it
//! stands for, so a password-guessing flood cannot fill the log. Deciding who may run what is
//! `crate::auth`'s job.

use std::time::Instant;

use log::Level;
use mio::Token;

use super::Server;
use crate::rate_limit::{budgeted, LineKind};

impl Server {
    /// Records `n` wrong passwords just sent by the session at `token`.
    pub(super) fn auth_failed(&mut self, token: Token, n: u32, now: Instant) {
        self.stats.auth_failures += u64::from(n);
        let Some(session) = self.sessions.get(token) else {
            return;
        };
        for _ in 0..n {
            if let Some(count) = self.auth_warn.hit(now) {
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
    }
}

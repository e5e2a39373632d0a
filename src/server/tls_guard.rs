//! The event loop's part of TLS: the credentials every new TLS session is served with, the
//! resumption ticket key, the handshake deadlines, and what happens to a TLS session at its
//! milestones (established: its identity and name; failed: counted and reaped).
//!
//! - Credentials are loaded at start (a TLS listener without usable files refuses to start,
//!   naming the file) and again at every SIGHUP; a file that fails to load keeps the previous
//!   credentials, and says why (a warning, counted in `tls_reload_failures`). Live sessions
//!   keep the keys they negotiated; only new handshakes see new files.
//! - The ticket key outlives reloads, so a client resumes across a certificate rotation.
//! - Handshake deadlines (`tls.handshake_timeout`) are a min-heap of (accept + timeout, token,
//!   id) like `auth_guard.rs`'s: a deadline never moves, so an entry is either due or stale.
//!   Bounded per turn like the other reapers.
//! - At most [`HANDSHAKES_PER_TURN`] sessions in their handshake are serviced per loop turn;
//!   the rest are revisited on the next (zero-timeout) turn, after the events of established
//!   sessions, so a reconnect storm cannot hold live clients behind a batch of handshakes.
//! - The leaf certificate's expiry is warned about at start and reload when it is less than
//!   `credentials::EXPIRY_WARNING` away, and exported (`vigild_tls_certificate_expiry_seconds`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn, Level};
use mio::Token;
use rustls::server::ProducesTickets;

use super::deadlines::Deadlines;
use super::Server;
use crate::config::credentials::{self, CredentialError, Credentials};
use crate::config::tls::TlsConfig;
use crate::config::Config;
use crate::session::identity::{self, Identity, IdentitySource};
use crate::session::reap::{Cause, ReapReason};
use crate::session::tls_layer::{Failure, FailureCause, Tls};
use crate::session::Session;
use crate::telemetry::log_throttle::{budgeted, LineKind, LogBudget};
use crate::telemetry::logging::clipped;
use crate::telemetry::stats::Stats;

/// Handshakes timed out per turn at most.
const EXPIRIES_PER_TURN: usize = 64;
/// TLS sessions whose handshake is worked on per loop turn, at most. A full handshake costs
/// about 0.3 ms of CPU in a release build (mostly X25519 and the signature), so a reconnect
/// storm of thousands would otherwise hold every established session behind a 1024-event
/// poll batch of handshakes (about 300 ms); 32 bound the turn's handshake work to about 10 ms.
const HANDSHAKES_PER_TURN: u32 = 32;

/// The loop's TLS state (see the module docs).
#[derive(Default)]
pub(super) struct TlsGuard {
    credentials: Option<Credentials>,
    tickets: Option<Arc<dyn ProducesTickets>>,
    deadlines: Deadlines,
    /// Handshake services left this turn (see [`HANDSHAKES_PER_TURN`]).
    handshakes_left: u32,
}

impl std::fmt::Debug for TlsGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsGuard")
            .field("credentials", &self.credentials)
            .field("deadlines", &self.deadlines.len())
            .finish_non_exhaustive()
    }
}

/// Says what is served, and warns when the certificate is near its expiry
/// (`credentials::EXPIRY_WARNING`).
fn note_expiry(c: &Credentials, tls: &TlsConfig, now: SystemTime, when: &str) {
    info!("{when}: {}", credentials::describe(c, tls, now));
    if let Some(w) = credentials::expiry_warning(c, now) {
        warn!("{w}");
    }
}

impl TlsGuard {
    /// Loads the credentials for `tls` (nothing when no TLS listener is configured).
    pub(super) fn start(
        tls: &TlsConfig,
        stats: &mut Stats,
        now: SystemTime,
    ) -> Result<TlsGuard, CredentialError> {
        let mut guard = TlsGuard::default();
        if tls.enabled() {
            let tickets = ticketer()?;
            let loaded = credentials::load(tls, tickets.clone(), now)?;
            note_expiry(&loaded, tls, now, "loaded");
            stats.tls.certificate_not_after = Some(loaded.not_after);
            guard.tickets = Some(tickets);
            guard.credentials = Some(loaded);
        }
        Ok(guard)
    }

    /// Reads the files again (SIGHUP). A failure keeps the credentials in use.
    pub(super) fn reload(&mut self, tls: &TlsConfig, stats: &mut Stats, now: SystemTime) {
        if !tls.enabled() {
            self.credentials = None;
            stats.tls.certificate_not_after = None;
            return;
        }
        let tickets = match self.tickets.clone().map_or_else(ticketer, Ok) {
            Ok(t) => t,
            Err(e) => {
                stats.tls.reload_failures += 1;
                warn!("reload: tls: {e}; keeping the previous certificate");
                return;
            }
        };
        match credentials::load(tls, tickets.clone(), now) {
            Ok(loaded) => {
                note_expiry(&loaded, tls, now, "reload");
                stats.tls.certificate_not_after = Some(loaded.not_after);
                self.tickets = Some(tickets);
                self.credentials = Some(loaded);
            }
            Err(e) => {
                stats.tls.reload_failures += 1;
                match self.credentials {
                    Some(_) => warn!(
                        "reload: tls: {e}; new TLS handshakes keep using the previous certificate"
                    ),
                    None => warn!(
                        "reload: tls: {e}; TLS listeners refuse clients until the files are fixed"
                    ),
                }
            }
        }
    }

    /// A new session's TLS state, with the current credentials.
    pub(super) fn session(&self) -> Option<Box<Tls>> {
        let c = self.credentials.as_ref()?;
        Tls::new(c.server.clone()).ok().map(Box::new)
    }

    /// A new loop turn: the handshake budget is full again.
    pub(super) fn new_turn(&mut self) {
        self.handshakes_left = HANDSHAKES_PER_TURN;
    }

    /// Takes one handshake service from this turn's budget; false when it is used up.
    pub(super) fn take_handshake_turn(&mut self) -> bool {
        if self.handshakes_left == 0 {
            return false;
        }
        self.handshakes_left -= 1;
        true
    }

    pub(super) fn handshake_started(
        &mut self,
        token: Token,
        id: u64,
        now: Instant,
        limit: Duration,
    ) {
        self.deadlines.push(now + limit, token, id);
    }

    /// The nearest handshake deadline, for the poll timeout.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Token, u64)> {
        self.deadlines.pop_due(now)
    }
}

fn ticketer() -> Result<Arc<dyn ProducesTickets>, CredentialError> {
    credentials::new_ticketer().map_err(|message| CredentialError {
        key: "tls",
        path: "-".into(),
        message: format!("cannot make a ticket key: {message}"),
    })
}

impl Server {
    /// Reaps TLS sessions whose handshake passed its deadline (`tls-handshake`, cause
    /// `timeout`), at most [`EXPIRIES_PER_TURN`] a turn.
    pub(super) fn expire_handshakes(&mut self, now: Instant) {
        for _ in 0..EXPIRIES_PER_TURN {
            let Some((token, id)) = self.tls.pop_due(now) else {
                return;
            };
            let Some(session) = self.sessions.get(token) else {
                continue;
            };
            if session.id != id || session.tls().is_none_or(|t| t.is_open()) {
                continue;
            }
            let limit = self.config.tls.handshake_timeout;
            self.tls_failed(
                token,
                Failure::new(
                    FailureCause::Timeout,
                    true,
                    format!(
                        "the handshake did not finish within tls.handshake_timeout = {}s",
                        limit.as_secs()
                    ),
                ),
                now,
            );
        }
        // More due: the poll timeout is zero for a deadline in the past, so the next turn
        // takes the rest.
    }

    /// A TLS session failed: counted by cause, reaped (`tls-handshake` before the handshake
    /// finished, `tls-error` after), with the failure in its reap line.
    pub(super) fn tls_failed(&mut self, token: Token, failure: Failure, now: Instant) {
        self.stats.tls.failed(failure.cause);
        let reason = if failure.in_handshake {
            ReapReason::TlsHandshake
        } else {
            ReapReason::TlsError
        };
        if let Some(tls) = self.sessions.get_mut(token).and_then(|s| s.tls_mut()) {
            tls.failure = Some(Box::new(failure));
        }
        self.reap(token, Cause::Reason(reason), now);
    }
}

/// The handshake of `session` finished: counted (full or resumed), and the identity of its
/// client certificate, when it sent one, left pending for the loop to bind before any request
/// runs (`Step::BindIdentity`, the same path as a signed token's: per-identity limit, name).
/// A certificate without a usable identity is a failure (`no-identity`).
pub(super) fn established(
    session: &mut Session,
    config: &Config,
    stats: &mut Stats,
    log_budget: &mut LogBudget,
    now: Instant,
) -> Result<(), Failure> {
    let Some(tls) = session.tls() else {
        return Ok(());
    };
    if tls.resumed() {
        stats.tls.resumed_handshakes += 1;
    } else {
        stats.tls.full_handshakes += 1;
    }
    let Some(der) = tls.peer_certificate() else {
        return Ok(());
    };
    let field = config.tls.identity;
    let name = identity::from_certificate(der, field, config.session.max_name_bytes)
        .map_err(|why| Failure::new(FailureCause::NoIdentity, true, why))?;
    let (id, peer) = (session.id, session.peer);
    budgeted!(
        log_budget,
        LineKind::Connect,
        Level::Debug,
        now,
        "tls id={id} peer={peer} identity={} ({})",
        clipped(&*name),
        field.name()
    );
    session.extras_mut().pending_identity = Some(Box::new(identity::Pending {
        identity: Identity {
            name,
            source: IdentitySource::Certificate,
            expires: None,
        },
        reply_ok: false,
    }));
    Ok(())
}

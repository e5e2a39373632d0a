//! Control of the running daemon: signals, config reload, statistics lines, shutdown.
//!
//! `SIGTERM`/`SIGINT` stop the loop (every session is reaped with `shutdown` and the final
//! statistics are logged). `SIGHUP` reloads the config file: a bad file is logged and the
//! running config stays; a good one is applied to live sessions too (keepalive options on
//! every socket, idle timeout, limits, log level) and listeners are added or closed to match.
//! The file is read without blocking (`Config::load`: a FIFO or device in its place is refused,
//! never opened for reading), and what a reload takes away (the password, a change of it,
//! `auth_timeout` or the per-address limit turned off, a client, admin or metrics listener) is
//! logged as a warning naming it.
//! `SIGUSR1` logs the statistics now.

use std::path::PathBuf;
use std::time::Instant;

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use super::Server;
use crate::config::Config;
use crate::config::PasswordSource;
use crate::os::sd_notify::Notifier;
use crate::os::sockopt;
use crate::session::reap::Cause;
use crate::session::reap::ReapReason;
use crate::telemetry::logging::LevelSource;
use crate::telemetry::stats::status_line;

/// What the loop needs to be controlled from outside: the signal pipe, the config file to
/// reload, the service manager, and the statistics timer.
pub(super) struct Control {
    pub(super) signals: Signals,
    pub(super) config_path: PathBuf,
    pub(super) level_source: LevelSource,
    /// Listeners came from socket activation: reloads leave them alone.
    pub(super) socket_activated: bool,
    /// The service manager (`sd_notify`); a no-op without `NOTIFY_SOCKET`.
    pub(super) notify: Notifier,
    /// When the next statistics line is due (`stats.interval`).
    pub(super) next_stats: Option<Instant>,
}

impl Server {
    pub(super) fn handle_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.control.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT => {
                    info!(
                        "received {}, shutting down",
                        if signal == SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        }
                    );
                    self.stopping = true;
                }
                SIGHUP => self.reload(now),
                SIGUSR1 => self.log_stats(),
                _ => {}
            }
        }
    }

    pub(super) fn log_stats(&mut self) {
        info!("{}", self.stats.line());
        self.control.notify.status(&status_line(&self.stats));
    }

    /// A reload, told to the service manager (`RELOADING=1` ... `READY=1`, whatever the
    /// outcome: the running config stays in force when the new one is refused).
    fn reload(&mut self, now: Instant) {
        self.control.notify.reloading();
        self.apply_reload(now);
        self.control.notify.ready(now, &status_line(&self.stats));
    }

    /// Re-reads the config file and applies it, or keeps the running config.
    fn apply_reload(&mut self, now: Instant) {
        let loaded = match Config::load(&self.control.config_path) {
            Ok(loaded) => loaded,
            Err(e) => {
                // A warning, not an error: the daemon keeps serving with the running config;
                // the file needs fixing (`journalctl -p warning` shows it).
                warn!("reload failed, keeping the running config: {e}");
                self.stats.on_reload(false);
                return;
            }
        };
        self.stats.on_reload(true);
        for w in &loaded.warnings {
            warn!("config: {w}");
        }
        let new = loaded.config;
        let old = std::mem::replace(&mut self.config, new.clone());
        warn_about_lost_protection(&old, &new);

        if self.control.socket_activated {
            if old.server.listen != new.server.listen {
                warn!("reload: server.listen ignored: the listeners come from socket activation (change the socket unit)");
            }
        } else if old.server.listen != new.server.listen {
            let server = &self.config.server;
            self.accept
                .reconcile_listeners(self.poll.registry(), server, &server.listen, false);
        }
        if old.token.keys != new.token.keys {
            info!(
                "reload: token keys read again: {} key(s); new AUTHs are checked against them, \
                 live sessions keep their identities until their tokens expire",
                new.token.keys.keys.len()
            );
        }
        // Certificates are read again at every reload, changed config or not: rotation is
        // replacing the files and sending SIGHUP.
        self.tls.reload(
            &self.config.tls,
            &mut self.stats,
            std::time::SystemTime::now(),
        );
        if old.tls.listen != new.tls.listen {
            self.accept.reconcile_listeners(
                self.poll.registry(),
                &self.config.server,
                &self.config.tls.listen,
                true,
            );
        }
        if old.server.backlog != new.server.backlog {
            warn!("reload: server.backlog applies to listeners opened from now on; restart to change it on existing ones");
        }
        if old.server.reuse_port != new.server.reuse_port {
            warn!("reload: server.reuse_port applies to listeners opened from now on; restart to change it on existing ones");
        }
        if old.keepalive != new.keepalive {
            let mut failed = 0;
            for (_, s) in self.sessions.iter() {
                if sockopt::apply(&s.stream, &new.keepalive).is_err() {
                    failed += 1;
                }
            }
            info!(
                "reload: keepalive idle={}s interval={}s probes={} user_timeout={:?} applied to {} live sessions ({failed} failed)",
                new.keepalive.idle.as_secs(),
                new.keepalive.interval.as_secs(),
                new.keepalive.probes,
                new.keepalive.effective_user_timeout(),
                self.sessions.len() - failed,
            );
        }
        self.ops.reconcile(&old, ops_cx!(self, now));
        if old.session.idle_timeout != new.session.idle_timeout {
            self.idle
                .rebuild(&self.sessions, self.config.session.idle_timeout);
        }
        let (o, n) = (&old.server, &new.server);
        if old.auth_required() != new.auth_required()
            || o.auth_timeout != n.auth_timeout
            || o.auth_failures_before_backoff != n.auth_failures_before_backoff
        {
            self.auth_guard
                .rebuild(&self.config, &self.sessions, &mut self.stats);
        }
        if old.stats.interval != new.stats.interval {
            self.control.next_stats = new.stats.interval.map(|i| now + i);
        }
        if (old.log.reap_lines_per_second, old.log.bytes_per_second)
            != (new.log.reap_lines_per_second, new.log.bytes_per_second)
        {
            self.log_budget
                .set_limits(new.log.reap_lines_per_second, new.log.bytes_per_second);
        }
        self.note_lowered_field_bounds(&old);
        if old.log.level != new.log.level {
            match self.control.level_source {
                LevelSource::Config => log::set_max_level(new.log.level),
                LevelSource::Environment => {
                    warn!("reload: log.level ignored because RUST_LOG is set")
                }
            }
        }
        let changed = changed_keys(&old, &new);
        info!(
            "reloaded {} (changed: {})",
            self.control.config_path.display(),
            if changed.is_empty() {
                "nothing".to_string()
            } else {
                changed.join(" ")
            }
        );
    }

    /// Stops accepting, reaps every session with `shutdown` (published to presence subscribers,
    /// who get a bounded time to take it), logs the final statistics.
    pub(super) fn shutdown(&mut self, now: Instant) {
        self.control.notify.stopping();
        self.accept.close_listeners(self.poll.registry());
        self.ops.close_listeners(self.poll.registry());
        let live = self.sessions.len();
        for token in self.sessions.tokens() {
            self.reap(token, Cause::Reason(ReapReason::Shutdown), now);
        }
        // Presence subscribers get the `left` of every session before their connections go.
        self.ops.drain_subscribers(ops_cx!(self, now));
        self.ops.close(ops_cx!(self, now));
        info!("closed {live} sessions; final {}", self.stats.line());
    }
}

/// Warns about what a reload takes away: the password (or a change of it) and the operator
/// listeners. A truncated or half-written file otherwise reloads with only `reloaded` logged,
/// and authentication or the admin listener is silently gone. (Client listeners closed are
/// reported where they are closed, in `AcceptState::reconcile_listeners`.)
fn warn_about_lost_protection(old: &Config, new: &Config) {
    let shown = |p: &crate::config::Password| match &p.source {
        PasswordSource::Inline => "server.password".to_string(),
        PasswordSource::File(path) => format!("server.password_file {}", path.display()),
    };
    match (&old.server.password, &new.server.password) {
        (Some(was), None) => warn!(
            "reload: {} removed: authentication is now off, and every session (new or open) may run commands without AUTH",
            shown(was)
        ),
        (Some(was), Some(now)) if !was.same_secret(now) => warn!(
            "reload: the password changed ({}): new connections need the new one; sessions already authenticated keep their access",
            shown(now)
        ),
        (None, Some(now)) => info!(
            "reload: {} set: authentication is on for new connections; sessions already open keep the access they had",
            shown(now)
        ),
        _ => {}
    }
    if old.server.password.is_some() && new.server.password.is_some() {
        if old.server.auth_timeout.is_some() && new.server.auth_timeout.is_none() {
            warn!("reload: server.auth_timeout turned off: unauthenticated connections may now hold their slots indefinitely");
        }
        if old.server.auth_failures_before_backoff > 0
            && new.server.auth_failures_before_backoff == 0
        {
            warn!("reload: server.auth_failures_before_backoff = 0: failed passwords are no longer limited per address");
        }
    }
    for (role, was, now) in [
        ("admin", &old.admin.listen, &new.admin.listen),
        ("metrics", &old.metrics.listen, &new.metrics.listen),
    ] {
        match (was, now) {
            (Some(was), None) => warn!(
                "reload: {role}.listen removed: the {role} listener on {was} is closed"
            ),
            (Some(was), Some(now)) if was != now => warn!(
                "reload: {role}.listen changed from {was} to {now}: the {role} listener on {was} is closed"
            ),
            _ => {}
        }
    }
}

/// The dotted keys whose effective value differs between two configs, in file order (from
/// `to_toml`, so every key is compared, including keys added later; an inline password shows
/// as redacted in both, and its change is warned about separately).
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (before, after) = (old.dotted(), new.dotted());
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| !before.iter().any(|(bk, bv)| bk == k && bv == v))
        .map(|(k, _)| k.clone())
        .collect();
    // Keys left out of the rendering (an operator listener turned off).
    for (k, _) in &before {
        if !after.iter().any(|(ak, _)| ak == k) {
            changed.push(k.clone());
        }
    }
    changed
}

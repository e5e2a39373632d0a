//! The event loop's presence hooks: every change to the set of live sessions becomes one event
//! with the next sequence number (src/telemetry/presence_events.rs, docs/presence.md), and `CLIENT SETNAME`
//! goes through here so that names stay indexed and, with `session.unique_names`, unique:
//! a held name is taken from its holder or refused, as `session.takeover` decides
//! (src/session/takeover.rs), and the reply to the rename is written here, once that is known.
//!
//! Where the hooks sit, so that no change escapes: `joined` right after a session enters the
//! table (`accept.rs`), `named` in [`Server::rename_session`] (the only caller of
//! `SessionTable::rename`), `left` in `Server::reap` (`reaper.rs`, the only place a session
//! ends, so every reason, shutdown included, is published).
//!
//! Names in events are the names sessions hold, whole: they are bounded by
//! `session.max_name_bytes` when set, and a reload that lowers the bound leaves names set
//! before as they are (cutting one would make its `left` disagree with its `named` and with
//! `CLIENT LOOKUP`); the reload says how many sessions keep a longer name. Log lines show at
//! most `logging::MAX_LOGGED_CLIENT_BYTES` of a name, within the log budget.

use std::time::{Instant, SystemTime};

use log::{warn, Level};
use mio::Token;

use super::Server;
use crate::config::{Config, TakeoverPolicy};
use crate::os::sys;
use crate::protocol::command;
use crate::protocol::resp;
use crate::protocol::step::{self, Rename};
use crate::session::identity::{self, Identity, NameCheck};
use crate::session::reap::Cause;
use crate::session::reap::ReapReason;
use crate::session::takeover::{self, Decision};
use crate::telemetry::log_throttle::{budgeted, LineKind};
use crate::telemetry::logging::clipped;
use crate::telemetry::presence_events::{self, Event};

impl Server {
    /// Numbers the event and hands it to the subscribers and the fleet. The number advances
    /// whether or not anyone listens (`CLIENT LIST` reports it); the JSON is built only when
    /// someone takes it, once for both.
    pub(super) fn publish(&mut self, event: &Event<'_>, now: Instant) {
        self.stats.presence.seq += 1;
        let to_subscribers = self.stats.presence.subscribers > 0;
        if !to_subscribers && !self.fleet.is_on() {
            return;
        }
        let seq = self.stats.presence.seq;
        let at = presence_events::unix_ms(SystemTime::now());
        let mut json = std::mem::take(&mut self.event_json);
        json.clear();
        presence_events::encode(seq, self.stats.presence.epoch, at, event, &mut json);
        if to_subscribers {
            self.ops.publish(&json, ops_cx!(self, now));
        }
        self.fleet.publish(event, &json, at);
        self.event_json = json;
    }

    /// A session entered the table.
    pub(super) fn publish_joined(&mut self, token: Token, now: Instant) {
        let Some(s) = self.sessions.get(token) else {
            return;
        };
        let event = Event::Joined {
            id: s.id,
            addr: s.peer,
            laddr: s.stream.local_addr().ok(),
        };
        self.publish(&event, now);
    }

    /// `CLIENT SETNAME` / `HELLO ... SETNAME`: gives the session its new name (`None` clears
    /// it), publishes `named`, and writes the reply into the loop's output buffer, where the
    /// session's replies wait in order. With unique names, a held name is first taken from its
    /// holders (reaped `replaced`, so a watcher sees their `left` before the new holder's
    /// `named`), or refused with [`step::NAME_IN_USE`] when `session.takeover` keeps it
    /// with a live holder: then nothing changes (a `HELLO` keeps its protocol).
    pub(super) fn rename_session(&mut self, token: Token, rename: Rename, now: Instant) {
        let Rename { name, reply } = rename;
        let Some(session) = self.sessions.get(token) else {
            return;
        };
        let check = identity::check_name(
            session.identity(),
            self.identities_in_use(),
            name.as_deref(),
        );
        if check != NameCheck::Allowed {
            self.stats.takeover.identity_refused += 1;
            resp::write_error(&mut self.scratch.out, check.error());
            return;
        }
        if session.name != name {
            if let (true, Some(n)) = (self.config.session.unique_names, &name) {
                let identity = session.identity().map(|i| &*i.name);
                if let Some(h) = self.fleet.outranked_by(n, identity) {
                    self.stats.takeover.identity_refused += 1;
                    let e = format!(
                        "ERR name held by identity {} on node {}; only that identity can take it",
                        clipped(h.identity.as_deref().unwrap_or("")),
                        clipped(&h.node)
                    );
                    resp::write_error(&mut self.scratch.out, &e);
                    return;
                }
                if !self.take_name(token, n, now) {
                    resp::write_error(&mut self.scratch.out, step::NAME_IN_USE);
                    return;
                }
            }
            self.apply_name(token, name, now);
        }
        if let Some(s) = self.sessions.get_mut(token) {
            command::answer_renamed(s, reply, &mut self.scratch.out);
        }
    }

    /// Whether sessions get identities (client certificates asked for, or tokens on): then
    /// only they may have names (`session/identity.rs`).
    pub(super) fn identities_in_use(&self) -> bool {
        self.config.tls.gives_identities() || self.config.token.enabled()
    }

    /// Gives the session at `token` the identity it proved (a certificate, a token): refused
    /// when its identity already has `session.max_sessions_per_identity` sessions (the newest
    /// is refused: an error line, then it is closed `identity-limit`; replacing the oldest
    /// would let a stolen credential evict the real device); otherwise it counts as
    /// authenticated, takes the identity as its name, and a token's `exp` starts its expiry
    /// timer. Returns false when refused.
    pub(super) fn bind_identity(&mut self, token: Token, identity: Identity, now: Instant) -> bool {
        let limit = self.config.session.max_sessions_per_identity;
        let Some(session) = self.sessions.get(token) else {
            return false;
        };
        let (id, peer) = (session.id, session.peer);
        if limit > 0 && self.sessions.with_identity(&identity.name) as usize >= limit {
            budgeted!(
                self.log_budget,
                LineKind::Takeover,
                Level::Info,
                now,
                "session id={id} peer={peer} refused: identity {} ({}) already has \
                 session.max_sessions_per_identity = {limit} sessions",
                clipped(&*identity.name),
                identity.source.name()
            );
            resp::write_error(
                &mut self.scratch.out,
                &format!(
                    "ERR max sessions per identity reached ({limit}); close another session of \
                     this identity first"
                ),
            );
            if let Some(s) = self.sessions.get_mut(token) {
                s.closing.get_or_insert(ReapReason::IdentityLimit);
            }
            return false;
        }
        let name = identity.name.clone();
        let expires = identity.expires;
        if self.sessions.set_identity(token, identity).is_err() {
            return false;
        }
        if let Some(s) = self.sessions.get_mut(token) {
            s.authenticated = true;
        }
        if let Some(exp) = expires {
            let grace = self.config.token.expiry_grace;
            self.auth_guard
                .token_bound(token, id, exp, grace, now, std::time::SystemTime::now());
        }
        self.name_after_identity(token, name, now);
        true
    }

    /// A session just proved `identity`: it takes that name, under the same unique-names rule
    /// as a `CLIENT SETNAME` (a stale holder with the same identity is replaced, a live one
    /// keeps it and the newcomer stays unnamed until it asks again).
    pub(super) fn name_after_identity(&mut self, token: Token, name: Box<str>, now: Instant) {
        if self
            .sessions
            .get(token)
            .is_some_and(|s| s.name.as_deref() == Some(&*name))
        {
            return;
        }
        if self.config.session.unique_names && !self.take_name(token, &name, now) {
            return;
        }
        self.apply_name(token, Some(name), now);
    }

    /// Gives the session its name (indexed), logs and publishes `named`.
    fn apply_name(&mut self, token: Token, name: Option<Box<str>>, now: Instant) {
        let Some(id) = self.sessions.get(token).map(|s| s.id) else {
            return;
        };
        {
            let Ok(previous) = self.sessions.rename(token, name) else {
                return;
            };
            let session = self.sessions.get(token);
            let name = session.and_then(|s| s.name.clone());
            let identity = session.and_then(|s| s.identity()).map(|i| i.name.clone());
            budgeted!(
                self.log_budget,
                LineKind::Rename,
                Level::Debug,
                now,
                "named id={id} name={} previous={}",
                clipped(name.as_deref().unwrap_or("-")),
                clipped(previous.as_deref().unwrap_or("-"))
            );
            self.publish(
                &Event::Named {
                    id,
                    name: name.as_deref(),
                    previous: previous.as_deref(),
                    identity: identity.as_deref(),
                },
                now,
            );
        }
    }

    /// Unique names: frees `name` for the session at `token` by reaping its other holders, if
    /// [`takeover::decide`] lets it replace every one of them. Returns false, with nothing
    /// changed, when one of them is live: the newcomer is refused (counted and logged).
    fn take_name(&mut self, token: Token, name: &str, now: Instant) -> bool {
        let holders: Vec<Token> = self
            .sessions
            .holders(name.as_bytes())
            .iter()
            .copied()
            .filter(|t| *t != token)
            .collect();
        if holders.is_empty() {
            return true;
        }
        let Some((id, peer, newcomer)) = self
            .sessions
            .get(token)
            .map(|s| (s.id, s.peer, s.identity().cloned()))
        else {
            return false;
        };
        let config = &self.config.session;
        let mut stale = Vec::with_capacity(holders.len());
        for &old in &holders {
            let Some(o) = self.sessions.get(old) else {
                continue;
            };
            // TCP_INFO only when the rule looks at it, and only now, at takeover time.
            let tcp = match config.takeover {
                TakeoverPolicy::Newest => None,
                TakeoverPolicy::Stale => sys::tcp_info(&o.stream).ok(),
            };
            let holder = takeover::Holder {
                last_rx: o.last_rx,
                tcp,
            };
            // A proven identity outranks a holder without one (a name set before identities
            // were in use): the name is the identity's.
            let decision = match (&newcomer, o.identity()) {
                (Some(_), None) => Decision::Replace(takeover::Stale::NoIdentity),
                _ => takeover::decide(&holder, config, now),
            };
            match decision {
                Decision::Replace(why) => stale.push((old, o.id, o.peer, why)),
                Decision::Refuse { silent } => {
                    self.stats.takeover.refused += 1;
                    budgeted!(
                        self.log_budget,
                        LineKind::Takeover,
                        Level::Info,
                        now,
                        "session id={id} peer={peer} refused the name {}: held by live session \
                         id={} peer={} silent_ms={} (session.takeover = \"stale\")",
                        clipped(name),
                        o.id,
                        o.peer,
                        silent.as_millis()
                    );
                    return false;
                }
            }
        }
        for (old, old_id, old_peer, why) in stale {
            budgeted!(
                self.log_budget,
                LineKind::Takeover,
                Level::Info,
                now,
                "session id={id} peer={peer} takes the name {}: reaping its holder id={old_id} \
                 peer={old_peer} {why}",
                clipped(name)
            );
            self.reap(old, Cause::Reason(ReapReason::Replaced), now);
        }
        self.stats.takeover.replaced += 1;
        let threshold = self.config.session.flap_threshold;
        if let Some(count) = self.flapping.record(name, threshold, now) {
            self.stats.takeover.flapping += 1;
            let advice = match self.config.session.takeover {
                TakeoverPolicy::Newest => {
                    "; session.takeover = \"stale\" would keep it with a live holder"
                }
                TakeoverPolicy::Stale => "",
            };
            budgeted!(
                self.log_budget,
                LineKind::Takeover,
                Level::Warn,
                now,
                "name {} is flapping: replaced {count} times within a minute (more than \
                 session.flap_threshold = {threshold}); two live clients may share it{advice}",
                clipped(name)
            );
        }
        true
    }
}

impl Server {
    /// After a reload: when `session.max_name_bytes` or `session.max_lib_bytes` went down,
    /// says how many sessions keep longer values set before (they are not cut; new values are
    /// held to the new bound).
    pub(super) fn note_lowered_field_bounds(&self, old: &Config) {
        let (was, new) = (&old.session, &self.config.session);
        let sessions = || self.sessions.iter().map(|(_, s)| s);
        let names = sessions().map(|s| s.name.as_deref().map_or(0, str::len));
        kept_longer(
            "session.max_name_bytes",
            was.max_name_bytes,
            new.max_name_bytes,
            names,
        );
        let libs = sessions().map(|s| s.lib().map_or(0, |l| l.name.len().max(l.version.len())));
        kept_longer(
            "session.max_lib_bytes",
            was.max_lib_bytes,
            new.max_lib_bytes,
            libs,
        );
    }
}

/// Warns when the bound `key` went down from `before` to `after` and some of the values, of
/// `lengths`, are longer than the new bound.
fn kept_longer(key: &str, before: usize, after: usize, lengths: impl Iterator<Item = usize>) {
    if after >= before {
        return;
    }
    let (over, longest) = lengths
        .filter(|&n| n > after)
        .fold((0usize, 0usize), |(c, m), n| (c + 1, m.max(n)));
    if over > 0 {
        warn!(
            "reload: {key} lowered from {before} to {after}: {over} session(s) keep the longer \
             values they set before (up to {longest} bytes); new values are held to {after}"
        );
    }
}

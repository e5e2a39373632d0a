//! The event loop's presence hooks: every change to the set of live sessions becomes one event
//! with the next sequence number (src/presence.rs, docs/presence.md), and `CLIENT SETNAME`
//! goes through here so that names stay indexed and, with `session.unique_names`, unique.
//!
//! Where the hooks sit, so that no change escapes: `joined` right after a session enters the
//! table (`accept.rs`), `named` in [`Server::rename_session`] (the only caller of
//! `SessionTable::rename`), `left` in `Server::reap` (the only place a session ends, so every
//! reason, shutdown included, is published).
//!
//! Names in events are the names sessions hold, whole: they are bounded by
//! `session.max_name_bytes` when set, and a reload that lowers the bound leaves names set
//! before as they are (cutting one would make its `left` disagree with its `named` and with
//! `CLIENT LOOKUP`); the reload says how many sessions keep a longer name. Log lines show at
//! most `logging::MAX_LOGGED_CLIENT_BYTES` of a name, within the log budget.

use std::time::Instant;

use log::{warn, Level};
use mio::Token;

use super::conn::Cause;
use super::Server;
use crate::config::Config;
use crate::logging::clipped;
use crate::presence::Event;
use crate::rate_limit::{budgeted, LineKind};
use crate::reap::ReapReason;

impl Server {
    /// Numbers the event and hands it to the subscribers. The number advances whether or not
    /// anyone listens (`CLIENT LIST` reports it); the JSON is built only when someone does.
    pub(super) fn publish(&mut self, event: &Event<'_>) {
        self.stats.presence.seq += 1;
        if self.stats.presence.subscribers > 0 {
            let seq = self.stats.presence.seq;
            self.ops_deliver(seq, event);
        }
    }

    /// A session entered the table.
    pub(super) fn publish_joined(&mut self, token: Token) {
        let Some(s) = self.sessions.get(token) else {
            return;
        };
        let event = Event::Joined {
            id: s.id,
            addr: s.peer,
            laddr: s.stream.local_addr().ok(),
        };
        self.publish(&event);
    }

    /// `CLIENT SETNAME`: gives the session its new name (`None` clears it) and publishes
    /// `named`. With unique names, the sessions already holding the name are reaped first
    /// (reason `replaced`), so a watcher sees their `left` before the new holder's `named`.
    pub(super) fn rename_session(&mut self, token: Token, name: Option<Box<str>>, now: Instant) {
        let Some(session) = self.sessions.get(token) else {
            return;
        };
        if session.name == name {
            return;
        }
        let (id, peer) = (session.id, session.peer);
        if let (true, Some(n)) = (self.config.session.unique_names, &name) {
            let older: Vec<Token> = self
                .sessions
                .holders(n.as_bytes())
                .iter()
                .copied()
                .filter(|t| *t != token)
                .collect();
            for old in older {
                if let Some(o) = self.sessions.get(old) {
                    budgeted!(
                        self.log_budget,
                        LineKind::Takeover,
                        Level::Info,
                        now,
                        "session id={id} peer={peer} takes the name {}: reaping its holder id={} peer={}",
                        clipped(&**n),
                        o.id,
                        o.peer
                    );
                }
                self.reap(old, Cause::Reason(ReapReason::Replaced), now);
            }
        }
        let Ok(previous) = self.sessions.rename(token, name) else {
            return;
        };
        let name = self.sessions.get(token).and_then(|s| s.name.clone());
        budgeted!(
            self.log_budget,
            LineKind::Rename,
            Level::Debug,
            now,
            "named id={id} name={} previous={}",
            clipped(name.as_deref().unwrap_or("-")),
            clipped(previous.as_deref().unwrap_or("-"))
        );
        self.publish(&Event::Named {
            id,
            name: name.as_deref(),
            previous: previous.as_deref(),
        });
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

//! The event loop's presence hooks: every change to the set of live sessions becomes one event
//! with the next sequence number (src/presence.rs, docs/presence.md), and `CLIENT SETNAME`
//! goes through here so that names stay indexed and, with `session.unique_names`, unique.
//!
//! Where the hooks sit, so that no change escapes: `joined` right after a session enters the
//! table (`accept.rs`), `named` in [`Server::rename_session`] (the only caller of
//! `SessionTable::rename`), `left` in `Server::reap` (the only place a session ends, so every
//! reason, shutdown included, is published).

use std::time::Instant;

use log::{debug, info};
use mio::Token;

use super::conn::Cause;
use super::Server;
use crate::presence::Event;
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
                    info!(
                        "session id={id} peer={peer} takes the name {n}: reaping its holder id={} peer={}",
                        o.id, o.peer
                    );
                }
                self.reap(old, Cause::Reason(ReapReason::Replaced), now);
            }
        }
        let Ok(previous) = self.sessions.rename(token, name) else {
            return;
        };
        let name = self.sessions.get(token).and_then(|s| s.name.clone());
        debug!(
            "named id={id} name={} previous={}",
            name.as_deref().unwrap_or("-"),
            previous.as_deref().unwrap_or("-")
        );
        self.publish(&Event::Named {
            id,
            name: name.as_deref(),
            previous: previous.as_deref(),
        });
    }
}

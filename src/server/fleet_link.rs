//! The loop's side of `[fleet]` (src/fleet/, docs/fleet.md): what it does when the fleet's
//! worker wakes it (a remote node claims a name held here, a claim made here lost, the lease
//! lapsed with `fleet.fence`), and the snapshot of the live sessions the worker asks for after a
//! connect, a lapse or a dropped event.

use std::time::{Instant, SystemTime};

use log::{warn, Level};

use super::Server;
use crate::config::TakeoverPolicy;
use crate::fleet::{self, Lost, Wanted};
use crate::os::sys;
use crate::session::reap::{Cause, ReapReason};
use crate::session::takeover::{self, Decision};
use crate::session::ProxyStage;
use crate::telemetry::log_throttle::{budgeted, LineKind};
use crate::telemetry::logging::clipped;
use crate::telemetry::presence_events::unix_ms;

impl Server {
    /// The fleet's worker woke the loop.
    pub(super) fn fleet_ready(&mut self, now: Instant) {
        for wanted in self.fleet.ready() {
            match wanted {
                Wanted::Replace { id, name, by } => self.replace_for_fleet(id, &name, &by, now),
                Wanted::Lost { id, name, by, why } => self.lost_to_fleet(id, &name, &by, why, now),
            }
        }
        self.fence_if_lapsed(now);
        self.fleet_end_turn(now);
    }

    /// `fleet.fence`: while the lease is lapsed (by this node's clock, or as Redis said), every
    /// session is reaped `fenced`, newcomers too, so no name has a holder the fleet does not
    /// know. On the loop's timers, so it never waits for the worker.
    pub(super) fn fence_if_lapsed(&mut self, now: Instant) {
        if !self.fleet.fenced_now(now) {
            self.fleet.fence_warned = false;
            return;
        }
        let tokens = self.sessions.tokens();
        if tokens.is_empty() {
            return;
        }
        if !self.fleet.fence_warned {
            self.fleet.fence_warned = true;
            warn!(
                "fleet: lease lapsed with fleet.fence on: reaping all {} sessions as fenced, and \
                 every new one until the lease is held again",
                tokens.len()
            );
        }
        self.fleet.fenced += tokens.len() as u64;
        for token in tokens {
            self.reap(token, Cause::Reason(ReapReason::Fenced), now);
        }
    }

    /// A session of node `by` claimed `name`: the holder `id` here is reaped `replaced` if it
    /// still holds it and [`takeover::decide_remote`] agrees; otherwise it keeps the name and
    /// the claim is refused (the claimant's node reaps its claimant `name-refused`).
    fn replace_for_fleet(&mut self, id: u64, name: &str, by: &str, now: Instant) {
        let Some(token) = self.fleet_holder(id, name) else {
            return;
        };
        let Some(s) = self.sessions.get(token) else {
            return;
        };
        let identified = s.identity().is_some();
        let tcp = match (identified, self.config.session.takeover) {
            (true, TakeoverPolicy::Stale) => sys::tcp_info(&s.stream).ok(),
            _ => None,
        };
        let h = takeover::Holder {
            last_rx: s.last_rx,
            tcp,
        };
        let peer = s.peer;
        match takeover::decide_remote(&h, identified, &self.config.session, now) {
            Decision::Replace(why) => {
                budgeted!(
                    self.log_budget,
                    LineKind::Takeover,
                    Level::Info,
                    now,
                    "fleet: node {} takes the name {}: reaping its holder id={id} peer={peer} {why}",
                    clipped(by),
                    clipped(name)
                );
                self.stats.takeover.replaced += 1;
                self.reap(token, Cause::Reason(ReapReason::Replaced), now);
            }
            Decision::Refuse { silent } => {
                self.stats.takeover.refused += 1;
                budgeted!(
                    self.log_budget,
                    LineKind::Takeover,
                    Level::Info,
                    now,
                    "fleet: node {} claimed the name {}: kept by its live holder id={id} \
                     peer={peer} silent_ms={} (an identity, session.takeover = \"stale\")",
                    clipped(by),
                    clipped(name),
                    silent.as_millis()
                );
                self.fleet.refuse_claim(name);
            }
        }
    }

    /// The session with `id` if it holds `name` here.
    fn fleet_holder(&self, id: u64, name: &str) -> Option<mio::Token> {
        self.sessions
            .holders(name.as_bytes())
            .iter()
            .copied()
            .find(|t| self.sessions.get(*t).is_some_and(|s| s.id == id))
    }

    /// This node's session `id` took `name` (told `+OK`), and the claim lost to node `by`:
    /// the claimant is reaped, if it still holds the name: `replaced` when another session
    /// took the name, `name-refused` when the holder there keeps it.
    fn lost_to_fleet(&mut self, id: u64, name: &str, by: &str, why: Lost, now: Instant) {
        let Some(token) = self.fleet_holder(id, name) else {
            return;
        };
        let peer = self.sessions.get(token).map(|s| s.peer);
        let reason = match why {
            Lost::Identity => {
                self.stats.takeover.identity_refused += 1;
                ReapReason::NameRefused
            }
            Lost::LiveHolder => {
                self.stats.takeover.refused += 1;
                ReapReason::NameRefused
            }
            Lost::Superseded | Lost::TakenMeanwhile => ReapReason::Replaced,
        };
        budgeted!(
            self.log_budget,
            LineKind::Takeover,
            Level::Info,
            now,
            "fleet: session id={id} peer={} lost the name {} to node {}: {}; reaping it",
            peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            clipped(name),
            clipped(by),
            why.describe()
        );
        self.reap(token, Cause::Reason(reason), now);
    }

    /// At the end of each turn: the snapshot the worker waits for, if any (retried next
    /// tick while the queue is full).
    pub(super) fn fleet_end_turn(&mut self, now: Instant) {
        if !self.fleet.snapshot_due(now) {
            return;
        }
        let now_ms = unix_ms(SystemTime::now());
        let epoch = self.stats.presence.epoch;
        let rows = self
            .sessions
            .iter()
            // Only sessions that were announced (`joined`): not one still waiting for its
            // PROXY header, whose `joined` comes later (or never).
            .filter(|(_, s)| s.proxy != ProxyStage::AwaitingHeader)
            .map(|(_, s)| {
                let age = u64::try_from(s.age(now).as_millis()).unwrap_or(0);
                fleet::row(
                    s.id,
                    s.peer,
                    s.stream.local_addr().ok(),
                    s.name.as_deref(),
                    s.identity().map(|i| &*i.name),
                    now_ms.saturating_sub(age),
                    epoch,
                )
            })
            .collect();
        self.fleet.send_snapshot(rows, now);
    }
}

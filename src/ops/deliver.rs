//! Presence delivery: one event appended to every subscriber, the slow-subscriber policy, and
//! the drain at shutdown, and the per-turn bound on delivery work.
//!
//! The event's JSON and its `message` frame are built once per event into the loop's scratch
//! buffers and copied into each subscriber's output (a `pmessage` for a pattern subscription is
//! framed per subscriber). Subscribers with new output are written at the end of the loop
//! turn ([`Ops::end_turn`]), so the events of one turn go out in one `write` per
//! subscriber.
//!
//! The policy: when a subscriber's pending output passes `session.max_output_bytes`, one write
//! is tried at once (a burst, say a mass reap in one turn, may still fit in the socket); if it
//! is still over, the subscriber is disconnected, counted in `presence.dropped` and logged with
//! `reason=slow-consumer`. Nothing is ever dropped from the output of a subscriber that stays
//! connected, so a connected watcher sees every sequence number. At shutdown the limit is off:
//! the `left` events of every session (reason `shutdown`) are queued in full and drained for
//! at most [`SHUTDOWN_DRAIN`].
//!
//! The bound on work: at most [`DELIVERY_BYTES_PER_TURN`] of frames are given out per loop
//! turn; the events after that wait in a [`Backlog`] (their JSON, built when they happened) and
//! go out on the next turns, in order, before any newer event. So a burst of events times many
//! subscribers times many matching patterns costs a few milliseconds per turn, not one long
//! freeze, and no subscriber loses or reorders an event. (While events wait, a command's reply
//! can overtake them, and a connection that subscribes then receives them too; without a
//! backlog, as in every normal turn, events and replies keep their order.)

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use log::warn;
use mio::Events;

use super::connection::flush;
use super::{Context, Ops};
use crate::protocol::pubsub::{self, PRESENCE};

/// At shutdown, how long subscribers get to take their last events before they are closed.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Bytes of frames given to subscribers per loop turn, before the rest of the turn's events
/// wait for the next one. A turn can publish thousands of events (a client pipelining `CLIENT
/// SETNAME`, a mass reap), and each costs one frame per subscriber and matching pattern: up to
/// 1024 × 1025 frames of about 300 bytes. 1 MiB is about 3,500 frames, a few milliseconds of a
/// debug build, and far above what a normal turn publishes (64 reaps or accepts to one watcher:
/// 20 KB).
const DELIVERY_BYTES_PER_TURN: usize = 1 << 20;
/// Bytes of event JSON the backlog may hold (about 3,000 events). Past it, events are given out
/// regardless of [`DELIVERY_BYTES_PER_TURN`]: the budget smooths bursts, and under sustained
/// overload memory stays bounded while each subscriber's `max_output_bytes` still applies.
const BACKLOG_MAX_BYTES: usize = 1 << 20;

/// Events published but not yet given to every subscriber, oldest first, because this turn's
/// delivery budget was spent. While any wait, new events queue behind them, so each subscriber
/// sees every event, in order. The head event may have been given to some subscribers: those
/// with slab keys below `head_from`.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    events: VecDeque<Box<[u8]>>,
    bytes: usize,
    head_from: usize,
    /// Frame bytes given out this turn.
    spent: usize,
}

impl Backlog {
    /// Whether events wait: the loop turns again at once (zero poll timeout) to give them out.
    pub(super) fn is_waiting(&self) -> bool {
        !self.events.is_empty()
    }

    fn push(&mut self, json: &[u8]) {
        self.bytes += json.len();
        self.events.push_back(json.into());
    }
}

impl Ops {
    /// Queues one event (its JSON, encoded once by the loop for every consumer) to every
    /// presence subscriber: at once while this turn's delivery budget lasts and nothing waits
    /// before it, else behind the backlog. The loop calls it for each event while anyone
    /// subscribes.
    pub(crate) fn publish(&mut self, json: &[u8], cx: &mut Context<'_>) {
        if self.backlog.is_waiting() {
            self.backlog.push(json);
        } else if let Some(from) = self.give_event(json, 0, cx) {
            self.backlog.push(json);
            self.backlog.head_from = from;
        }
    }

    /// Gives one event (its JSON) to the subscribers with slab keys from `from` on, until the
    /// turn's budget is spent (no budget at shutdown). Returns the key it stopped before, or
    /// `None` when every subscriber has it.
    fn give_event(&mut self, json: &[u8], from: usize, cx: &mut Context<'_>) -> Option<usize> {
        let max = cx.config.session.max_output_bytes;
        let stopping = cx.stopping;
        let Ops {
            conns,
            frame_buf,
            dirty,
            backlog,
            ..
        } = self;
        frame_buf.clear();
        pubsub::write_message(frame_buf, PRESENCE, json);
        let mut failed: Vec<(usize, Result<usize, io::Error>)> = Vec::new();
        let mut stopped = None;
        for (key, conn) in conns.iter_mut().skip_while(|(k, _)| *k < from) {
            if !conn.takes_events() {
                continue;
            }
            if backlog.spent >= DELIVERY_BYTES_PER_TURN
                && !stopping
                && backlog.bytes <= BACKLOG_MAX_BYTES
            {
                stopped = Some(key);
                break;
            }
            let was = conn.pending();
            cx.stats.presence.delivered += conn.push_presence(frame_buf, json);
            backlog.spent += conn.pending().saturating_sub(was);
            if conn.pending() > max && !stopping {
                match flush(conn) {
                    Err(e) => {
                        failed.push((key, Err(e)));
                        continue;
                    }
                    Ok(()) if conn.pending() > max => {
                        failed.push((key, Ok(conn.pending())));
                        continue;
                    }
                    Ok(()) => {}
                }
            }
            if was == 0 && conn.pending() > 0 {
                // Written at the end of the turn, with whatever else the turn adds.
                dirty.push(key);
            }
        }
        for (key, outcome) in failed {
            match outcome {
                Ok(pending) => self.drop_slow_subscriber(key, pending, max, cx),
                Err(e) => self.close_conn(key, &format!("write failed: {e}"), cx),
            }
        }
        stopped
    }

    /// Gives out waiting events, oldest first, while the turn's budget lasts.
    fn give_backlog(&mut self, cx: &mut Context<'_>) {
        while let Some(json) = self.backlog.events.pop_front() {
            let from = std::mem::take(&mut self.backlog.head_from);
            match self.give_event(&json, from, cx) {
                None => self.backlog.bytes -= json.len(),
                Some(key) => {
                    self.backlog.events.push_front(json);
                    self.backlog.head_from = key;
                    return;
                }
            }
        }
    }

    /// At the end of a loop turn: gives out what waits in the backlog, writes the events the
    /// turn queued to subscribers (one `write` each, however many events), arms `WRITABLE` for
    /// what the socket refused, and starts the next turn's budget.
    pub(crate) fn end_turn(&mut self, cx: &mut Context<'_>) {
        self.give_backlog(cx);
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            // A key closed (and maybe reused) since only costs a needless flush.
            self.settle(key, cx);
        }
        // Keep the allocation for the next turn.
        dirty.clear();
        self.dirty = dirty;
        self.backlog.spent = 0;
        if !self.backlog.is_waiting() && self.backlog.events.capacity() > 64 {
            // After a burst: the queue's memory goes back.
            self.backlog = Backlog::default();
        }
    }

    fn drop_slow_subscriber(
        &mut self,
        key: usize,
        pending: usize,
        max: usize,
        cx: &mut Context<'_>,
    ) {
        if let Some(conn) = self.conns.get(key) {
            warn!(
                "admin id={} peer={} presence subscriber dropped: reason=slow-consumer \
                 pending_bytes={pending} max_output_bytes={max}",
                conn.id, conn.peer
            );
        }
        cx.stats.presence.dropped += 1;
        self.close_conn(key, "slow-consumer", cx);
    }

    /// At shutdown, after every session was reaped: lets subscribers take their pending events
    /// for at most [`SHUTDOWN_DRAIN`]. The loop has stopped, so this waits on the poller
    /// itself (for writability only; other events are dropped).
    pub(crate) fn drain_subscribers(&mut self, cx: &mut Context<'_>) {
        // Stopping: no budget, every waiting event is queued to its subscribers now.
        self.give_backlog(cx);
        let deadline = cx.now + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(64);
        loop {
            let keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.wants_presence() && c.pending() > 0)
                .map(|(k, _)| k)
                .collect();
            let mut waiting = 0;
            for key in keys {
                // Writes what the socket takes, and arms WRITABLE for the rest.
                self.settle(key, cx);
                if self.conns.get(key).is_some_and(|c| c.pending() > 0) {
                    waiting += 1;
                }
            }
            if waiting == 0 {
                return;
            }
            if cx.now >= deadline {
                warn!(
                    "shutdown: {waiting} presence subscriber(s) did not take their last events \
                     within {SHUTDOWN_DRAIN:?}"
                );
                return;
            }
            if let Err(e) = cx.poll.poll(&mut events, Some(deadline - cx.now)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return;
                }
            }
            cx.now = Instant::now();
        }
    }
}

//! Presence delivery: one event appended to every subscriber, the slow-subscriber policy, and
//! the drain at shutdown.
//!
//! The event's JSON and its `message` frame are built once per event into the loop's scratch
//! buffers and copied into each subscriber's output (a `pmessage` for a pattern subscription is
//! framed per subscriber). Subscribers with new output are written at the end of the loop
//! turn ([`Server::flush_subscribers`]), so the events of one turn go out in one `write` per
//! subscriber.
//!
//! The policy: when a subscriber's pending output passes `session.max_output_bytes`, one write
//! is tried at once (a burst, say a mass reap in one turn, may still fit in the socket); if it
//! is still over, the subscriber is disconnected, counted in `presence.dropped` and logged with
//! `reason=slow-consumer`. Nothing is ever dropped from the output of a subscriber that stays
//! connected, so a connected watcher sees every sequence number. At shutdown the limit is off:
//! the `left` events of every session (reason `shutdown`) are queued in full and drained for
//! at most [`SHUTDOWN_DRAIN`].

use std::io;
use std::time::{Duration, Instant, SystemTime};

use log::warn;
use mio::Events;

use super::conn::flush;
use super::Ops;
use crate::presence::{self, Event};
use crate::pubsub::{self, PRESENCE};
use crate::server::Server;

/// At shutdown, how long subscribers get to take their last events before they are closed.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

impl Server {
    /// Queues event number `seq` to every presence subscriber.
    pub(in crate::server) fn ops_deliver(&mut self, seq: u64, event: &Event<'_>) {
        let max = self.config.session.max_output_bytes;
        let stopping = self.stopping;
        let Server { ops, stats, .. } = self;
        let Ops {
            conns,
            json_buf,
            frame_buf,
            dirty,
            ..
        } = ops;
        json_buf.clear();
        presence::encode(seq, presence::unix_ms(SystemTime::now()), event, json_buf);
        frame_buf.clear();
        pubsub::write_message(frame_buf, PRESENCE, json_buf);
        let mut failed: Vec<(usize, Result<usize, io::Error>)> = Vec::new();
        for (key, conn) in conns.iter_mut() {
            if !conn.takes_events() {
                continue;
            }
            let was_idle = conn.pending() == 0;
            stats.presence.delivered += conn.push_presence(frame_buf, json_buf);
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
            if was_idle && conn.pending() > 0 {
                // Written at the end of the turn, with whatever else the turn adds.
                dirty.push(key);
            }
        }
        for (key, outcome) in failed {
            match outcome {
                Ok(pending) => self.drop_slow_subscriber(key, pending, max),
                Err(e) => self.ops_close(key, &format!("write failed: {e}")),
            }
        }
    }

    /// At the end of a loop turn: writes the events the turn queued to subscribers (one
    /// `write` each, however many events), and arms `WRITABLE` for what the socket refused.
    pub(in crate::server) fn flush_subscribers(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.ops.dirty);
        for &key in &dirty {
            // A key closed (and maybe reused) since only costs a needless flush.
            self.ops_settle(key, now);
        }
        // Keep the allocation for the next turn.
        dirty.clear();
        self.ops.dirty = dirty;
    }

    fn drop_slow_subscriber(&mut self, key: usize, pending: usize, max: usize) {
        if let Some(conn) = self.ops.conns.get(key) {
            warn!(
                "admin id={} peer={} presence subscriber dropped: reason=slow-consumer \
                 pending_bytes={pending} max_output_bytes={max}",
                conn.id, conn.peer
            );
        }
        self.stats.presence.dropped += 1;
        self.ops_close(key, "slow-consumer");
    }

    /// At shutdown, after every session was reaped: lets subscribers take their pending events
    /// for at most [`SHUTDOWN_DRAIN`]. The loop has stopped, so this waits on the poller
    /// itself (for writability only; other events are dropped).
    pub(in crate::server) fn drain_subscribers(&mut self, now: Instant) {
        let deadline = now + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(64);
        let mut now = now;
        loop {
            let keys: Vec<usize> = self
                .ops
                .conns
                .iter()
                .filter(|(_, c)| c.wants_presence() && c.pending() > 0)
                .map(|(k, _)| k)
                .collect();
            let mut waiting = 0;
            for key in keys {
                // Writes what the socket takes, and arms WRITABLE for the rest.
                self.ops_settle(key, now);
                if self.ops.conns.get(key).is_some_and(|c| c.pending() > 0) {
                    waiting += 1;
                }
            }
            if waiting == 0 {
                return;
            }
            if now >= deadline {
                warn!(
                    "shutdown: {waiting} presence subscriber(s) did not take their last events \
                     within {SHUTDOWN_DRAIN:?}"
                );
                return;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(deadline - now)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return;
                }
            }
            now = Instant::now();
        }
    }
}

//! The operator side's shared work: a budget per loop turn for all operator connections
//! together, and the queue of connections that wait for it, served round-robin (see the
//! parent module's "Work per loop turn").

use std::time::Instant;

use super::{Action, Context, Ops, WORK};

/// Work units all operator connections may spend in one loop turn (see src/ops/mod.rs).
const WORK_PER_TURN: usize = 256;

/// The operator side's work budget for the current loop turn.
#[derive(Debug, Default)]
pub(super) struct Budget {
    turn: Option<Instant>,
    left: usize,
}

impl Budget {
    /// What is left this turn; a new `now` is a new turn (the loop reads the clock once per
    /// turn).
    pub(super) fn left(&mut self, now: Instant) -> &mut usize {
        if self.turn != Some(now) {
            self.turn = Some(now);
            self.left = WORK_PER_TURN;
        }
        &mut self.left
    }
}

impl Ops {
    /// Puts a connection on the work queue (once), and makes sure the loop comes back for it.
    pub(super) fn enqueue(&mut self, key: usize, cx: &mut Context<'_>) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.queued {
                conn.queued = true;
                self.queue.push_back(key);
            }
        }
        if !self.work_pending {
            self.work_pending = true;
            cx.revisit.push(WORK);
        }
    }

    /// Serves up to `rounds` queued connections front to back while the turn's budget lasts;
    /// a connection that still has work goes to the back, those not reached keep their place.
    pub(super) fn run_queue(&mut self, rounds: usize, cx: &mut Context<'_>) -> Option<Action> {
        for round in 0..rounds {
            if *self.budget.left(cx.now) == 0 {
                break;
            }
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            match self.conns.get_mut(key) {
                Some(conn) => conn.queued = false,
                // Closed since.
                None => continue,
            }
            if let Some(action) = self.service(key, cx) {
                return Some(self.pause_queue(action, Some(rounds - round - 1)));
            }
        }
        if !self.queue.is_empty() && !self.work_pending {
            self.work_pending = true;
            cx.revisit.push(WORK);
        }
        None
    }

    /// Notes that the connection paused for `action` was being served from the work queue.
    pub(super) fn pause_queue(&mut self, action: Action, queue_left: Option<usize>) -> Action {
        if let Some(paused) = self.paused.as_mut() {
            paused.queue_left = queue_left;
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_budget_is_per_turn_and_a_new_now_refills_it() {
        let now = Instant::now();
        let mut budget = Budget::default();
        *budget.left(now) -= 200;
        assert_eq!(
            *budget.left(now),
            WORK_PER_TURN - 200,
            "same turn: what is left"
        );
        let next = now + Duration::from_millis(1);
        assert_eq!(*budget.left(next), WORK_PER_TURN, "next turn: full again");
    }
}

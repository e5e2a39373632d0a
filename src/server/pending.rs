//! Work the loop left for its next turn: while any is waiting, the poll timeout is zero.
//!
//! Three kinds, each from a per-turn cap that keeps one busy peer from starving the rest:
//! tokens whose input was not drained (the read caps of sessions and operator connections, and
//! the operator work queue), listeners with connections still waiting (the accept cap), and
//! sessions whose event reported an error or hang-up (serviced [`super::reaper::PER_TURN`] a
//! turn, see `reaper.rs`).

use std::collections::VecDeque;

use mio::Token;

/// The loop's pending work (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Tokens to dispatch again next turn (per-turn read caps, the operator work queue).
    pub(super) revisit: Vec<Token>,
    /// Listeners to accept from again next turn (per-turn accept cap, descriptors freed).
    accept: bool,
    /// Sessions with an error or hang-up, as (token, id), serviced a bounded number per turn.
    deferred: VecDeque<(Token, u64)>,
}

impl Pending {
    /// Whether the next turn has work before any new event: then it polls without waiting.
    pub(super) fn any(&self) -> bool {
        !self.revisit.is_empty() || self.accept || !self.deferred.is_empty()
    }

    /// Takes the tokens to revisit this turn.
    pub(super) fn take_revisits(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.revisit)
    }

    /// Accept from every listener next turn.
    pub(super) fn accept_again(&mut self) {
        self.accept = true;
    }

    /// Whether to accept from every listener now (and clears it).
    pub(super) fn take_accept(&mut self) -> bool {
        std::mem::take(&mut self.accept)
    }

    /// Queues a session whose peer failed or hung up.
    pub(super) fn defer(&mut self, token: Token, id: u64) {
        self.deferred.push_back((token, id));
    }

    /// The oldest deferred session.
    pub(super) fn next_deferred(&mut self) -> Option<(Token, u64)> {
        self.deferred.pop_front()
    }
}

//! Per-session deadlines: a min-heap of (when, token, id), the one shape every timer of the
//! loop has (idle, `auth_timeout`, token expiry, TLS handshake, PROXY header).
//!
//! Entries are never removed early: one whose session ended (its token may belong to a new
//! session by then, hence the id), authenticated, or moved its deadline is simply found stale
//! when it comes due, and its owner checks the session before acting. Each owner reaps at most
//! a bounded number of due entries per turn; the rest stay due, and the poll timeout is zero
//! for a deadline in the past, so the next turn takes them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use mio::Token;

/// A min-heap of (deadline, token, id) (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, Token, u64)>>,
}

impl Deadlines {
    pub(super) fn push(&mut self, at: Instant, token: Token, id: u64) {
        self.heap.push(Reverse((at, token, id)));
    }

    /// The nearest deadline, for the poll timeout.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the nearest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Token, u64)> {
        let Reverse((at, token, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((token, id))
    }

    pub(super) fn clear(&mut self) {
        self.heap.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_come_due_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.push(t0 + Duration::from_secs(2), Token(2), 20);
        d.push(t0 + Duration::from_secs(1), Token(1), 10);
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.pop_due(t0), None);
        assert_eq!(d.pop_due(t0 + Duration::from_secs(3)), Some((Token(1), 10)));
        assert_eq!(d.pop_due(t0 + Duration::from_secs(3)), Some((Token(2), 20)));
        assert_eq!((d.pop_due(t0 + Duration::from_secs(9)), d.len()), (None, 0));
    }
}

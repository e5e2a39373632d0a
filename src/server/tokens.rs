//! The loop's token space: every `mio::Token` the poller hands back, laid out in one place.
//!
//! | token                              | what                                         |
//! |------------------------------------|----------------------------------------------|
//! | [`SIGNAL`] (0)                     | the signal pipe                              |
//! | [`LISTENER_BASE`] + key            | client listeners (`accept.rs`)               |
//! | [`ADMIN_LISTENER`], [`METRICS_LISTENER`] | the operator listeners (`ops/`)        |
//! | [`WORK`]                           | the operator work queue, on the revisit list |
//! | [`CONN_BASE`] + key                | operator connections                         |
//! | [`SESSION_BASE`] + key             | client sessions (`SessionTable`)             |
//!
//! Ranges never overlap (checked at compile time below), so the loop dispatches on the number
//! alone; an event for a token whose owner is gone is stale and ignored by that owner. A range
//! whose owner sits in a lower layer is defined there and re-exported here (`SESSION_BASE`),
//! so no lower layer imports the loop.

use mio::Token;

use crate::config::MAX_OPS_LISTENER_CONNECTIONS;

/// The signal pipe.
pub(crate) const SIGNAL: Token = Token(0);
/// Client listener tokens are `LISTENER_BASE + slab key`.
pub(crate) const LISTENER_BASE: usize = 1;
/// Operator tokens start here; client listener tokens stay below it.
pub(crate) const OPS_BASE: usize = 1 << 15;
/// The admin listener.
pub(crate) const ADMIN_LISTENER: Token = Token(OPS_BASE);
/// The metrics listener.
pub(crate) const METRICS_LISTENER: Token = Token(OPS_BASE + 1);
/// On the revisit list while the operator work queue is not empty: serve it next turn.
pub(crate) const WORK: Token = Token(OPS_BASE + 2);
/// Operator connection tokens are `CONN_BASE + slab key`.
pub(crate) const CONN_BASE: usize = OPS_BASE + 3;
/// Session tokens are `SESSION_BASE + slab key`. Defined by the session table (a lower layer
/// must not import the loop), and listed here with the rest.
pub(crate) use crate::session::SESSION_BASE;

// Both operator listeners at their highest `max_connections` fit their range.
const _: () = assert!(CONN_BASE + 2 * MAX_OPS_LISTENER_CONNECTIONS <= SESSION_BASE);
// The client listeners' range ends where the operator side's begins.
const _: () = assert!(LISTENER_BASE < OPS_BASE);

/// Whether `token` belongs to the operator side.
pub(crate) fn is_ops(token: Token) -> bool {
    (OPS_BASE..SESSION_BASE).contains(&token.0)
}

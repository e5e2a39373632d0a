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
//! whose owner sits in a lower layer is defined there and re-exported here (`SESSION_BASE`,
//! the operator side's),
//! so no lower layer imports the loop.

use mio::Token;

use crate::config::MAX_OPS_LISTENER_CONNECTIONS;

/// The signal pipe.
pub(crate) const SIGNAL: Token = Token(0);
/// Client listener tokens are `LISTENER_BASE + slab key`.
pub(crate) const LISTENER_BASE: usize = 1;
/// The operator side's tokens: defined by the operator side (a lower layer must not import
/// the loop) and listed here with the rest.
#[allow(unused_imports)] // listed for the reader; the operator side matches them itself
pub(crate) use crate::ops::{ADMIN_LISTENER, CONN_BASE, METRICS_LISTENER, OPS_BASE, WORK};
/// Session tokens are `SESSION_BASE + slab key`. Defined by the session table (a lower layer
/// must not import the loop), and listed here with the rest.
pub(crate) use crate::session::SESSION_BASE;

// Both operator listeners at their highest `max_connections` fit their range (also checked
// where they are defined).
const _: () = assert!(CONN_BASE + 2 * MAX_OPS_LISTENER_CONNECTIONS <= SESSION_BASE);
// The client listeners' range ends where the operator side's begins.
const _: () = assert!(LISTENER_BASE < OPS_BASE);

//! What the event loop does after a request ([`Step`]): carry on, close the session with a
//! reason, apply a rename, or run the requests an `EXEC` released. Every command handler on the
//! client port returns one.

use crate::protocol::resp::Proto;
use crate::session::reap::ReapReason;

/// What the event loop does after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Deliver what is queued, then reap with this reason.
    Close(ReapReason),
    /// `CLIENT SETNAME` or `HELLO ... SETNAME` (validated, not yet answered): the loop gives
    /// the session this name through the session table, which keeps the name index, publishes
    /// the `named` event and, with `session.unique_names`, replaces the name's holder first or
    /// refuses the name ([`NAME_IN_USE`]) when the holder is live (src/session/takeover.rs). It
    /// writes the reply then, in its place among the session's replies: [`Rename::reply`] on
    /// success ([`answer_renamed`](crate::protocol::command::answer_renamed)). Requests after it
    /// wait until that is done.
    Rename(Rename),
    /// `EXEC` (its array header already written): the loop runs these queued requests (RESP
    /// multibulk, see `transaction.rs`) before anything the client sent after `EXEC`, each
    /// adding its one reply to the array.
    Exec(Box<[u8]>),
    /// An identity was proved (a signed token by `AUTH <name> <token>` or `HELLO ... AUTH`, a
    /// client certificate by the TLS handshake): the loop binds the identity waiting in
    /// `Extras::pending_identity` (per-identity limit, name, a token's expiry timer) and
    /// answers an `AUTH`, before the requests after it run.
    BindIdentity,
}

/// A name change for the loop to apply, and what to answer when it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// The new name; `None` clears it.
    pub name: Option<Box<str>>,
    /// The reply on success.
    pub reply: OnRenamed,
}

/// The reply to a name change that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRenamed {
    /// `CLIENT SETNAME`: `+OK`.
    Ok,
    /// `HELLO <proto> SETNAME`: switch to this protocol, then the server map in it. A refused
    /// name refuses the whole `HELLO`, so the protocol changes only here.
    Hello(Proto),
}

/// The error a newcomer's `CLIENT SETNAME` (or `HELLO ... SETNAME`) gets when a live session
/// holds the name (`session.unique_names`, `session.takeover = "stale"`). Stable: clients and
/// tests match it.
pub const NAME_IN_USE: &str = "ERR name in use by a live session";

impl Step {
    /// A rename answered `+OK` once applied (`CLIENT SETNAME`).
    pub fn rename(name: Option<Box<str>>) -> Step {
        Step::Rename(Rename {
            name,
            reply: OnRenamed::Ok,
        })
    }

    /// Whether the session goes on reading (its unparsed input is kept).
    pub fn keeps_input(&self) -> bool {
        !matches!(self, Step::Close(_))
    }
}

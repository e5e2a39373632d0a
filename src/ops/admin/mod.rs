//! The admin listener's commands: the client protocol's connection commands, plus those that
//! see or change other sessions, in Redis's formats so `redis-cli` and Redis tooling work:
//!
//! - `CLIENT LIST [TYPE normal] [ID id ...]`: one [`crate::protocol::client_info::describe`] line per
//!   session, each ending with `presence-seq=N`, the sequence number of the last presence event
//!   the list reflects (the resync recipe of docs/presence.md).
//! - `CLIENT LOOKUP name`: the `CLIENT LIST` line(s) of the session(s) holding `name`, or nil.
//! - `SUBSCRIBE presence` and the rest of pub/sub (src/protocol/pubsub.rs).
//! - `CLIENT KILL ID n | ADDR ip:port | LADDR ip:port | MAXAGE s | SKIPME yes/no ...` (filters
//!   combine; the reply is the number killed) and the old `CLIENT KILL ip:port` (`+OK`, or
//!   `-ERR No such client`). Killed sessions are reaped with reason `killed`.
//! - `INFO [section ...]` (`info.rs`) and `CONFIG GET pattern ...` (glob, case-insensitive).
//!
//! [`execute`] is a function of a read-only [`View`] of the loop's state: it writes the reply and
//! returns what the loop must do ([`AdminStep`]; a kill reaches the loop as an `ops::Action`), so
//! the one place sessions end stays the loop's reaper. Admin connections are not sessions: they
//! have their own ids, are not listed by `CLIENT LIST`, and cannot be killed with `CLIENT KILL`.
//!
//! Files (src/ops/admin/): this one holds [`execute`] and the types it works with; `client.rs`
//! the `CLIENT` subcommands (LIST, KILL, LOOKUP and the connection's own), `listing.rs` the
//! `CLIENT LIST` line and the listings built turn by turn, `config_get.rs` `CONFIG GET`,
//! `info.rs` `INFO`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use mio::Token;

use crate::config::Config;
use crate::protocol::args::{unknown_command, Args};
use crate::protocol::command;
use crate::protocol::pubsub::{self, Subscriptions};
use crate::protocol::resp::{self, Proto};
use crate::session::{LibInfo, SessionTable};
use crate::telemetry::stats::Stats;

mod client;
mod config_get;
mod fleet_view;
mod info;
mod listing;
#[cfg(test)]
mod tests;

use client::client_command;
use config_get::config_command;
pub use listing::Listing;

/// One admin connection's own state.
#[derive(Debug)]
pub struct AdminClient {
    pub id: u64,
    pub peer: String,
    pub local: String,
    pub name: Option<Box<str>>,
    pub lib: Option<Box<LibInfo>>,
    pub connected_at: Instant,
    pub last_command: Instant,
    pub commands: u64,
    /// Pub/sub channels and patterns (presence events).
    pub subscriptions: Subscriptions,
    /// RESP2 or RESP3, as chosen with `HELLO`.
    pub proto: Proto,
}

impl AdminClient {
    pub fn new(id: u64, peer: String, local: String, now: Instant) -> AdminClient {
        AdminClient {
            id,
            peer,
            local,
            name: None,
            lib: None,
            proto: Proto::Resp2,
            connected_at: now,
            last_command: now,
            commands: 0,
            subscriptions: Subscriptions::default(),
        }
    }
}

/// The operator side's own counters, by listener (index 0 admin, 1 metrics; see
/// [`OPS_LISTENERS`]), shown by `INFO clients` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpsCounters {
    /// Connections open now.
    pub open: [u64; 2],
    /// Connections refused because the listener's `max_connections` was reached.
    pub refused: [u64; 2],
    /// Connections closed after `idle_timeout` with nothing received or written.
    pub idle_closed: [u64; 2],
    /// Connections closed because their pending output did not drain (reason
    /// `slow-consumer`).
    pub slow_closed: [u64; 2],
}

/// The operator listeners, in the order of [`OpsCounters`]' arrays.
pub const OPS_LISTENERS: [&str; 2] = ["admin", "metrics"];

/// What the admin commands may read: a borrow of the event loop's state for one request.
pub struct View<'a> {
    pub now: Instant,
    pub sessions: &'a SessionTable,
    pub stats: &'a Stats,
    pub config: &'a Config,
    pub config_path: &'a Path,
    /// When the daemon started.
    pub started: Instant,
    /// The client listeners' bound addresses.
    pub listeners: &'a [SocketAddr],
    pub admin_listener: Option<&'a str>,
    pub metrics_listener: Option<&'a str>,
    /// Admin connections open now, this one included.
    pub admin_clients: usize,
    /// The operator side's counters.
    pub ops: &'a OpsCounters,
    /// `[fleet]`: counters, and the fleet's view for `FLEET NODES` and `CLIENT LOOKUP`.
    pub fleet: &'a crate::fleet::Fleet,
}

/// What the event loop does after an admin request (whose reply is already written).
#[derive(Debug, PartialEq, Eq)]
pub enum AdminStep {
    Continue,
    /// The reply is too long for one turn: the loop builds it with this, as the socket drains,
    /// before it runs the connection's next request.
    List(Box<Listing>),
    /// Deliver the reply, then close this admin connection (`QUIT`).
    Close,
    /// Reap these sessions with reason `killed`.
    Kill(Vec<Token>),
}

/// The admin listener's commands besides pub/sub (for the subscribed-mode refusal, which tells
/// a known command from an unknown one as Redis does).
const COMMANDS: [&str; 10] = [
    "PING", "ECHO", "SELECT", "COMMAND", "QUIT", "CLIENT", "INFO", "CONFIG", "HELLO", "FLEET",
];

/// Work units (see src/ops/mod.rs: about one `CLIENT LIST` line, 12 µs in a debug
/// build) a request costs besides its reply's bytes (one unit per 512): `CONFIG GET` renders
/// and flattens the whole config (about 0.4 ms in a debug build).
pub fn request_cost(args: Args<'_>) -> usize {
    if args.is(0, "CONFIG") {
        40
    } else {
        1
    }
}

/// Runs one admin request, writing its reply to `out`.
pub fn execute(
    args: Args<'_>,
    client: &mut AdminClient,
    view: &View<'_>,
    out: &mut Vec<u8>,
) -> AdminStep {
    if args.is_empty() {
        return AdminStep::Continue;
    }
    client.commands += 1;
    client.last_command = view.now;
    // First: a subscribed connection may run only a few commands, PING included.
    let limits = pubsub::Limits::of(&view.config.admin);
    if pubsub::execute(args, &mut client.subscriptions, client.proto, limits, out)
        == pubsub::Outcome::Done
    {
        return AdminStep::Continue;
    }
    // RESP3 lifts the subscribed-mode restriction (pushes and replies are told apart by
    // type), as Redis does.
    if client.subscriptions.active() && client.proto == Proto::Resp2 && !args.is(0, "QUIT") {
        if COMMANDS.iter().any(|c| args.is(0, c)) {
            pubsub::refuse(args, out);
        } else {
            unknown_command(args, out);
        }
        return AdminStep::Continue;
    }
    if command::common(
        args,
        &crate::protocol::command_table::ADMIN,
        client.proto,
        out,
    ) {
        return AdminStep::Continue;
    }
    if args.is(0, "QUIT") {
        resp::write_simple(out, "OK");
        return AdminStep::Close;
    } else if args.is(0, "CLIENT") {
        return client_command(args, client, view, out);
    } else if args.is(0, "INFO") {
        let wanted: Vec<&[u8]> = (1..args.len()).map(|i| args.get(i)).collect();
        let mut text = String::with_capacity(2048);
        info::render(view, &wanted, &mut text);
        resp::write_bulk(out, text.as_bytes());
    } else if args.is(0, "CONFIG") {
        config_command(args, view, client.proto, out);
    } else if args.is(0, "FLEET") {
        fleet_view::fleet_command(args, view, client.proto, out);
    } else if args.is(0, "HELLO") {
        let limits = command::FieldLimits::of(&view.config.session);
        if let command::Hello::SetName { name, proto } =
            command::hello(args, client.id, &mut client.proto, limits, out)
        {
            // An admin connection's name is its own (never unique): always taken.
            client.name = name;
            command::hello_reply(client.id, &mut client.proto, proto, out);
        }
    } else {
        unknown_command(args, out);
    }
    AdminStep::Continue
}

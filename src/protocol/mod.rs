//! The wire protocol and what a request means: RESP2/RESP3 parsing and encoding (`resp`), a
//! request's words (`command::Args`), the command tables and the commands themselves, `MULTI`/
//! `EXEC` (`transaction`), the auth gate, `CLIENT INFO` lines, pub/sub and glob patterns, and
//! the PROXY protocol header a trusted proxy sends first (`proxy_header`).
//!
//! Commands run on a [`Session`](crate::session::Session), and a session holds protocol state
//! (its RESP version, parser resume point, queued transaction), so `protocol/` and `session/`
//! form one layer: they may import each other, and neither imports telemetry, the operator
//! side or the loop.

pub(crate) mod args;
pub(crate) mod auth_gate;
pub(crate) mod client_info;
pub(crate) mod command;
pub(crate) mod command_table;
pub(crate) mod glob;
pub(crate) mod probe;
pub(crate) mod proxy_header;
pub(crate) mod pubsub;
pub mod resp;
pub(crate) mod step;
pub(crate) mod token_check;
pub(crate) mod transaction;

//! RESP framing for the client protocol: parse one request (RESP2 request forms) from the front
//! of a connection's read buffer, and append replies (RESP2 or RESP3, [`Proto`]) to its write
//! buffer.
//!
//! Two request forms are accepted, as redis-server does:
//! - **multibulk**, anything starting with `*`: `*<count>\r\n` then `count` times
//!   `$<len>\r\n<len bytes>\r\n`. Arguments are binary-safe.
//! - **inline**, anything else: one line ending in `\n` (a `\r` before it is dropped, so both
//!   `redis-cli` and `nc` work), split on spaces and tabs. An argument that *starts* with `"` or
//!   `'` runs to the matching quote and may hold blanks. Unlike Redis there is no escape
//!   processing (`\n` and `\x41` stay as written, `\"` does not hide a quote) and a quote
//!   inside a bare word is an ordinary byte: arguments are ranges into the buffer, so they
//!   cannot be rewritten.
//!
//! Invariants the event loop relies on:
//! - [`parse()`] never panics, allocates nothing beyond growing the caller's `args`, and looks
//!   only at the first request; bytes after it are left for the next call.
//! - [`parse()`] keeps no state: a partial request is scanned again from its start on every
//!   call. The event loop calls [`parse_resumable`] instead, which keeps a [`Resume`] with the
//!   unfinished request (where the scan stopped, which arguments are complete), so each read
//!   costs the new bytes plus one full parse when the request completes; its result is always
//!   the one [`parse()`] would give. The limit below bounds both.
//! - `max_request_bytes` bounds what a client can make us buffer. A multibulk request may be at
//!   most that many bytes in total; an inline line at most that many bytes before its line
//!   ending. Lengths that could never fit are rejected as soon as their header is read, without
//!   waiting for the data, and [`Parsed::Incomplete`] is only returned while the buffer holds at
//!   most `max_request_bytes + 1` bytes.
//! - Every [`ProtocolError`] is fatal for the connection: the framing is lost. Reply
//!   `-ERR <error>` and close, as redis-server does.
//!
//! Files: `parse.rs` the request parser (including [`parse_resumable`]), `encode.rs` the
//! `write_*` reply encoders and [`Proto`], `tests.rs` the unit tests and proptests.

mod encode;
mod parse;
#[cfg(test)]
mod tests;

pub use encode::{
    write_array_len, write_bulk, write_error, write_integer, write_map_len, write_null,
    write_push_len, write_simple, Proto,
};
pub use parse::{parse, parse_resumable, Parsed, ProtocolError, Resume};

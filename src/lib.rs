//! vigild: keeps long-lived TCP sessions, puts kernel keepalive and `TCP_USER_TIMEOUT` on each,
//! and reaps dead peers within seconds with a reason, counted in reaper statistics.
//!
//! The binary (`main.rs`) is a thin wrapper around [`cli::main`]. `docs/architecture.md` tells
//! the life of one session from accept to reap.

pub mod cli;
pub mod config;
mod fleet;
mod ops;
mod os;
pub mod protocol;
mod server;
mod session;
mod telemetry;

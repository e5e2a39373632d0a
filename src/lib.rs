//! vigild: keeps long-lived TCP sessions, puts kernel keepalive and `TCP_USER_TIMEOUT` on each,
//! and reaps dead peers within seconds with a reason, counted in reaper statistics.
//!
//! The binary (`main.rs`) is a thin wrapper around [`cli::main`]. `docs/architecture.md` tells
//! the life of one session from accept to reap.

mod activation;
pub mod auth;
mod auth_throttle;
mod busy_poll;
pub mod cli;
mod client_info;
mod command;
mod command_rate;
mod command_table;
pub mod config;
pub mod duration;
mod glob;
mod histogram;
mod listener;
mod logging;
mod notify;
mod ops;
mod presence;
mod probe;
mod pubsub;
mod rate_limit;
pub mod reap;
pub mod resp;
mod server;
mod session;
mod small_file;
mod sockopt;
mod stats;
mod sys;
mod takeover;
mod transaction;

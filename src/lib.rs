//! vigild: keeps long-lived TCP sessions, puts kernel keepalive and `TCP_USER_TIMEOUT` on each,
//! and reaps dead peers within seconds with a reason, counted in reaper statistics.
//!
//! The binary (`main.rs`) is a thin wrapper around [`cli::main`]. `docs/architecture.md` tells
//! the life of one session from accept to reap.

mod activation;
#[path = "ops/admin/mod.rs"]
mod admin;
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
#[path = "ops/http.rs"]
mod http;
mod listener;
mod logging;
#[path = "ops/metrics.rs"]
mod metrics;
mod notify;
#[path = "ops/listener.rs"]
mod ops_listener;
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

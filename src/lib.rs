//! vigild: keeps long-lived TCP sessions, puts kernel keepalive and `TCP_USER_TIMEOUT` on each,
//! and reaps dead peers within seconds with a reason, counted in reaper statistics.
//!
//! The binary (`main.rs`) is a thin wrapper around [`cli::main`]. `docs/architecture.md` tells
//! the life of one session from accept to reap.

pub mod cli;
pub mod config;
mod ops;
mod os;
pub mod protocol;
mod server;
mod session;
mod telemetry;

// Old paths, kept for the merge of issue 13; removed before it lands. Files of the loop and of
// the operator side (src/server/, src/admin/, src/info.rs, src/metrics.rs, src/http.rs,
// src/ops_listener.rs, src/busy_poll.rs) still name modules by their old top-level paths;
// nothing else may use these.
#[allow(unused_imports)]
pub(crate) use crate::config::duration;
#[allow(unused_imports)]
pub(crate) use crate::os::activation;
#[allow(unused_imports)]
pub(crate) use crate::os::bind as listener;
#[allow(unused_imports)]
pub(crate) use crate::os::sockopt;
#[allow(unused_imports)]
pub(crate) use crate::os::sys;
#[allow(unused_imports)]
pub(crate) use crate::protocol::client_info;
#[allow(unused_imports)]
pub(crate) use crate::protocol::command_table;
#[allow(unused_imports)]
pub(crate) use crate::protocol::probe;
#[allow(unused_imports)]
pub(crate) use crate::protocol::pubsub;
#[allow(unused_imports)]
pub(crate) use crate::protocol::resp;
#[allow(unused_imports)]
pub(crate) use crate::session::auth_throttle;
#[allow(unused_imports)]
pub(crate) use crate::session::reap;
#[allow(unused_imports)]
pub(crate) use crate::session::takeover;
#[allow(unused_imports)]
pub(crate) use crate::telemetry::histogram;
#[allow(unused_imports)]
pub(crate) use crate::telemetry::log_throttle as rate_limit;
#[allow(unused_imports)]
pub(crate) use crate::telemetry::logging;
#[allow(unused_imports)]
pub(crate) use crate::telemetry::presence_events as presence;
#[allow(unused_imports)]
pub(crate) use crate::telemetry::stats;

/// `crate::auth` was the auth gate and the password types; they are now
/// `protocol::auth_gate` and `config::secret`.
pub(crate) mod auth {
    #[allow(unused_imports)]
    pub(crate) use crate::config::{Password, PasswordSource};
    #[allow(unused_imports)]
    pub(crate) use crate::protocol::auth_gate::*;
}

/// `crate::notify` was sd_notify and the status line; they are now `os::sd_notify` and
/// `telemetry::stats::status_line`.
pub(crate) mod notify {
    #[allow(unused_imports)]
    pub(crate) use crate::os::sd_notify::*;
    #[allow(unused_imports)]
    pub(crate) use crate::telemetry::stats::status_line;
}

/// `crate::command` also held `Args`, `Step` and the error replies, now `protocol::args` and
/// `protocol::step`.
pub(crate) mod command {
    #[allow(unused_imports)]
    pub(crate) use crate::protocol::args::*;
    #[allow(unused_imports)]
    pub(crate) use crate::protocol::command::*;
    #[allow(unused_imports)]
    pub(crate) use crate::protocol::step::*;
}

//! vigild: keeps long-lived TCP sessions, puts kernel keepalive and `TCP_USER_TIMEOUT` on each,
//! and reaps dead peers within seconds with a reason, counted in reaper statistics.
//!
//! The binary (`main.rs`) is a thin wrapper around [`cli::main`]. `docs/architecture.md` tells
//! the life of one session from accept to reap.

mod admin;
mod busy_poll;
pub mod cli;
mod command_rate;
pub mod config;
mod histogram;
mod http;
mod info;
mod logging;
mod metrics;
mod ops_listener;
pub(crate) mod os;
pub mod protocol;
mod presence;
mod rate_limit;
mod server;
mod session;
mod stats;

// Old paths, kept for the merge of issue 13; removed before it lands. Files of the loop and of
// the operator side (src/server/, src/admin/, src/info.rs, src/metrics.rs, src/http.rs,
// src/ops_listener.rs, src/busy_poll.rs) still name modules by their old top-level paths;
// nothing else may use these.
#[allow(unused_imports)]
pub(crate) use crate::os::activation;
#[allow(unused_imports)]
pub(crate) use crate::config::duration;
#[allow(unused_imports)]
pub(crate) use crate::protocol::client_info;
#[allow(unused_imports)]
pub(crate) use crate::protocol::command;
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
pub(crate) use crate::os::bind as listener;
#[allow(unused_imports)]
pub(crate) use crate::os::sd_notify as notify;
#[allow(unused_imports)]
pub(crate) use crate::os::sockopt;
#[allow(unused_imports)]
pub(crate) use crate::os::sys;
/// `crate::auth` was the auth gate and the password types; they are now
/// `protocol::auth_gate` and `config::secret`.
pub(crate) mod auth {
    #[allow(unused_imports)]
    pub(crate) use crate::config::{Password, PasswordSource};
    #[allow(unused_imports)]
    pub(crate) use crate::protocol::auth_gate::*;
}

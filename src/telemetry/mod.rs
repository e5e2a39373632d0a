//! What the daemon tells its operator about itself, as data: the reaper statistics, latency
//! histograms, the last hour's accepts and reaps per minute, the command rate, presence
//! events, logging setup, journald priorities and the log throttles that keep a flood out of
//! the log.
//!
//! Above `protocol/` and `session/` (it counts reaps by `ReapReason`, takeovers by their
//! counters), below the operator side and the loop, which it never imports.

pub(crate) mod command_rate;
pub(crate) mod histogram;
pub(crate) mod journal;
pub(crate) mod last_hour;
pub(crate) mod log_throttle;
pub(crate) mod logging;
pub(crate) mod presence_events;
pub(crate) mod stats;

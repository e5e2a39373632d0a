//! The kernel and the process's environment: every `unsafe` in the crate (`sys`), socket
//! options and `TCP_INFO` (`sockopt`, `sys`), binding listeners (`bind`), systemd socket
//! activation and `sd_notify`, and bounded reads of files an attacker may control
//! (`small_file`).
//!
//! The lowest layer: nothing here imports another folder of the crate.

pub(crate) mod activation;
pub(crate) mod bind;
pub(crate) mod sd_notify;
pub(crate) mod small_file;
pub(crate) mod sockopt;
pub(crate) mod sys;

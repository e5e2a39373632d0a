//! vigild: keeps long-lived TCP sessions, puts kernel keepalive on each, and reaps dead peers
//! within seconds with a reason. The binary in `main.rs` is a thin wrapper around [`cli::main`].

//! Log setup: env_logger writing one line per event to stderr.
//!
//! `RUST_LOG`, when set, decides the filter (module directives included) and a reload cannot
//! change it. Otherwise `log.level` from the config decides, and a reload changes it live
//! through `log::set_max_level`.

use std::io::Write as _;

use log::LevelFilter;

/// How the level is controlled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelSource {
    /// `RUST_LOG` was set: it wins over the config.
    Environment,
    /// `log.level` from the config.
    Config,
}

/// Installs the logger. Safe to call more than once (later calls change nothing).
pub fn init(level: LevelFilter) -> LevelSource {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let mut builder = env_logger::Builder::new();
    builder.format(|buf, record| {
        let ts = buf.timestamp_millis();
        writeln!(buf, "{ts} {:<5} {}", record.level(), record.args())
    });
    if from_env {
        builder.parse_default_env();
    } else {
        // Let every level through env_logger and gate with `set_max_level`, so a reload can
        // raise or lower the level; mio's own tracing stays quiet.
        builder.filter_level(LevelFilter::Trace);
        builder.filter_module("mio", LevelFilter::Warn);
    }
    let _ = builder.try_init();
    if from_env {
        LevelSource::Environment
    } else {
        log::set_max_level(level);
        LevelSource::Config
    }
}

//! Log setup: env_logger writing one line per event to stderr.
//!
//! `RUST_LOG`, when set, decides the filter (module directives included) and a reload cannot
//! change it. Otherwise `log.level` from the config decides, and a reload changes it live
//! through `log::set_max_level`.
//!
//! Under journald (systemd sets `JOURNAL_STREAM=dev:inode` and it names our stderr) each line
//! starts with its syslog priority, `<3>` for errors to `<7>` for debug and trace, which
//! journald strips and stores as the entry's priority (`journalctl -p warning` then works),
//! and the timestamp is left out because journald records its own. Otherwise a line is
//! `<timestamp> <LEVEL> <message>`.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

use log::{Level, LevelFilter};

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
    if stderr_is_journal() {
        builder.format(|buf, record| {
            let prio = syslog_priority(record.level());
            writeln!(buf, "<{prio}>{:<5} {}", record.level(), record.args())
        });
    } else {
        builder.format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(buf, "{ts} {:<5} {}", record.level(), record.args())
        });
    }
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

/// The `syslog(3)` priority journald files a line under.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether stderr is the journal stream systemd connected (`systemd.exec(5)`: compare
/// `JOURNAL_STREAM` with stderr's device and inode, so a shell started from a service that
/// redirects stderr elsewhere does not get prefixed lines).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    journal_stream_matches(&value.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether `JOURNAL_STREAM` (`"<device>:<inode>"`, both decimal) names this device and inode.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(Level::Error), 3);
        assert_eq!(syslog_priority(Level::Warn), 4);
        assert_eq!(syslog_priority(Level::Info), 6);
        assert_eq!(syslog_priority(Level::Debug), 7);
        assert_eq!(syslog_priority(Level::Trace), 7);
    }

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("8", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("x:y", 8, 12345));
    }
}

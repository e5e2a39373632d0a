//! Log setup: env_logger writing one line per event to stderr.
//!
//! `RUST_LOG`, when set, decides the filter (module directives included) and a reload cannot
//! change it. Otherwise `log.level` from the config decides, and a reload changes it live
//! through `log::set_max_level`.
//!
//! Under journald (systemd sets `JOURNAL_STREAM=dev:inode` and it names our stderr, see
//! `journal.rs`) each line starts with its syslog priority, `<3>` for errors to `<7>` for debug
//! and trace, which journald strips and stores as the entry's priority (`journalctl -p warning`
//! then works), and is followed by the message alone: the timestamp and the level word are
//! left out because journald records both. Otherwise a line is
//! `<timestamp> <LEVEL> <message>`.
//!
//! Client-supplied strings (names, lib fields, anything a peer sent) go into a line only
//! through [`clipped`]: at most [`MAX_LOGGED_CLIENT_BYTES`] bytes of them, escaped, and a cut
//! marked `…(+NB)`, so no client can make one line long or forge a second one.

use std::fmt;
use std::io::Write as _;

use log::{Level, LevelFilter};

use crate::telemetry::journal;

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
    if journal::is_journal(&std::io::stderr()) {
        builder
            .format(|buf, record| writeln!(buf, "{}", journal_line(record.level(), record.args())));
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

/// The most bytes of one client-supplied string a log line shows. A name at the default
/// `session.max_name_bytes` (256) is shown whole.
pub const MAX_LOGGED_CLIENT_BYTES: usize = 256;

/// A client-supplied string as a log line shows it; see [`clipped`].
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a> {
    bytes: &'a [u8],
    max: usize,
}

/// `s` for a log line: printable ASCII other than space and `\` as is, every other byte as
/// `\xNN`, at most [`MAX_LOGGED_CLIENT_BYTES`] bytes shown; when cut, the slice is followed
/// by `…(+NB)`, N being the bytes of `s` left out (`name=abc…(+1234B)`). Names are printable
/// ASCII without spaces and anything else is escaped, so the `…` (U+2026) of the marker
/// never comes from the client: a cut is unambiguous, and the value stays one logfmt word.
pub fn clipped<S: AsRef<[u8]> + ?Sized>(s: &S) -> Clipped<'_> {
    clipped_to(s.as_ref(), MAX_LOGGED_CLIENT_BYTES)
}

/// [`clipped`] with another bound, for tests.
fn clipped_to(bytes: &[u8], max: usize) -> Clipped<'_> {
    Clipped { bytes, max }
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |b: u8| (b'!'..=b'~').contains(&b) && b != b'\\';
        let mut shown = 0;
        let mut i = 0;
        while i < self.bytes.len() {
            // A run of plain bytes is written as one slice.
            let run = self.bytes[i..]
                .iter()
                .take_while(|&&b| plain(b))
                .count()
                .min(self.max - shown);
            if run > 0 {
                // Plain bytes are ASCII, so the slice is valid UTF-8.
                f.write_str(std::str::from_utf8(&self.bytes[i..i + run]).unwrap_or(""))?;
                shown += run;
                i += run;
                continue;
            }
            if plain(self.bytes[i]) || shown + 4 > self.max {
                return write!(f, "…(+{}B)", self.bytes.len() - i);
            }
            write!(f, "\\x{:02x}", self.bytes[i])?;
            shown += 4;
            i += 1;
        }
        Ok(())
    }
}

/// A line for journald: its priority as the sd-daemon prefix, then the message alone (journald
/// stores the priority and a timestamp itself, so neither is repeated as text).
fn journal_line(level: Level, message: &fmt::Arguments<'_>) -> String {
    format!("<{}>{message}", syslog_priority(level))
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
    fn journal_lines_carry_the_priority_and_not_the_level_word() {
        let line = |level, n: u32| journal_line(level, &format_args!("listening on port {n}"));
        assert_eq!(line(Level::Info, 7379), "<6>listening on port 7379");
        assert_eq!(line(Level::Warn, 1), "<4>listening on port 1");
        assert_eq!(line(Level::Error, 1), "<3>listening on port 1");
        assert_eq!(line(Level::Trace, 1), "<7>listening on port 1");
    }

    #[test]
    fn clipped_strings_are_cut_visibly_and_escaped() {
        let show = |s: &[u8], max| clipped_to(s, max).to_string();
        assert_eq!(show(b"sensor-7", 8), "sensor-7");
        assert_eq!(show(b"sensor-7", 6), "sensor…(+2B)");
        assert_eq!(show(b"", 6), "");
        assert_eq!(show(b"a b\n\\", 64), "a\\x20b\\x0a\\x5c");
        // An escape that does not fit whole is left out whole.
        assert_eq!(show(b"ab\xff", 5), "ab…(+1B)");
        assert_eq!(show("x…".as_bytes(), 64), "x\\xe2\\x80\\xa6");
        let long = "n".repeat(10_000);
        let line = clipped(&long).to_string();
        assert_eq!(line, format!("{}…(+9744B)", "n".repeat(256)));
        assert_eq!(clipped("-").to_string(), "-");
    }
}

//! Lines at their journald priority: whether a standard stream is the journal, and the one
//! function ([`say`]) every line the command line prints itself goes through.
//!
//! systemd connects a service's stdout and stderr to journald and sets `JOURNAL_STREAM` to
//! `<device>:<inode>` of that stream (`systemd.exec(5)`). A line on it that starts with
//! `<N>` (`sd-daemon(3)`: `SD_ERR` is `<3>`, `SD_WARNING` `<4>`, `SD_INFO` `<6>`) is stored at
//! priority N with the prefix stripped; any other line at info. The stream counts as the
//! journal only when its device and inode match, so a shell started from a service that
//! redirects a stream elsewhere prints plain lines.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt as _;

/// A line's `syslog(3)` priority: the ones vigild's own lines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `<3>`: vigild did not start, or a check failed.
    Error,
    /// `<4>`: a config warning.
    Warning,
    /// `<6>`: everything else.
    Info,
}

impl Priority {
    /// The number journald stores as `PRIORITY`.
    pub const fn syslog(self) -> u8 {
        match self {
            Priority::Error => 3,
            Priority::Warning => 4,
            Priority::Info => 6,
        }
    }
}

/// Where a line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Writes `text` (one line or several, a trailing newline optional) to `stream`, each line
/// prefixed with `<N>` when that stream is the journal.
pub fn say(stream: Stream, priority: Priority, text: &str) {
    let journal = match stream {
        Stream::Stdout => is_journal(&std::io::stdout()),
        Stream::Stderr => is_journal(&std::io::stderr()),
    };
    let out = render(text, journal.then_some(priority));
    // A write error (a closed pipe: `vigild --print-config | head`) leaves nothing to report
    // it to; the exit status still says whether the check passed.
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(out.as_bytes()),
        Stream::Stderr => std::io::stderr().lock().write_all(out.as_bytes()),
    };
}

/// `text` as written: every line ends in a newline and, given a priority, starts with `<N>`.
fn render(text: &str, priority: Option<Priority>) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        if let Some(p) = priority {
            out.push_str(&format!("<{}>", p.syslog()));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `stream` is the journal stream systemd connected: `JOURNAL_STREAM` names its device
/// and inode.
pub fn is_journal(stream: &impl AsFd) -> bool {
    named_by(stream, std::env::var_os("JOURNAL_STREAM").as_deref())
}

/// Whether `value` (of `JOURNAL_STREAM`, if set) names `stream`'s device and inode.
fn named_by(stream: &impl AsFd, value: Option<&std::ffi::OsStr>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let Ok(fd) = stream.as_fd().try_clone_to_owned() else {
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
    fn journal_stream_must_name_the_stream() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("8", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("x:y", 8, 12345));
    }

    #[test]
    fn a_real_file_is_the_journal_only_when_named() {
        let path = std::env::temp_dir().join(format!("vigild-journal-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        let value = std::ffi::OsString::from(format!("{}:{}", meta.dev(), meta.ino()));
        let named = named_by(&file, Some(&value));
        let unnamed = named_by(&other, Some(&value));
        let unset = named_by(&file, None);
        let _ = std::fs::remove_file(&path);
        assert!(named && !unnamed && !unset, "{named} {unnamed} {unset}");
    }

    #[test]
    fn each_line_carries_the_prefix() {
        assert_eq!(
            render("vigild: x is valid", Some(Priority::Info)),
            "<6>vigild: x is valid\n"
        );
        assert_eq!(render("a\nb\n", Some(Priority::Warning)), "<4>a\n<4>b\n");
        assert_eq!(render("fatal", Some(Priority::Error)), "<3>fatal\n");
        assert_eq!(render("a\nb", None), "a\nb\n");
        assert_eq!(render("", Some(Priority::Info)), "");
    }
}

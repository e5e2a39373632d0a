//! Reading the small files vigild is pointed at by path (the config file, the password file)
//! without letting one block the event loop or flood memory: a reload runs on the loop, and a
//! path that is, or became, a FIFO would hang `open()` and every client with it.
//!
//! - The file is opened with `O_NONBLOCK` (and `O_NOCTTY`), so opening a FIFO or a device
//!   returns at once; regular files ignore the flag.
//! - What was opened is checked with `fstat` on the descriptor, not `stat` on the path before
//!   opening (which another process could swap in between): anything but a regular file is
//!   refused, naming what it is.
//! - At most `cap` bytes are read (one more, to tell "too large").
//! - The file's size and mtime are taken again after reading: a file written in place while it
//!   was read (the writer truncated it and is still writing) is refused instead of being
//!   taken half-written. Atomic replacement (write elsewhere, `rename` into place) is the safe
//!   way to change it; the descriptor keeps the old inode then, so a reload reads one whole
//!   version or the other.

use std::fmt;
use std::fs::{FileType, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// Not a regular file; what it is ("a FIFO (named pipe)", ...).
    NotRegular(&'static str),
    /// Longer than the cap.
    TooLarge,
    /// Its size or modification time changed while it was read; what changed.
    Changed(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::NotRegular(what) => write!(f, "is {what}, not a regular file"),
            ReadError::TooLarge => f.write_str("is too large"),
            ReadError::Changed(what) => write!(
                f,
                "changed while it was read ({what}); write the new version to another file and \
                 rename it into place (an atomic replace), rather than editing it in place"
            ),
        }
    }
}

/// What a non-regular file is, in words.
fn kind(t: FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// Reads the regular file at `path`, at most `cap` bytes, without blocking on what is not one.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // open() on a unix socket fails with ENXIO: say what the path is instead.
            Some(libc::ENXIO) => std::fs::metadata(path)
                .map(|m| ReadError::NotRegular(kind(m.file_type())))
                .unwrap_or(ReadError::Io(e)),
            _ => ReadError::Io(e),
        })?;
    let before = file.metadata().map_err(ReadError::Io)?;
    if !before.file_type().is_file() {
        return Err(ReadError::NotRegular(kind(before.file_type())));
    }
    let mut bytes = Vec::with_capacity(before.len().min(cap) as usize + 1);
    Read::take(&file, cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge);
    }
    let after = file.metadata().map_err(ReadError::Io)?;
    check_unchanged(&before, &after, bytes.len())?;
    Ok(bytes)
}

/// The file was not written to between the two `fstat`s, and what was read is all of it.
fn check_unchanged(before: &Metadata, after: &Metadata, read: usize) -> Result<(), ReadError> {
    let mtime = |m: &Metadata| (m.mtime(), m.mtime_nsec());
    if before.len() != after.len() {
        return Err(ReadError::Changed(format!(
            "size {} -> {} bytes",
            before.len(),
            after.len()
        )));
    }
    if mtime(before) != mtime(after) {
        return Err(ReadError::Changed("modification time".into()));
    }
    if read as u64 != after.len() {
        return Err(ReadError::Changed(format!(
            "{read} bytes read of {}",
            after.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vigild-small-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn regular_files_are_read_and_everything_else_is_named() {
        let d = dir("kinds");
        let f = d.join("f");
        std::fs::write(&f, "abc").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"abc");
        assert!(matches!(read_regular(&f, 2), Err(ReadError::TooLarge)));
        assert_eq!(read_regular(&f, 3).unwrap(), b"abc");
        let fifo = d.join("fifo");
        crate::os::sys::make_fifo(&fifo).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        let e = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(e.to_string(), "is a FIFO (named pipe), not a regular file");
        let e = read_regular(&d, 10).unwrap_err();
        assert_eq!(e.to_string(), "is a directory, not a regular file");
        let e = read_regular(Path::new("/dev/null"), 10).unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let sock = d.join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = read_regular(&sock, 10).unwrap_err();
        assert_eq!(e.to_string(), "is a socket, not a regular file");
        let e = read_regular(&d.join("missing"), 10).unwrap_err();
        assert!(e.to_string().starts_with("cannot read: "), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    use std::fs::File;

    #[test]
    fn a_change_between_the_two_fstats_is_refused() {
        let d = dir("changed");
        let f = d.join("f");
        std::fs::write(&f, "abcdef").unwrap();
        let file = File::open(&f).unwrap();
        let before = file.metadata().unwrap();
        std::fs::write(&f, "abc").unwrap();
        let after = file.metadata().unwrap();
        let e = check_unchanged(&before, &after, 3).unwrap_err();
        assert!(e.to_string().contains("size 6 -> 3 bytes"), "{e}");
        assert!(e.to_string().contains("rename it into place"), "{e}");
        assert!(check_unchanged(&after, &after, 3).is_ok());
        let e = check_unchanged(&after, &after, 2).unwrap_err();
        assert!(e.to_string().contains("2 bytes read of 3"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}

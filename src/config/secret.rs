//! The client password (`server.password` or `server.password_file`) as configuration: the
//! secret, where it came from, and reading it from a file an attacker may have swapped for a
//! FIFO or a device. Checking a client's `AUTH` against it is the protocol's auth gate
//! (`crate::protocol::auth_gate`).
//!
//! Invariants: `Debug` never shows the secret; comparisons take time that depends on the
//! lengths only.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::os::small_file::{self, ReadError};

/// Longest accepted password. It must fit in one request; longer is a config mistake.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Where the password came from: shown by `--check-config` instead of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `server.password` in the config file.
    Inline,
    /// `server.password_file`, as resolved (relative paths against the config's directory).
    File(PathBuf),
}

/// The client password. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    secret: Box<[u8]>,
    pub source: PasswordSource,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Password(<{} bytes>, {:?})",
            self.secret.len(),
            self.source
        )
    }
}

impl Password {
    pub fn new(secret: impl Into<Box<[u8]>>, source: PasswordSource) -> Password {
        Password {
            secret: secret.into(),
            source,
        }
    }

    /// The secret itself, for a client that must send it (the fleet's `AUTH` to Redis).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Whether two passwords are the same secret, wherever they came from.
    pub fn same_secret(&self, other: &Password) -> bool {
        constant_time_eq(&self.secret, &other.secret)
    }

    /// Whether `given` is the password, in time that depends on the lengths only.
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(given, &self.secret)
    }
}

/// Compares two byte strings without an early exit: every byte position up to the longer length
/// is visited and differences are OR-ed together, so timing reveals at most the lengths, never
/// where the first differing byte is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the fold back into a short-circuiting comparison.
    std::hint::black_box(diff) == 0
}

/// Reads `server.password_file`: a regular file (opened non-blocking and checked with
/// `fstat`, so a FIFO or device can neither block nor flood the loader), at most
/// [`MAX_PASSWORD_BYTES`] after one trailing line ending is dropped, not empty. The error text
/// follows the key's name in the config error.
pub fn read_password_file(path: &Path) -> Result<Box<[u8]>, String> {
    let shown = path.display();
    // Two bytes of slack for a line ending that is not part of the password.
    let cap = MAX_PASSWORD_BYTES as u64 + 2;
    let mut secret = small_file::read_regular(path, cap).map_err(|e| match e {
        ReadError::Io(e) => format!("cannot read {shown}: {e}"),
        ReadError::NotRegular(_) => {
            format!("{shown} {e}; point it at a file that holds the password")
        }
        ReadError::TooLarge => too_long(path),
        ReadError::Changed(_) => format!("{shown} {e}"),
    })?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(format!(
            "{shown} is empty; write the password into it, or remove server.password_file"
        ));
    }
    if secret.len() > MAX_PASSWORD_BYTES {
        return Err(too_long(path));
    }
    Ok(secret.into_boxed_slice())
}

fn too_long(path: &Path) -> String {
    format!(
        "{} holds more than {MAX_PASSWORD_BYTES} bytes; a password must fit in one AUTH request",
        path.display()
    )
}

/// A warning when the password file's mode lets other users read it or its group change it
/// (anything beyond 0640).
pub fn file_mode_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o027 != 0).then(|| {
        format!(
            "server.password_file {} has mode {:04o}: other users can read it; chmod 600 it",
            path.display(),
            mode & 0o7777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_plain_equality() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b""),
            (b"", b"a"),
            (b"secret", b"secret"),
            (b"secret", b"secreT"),
            (b"secret", b"secret\0"),
            (b"secre", b"secret"),
            (b"\xff\x00", b"\xff\x00"),
        ];
        for (a, b) in cases {
            assert_eq!(constant_time_eq(a, b), a == b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let p = Password::new(&b"hunter2"[..], PasswordSource::Inline);
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"), "{shown}");
    }

    #[test]
    fn password_files() {
        let dir = std::env::temp_dir().join(format!("vigild-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, body: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        assert_eq!(&*read_password_file(&file("a", b"pw\n")).unwrap(), b"pw");
        assert_eq!(&*read_password_file(&file("b", b"pw\r\n")).unwrap(), b"pw");
        assert_eq!(
            &*read_password_file(&file("c", b"p w\n\n")).unwrap(),
            b"p w\n"
        );
        let max = vec![b'x'; MAX_PASSWORD_BYTES];
        assert_eq!(
            read_password_file(&file("d", &max)).unwrap().len(),
            max.len()
        );
        let long = vec![b'x'; MAX_PASSWORD_BYTES + 1];
        let err = read_password_file(&file("e", &long)).unwrap_err();
        assert!(err.contains("more than 1024 bytes"), "{err}");
        let err = read_password_file(&file("f", b"\n")).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        let err = read_password_file(&dir).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_password_file(&dir.join("missing")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let err = read_password_file(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        assert_eq!(file_mode_warning(&file("g", b"pw")), None);
        let open = file("h", b"pw");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = file_mode_warning(&open).expect("a warning for 0644");
        assert!(w.contains("mode 0644") && w.contains("chmod 600"), "{w}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Sockets of the operator listeners (admin and metrics): a TCP or a unix stream listener, and
//! the connections accepted from it, behind one type each so the event loop need not care.
//!
//! A unix socket is created with mode 0600 (under a temporary umask, then `chmod` again in case
//! the file system ignores it), so only the daemon's user can connect. A socket file left by an
//! earlier run that nobody listens on any more is replaced; a live one (another vigild) or a
//! file that is not a socket is an error, never deleted. The file is removed when its listener
//! is dropped (shutdown, or a reload that moves the listener), but only if it is still the
//! file this listener created.

use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::Endpoint;
use crate::os::bind;
use crate::os::sys;

/// Listen queue of an operator listener: operators and scrapers connect rarely.
const BACKLOG: u32 = 128;
/// The mode of a unix socket file: owner read/write only.
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// A bound operator listener.
#[derive(Debug)]
pub enum OpsListener {
    Tcp(TcpListener),
    Unix {
        socket: UnixListener,
        path: PathBuf,
        /// Device and inode of the file created, so only that file is ever removed.
        file_id: (u64, u64),
    },
}

/// An accepted operator connection.
#[derive(Debug)]
pub enum OpsStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl OpsListener {
    /// Binds `endpoint` (replacing a stale unix socket file) and returns the listener.
    pub fn bind(endpoint: &Endpoint) -> io::Result<OpsListener> {
        match endpoint {
            Endpoint::Tcp(addr) => bind::bind(*addr, BACKLOG, false).map(OpsListener::Tcp),
            Endpoint::Unix(path) => bind_unix(path),
        }
    }

    /// Where it listens: `ip:port` as bound (the real port when 0 was asked), or the path.
    pub fn local(&self) -> String {
        match self {
            OpsListener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            OpsListener::Unix { path, .. } => path.display().to_string(),
        }
    }

    /// Accepts one connection, with a printable peer address.
    pub fn accept(&self) -> io::Result<(OpsStream, String)> {
        match self {
            OpsListener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                Ok((OpsStream::Tcp(s), peer.to_string()))
            }
            // Clients of a unix socket are unnamed: the path says where they came in.
            OpsListener::Unix { socket, path, .. } => {
                let (s, _) = socket.accept()?;
                Ok((OpsStream::Unix(s), format!("unix:{}", path.display())))
            }
        }
    }
}

fn bind_unix(path: &Path) -> io::Result<OpsListener> {
    remove_stale(path)?;
    let socket = sys::with_umask(0o177, || UnixListener::bind(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(UNIX_SOCKET_MODE))?;
    let meta = fs::symlink_metadata(path)?;
    Ok(OpsListener::Unix {
        socket,
        path: path.to_owned(),
        file_id: (meta.dev(), meta.ino()),
    })
}

/// Removes a socket file nobody listens on; refuses to touch a live socket or another file.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; remove it or choose another path",
        ));
    }
    // Non-blocking (mio's connect): a blocking one waits as long as another process holds
    // the path with a full listen queue and never accepts, and this runs on the event loop
    // when a reload moves the listener.
    match UnixStream::connect(path) {
        Ok(_) => Err(live()),
        // A listener whose queue is full: someone is listening, just not accepting.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(live()),
        // Nobody behind it: left over from an earlier run that did not remove it.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

fn live() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "another process is listening on this socket (another vigild?)",
    )
}

impl Drop for OpsListener {
    fn drop(&mut self) {
        if let OpsListener::Unix { path, file_id, .. } = self {
            let ours = fs::symlink_metadata(&*path).is_ok_and(|m| (m.dev(), m.ino()) == *file_id);
            if ours {
                // Best effort: a file that cannot be removed is replaced at the next start.
                let _ = fs::remove_file(&*path);
            }
        }
    }
}

impl OpsStream {
    /// Sends FIN after the last response, so the peer sees a clean end of data.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            OpsStream::Tcp(s) => s.shutdown(Shutdown::Write),
            OpsStream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The local address, for `CLIENT INFO` on the admin listener.
    pub fn local(&self) -> String {
        match self {
            OpsStream::Tcp(s) => s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            OpsStream::Unix(_) => String::new(),
        }
    }
}

impl Read for OpsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            OpsStream::Tcp(s) => s.read(buf),
            OpsStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for OpsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            OpsStream::Tcp(s) => s.write(buf),
            OpsStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl OpsStream {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            OpsStream::Tcp(s) => s,
            OpsStream::Unix(s) => s,
        }
    }
}

impl OpsListener {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            OpsListener::Tcp(l) => l,
            OpsListener::Unix { socket, .. } => socket,
        }
    }
}

/// Poller registration goes to the socket inside.
macro_rules! delegate_source {
    ($ty:ty) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                self.source().register(r, t, i)
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                self.source().reregister(r, t, i)
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                self.source().deregister(r)
            }
        }
    };
}

delegate_source!(OpsStream);
delegate_source!(OpsListener);

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigild-ops-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("admin.sock")
    }

    #[test]
    fn unix_socket_is_0600_replaces_a_stale_file_and_is_removed_on_drop() {
        let path = temp_path("stale");
        // A stale socket: bound, then its listener dropped without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = OpsListener::bind(&Endpoint::Unix(path.clone())).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(l.local(), path.display().to_string());
        // A live socket is not stolen.
        let err = OpsListener::bind(&Endpoint::Unix(path.clone())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(l);
        assert!(!path.exists());
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_live_socket_with_a_full_queue_is_refused_at_once() {
        let path = temp_path("full");
        let holder = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Fill its queue: non-blocking connects until the kernel says it is full.
        let mut queued = Vec::new();
        loop {
            match UnixStream::connect(&path) {
                Ok(s) => queued.push(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 100_000, "the queue never filled");
        }
        let t0 = std::time::Instant::now();
        let err = OpsListener::bind(&Endpoint::Unix(path.clone())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        assert!(path.exists(), "a live socket is never removed");
        drop(holder);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let path = temp_path("file");
        fs::write(&path, "precious").unwrap();
        let err = OpsListener::bind(&Endpoint::Unix(path.clone())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_replaced_file_is_not_removed_on_drop() {
        let path = temp_path("moved");
        let l = OpsListener::bind(&Endpoint::Unix(path.clone())).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, "someone else's").unwrap();
        drop(l);
        assert_eq!(fs::read_to_string(&path).unwrap(), "someone else's");
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}

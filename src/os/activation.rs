//! Socket activation (`sd_listen_fds(3)`): listeners passed by the service manager.
//!
//! When `LISTEN_PID` equals our pid and `LISTEN_FDS` is N > 0, descriptors 3 .. 3+N are
//! listening sockets opened by systemd (from `vigild.socket`); `LISTEN_FDNAMES` optionally
//! names them, colon-separated. vigild then serves on those instead of binding
//! `server.listen`.
//!
//! Invariants kept here:
//! - The three variables are removed from the environment whenever they were present, so a
//!   child process could never mistake them for its own (as `sd_listen_fds(1)` does).
//! - Every passed descriptor must be a TCP (IPv4 or IPv6) socket in the listening state;
//!   anything else is refused with an error naming the descriptor, and vigild does not start.
//! - The descriptors are owned (and closed) by the returned listeners; the only `unsafe`
//!   involved lives in [`crate::os::sys::take_inherited_fd`].

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{Domain, Socket, Type};

use crate::os::sys;

/// `SD_LISTEN_FDS_START`: the first passed descriptor.
pub const LISTEN_FDS_START: RawFd = 3;
/// More passed descriptors than this is a broken environment, not a configuration.
const MAX_LISTEN_FDS: usize = 1024;
const VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// A listener the service manager passed.
#[derive(Debug)]
pub struct Activated {
    pub fd: RawFd,
    /// From `LISTEN_FDNAMES` (systemd uses the socket unit's name unless `FileDescriptorName=`).
    pub name: Option<String>,
    pub addr: SocketAddr,
    pub listener: mio::net::TcpListener,
}

/// Why the passed descriptors cannot be used.
#[derive(Debug)]
pub enum ActivationError {
    /// A variable that does not parse.
    BadVar { var: &'static str, value: String },
    /// `LISTEN_FDNAMES` does not name as many descriptors as `LISTEN_FDS` counts.
    NameCount { fds: usize, names: usize },
    /// A descriptor that is not open or cannot be inspected.
    Fd { fd: RawFd, source: io::Error },
    /// A descriptor that is open but not a listening TCP socket.
    NotTcpListener { fd: RawFd, what: String },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::BadVar { var, value } => {
                write!(f, "socket activation: {var}={value:?} is not valid")
            }
            ActivationError::NameCount { fds, names } => write!(
                f,
                "socket activation: LISTEN_FDS={fds} but LISTEN_FDNAMES has {names} names"
            ),
            ActivationError::Fd { fd, source } => {
                write!(
                    f,
                    "socket activation: descriptor {fd} is unusable: {source}"
                )
            }
            ActivationError::NotTcpListener { fd, what } => write!(
                f,
                "socket activation: descriptor {fd} is {what}, not a listening TCP socket \
                 (use ListenStream= with an IP address and port in the socket unit)"
            ),
        }
    }
}

impl std::error::Error for ActivationError {}

/// One passed descriptor and its name, before it is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub fd: RawFd,
    pub name: Option<String>,
}

/// The activation variables as given.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListenEnv<'a> {
    pub listen_pid: Option<&'a OsStr>,
    pub listen_fds: Option<&'a OsStr>,
    pub listen_fdnames: Option<&'a OsStr>,
}

/// The passed descriptors and their names; `None` when vigild was not socket-activated (no
/// variables, `LISTEN_FDS=0`, or `LISTEN_PID` naming another process).
pub fn parse(env: ListenEnv<'_>, own_pid: u32) -> Result<Option<Vec<Passed>>, ActivationError> {
    let (Some(pid), Some(fds)) = (env.listen_pid, env.listen_fds) else {
        return Ok(None);
    };
    let pid_str = pid.to_string_lossy();
    let pid: u32 = pid_str.parse().map_err(|_| ActivationError::BadVar {
        var: "LISTEN_PID",
        value: pid_str.to_string(),
    })?;
    if pid != own_pid {
        // Meant for a process that exec'd us or started us: not ours to take.
        return Ok(None);
    }
    let fds_str = fds.to_string_lossy();
    let count: usize = fds_str
        .parse()
        .ok()
        .filter(|n| *n <= MAX_LISTEN_FDS)
        .ok_or_else(|| ActivationError::BadVar {
            var: "LISTEN_FDS",
            value: fds_str.to_string(),
        })?;
    if count == 0 {
        return Ok(None);
    }
    let names: Vec<Option<String>> = match env.listen_fdnames {
        None => vec![None; count],
        Some(raw) => {
            let raw = raw.to_string_lossy();
            let names: Vec<Option<String>> = raw
                .split(':')
                .map(|n| Some(n.to_string()).filter(|n| !n.is_empty()))
                .collect();
            if names.len() != count {
                return Err(ActivationError::NameCount {
                    fds: count,
                    names: names.len(),
                });
            }
            names
        }
    };
    Ok(Some(
        (LISTEN_FDS_START..)
            .zip(names)
            .map(|(fd, name)| Passed { fd, name })
            .collect(),
    ))
}

/// Checks that `socket` is a listening TCP socket and makes it non-blocking; returns its
/// address.
fn check_listener(fd: RawFd, socket: &Socket) -> Result<SocketAddr, ActivationError> {
    let fd_err = |source| ActivationError::Fd { fd, source };
    let not = |what: &str| ActivationError::NotTcpListener {
        fd,
        what: what.to_string(),
    };
    let domain = socket.domain().map_err(fd_err)?;
    if domain == Domain::UNIX {
        return Err(not("a unix socket"));
    }
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(not("a socket of another address family"));
    }
    if socket.r#type().map_err(fd_err)? != Type::STREAM {
        return Err(not("a datagram (UDP) or other non-stream socket"));
    }
    // SO_ACCEPTCONN: a bound but not listening socket (ListenStream= always listens; a
    // hand-made one may not) would make every accept fail.
    if !socket.is_listener().map_err(fd_err)? {
        return Err(not("a TCP socket that is not listening"));
    }
    let addr = socket
        .local_addr()
        .map_err(fd_err)?
        .as_socket()
        .ok_or_else(|| not("a socket without an IP address"))?;
    socket.set_nonblocking(true).map_err(fd_err)?;
    Ok(addr)
}

/// Takes one passed descriptor as a listener.
fn take(Passed { fd, name }: Passed) -> Result<Activated, ActivationError> {
    let owned = sys::take_inherited_fd(fd).map_err(|source| ActivationError::Fd { fd, source })?;
    let socket = Socket::from(owned);
    let addr = check_listener(fd, &socket)?;
    let listener = mio::net::TcpListener::from_std(std::net::TcpListener::from(socket));
    Ok(Activated {
        fd,
        name,
        addr,
        listener,
    })
}

/// Reads and removes the activation variables and takes the passed listeners. `Ok(None)`:
/// not socket-activated, bind `server.listen` as usual.
///
/// Call once, at start-up, before any other thread exists (it changes the environment).
pub fn from_env() -> Result<Option<Vec<Activated>>, ActivationError> {
    let values = VARS.map(std::env::var_os);
    for var in VARS {
        std::env::remove_var(var);
    }
    let [pid, fds, names] = &values;
    let env = ListenEnv {
        listen_pid: pid.as_deref(),
        listen_fds: fds.as_deref(),
        listen_fdnames: names.as_deref(),
    };
    let Some(passed) = parse(env, std::process::id())? else {
        return Ok(None);
    };
    passed
        .into_iter()
        .map(take)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::Protocol;

    fn env<'a>(pid: &'a str, fds: &'a str, names: Option<&'a str>) -> ListenEnv<'a> {
        ListenEnv {
            listen_pid: Some(OsStr::new(pid)),
            listen_fds: Some(OsStr::new(fds)),
            listen_fdnames: names.map(OsStr::new),
        }
    }

    fn passed(fd: RawFd, name: Option<&str>) -> Passed {
        Passed {
            fd,
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn parse_variables() {
        assert!(parse(ListenEnv::default(), 42).unwrap().is_none());
        assert!(
            parse(env("41", "1", None), 42).unwrap().is_none(),
            "other pid"
        );
        assert!(parse(env("42", "0", None), 42).unwrap().is_none());
        assert_eq!(
            parse(env("42", "2", None), 42).unwrap().unwrap(),
            vec![passed(3, None), passed(4, None)]
        );
        assert_eq!(
            parse(env("42", "2", Some("vigild.socket:")), 42)
                .unwrap()
                .unwrap(),
            vec![passed(3, Some("vigild.socket")), passed(4, None)]
        );
        assert!(matches!(
            parse(env("42", "2", Some("one")), 42),
            Err(ActivationError::NameCount { fds: 2, names: 1 })
        ));
        assert!(matches!(
            parse(env("x", "1", None), 42),
            Err(ActivationError::BadVar {
                var: "LISTEN_PID",
                ..
            })
        ));
        assert!(matches!(
            parse(env("42", "-1", None), 42),
            Err(ActivationError::BadVar {
                var: "LISTEN_FDS",
                ..
            })
        ));
        assert!(parse(env("42", "100000", None), 42).is_err());
    }

    #[test]
    fn a_tcp_listener_is_accepted() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(8).unwrap();
        let addr = check_listener(3, &s).unwrap();
        assert_eq!(addr, s.local_addr().unwrap().as_socket().unwrap());
        assert!(s.nonblocking().unwrap());
    }

    #[test]
    fn other_sockets_are_refused_by_name() {
        let udp = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        udp.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let e = check_listener(3, &udp).unwrap_err();
        assert!(e.to_string().contains("descriptor 3 is a datagram"), "{e}");

        let unbound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let e = check_listener(4, &unbound).unwrap_err();
        assert!(e.to_string().contains("not listening"), "{e}");

        let unix = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        let e = check_listener(5, &unix).unwrap_err();
        assert!(e.to_string().contains("a unix socket"), "{e}");
    }
}

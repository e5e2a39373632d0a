//! The service-manager notification protocol (`sd_notify(3)`), std only.
//!
//! systemd passes `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) to a
//! `Type=notify` service; the service sends newline-separated `KEY=VALUE` datagrams to it:
//! `READY=1` once the listeners are bound, `STATUS=...` for `systemctl status`,
//! `RELOADING=1` ... `READY=1` around a reload, `STOPPING=1` at shutdown, and `WATCHDOG=1`
//! while the event loop is alive.
//!
//! Invariants kept here:
//! - Without `NOTIFY_SOCKET` every call is a no-op: nothing is sent and nothing fails.
//! - Nothing here blocks the loop: the socket is non-blocking, and a datagram the manager
//!   cannot take is dropped (logged once at `warn`, then at `debug`).
//! - `WATCHDOG=1` is sent only from [`Notifier::watchdog_tick`], which the loop calls from
//!   its own timers, every half `WATCHDOG_USEC`. The loop feeds [`Notifier::watchdog_deadline`]
//!   into its poll timeout, so a loop that is stuck stops pinging and systemd restarts it.
//! - `STATUS=` is sent only when its text changed, so refreshing it is cheap.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::os::sys;

/// Where notifications go.
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// For log lines: the `NOTIFY_SOCKET` value as given.
    name: String,
    /// Whether a failed send was already logged at `warn`.
    warned: bool,
}

/// The watchdog schedule: one ping every `every`, starting when the daemon is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watchdog {
    every: Duration,
    next: Option<Instant>,
}

/// The environment the service manager gave us, as read at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyEnv<'a> {
    pub notify_socket: Option<&'a OsStr>,
    pub watchdog_usec: Option<&'a OsStr>,
    pub watchdog_pid: Option<&'a OsStr>,
}

/// Sends notifications to the service manager, or does nothing when there is none.
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Watchdog>,
    last_status: String,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            last_status: String::new(),
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. A value that cannot be used
    /// is logged and ignored: a daemon that runs without notifications beats one that does
    /// not start (systemd then reports the start as timed out, which names the problem).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        Notifier::new(
            NotifyEnv {
                notify_socket: socket.as_deref(),
                watchdog_usec: usec.as_deref(),
                watchdog_pid: pid.as_deref(),
            },
            std::process::id(),
        )
    }

    /// Builds a notifier from explicit values (`own_pid` is compared with `WATCHDOG_PID`).
    pub fn new(env: NotifyEnv<'_>, own_pid: u32) -> Notifier {
        let mut notifier = Notifier::disabled();
        let Some(raw) = env.notify_socket.filter(|s| !s.is_empty()) else {
            return notifier;
        };
        let name = raw.to_string_lossy().into_owned();
        match connect(raw) {
            Ok((socket, addr)) => {
                notifier.target = Some(Target {
                    socket,
                    addr,
                    name: name.clone(),
                    warned: false,
                });
            }
            Err(e) => {
                warn!(
                    "NOTIFY_SOCKET={name} cannot be used ({e}); not notifying the service manager"
                );
                return notifier;
            }
        }
        match watchdog_period(env.watchdog_usec, env.watchdog_pid, own_pid) {
            Ok(Some(every)) => {
                notifier.watchdog = Some(Watchdog { every, next: None });
                info!(
                    "notifying the service manager at {name}; watchdog ping every {}ms",
                    every.as_millis()
                );
            }
            Ok(None) => info!("notifying the service manager at {name}"),
            Err(why) => {
                warn!("{why}; watchdog pings off");
                info!("notifying the service manager at {name}");
            }
        }
        notifier
    }

    /// `READY=1` with the status; starts the watchdog schedule. Also ends a reload.
    pub fn ready(&mut self, now: Instant, status: &str) {
        if let Some(w) = &mut self.watchdog {
            if w.next.is_none() {
                w.next = Some(now + w.every);
            }
        }
        let mut msg = String::from("READY=1\n");
        self.push_status(&mut msg, status);
        self.send(&msg);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (the clock systemd uses to order reloads).
    pub fn reloading(&mut self) {
        if self.target.is_none() {
            return;
        }
        let msg = format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading\n",
            sys::monotonic_usec()
        );
        self.last_status = "reloading".into();
        self.send(&msg);
    }

    /// `STOPPING=1`: systemd then shows the unit as deactivating.
    pub fn stopping(&mut self) {
        self.last_status = "stopping".into();
        self.send("STOPPING=1\nSTATUS=stopping\n");
    }

    /// `STATUS=` when the text changed since the last one sent.
    pub fn status(&mut self, status: &str) {
        let mut msg = String::new();
        self.push_status(&mut msg, status);
        if !msg.is_empty() {
            self.send(&msg);
        }
    }

    /// When the next watchdog ping is due (for the loop's poll timeout).
    pub fn watchdog_deadline(&self) -> Option<Instant> {
        self.watchdog.and_then(|w| w.next)
    }

    /// Sends `WATCHDOG=1` (with the status if it changed) when the ping is due, and schedules
    /// the next one. Call only from the event loop's timers: the ping is the proof that the
    /// loop still turns.
    pub fn watchdog_tick(&mut self, now: Instant, status: impl FnOnce() -> String) {
        let Some(w) = &mut self.watchdog else {
            return;
        };
        match w.next {
            Some(at) if at <= now => w.next = Some(now + w.every),
            _ => return,
        }
        let mut msg = String::from("WATCHDOG=1\n");
        self.push_status(&mut msg, &status());
        self.send(&msg);
    }

    fn push_status(&mut self, msg: &mut String, status: &str) {
        if self.target.is_none() || status == self.last_status {
            return;
        }
        // A newline would start a new assignment: the status is one line.
        let line: String = status
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .collect();
        let _ = writeln!(msg, "STATUS={line}");
        self.last_status = status.to_string();
    }

    fn send(&mut self, msg: &str) {
        let Some(t) = &mut self.target else {
            return;
        };
        if let Err(e) = t.socket.send_to_addr(msg.as_bytes(), &t.addr) {
            if t.warned {
                debug!("notify {}: {e}", t.name);
            } else {
                t.warned = true;
                warn!(
                    "cannot notify the service manager at {}: {e} (further failures are logged at debug)",
                    t.name
                );
            }
        }
    }
}

/// Opens an unbound, non-blocking datagram socket and resolves `NOTIFY_SOCKET`.
fn connect(raw: &OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
    let bytes = raw.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(raw)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected an absolute path or an @abstract name",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// Half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` advises, when the watchdog is meant
/// for this process (`WATCHDOG_PID` absent or equal to `own_pid`).
fn watchdog_period(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|s| !s.is_empty()) {
        let pid_str = pid.to_string_lossy();
        match pid_str.parse::<u32>() {
            Ok(p) if p == own_pid => {}
            // The watchdog is for another process (we were started by a wrapper).
            Ok(_) => return Ok(None),
            Err(_) => return Err(format!("WATCHDOG_PID={pid_str} is not a process id")),
        }
    }
    let usec_str = usec.to_string_lossy();
    match usec_str.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "WATCHDOG_USEC={usec_str} is not a positive number of microseconds"
        )),
        Ok(n) => Ok(Some(
            Duration::from_micros(n / 2).max(Duration::from_millis(1)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vigild-notify-{tag}-{}", std::process::id()))
    }

    /// Receives every datagram waiting on `rx`.
    fn drain(rx: &UnixDatagram) -> Vec<String> {
        rx.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn watchdog_period_is_half_and_respects_watchdog_pid() {
        let half = Some(Duration::from_millis(200));
        assert_eq!(watchdog_period(Some(os("400000")), None, 7), Ok(half));
        assert_eq!(
            watchdog_period(Some(os("400000")), Some(os("7")), 7),
            Ok(half)
        );
        assert_eq!(
            watchdog_period(Some(os("400000")), Some(os("8")), 7),
            Ok(None)
        );
        assert_eq!(watchdog_period(None, Some(os("7")), 7), Ok(None));
        assert_eq!(watchdog_period(Some(os("")), None, 7), Ok(None));
        assert!(watchdog_period(Some(os("0")), None, 7).is_err());
        assert!(watchdog_period(Some(os("soon")), None, 7).is_err());
        assert!(watchdog_period(Some(os("400000")), Some(os("x")), 7).is_err());
        // A microsecond watchdog still yields a usable (non-zero) period.
        assert_eq!(
            watchdog_period(Some(os("1")), None, 7),
            Ok(Some(Duration::from_millis(1)))
        );
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        let mut n = Notifier::new(
            NotifyEnv {
                watchdog_usec: Some(os("400000")),
                ..NotifyEnv::default()
            },
            1,
        );
        assert!(n.target.is_none());
        let now = Instant::now();
        n.ready(now, "live=0");
        n.status("live=1");
        n.reloading();
        n.stopping();
        n.watchdog_tick(now + Duration::from_secs(9), || "live=1".into());
        assert_eq!(n.watchdog_deadline(), None);
    }

    #[test]
    fn unusable_notify_socket_is_ignored() {
        let n = Notifier::new(
            NotifyEnv {
                notify_socket: Some(os("relative/path")),
                ..NotifyEnv::default()
            },
            1,
        );
        assert!(n.target.is_none());
        // A path nobody listens on: sends fail quietly, the daemon goes on.
        let mut n = Notifier::new(
            NotifyEnv {
                notify_socket: Some(temp_path("nobody").as_os_str()),
                ..NotifyEnv::default()
            },
            1,
        );
        assert!(n.target.is_some());
        n.ready(Instant::now(), "live=0");
        n.stopping();
    }

    #[test]
    fn messages_in_order_to_a_path_socket() {
        let path = temp_path("path");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let t0 = Instant::now();
        let mut n = Notifier::new(
            NotifyEnv {
                notify_socket: Some(path.as_os_str()),
                watchdog_usec: Some(os("1000000")),
                watchdog_pid: None,
            },
            1,
        );
        assert_eq!(
            n.watchdog.map(|w| w.every),
            Some(Duration::from_millis(500))
        );
        assert_eq!(n.watchdog_deadline(), None, "no pings before READY");
        n.ready(t0, "live=0 reaped=0");
        assert_eq!(n.watchdog_deadline(), Some(t0 + Duration::from_millis(500)));
        n.watchdog_tick(t0 + Duration::from_millis(499), || "live=0 reaped=0".into());
        n.status("live=0 reaped=0"); // unchanged: not sent
        n.watchdog_tick(t0 + Duration::from_millis(510), || "live=0 reaped=0".into());
        assert_eq!(
            n.watchdog_deadline(),
            Some(t0 + Duration::from_millis(1010))
        );
        n.watchdog_tick(t0 + Duration::from_millis(1010), || {
            "live=1 reaped=0".into()
        });
        n.reloading();
        n.ready(t0 + Duration::from_millis(1100), "live=1 reaped=0");
        n.stopping();
        let got = drain(&rx);
        let _ = std::fs::remove_file(&path);
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[0], "READY=1\nSTATUS=live=0 reaped=0\n");
        assert_eq!(got[1], "WATCHDOG=1\n");
        assert_eq!(got[2], "WATCHDOG=1\nSTATUS=live=1 reaped=0\n");
        assert!(
            got[3].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{}",
            got[3]
        );
        let usec: u64 = got[3]
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(usec > 0);
        // The status changed to "reloading", so READY carries the live status again.
        assert_eq!(got[4], "READY=1\nSTATUS=live=1 reaped=0\n");
        assert_eq!(got[5], "STOPPING=1\nSTATUS=stopping\n");
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        let name = format!("vigild-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let value = format!("@{name}");
        let mut n = Notifier::new(
            NotifyEnv {
                notify_socket: Some(os(&value)),
                ..NotifyEnv::default()
            },
            1,
        );
        n.ready(Instant::now(), "a\nb");
        assert_eq!(drain(&rx), ["READY=1\nSTATUS=a b\n"]);
    }
}

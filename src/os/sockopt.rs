//! Socket options vigild puts on every accepted connection, and reading them back.
//!
//! Keepalive (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`) finds an idle dead
//! peer; `TCP_USER_TIMEOUT` bounds how long sent data may stay unacknowledged, which keepalive
//! alone never covers; `TCP_NODELAY` keeps small replies from waiting on Nagle. Options are
//! read back with `getsockopt` rather than trusted, so `CLIENT INFO` shows what the kernel holds.

use std::io;
use std::time::Duration;

use mio::net::TcpStream;
use socket2::{SockRef, TcpKeepalive};

/// The keepalive settings and user timeout for every client socket: `[keepalive]` as
/// `crate::config` validated it (the config re-exports this type; it lives here so that the
/// socket-option code needs nothing from the config layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub enabled: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
    pub user_timeout: UserTimeout,
}

/// What to set as TCP_USER_TIMEOUT; see [`KeepaliveConfig::effective_user_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTimeout {
    /// idle + interval × probes, so the bound the operator asked for is the one enforced.
    Auto,
    /// Not set: data in flight is retried for the kernel's tcp_retries2 (about 15 minutes).
    Off,
    Fixed(Duration),
}

impl KeepaliveConfig {
    /// idle + interval * probes: when an idle dead peer is detected
    pub fn detection_bound(&self) -> Duration {
        // Saturating: fields are public, and a hand-built config must not panic here.
        self.idle
            .saturating_add(self.interval.saturating_mul(self.probes))
    }

    /// The TCP_USER_TIMEOUT to set: Auto -> Some(detection_bound) when enabled, None when
    /// keepalive is disabled; Off -> None; Fixed(d) -> Some(d)
    pub fn effective_user_timeout(&self) -> Option<Duration> {
        match self.user_timeout {
            UserTimeout::Auto if self.enabled => Some(self.detection_bound()),
            UserTimeout::Auto | UserTimeout::Off => None,
            UserTimeout::Fixed(d) => Some(d),
        }
    }
}

/// Applies the keepalive settings, user timeout and `TCP_NODELAY` to one socket. Used at accept
/// and again on every live socket when a reload changes `[keepalive]`.
pub fn apply(stream: &TcpStream, ka: &KeepaliveConfig) -> io::Result<()> {
    let sock = SockRef::from(stream);
    if ka.enabled {
        let params = TcpKeepalive::new()
            .with_time(ka.idle)
            .with_interval(ka.interval)
            .with_retries(ka.probes);
        sock.set_tcp_keepalive(&params)?;
    } else {
        sock.set_keepalive(false)?;
    }
    // `None` clears a user timeout set by an earlier config (0 = the kernel default).
    sock.set_tcp_user_timeout(ka.effective_user_timeout())?;
    sock.set_tcp_nodelay(true)
}

/// The options as the kernel holds them for one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub keepalive: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
    /// `None` when no user timeout is set.
    pub user_timeout: Option<Duration>,
    pub nodelay: bool,
}

/// Reads the options back with `getsockopt`.
pub fn read_back(stream: &TcpStream) -> io::Result<Applied> {
    let sock = SockRef::from(stream);
    Ok(Applied {
        keepalive: sock.keepalive()?,
        idle: sock.tcp_keepalive_time()?,
        interval: sock.tcp_keepalive_interval()?,
        probes: sock.tcp_keepalive_retries()?,
        user_timeout: sock.tcp_user_timeout()?,
        nodelay: sock.tcp_nodelay()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (std::net::TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, TcpStream::from_std(server))
    }

    fn ka(user_timeout: UserTimeout) -> KeepaliveConfig {
        KeepaliveConfig {
            enabled: true,
            idle: Duration::from_secs(2),
            interval: Duration::from_secs(1),
            probes: 3,
            user_timeout,
        }
    }

    #[test]
    fn applied_values_read_back() {
        let (_client, server) = pair();
        apply(&server, &ka(UserTimeout::Auto)).unwrap();
        let got = read_back(&server).unwrap();
        assert_eq!(
            got,
            Applied {
                keepalive: true,
                idle: Duration::from_secs(2),
                interval: Duration::from_secs(1),
                probes: 3,
                user_timeout: Some(Duration::from_secs(5)),
                nodelay: true,
            }
        );
    }

    #[test]
    fn reapplying_clears_the_user_timeout_and_keepalive() {
        let (_client, server) = pair();
        apply(
            &server,
            &ka(UserTimeout::Fixed(Duration::from_millis(7500))),
        )
        .unwrap();
        assert_eq!(
            read_back(&server).unwrap().user_timeout,
            Some(Duration::from_millis(7500))
        );
        let mut off = ka(UserTimeout::Off);
        off.enabled = false;
        apply(&server, &off).unwrap();
        let got = read_back(&server).unwrap();
        assert!(!got.keepalive);
        assert_eq!(got.user_timeout, None);
    }
}

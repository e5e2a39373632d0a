//! Binding the client listeners.
//!
//! Listeners are made with socket2 so the backlog and `IPV6_V6ONLY` are ours to set: an IPv6
//! listener on `[::]` then does not also claim the IPv4 port, and `0.0.0.0` and `[::]` can be
//! listed side by side. With `reuse_port` the listener gets `SO_REUSEPORT`: several processes
//! (each with the option set) bind the same address and the kernel spreads new connections
//! across them by a hash of the connection's addresses.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Connections accepted from one listener per loop turn, client and operator listeners alike:
/// a connection storm cannot starve live sessions. The rest wait in the backlog, and the
/// listener is revisited on the next turn.
pub const MAX_ACCEPTS_PER_TURN: usize = 64;

/// Binds a non-blocking listener on `addr` with `backlog`, sharing the port with other
/// `SO_REUSEPORT` listeners when `reuse_port` is set.
pub fn bind(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted daemon must be able to bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    #[test]
    fn binds_ipv4_and_reports_address_in_use() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = l.local_addr().unwrap();
        let err = bind(addr, 16, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // One side with SO_REUSEPORT is not enough: the first listener did not agree to share.
        let err = bind(addr, 16, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn reuse_port_listeners_share_an_address() {
        let a = bind("127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        let addr = a.local_addr().unwrap();
        let b = bind(addr, 16, true).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        assert!(SockRef::from(&b).reuse_port().unwrap());
        // A listener without the option is still refused.
        assert_eq!(
            bind(addr, 16, false).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[test]
    fn binds_ipv6_loopback_when_available() {
        // Some sandboxes have no IPv6 at all; there the bind fails with AddrNotAvailable.
        match bind("[::1]:0".parse().unwrap(), 16, false) {
            Ok(l) => assert!(l.local_addr().unwrap().is_ipv6()),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable),
        }
    }
}

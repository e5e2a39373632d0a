//! Binding the client listeners.
//!
//! Listeners are made with socket2 so the backlog and `IPV6_V6ONLY` are ours to set: an IPv6
//! listener on `[::]` then does not also claim the IPv4 port, and `0.0.0.0` and `[::]` can be
//! listed side by side.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking listener on `addr` with `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted daemon must be able to bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
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

    #[test]
    fn binds_ipv4_and_reports_address_in_use() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        let err = bind(addr, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn binds_ipv6_loopback_when_available() {
        // Some sandboxes have no IPv6 at all; there the bind fails with AddrNotAvailable.
        match bind("[::1]:0".parse().unwrap(), 16) {
            Ok(l) => assert!(l.local_addr().unwrap().is_ipv6()),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable),
        }
    }
}

//! A raw RESP client on a real socket, for the faults that need the socket itself: crash
//! (`TCP_REPAIR`), abortive close (`SO_LINGER` 0), half-close, a peer that never reads, and
//! thousands of connections from one source address. The `redis` crate covers the rest.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::util::netns;

/// Every blocking call of a client gives up after this long, so no case can hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Client {
    pub stream: TcpStream,
    /// The client's address: the `peer=` of its session's reap line.
    pub local: SocketAddr,
}

impl Client {
    pub fn connect(server: SocketAddr) -> Client {
        Client::connect_from(server, None).expect("connect to vigild")
    }

    /// Connects from `source` (any port), or from the default address.
    pub fn connect_from(server: SocketAddr, source: Option<IpAddr>) -> io::Result<Client> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if let Some(ip) = source {
            netns::bind_address_no_port(&sock)?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        sock.connect_timeout(&server.into(), IO_TIMEOUT)?;
        let stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        Ok(Client { stream, local })
    }

    /// Sends `PING`, waits for `+PONG`; returns when it arrived (the peer's last activity as
    /// the test knows it).
    pub fn ping(&mut self) -> Instant {
        self.try_ping().expect("PING")
    }

    pub fn try_ping(&mut self) -> io::Result<Instant> {
        self.stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        self.stream.read_exact(&mut reply)?;
        if &reply != b"+PONG\r\n" {
            return Err(io::Error::other(format!(
                "expected +PONG, got {:?}",
                String::from_utf8_lossy(&reply)
            )));
        }
        Ok(Instant::now())
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// `shutdown(SHUT_WR)`: the daemon reads EOF, the client can still read.
    pub fn half_close(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown(WR)");
    }

    /// Reads until EOF; returns what arrived and when EOF came.
    pub fn read_to_eof(&mut self) -> (Vec<u8>, Instant) {
        let mut got = Vec::new();
        self.stream
            .read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("read to EOF: {e}; got {got:?}"));
        (got, Instant::now())
    }

    /// Closes with RST instead of FIN: `SO_LINGER` {on, 0} then close.
    pub fn abort(self) {
        SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(self.stream);
    }

    /// Vanishes without FIN or RST (`TCP_REPAIR`, then close): a crashed host.
    pub fn vanish(self) {
        netns::vanish(self.stream).expect("TCP_REPAIR close (needs CAP_NET_ADMIN)");
    }
}

/// A multibulk `ECHO` request whose reply is `payload` bytes (plus framing).
pub fn echo_request(payload: usize) -> Vec<u8> {
    let mut req = format!("*2\r\n$4\r\nECHO\r\n${payload}\r\n").into_bytes();
    req.resize(req.len() + payload, b'x');
    req.extend_from_slice(b"\r\n");
    req
}

//! bareloop: the benchmark's reference point. A bare mio loop that accepts, sets the socket
//! options vigild sets (keepalive idle/interval/count, `TCP_USER_TIMEOUT`, `TCP_NODELAY`),
//! answers every request with `+PONG` and keeps no session state beyond the socket itself.
//! Whatever vigild costs above this loop is the price of its sessions, statistics and
//! reaping; what this loop costs is the machine and the kernel.
//!
//! `bareloop --listen IP:PORT [--backlog 4096] [--keepalive IDLE,INTVL,CNT]
//! [--user-timeout-ms MS] [--reuse-port]`
//!
//! Requests are counted per read without keeping a partial request between reads: a request
//! split across two reads is not answered. Clients of the benchmark send whole requests in one
//! write (a few hundred bytes at most), which loopback delivers whole.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use vigild_bench::{fail, Args};

const LISTENER: Token = Token(usize::MAX);

/// Parses `digits\r\n` at `buf[i..]`; returns the value and the index after the line.
fn int_line(buf: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let mut v: usize = 0;
    while let Some(&b) = buf.get(i) {
        match b {
            b'0'..=b'9' => v = v.checked_mul(10)?.checked_add(usize::from(b - b'0'))?,
            b'\r' => return (buf.get(i + 1) == Some(&b'\n')).then_some((v, i + 2)),
            _ => return None,
        }
        i += 1;
    }
    None
}

/// Complete requests (RESP multibulk or inline lines) at the start of `buf`.
fn count_requests(buf: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < buf.len() {
        if buf[i] == b'*' {
            let Some((argc, mut j)) = int_line(buf, i + 1) else {
                return n;
            };
            for _ in 0..argc {
                if buf.get(j) != Some(&b'$') {
                    return n;
                }
                let Some((len, k)) = int_line(buf, j + 1) else {
                    return n;
                };
                j = k + len + 2;
            }
            if j > buf.len() {
                return n;
            }
            i = j;
        } else {
            let Some(p) = buf[i..].iter().position(|&b| b == b'\n') else {
                return n;
            };
            i += p + 1;
        }
        n += 1;
    }
    n
}

fn main() {
    let args = Args::parse(std::env::args().skip(1));
    let addr: SocketAddr = args.req("listen");
    let backlog: i32 = args.get("backlog", 4096);
    let ka: String = args.get("keepalive", "60,10,6".to_owned());
    let ka: Vec<u64> = ka
        .split(',')
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| fail("--keepalive IDLE,INTVL,CNT"))
        })
        .collect();
    let [idle, intvl, cnt] = ka[..] else {
        fail("--keepalive IDLE,INTVL,CNT");
    };
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(idle))
        .with_interval(Duration::from_secs(intvl))
        .with_retries(cnt as u32);
    let user_timeout =
        Duration::from_millis(args.get("user-timeout-ms", (idle + intvl * cnt) * 1000));

    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|e| fail(&format!("socket: {e}")));
    let setup = sock
        .set_reuse_address(true)
        .and_then(|()| sock.set_reuse_port(args.flag("reuse-port")))
        .and_then(|()| sock.set_nonblocking(true))
        .and_then(|()| sock.bind(&addr.into()))
        .and_then(|()| sock.listen(backlog));
    if let Err(e) = setup {
        fail(&format!("listen {addr}: {e}"));
    }
    let mut listener = TcpListener::from_std(sock.into());
    let mut poll = Poll::new().unwrap_or_else(|e| fail(&format!("poll: {e}")));
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap_or_else(|e| fail(&format!("register: {e}")));
    eprintln!("listening on {}", listener.local_addr().unwrap_or(addr));

    let mut conns: Slab<TcpStream> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            fail(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let so = SockRef::from(&s);
                            let _ = so
                                .set_tcp_keepalive(&keepalive)
                                .and_then(|()| so.set_tcp_user_timeout(Some(user_timeout)))
                                .and_then(|()| so.set_tcp_nodelay(true));
                            let entry = conns.vacant_entry();
                            if poll
                                .registry()
                                .register(&mut s, Token(entry.key()), Interest::READABLE)
                                .is_ok()
                            {
                                entry.insert(s);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of descriptors or an aborted handshake: try again on the next
                        // event rather than spin.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(s) = conns.get_mut(key) else {
                continue;
            };
            let mut close = false;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => {
                        out.clear();
                        for _ in 0..count_requests(&buf[..n]) {
                            out.extend_from_slice(b"+PONG\r\n");
                        }
                        if !out.is_empty() && s.write(&out).is_err() {
                            close = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            if close {
                let mut s = conns.remove(key);
                let _ = poll.registry().deregister(&mut s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inline_and_multibulk_requests() {
        assert_eq!(count_requests(b"PING\r\n"), 1);
        assert_eq!(
            count_requests(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"),
            2
        );
        assert_eq!(
            count_requests(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\nPING\r\n"),
            2
        );
        // An unfinished request is not answered.
        assert_eq!(count_requests(b"PING\r\n*1\r\n$4\r\nPI"), 1);
        assert_eq!(count_requests(b"*1\r\n$x\r\n"), 0);
    }
}

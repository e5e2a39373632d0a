//! vbload: the benchmark's load generator. Two subcommands:
//!
//! - `vbload hold --target IP:PORT --n N [--src 127.1.0.1] [--per-src 1000] [--inflight 128]
//!   [--proto resp|http] [--wait-go] [--connect-secs 60] [--max-secs 600]`
//!   opens N sessions, each bound to a source address counting up from `--src` (at most
//!   `--per-src` per address), with at most `--inflight` connects outstanding. Each session
//!   sends one request (`PING`, or an HTTP/1.1 `GET` that keeps the connection open) and waits
//!   for the reply; then it stays idle. When every session has its reply (or failed) it prints
//!   `ready n= ok= failed= t0= t1=` (CLOCK_MONOTONIC ns). Then it holds the sessions and takes
//!   commands on stdin, one per line: `ping` (one more request on every idle session, at most
//!   `--inflight` outstanding, answered with `pinged ok= failed= t0= t1=`), `status`, and
//!   `stop` (or EOF). It exits on its own after
//!   `--max-secs` whatever happens.
//! - `vbload rtt --target IP:PORT [--alt IP:PORT] [--src 127.0.0.1] [--count 20000]
//!   [--chunk 500] [--secs 30] [--pace-us 0] [--proto resp|http] [--out FILE]`
//!   one client, one request at a time; prints `rtt n= p50_us= p99_us= p999_us= max_us=` and,
//!   with `--out`, every sample as `send_ns rtt_ns`. With `--alt`, a second connection to
//!   another server takes turns with the first, `--chunk` requests at a time, and a second
//!   line `rtt_alt ...` reports it: both servers then share the same machine noise.
//!
//! Memory per session here is a few dozen bytes; the descriptor limit (20,000 on these
//! machines) bounds one process, so the driver splits large runs over several processes.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use vigild_bench::{client_socket, fail, mono_ns, quantile, say, source_addr, stdin_lines, Args};

const STDIN: Token = Token(usize::MAX);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Resp,
    Http,
}

impl Proto {
    fn parse(s: &str) -> Proto {
        match s {
            "resp" => Proto::Resp,
            "http" => Proto::Http,
            _ => fail("--proto must be resp or http"),
        }
    }

    fn request(self) -> &'static [u8] {
        match self {
            Proto::Resp => b"PING\r\n",
            Proto::Http => b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n",
        }
    }

    /// The end of one reply (`+PONG\r\n`; a body-less 204 response ends with its headers).
    fn terminator(self) -> &'static [u8] {
        match self {
            Proto::Resp => b"\r\n",
            Proto::Http => b"\r\n\r\n",
        }
    }

    fn ok_prefix(self) -> &'static [u8] {
        match self {
            Proto::Resp => b"+PONG",
            Proto::Http => b"HTTP/1.1 2",
        }
    }
}

/// Recognises complete replies in a byte stream, across reads.
#[derive(Default, Clone, Copy)]
struct ReplyScanner {
    matched: u8,
    head: [u8; 10],
    head_len: u8,
}

impl ReplyScanner {
    /// Feeds bytes; returns (replies completed, of which well-formed).
    fn feed(&mut self, proto: Proto, data: &[u8]) -> (usize, usize) {
        let term = proto.terminator();
        let (mut done, mut good) = (0, 0);
        for &b in data {
            if (self.head_len as usize) < self.head.len() {
                self.head[self.head_len as usize] = b;
                self.head_len += 1;
            }
            if b == term[self.matched as usize] {
                self.matched += 1;
            } else {
                self.matched = u8::from(b == term[0]);
            }
            if self.matched as usize == term.len() {
                done += 1;
                let want = proto.ok_prefix();
                if self.head[..self.head_len as usize].starts_with(want) {
                    good += 1;
                }
                *self = ReplyScanner::default();
            }
        }
        (done, good)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    /// Request sent, reply awaited.
    Waiting,
    Idle,
    Dead,
}

struct Conn {
    stream: Option<TcpStream>,
    state: State,
    scan: ReplyScanner,
}

/// What one event did to one session.
enum Outcome {
    Nothing,
    Replied { ok: bool },
    Failed(String),
    ClosedWhileIdle,
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let cmd = argv.next().unwrap_or_default();
    let args = Args::parse(argv);
    match cmd.as_str() {
        "hold" => hold(&args),
        "rtt" => rtt(&args),
        _ => fail("usage: vbload hold|rtt --target IP:PORT ... (see the source header)"),
    }
}

struct Holder {
    poll: Poll,
    conns: Vec<Conn>,
    proto: Proto,
    buf: Vec<u8>,
    first_error: Option<String>,
    closed_by_peer: usize,
}

impl Holder {
    /// Starts connecting session `i`; false if it failed at once.
    fn open(&mut self, i: usize, target: SocketAddr, src: Ipv4Addr) -> bool {
        let sock = match client_socket(src, true) {
            Ok(s) => s,
            Err(e) => return self.fail_open(format!("socket/bind {src}: {e}")),
        };
        match sock.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return self.fail_open(format!("connect from {src}: {e}")),
        }
        let mut stream = TcpStream::from_std(sock.into());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail_open(format!("register: {e}"));
        }
        self.conns.push(Conn {
            stream: Some(stream),
            state: State::Connecting,
            scan: ReplyScanner::default(),
        });
        true
    }

    fn fail_open(&mut self, msg: String) -> bool {
        self.first_error.get_or_insert(msg);
        self.conns.push(Conn {
            stream: None,
            state: State::Dead,
            scan: ReplyScanner::default(),
        });
        false
    }

    fn kill(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.state = State::Dead;
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    /// Sends the request on session `i` (it must be connected and idle).
    fn send(&mut self, i: usize) -> Result<(), String> {
        let req = self.proto.request();
        let c = &mut self.conns[i];
        let Some(s) = c.stream.as_mut() else {
            return Err("no socket".into());
        };
        match s.write(req) {
            Ok(n) if n == req.len() => {
                c.state = State::Waiting;
                c.scan = ReplyScanner::default();
                Ok(())
            }
            // A fresh or idle socket takes a few dozen bytes whole; anything else is a failure.
            Ok(n) => Err(format!("short write {n}")),
            Err(e) => Err(format!("write: {e}")),
        }
    }

    fn event(&mut self, i: usize) -> Outcome {
        let Some(c) = self.conns.get_mut(i) else {
            return Outcome::Nothing;
        };
        let Some(s) = c.stream.as_mut() else {
            return Outcome::Nothing;
        };
        if c.state == State::Connecting {
            if let Ok(Some(e)) | Err(e) = s.take_error() {
                self.kill(i);
                return Outcome::Failed(format!("connect: {e}"));
            }
            match s.peer_addr() {
                Ok(_) => {}
                // Spurious wakeup: still connecting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Nothing,
                Err(e) => {
                    self.kill(i);
                    return Outcome::Failed(format!("connect: {e}"));
                }
            }
            if let Err(e) = self.send(i) {
                self.kill(i);
                return Outcome::Failed(e);
            }
        }
        let proto = self.proto;
        let c = &mut self.conns[i];
        let Some(s) = c.stream.as_mut() else {
            return Outcome::Nothing;
        };
        let mut result = Outcome::Nothing;
        loop {
            match s.read(&mut self.buf) {
                Ok(0) => {
                    let was = c.state;
                    self.kill(i);
                    return match was {
                        State::Idle => Outcome::ClosedWhileIdle,
                        _ => Outcome::Failed("closed before the reply".into()),
                    };
                }
                Ok(n) => {
                    if c.state == State::Waiting {
                        let (done, good) = c.scan.feed(proto, &self.buf[..n]);
                        if done > 0 {
                            c.state = State::Idle;
                            result = Outcome::Replied { ok: good > 0 };
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return result,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let was = c.state;
                    self.kill(i);
                    return match was {
                        State::Idle => Outcome::ClosedWhileIdle,
                        _ => Outcome::Failed(format!("read: {e}")),
                    };
                }
            }
        }
    }
}

fn hold(args: &Args) {
    let target: SocketAddr = args.req("target");
    let n: usize = args.req("n");
    let src: Ipv4Addr = args.get("src", Ipv4Addr::new(127, 1, 0, 1));
    let per_src: usize = args.get("per-src", 1000);
    let inflight: usize = args.get("inflight", 128);
    let proto = Proto::parse(&args.get("proto", "resp".to_owned()));
    let connect_secs: f64 = args.get("connect-secs", 60.0);
    let max_secs: f64 = args.get("max-secs", 600.0);
    if per_src > 1000 {
        fail("--per-src above 1000 makes loopback connects slow (ephemeral port search)");
    }

    let poll = Poll::new().unwrap_or_else(|e| fail(&format!("poll: {e}")));
    let waker = Waker::new(poll.registry(), STDIN).unwrap_or_else(|e| fail(&format!("{e}")));
    let commands = stdin_lines(waker);
    let started = mono_ns();
    let give_up_at = started + (max_secs * 1e9) as u64;
    if args.flag("wait-go") {
        loop {
            match commands.recv_timeout(Duration::from_secs_f64(max_secs)) {
                Ok(l) if l == "go" => break,
                Ok(l) if l == "stop" || l == "eof" => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    let mut h = Holder {
        poll,
        conns: Vec::with_capacity(n),
        proto,
        buf: vec![0; 16 * 1024],
        first_error: None,
        closed_by_peer: 0,
    };
    let mut events = Events::with_capacity(1024);
    let t0 = mono_ns();
    let connect_deadline = t0 + (connect_secs * 1e9) as u64;
    let (mut next, mut pending, mut ok, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut stop = false;
    while ok + failed < n {
        while pending < inflight && next < n {
            if h.open(next, target, source_addr(src, next, per_src)) {
                pending += 1;
            } else {
                failed += 1;
            }
            next += 1;
        }
        if ok + failed >= n {
            break;
        }
        if mono_ns() > connect_deadline {
            let stuck = n - ok - failed;
            h.first_error
                .get_or_insert(format!("{stuck} sessions had no reply in {connect_secs}s"));
            failed += stuck;
            break;
        }
        if let Err(e) = h.poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != io::ErrorKind::Interrupted {
                fail(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            if ev.token() == STDIN {
                while let Ok(l) = commands.try_recv() {
                    stop |= l == "stop" || l == "eof";
                }
                continue;
            }
            match h.event(ev.token().0) {
                Outcome::Nothing => {}
                Outcome::Replied { ok: good } => {
                    pending -= 1;
                    if good {
                        ok += 1;
                    } else {
                        failed += 1;
                        h.first_error.get_or_insert("unexpected reply".into());
                    }
                }
                Outcome::Failed(e) => {
                    pending -= 1;
                    failed += 1;
                    h.first_error.get_or_insert(e);
                }
                Outcome::ClosedWhileIdle => h.closed_by_peer += 1,
            }
        }
        if stop {
            break;
        }
    }
    let t1 = mono_ns();
    say(&format!(
        "ready n={n} ok={ok} failed={failed} t0={t0} t1={t1} error={}",
        h.first_error
            .as_deref()
            .unwrap_or("-")
            .replace(char::is_whitespace, "_")
    ));

    // Hold, answer commands, notice sessions the server closes.
    let mut ping: Option<(u64, usize, usize, usize)> = None; // (t0, pending, ok, failed)
    let mut to_ping: Vec<usize> = Vec::new();
    while !stop {
        let now = mono_ns();
        if now >= give_up_at {
            break;
        }
        let wait = Duration::from_nanos((give_up_at - now).min(1_000_000_000));
        if let Err(e) = h.poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                fail(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            if ev.token() == STDIN {
                while let Ok(l) = commands.try_recv() {
                    match l.as_str() {
                        "stop" | "eof" => stop = true,
                        "status" => say(&format!(
                            "status idle={} closed_by_peer={}",
                            h.conns.iter().filter(|c| c.state == State::Idle).count(),
                            h.closed_by_peer
                        )),
                        "ping" if ping.is_none() => {
                            to_ping = (0..h.conns.len())
                                .filter(|&i| h.conns[i].state == State::Idle)
                                .collect();
                            ping = Some((mono_ns(), 0, 0, 0));
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let outcome = h.event(ev.token().0);
            let Some((_, pending, ok, failed)) = ping.as_mut() else {
                if let Outcome::ClosedWhileIdle = outcome {
                    h.closed_by_peer += 1;
                }
                continue;
            };
            match outcome {
                Outcome::Replied { ok: good } => {
                    *pending -= 1;
                    if good {
                        *ok += 1;
                    } else {
                        *failed += 1;
                    }
                }
                Outcome::Failed(_) => {
                    *pending -= 1;
                    *failed += 1;
                }
                Outcome::ClosedWhileIdle => h.closed_by_peer += 1,
                Outcome::Nothing => {}
            }
        }
        // Requests go out with at most --inflight outstanding: a burst of thousands would
        // overflow loopback's backlog queue (net.core.netdev_max_backlog), and the dropped
        // packets would be retransmitted 200 ms later, out of phase with the rest.
        if let Some((_, pending, _, failed)) = ping.as_mut() {
            while *pending < inflight {
                let Some(i) = to_ping.pop() else { break };
                if h.conns[i].state != State::Idle {
                    continue;
                }
                match h.send(i) {
                    Ok(()) => *pending += 1,
                    Err(_) => {
                        h.kill(i);
                        *failed += 1;
                    }
                }
            }
        }
        if let Some((t, 0, ok, failed)) = ping.filter(|_| to_ping.is_empty()) {
            say(&format!(
                "pinged ok={ok} failed={failed} t0={t} t1={}",
                mono_ns()
            ));
            ping = None;
        }
    }
    let idle = h.conns.iter().filter(|c| c.state == State::Idle).count();
    say(&format!(
        "exit idle={idle} closed_by_peer={}",
        h.closed_by_peer
    ));
}

fn rtt(args: &Args) {
    let mut targets: Vec<SocketAddr> = vec![args.req("target")];
    if let Ok(alt) = args.get::<String>("alt", String::new()).parse() {
        targets.push(alt);
    }
    let src: Ipv4Addr = args.get("src", Ipv4Addr::LOCALHOST);
    let count: usize = args.get("count", 20_000);
    let chunk: usize = args.get("chunk", 500);
    let secs: f64 = args.get("secs", 30.0);
    let pace = Duration::from_micros(args.get("pace-us", 0));
    let proto = Proto::parse(&args.get("proto", "resp".to_owned()));
    let out: Option<String> = args.get("out", String::new()).into();
    let out = out.filter(|p| !p.is_empty());

    let mut conns: Vec<std::net::TcpStream> = targets
        .iter()
        .map(|target| {
            let sock = client_socket(src, false).unwrap_or_else(|e| fail(&format!("socket: {e}")));
            sock.connect(&(*target).into())
                .unwrap_or_else(|e| fail(&format!("connect {target}: {e}")));
            let s: std::net::TcpStream = sock.into();
            let _ = s.set_nodelay(true);
            // Long enough to see any stall the server has; short enough that the tool ends.
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            s
        })
        .collect();
    let mut buf = [0u8; 4096];
    let mut one = |s: &mut std::net::TcpStream| -> Result<(), String> {
        s.write_all(proto.request())
            .map_err(|e| format!("write: {e}"))?;
        let mut scan = ReplyScanner::default();
        loop {
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed".into());
            }
            let (done, good) = scan.feed(proto, &buf[..n]);
            if done > 0 {
                return if good > 0 {
                    Ok(())
                } else {
                    Err("bad reply".into())
                };
            }
        }
    };
    for s in conns.iter_mut() {
        for _ in 0..100 {
            one(s).unwrap_or_else(|e| fail(&format!("warm-up: {e}")));
        }
    }
    // With --alt, chunks of samples alternate between the two servers, so both see the same
    // machine noise over time and their percentiles can be compared.
    let end = mono_ns() + (secs * 1e9) as u64;
    let per = count.min(10_000_000);
    let mut samples: Vec<Vec<(u64, u64)>> = vec![Vec::with_capacity(per); conns.len()];
    let mut error = None;
    let mut k = 0;
    'outer: while samples.iter().any(|v| v.len() < count) && mono_ns() < end {
        let which = k % conns.len();
        k += 1;
        for _ in 0..chunk.max(1) {
            if samples[which].len() >= count || mono_ns() >= end {
                break;
            }
            let t = mono_ns();
            if let Err(e) = one(&mut conns[which]) {
                error = Some(e);
                break 'outer;
            }
            samples[which].push((t, mono_ns() - t));
            if !pace.is_zero() {
                std::thread::sleep(pace);
            }
        }
    }
    if let Some(path) = out {
        let mut text = String::with_capacity(samples[0].len() * 24);
        for (t, r) in &samples[0] {
            text.push_str(&format!("{t} {r}\n"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    }
    for (i, v) in samples.iter().enumerate() {
        let mut rtts: Vec<u64> = v.iter().map(|s| s.1).collect();
        rtts.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        say(&format!(
            "{} n={} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} error={}",
            if i == 0 { "rtt" } else { "rtt_alt" },
            rtts.len(),
            us(quantile(&rtts, 0.5)),
            us(quantile(&rtts, 0.99)),
            us(quantile(&rtts, 0.999)),
            us(rtts.last().copied().unwrap_or(0)),
            error.as_deref().unwrap_or("-").replace(' ', "_"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_replies_split_across_reads() {
        let mut s = ReplyScanner::default();
        assert_eq!(s.feed(Proto::Resp, b"+PO"), (0, 0));
        assert_eq!(s.feed(Proto::Resp, b"NG\r"), (0, 0));
        assert_eq!(s.feed(Proto::Resp, b"\n-ERR max\r\n"), (2, 1));
        let mut h = ReplyScanner::default();
        let reply = b"HTTP/1.1 204 No Content\r\nServer: x\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(h.feed(Proto::Http, &reply[..30]), (0, 0));
        assert_eq!(h.feed(Proto::Http, &reply[30..]), (1, 1));
    }
}

//! vbtls: the benchmark's TLS load generator (rustls with the ring provider, like the daemon).
//! Every session connects, finishes its handshake, sends `PING` and waits for `+PONG`. Three
//! subcommands, all with `--target IP:PORT --ca FILE [--cert FILE --key FILE]` (a client
//! certificate when both are given) and `--max-secs` (the process exits on its own after it):
//!
//! - `vbtls hold --n N [--src 127.1.0.1] [--per-src 1000] [--inflight 128] [--resume]
//!   [--wait-go]` opens N sessions and prints `ready n= ok= failed= resumed= t0= t1= error=`
//!   (CLOCK_MONOTONIC ns). Then it holds them idle and takes commands on stdin: `reconnect`
//!   (every idle session sends `close_notify` and closes, all at once, then all connect again
//!   with at most `--inflight` connects outstanding, resuming with the ticket the first
//!   connection got when `--resume` is set; answered with `back n= ok= failed= resumed= t0=
//!   t1=`, t0 when the closing began, t1 at the last `+PONG`), `status` and `stop` (or EOF).
//! - `vbtls churn --n N [--secs 10] [--inflight 8] [--resume]` keeps `--inflight` sessions
//!   connecting; each closes (`close_notify`) after its `+PONG` and is replaced. With
//!   `--resume`, every slot first makes one full handshake for a ticket, then the tool prints
//!   `warmed` and waits for `go` on stdin, so the driver can read the server's CPU time in
//!   between. Prints `churn n= ok= failed= resumed= t0= t1= error=`.
//! - `vbtls rtt [--secs 10] [--pace-us 100] [--out FILE] [--until-eof]` one TLS session, one
//!   `PING` at a time, for `--secs` or (`--until-eof`) until stdin ends, whichever is first;
//!   prints `rtt n= p50_us= p99_us= p999_us= max_us=` and, with `--out`, every sample as
//!   `send_ns rtt_ns`.
//!
//! `--suites aes128|aes256|chacha20` offers only that TLS 1.3 cipher suite.
//!
//! Each session uses its own server name (`c<i>.bench.test`, `s<slot>.bench.test`; the bench
//! certificate is for `*.bench.test`): the client's ticket store keeps a few tickets per name,
//! so one name shared by thousands of sessions would leave most of them nothing to resume with.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore};
use slab::Slab;
use vigild_bench::{client_socket, fail, mono_ns, quantile, say, source_addr, stdin_lines, Args};

const STDIN: Token = Token(usize::MAX);
const PONG: &[u8] = b"+PONG\r\n";

fn main() {
    let mut argv = std::env::args().skip(1);
    let cmd = argv.next().unwrap_or_default();
    let args = Args::parse(argv);
    match cmd.as_str() {
        "hold" => hold(&args),
        "churn" => churn(&args),
        "rtt" => rtt(&args),
        _ => fail("usage: vbtls hold|churn|rtt --target IP:PORT --ca FILE ... (see the source)"),
    }
}

/// The client configuration: trusts `--ca`, presents `--cert`/`--key` if given, and keeps
/// tickets for `tickets` server names when `resume` (none otherwise: every handshake is full).
fn client_config(args: &Args, resume: bool, tickets: usize) -> Arc<ClientConfig> {
    let ca: String = args.req("ca");
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca).unwrap_or_else(|e| fail(&format!("{ca}: {e}")));
    for cert in certs {
        let cert = cert.unwrap_or_else(|e| fail(&format!("{ca}: {e}")));
        roots
            .add(cert)
            .unwrap_or_else(|e| fail(&format!("{ca}: {e}")));
    }
    // `--suites aes128|aes256|chacha20` offers one TLS 1.3 suite only (what a server preferring
    // it would pick), to compare what the suites cost the server.
    let mut provider = rustls::crypto::ring::default_provider();
    let suite = match args.get("suites", String::new()).as_str() {
        "" => None,
        "aes128" => Some(rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256),
        "aes256" => Some(rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384),
        "chacha20" => Some(rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256),
        other => fail(&format!("--suites {other}: aes128, aes256 or chacha20")),
    };
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail(&format!("rustls: {e}")))
        .with_root_certificates(roots);
    let cert: String = args.get("cert", String::new());
    let key: String = args.get("key", String::new());
    let mut cfg = if cert.is_empty() || key.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .and_then(|it| it.collect())
            .unwrap_or_else(|e| fail(&format!("{cert}: {e}")));
        let key_der =
            PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| fail(&format!("{key}: {e}")));
        builder
            .with_client_auth_cert(chain, key_der)
            .unwrap_or_else(|e| fail(&format!("client certificate: {e}")))
    };
    cfg.resumption = if resume {
        // The cache's size counts tickets, 8 per server name
        // (rustls' MAX_TLS13_TICKETS_PER_SERVER).
        rustls::client::Resumption::in_memory_sessions((tickets + 16) * 8)
    } else {
        rustls::client::Resumption::disabled()
    };
    Arc::new(cfg)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    /// `PING` sent, `+PONG` awaited.
    Waiting,
    Idle,
}

struct Conn {
    stream: TcpStream,
    tls: ClientConnection,
    state: State,
    /// Bytes of `+PONG\r\n` matched so far.
    matched: usize,
    /// Which session (hold) or slot (churn) this connection is.
    slot: usize,
    /// When the `PING` went out (rtt).
    sent: u64,
}

/// What one readiness event did to one connection.
enum Outcome {
    Nothing,
    /// Its `+PONG` arrived.
    Replied {
        resumed: bool,
    },
    Failed(String),
    /// The server closed a connection that was idle.
    ClosedWhileIdle,
}

struct Engine {
    poll: Poll,
    conns: Slab<Conn>,
    config: Arc<ClientConfig>,
    target: SocketAddr,
    buf: Vec<u8>,
}

impl Engine {
    fn new(config: Arc<ClientConfig>, target: SocketAddr) -> Engine {
        Engine {
            poll: Poll::new().unwrap_or_else(|e| fail(&format!("poll: {e}"))),
            conns: Slab::new(),
            config,
            target,
            buf: vec![0; 16 * 1024],
        }
    }

    /// Starts connecting `slot` as server name `name` from `src`; the handshake starts when
    /// the socket becomes writable.
    fn open(&mut self, slot: usize, name: &str, src: Ipv4Addr) -> Result<usize, String> {
        let sock = client_socket(src, true).map_err(|e| format!("socket/bind {src}: {e}"))?;
        // The Finished flight and the first PING go out as separate writes: without
        // TCP_NODELAY the second would wait for the server's delayed ACK (40 ms).
        sock.set_tcp_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        match sock.connect(&self.target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(format!("connect from {src}: {e}")),
        }
        let server_name =
            ServerName::try_from(name.to_owned()).map_err(|e| format!("name {name}: {e}"))?;
        let tls = ClientConnection::new(self.config.clone(), server_name)
            .map_err(|e| format!("rustls: {e}"))?;
        let mut stream = TcpStream::from_std(sock.into());
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        entry.insert(Conn {
            stream,
            tls,
            state: State::Handshaking,
            matched: 0,
            slot,
            sent: 0,
        });
        Ok(key)
    }

    /// Sends `close_notify` and closes.
    fn close(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            c.tls.send_close_notify();
            let _ = c.tls.write_tls(&mut c.stream);
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Closes without `close_notify` (after a failure).
    fn drop_conn(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Sends one more `PING` on an idle connection.
    fn ping(&mut self, key: usize) -> Result<(), String> {
        let c = &mut self.conns[key];
        c.tls
            .writer()
            .write_all(b"PING\r\n")
            .map_err(|e| e.to_string())?;
        c.state = State::Waiting;
        c.sent = mono_ns();
        flush(c)
    }

    /// Drives one connection after a readiness event (edge-triggered: drains until WouldBlock).
    fn event(&mut self, key: usize) -> Outcome {
        let Some(c) = self.conns.get_mut(key) else {
            return Outcome::Nothing;
        };
        if let Ok(Some(e)) = c.stream.take_error() {
            return Outcome::Failed(format!("socket: {e}"));
        }
        let mut replied = false;
        let mut eof = false;
        loop {
            match c.tls.read_tls(&mut c.stream) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {
                    if let Err(e) = c.tls.process_new_packets() {
                        let _ = c.tls.write_tls(&mut c.stream);
                        return Outcome::Failed(format!("tls: {e}"));
                    }
                    loop {
                        match c.tls.reader().read(&mut self.buf) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(k) => {
                                for &b in &self.buf[..k] {
                                    if b == PONG[c.matched] {
                                        c.matched += 1;
                                    } else {
                                        c.matched = usize::from(b == PONG[0]);
                                    }
                                    if c.matched == PONG.len() {
                                        c.matched = 0;
                                        replied |= c.state == State::Waiting;
                                    }
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Outcome::Failed(format!("tls read: {e}")),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(format!("read: {e}")),
            }
        }
        if c.state == State::Handshaking && !c.tls.is_handshaking() {
            if let Err(e) = c.tls.writer().write_all(b"PING\r\n") {
                return Outcome::Failed(e.to_string());
            }
            c.state = State::Waiting;
            c.sent = mono_ns();
        }
        if let Err(e) = flush(c) {
            return Outcome::Failed(e);
        }
        if replied {
            c.state = State::Idle;
            let resumed = c.tls.handshake_kind() == Some(HandshakeKind::Resumed);
            return Outcome::Replied { resumed };
        }
        if eof {
            return match c.state {
                State::Idle => Outcome::ClosedWhileIdle,
                _ => Outcome::Failed("closed by the server".into()),
            };
        }
        Outcome::Nothing
    }
}

/// Writes what rustls has queued, until the socket pushes back.
fn flush(c: &mut Conn) -> Result<(), String> {
    while c.tls.wants_write() {
        match c.tls.write_tls(&mut c.stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

fn clean(e: &Option<String>) -> String {
    e.as_deref()
        .unwrap_or("-")
        .replace(char::is_whitespace, "_")
}

/// The result of connecting a batch of sessions.
#[derive(Default)]
struct Batch {
    ok: usize,
    failed: usize,
    resumed: usize,
    first_error: Option<String>,
}

/// Connects `slots` (session i as `c<i>.bench.test`), at most `inflight` outstanding, until
/// every one has its `+PONG` or failed, or `deadline` passes. `stop` is set on a stdin `stop`.
#[allow(clippy::too_many_arguments)]
fn connect_all(
    eng: &mut Engine,
    slots: &[usize],
    src: Ipv4Addr,
    per_src: usize,
    inflight: usize,
    deadline: u64,
    commands: &mpsc::Receiver<String>,
    stop: &mut bool,
    deferred: &mut Vec<String>,
) -> Batch {
    let mut b = Batch::default();
    let mut events = Events::with_capacity(1024);
    let (mut next, mut pending) = (0usize, 0usize);
    let n = slots.len();
    while b.ok + b.failed < n && !*stop {
        while pending < inflight && next < n {
            let i = slots[next];
            match eng.open(i, &format!("c{i}.bench.test"), source_addr(src, i, per_src)) {
                Ok(_) => pending += 1,
                Err(e) => {
                    b.failed += 1;
                    b.first_error.get_or_insert(e);
                }
            }
            next += 1;
        }
        if b.ok + b.failed >= n {
            break;
        }
        if mono_ns() > deadline {
            let stuck = n - b.ok - b.failed;
            b.first_error
                .get_or_insert(format!("{stuck} sessions had no reply in time"));
            b.failed += stuck;
            break;
        }
        if let Err(e) = eng.poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != io::ErrorKind::Interrupted {
                fail(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            if ev.token() == STDIN {
                while let Ok(l) = commands.try_recv() {
                    if l == "stop" || l == "eof" {
                        *stop = true;
                    } else {
                        deferred.push(l);
                    }
                }
                continue;
            }
            let key = ev.token().0;
            match eng.event(key) {
                Outcome::Nothing => {}
                Outcome::Replied { resumed } => {
                    pending -= 1;
                    b.ok += 1;
                    b.resumed += usize::from(resumed);
                }
                Outcome::Failed(e) => {
                    pending -= 1;
                    b.failed += 1;
                    b.first_error.get_or_insert(e);
                    eng.drop_conn(key);
                }
                // A session that had its reply already: no longer pending.
                Outcome::ClosedWhileIdle => eng.drop_conn(key),
            }
        }
    }
    b
}

fn hold(args: &Args) {
    let target: SocketAddr = args.req("target");
    let n: usize = args.req("n");
    let src: Ipv4Addr = args.get("src", Ipv4Addr::new(127, 1, 0, 1));
    let per_src: usize = args.get("per-src", 1000);
    let inflight: usize = args.get("inflight", 128);
    let connect_secs: f64 = args.get("connect-secs", 120.0);
    let max_secs: f64 = args.get("max-secs", 900.0);
    let config = client_config(args, args.flag("resume"), n);
    let mut eng = Engine::new(config, target);
    let waker = Waker::new(eng.poll.registry(), STDIN).unwrap_or_else(|e| fail(&format!("{e}")));
    let commands = stdin_lines(waker);
    let give_up_at = mono_ns() + (max_secs * 1e9) as u64;
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
    let mut stop = false;
    let all: Vec<usize> = (0..n).collect();
    let t0 = mono_ns();
    let deadline = (t0 + (connect_secs * 1e9) as u64).min(give_up_at);
    let mut deferred = Vec::new();
    let b = connect_all(
        &mut eng,
        &all,
        src,
        per_src,
        inflight,
        deadline,
        &commands,
        &mut stop,
        &mut deferred,
    );
    say(&format!(
        "ready n={n} ok={} failed={} resumed={} t0={t0} t1={} error={}",
        b.ok,
        b.failed,
        b.resumed,
        mono_ns(),
        clean(&b.first_error)
    ));

    let mut events = Events::with_capacity(1024);
    let mut closed_by_peer = 0usize;
    while !stop {
        let now = mono_ns();
        if now >= give_up_at {
            break;
        }
        let wait = if deferred.is_empty() {
            Duration::from_nanos((give_up_at - now).min(1_000_000_000))
        } else {
            Duration::ZERO
        };
        if let Err(e) = eng.poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                fail(&format!("poll: {e}"));
            }
        }
        let mut reconnect = false;
        let mut lines = std::mem::take(&mut deferred);
        lines.extend(commands.try_iter());
        for l in lines {
            match l.as_str() {
                "stop" | "eof" => stop = true,
                "reconnect" => reconnect = true,
                "status" => say(&format!(
                    "status open={} closed_by_peer={closed_by_peer}",
                    eng.conns.len()
                )),
                _ => {}
            }
        }
        for ev in events.iter() {
            if ev.token() == STDIN {
                continue;
            }
            let key = ev.token().0;
            match eng.event(key) {
                Outcome::Nothing | Outcome::Replied { .. } => {}
                Outcome::Failed(_) | Outcome::ClosedWhileIdle => {
                    closed_by_peer += 1;
                    eng.drop_conn(key);
                }
            }
        }
        if reconnect && !stop {
            let t0 = mono_ns();
            let keys: Vec<usize> = eng.conns.iter().map(|(k, _)| k).collect();
            let mut slots: Vec<usize> = keys.iter().map(|&k| eng.conns[k].slot).collect();
            for k in keys {
                eng.close(k);
            }
            slots.sort_unstable();
            let deadline = (mono_ns() + (connect_secs * 1e9) as u64).min(give_up_at);
            let b = connect_all(
                &mut eng,
                &slots,
                src,
                per_src,
                inflight,
                deadline,
                &commands,
                &mut stop,
                &mut deferred,
            );
            say(&format!(
                "back n={} ok={} failed={} resumed={} t0={t0} t1={} error={}",
                slots.len(),
                b.ok,
                b.failed,
                b.resumed,
                mono_ns(),
                clean(&b.first_error)
            ));
        }
    }
    say(&format!(
        "exit open={} closed_by_peer={closed_by_peer}",
        eng.conns.len()
    ));
}

fn churn(args: &Args) {
    let target: SocketAddr = args.req("target");
    let n: usize = args.req("n");
    let secs: f64 = args.get("secs", 10.0);
    let inflight: usize = args.get("inflight", 8).max(1);
    let src: Ipv4Addr = args.get("src", Ipv4Addr::new(127, 1, 0, 1));
    let per_src: usize = args.get("per-src", 1000);
    let max_secs: f64 = args.get("max-secs", 300.0);
    let resume = args.flag("resume");
    let give_up_at = mono_ns() + (max_secs * 1e9) as u64;
    let mut eng = Engine::new(client_config(args, resume, inflight), target);
    let mut events = Events::with_capacity(1024);
    let mut opened = 0usize; // connections started, for the source address
    let mut first_error: Option<String> = None;
    let mut open = |eng: &mut Engine, slot: usize, first_error: &mut Option<String>| {
        let s = source_addr(src, opened, per_src);
        opened += 1;
        if let Err(e) = eng.open(slot, &format!("s{slot}.bench.test"), s) {
            first_error.get_or_insert(e);
            false
        } else {
            true
        }
    };

    if resume {
        // One full handshake per slot for its ticket, not counted.
        let mut warm = 0;
        for slot in 0..inflight {
            if !open(&mut eng, slot, &mut first_error) {
                fail(&format!("warm-up: {}", clean(&first_error)));
            }
        }
        while warm < inflight {
            if mono_ns() > give_up_at {
                fail("warm-up did not finish");
            }
            let _ = eng.poll.poll(&mut events, Some(Duration::from_millis(100)));
            for ev in events.iter() {
                let key = ev.token().0;
                match eng.event(key) {
                    Outcome::Nothing => {}
                    Outcome::Replied { .. } => {
                        warm += 1;
                        eng.close(key);
                    }
                    Outcome::Failed(e) => fail(&format!("warm-up: {e}")),
                    Outcome::ClosedWhileIdle => fail("warm-up: closed by the server"),
                }
            }
        }
        say("warmed");
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
        if line.trim() != "go" {
            return;
        }
    }

    let t0 = mono_ns();
    let end = (t0 + (secs * 1e9) as u64).min(give_up_at);
    let (mut ok, mut failed, mut resumed, mut started) = (0usize, 0usize, 0usize, 0usize);
    for slot in 0..inflight.min(n) {
        if open(&mut eng, slot, &mut first_error) {
            started += 1;
        } else {
            failed += 1;
        }
    }
    while !eng.conns.is_empty() {
        let now = mono_ns();
        if now > end + 5_000_000_000 {
            failed += eng.conns.len();
            first_error.get_or_insert("sessions stuck at the end".into());
            break;
        }
        let _ = eng.poll.poll(&mut events, Some(Duration::from_millis(100)));
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(slot) = eng.conns.get(key).map(|c| c.slot) else {
                continue;
            };
            match eng.event(key) {
                Outcome::Nothing => continue,
                Outcome::Replied { resumed: r } => {
                    ok += 1;
                    resumed += usize::from(r);
                    eng.close(key);
                }
                Outcome::Failed(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                    eng.drop_conn(key);
                }
                Outcome::ClosedWhileIdle => {
                    failed += 1;
                    first_error.get_or_insert("closed by the server".into());
                    eng.drop_conn(key);
                }
            }
            if started < n && mono_ns() < end {
                if open(&mut eng, slot, &mut first_error) {
                    started += 1;
                } else {
                    failed += 1;
                }
            }
        }
    }
    say(&format!(
        "churn n={started} ok={ok} failed={failed} resumed={resumed} t0={t0} t1={} error={}",
        mono_ns(),
        clean(&first_error)
    ));
}

fn rtt(args: &Args) {
    let target: SocketAddr = args.req("target");
    let secs: f64 = args.get("secs", 10.0);
    let pace = Duration::from_micros(args.get("pace-us", 100));
    let out: String = args.get("out", String::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if args.flag("until-eof") {
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let mut eng = Engine::new(client_config(args, false, 0), target);
    let key = eng
        .open(0, "live.bench.test", Ipv4Addr::LOCALHOST)
        .unwrap_or_else(|e| fail(&e));
    let mut events = Events::with_capacity(16);
    let end = mono_ns() + (secs * 1e9) as u64;
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut first = true;
    let mut next_at = 0u64;
    while mono_ns() < end && !done.load(std::sync::atomic::Ordering::Relaxed) {
        let now = mono_ns();
        let idle = eng.conns.get(key).is_some_and(|c| c.state == State::Idle);
        if idle && now >= next_at {
            eng.ping(key).unwrap_or_else(|e| fail(&e));
        }
        let timeout = if idle {
            Duration::from_nanos(next_at.saturating_sub(now).max(1000))
        } else {
            Duration::from_millis(100)
        };
        let _ = eng.poll.poll(&mut events, Some(timeout));
        for _ in events.iter() {
            match eng.event(key) {
                Outcome::Nothing => {}
                Outcome::Replied { .. } => {
                    let t = mono_ns();
                    let sent = eng.conns[key].sent;
                    if !first {
                        samples.push((sent, t - sent));
                    }
                    first = false; // the first reply includes the handshake
                    next_at = t + pace.as_nanos() as u64;
                }
                Outcome::Failed(e) => fail(&e),
                Outcome::ClosedWhileIdle => fail("closed by the server"),
            }
        }
    }
    if !out.is_empty() {
        let mut f = io::BufWriter::new(
            std::fs::File::create(&out).unwrap_or_else(|e| fail(&format!("{out}: {e}"))),
        );
        for (t, r) in &samples {
            let _ = writeln!(f, "{t} {r}");
        }
    }
    let mut v: Vec<u64> = samples.iter().map(|s| s.1).collect();
    v.sort_unstable();
    let us = |q: f64| quantile(&v, q) as f64 / 1e3;
    say(&format!(
        "rtt n={} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
        v.len(),
        us(0.5),
        us(0.99),
        us(0.999),
        v.last().copied().unwrap_or(0) as f64 / 1e3
    ));
}

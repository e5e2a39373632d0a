//! Hostile and broken input: garbage, lying headers, slowloris, connection floods, clients that
//! never read, descriptor exhaustion and signals under load. In every case a control client
//! keeps getting `PONG` within 50 ms, the outcome is logged and counted, and the daemon's
//! descriptors and memory come back to where they were.
//!
//! The 100,000-connection churn cases are in `tests/churn.rs`.

mod util;

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use util::load::{
    connect_from, cpu_time, read_line, read_to_close, release, reset, source_ip, Control,
    Footprint, Junk,
};
use util::{fields, wait_until, Daemon};

/// Cases that keep a CPU busy (floods of bytes or connections) run one at a time, alone;
/// the mostly sleeping ones (slowloris, descriptor exhaustion) share. On two cores, a
/// debug-build daemon next to another case's flood would measure that case, not its own.
static CPU: RwLock<()> = RwLock::new(());

fn heavy() -> RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

fn light() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

/// Starts the control client and records the footprint to come back to.
fn guard(d: &Daemon) -> (Control, Footprint) {
    let control = Control::start(d.addr, None);
    (control, Footprint::settled(d.pid()))
}

/// Sends `bytes` (ignoring a reset halfway) and returns the reply bytes up to the close.
fn send_and_drain(d: &Daemon, bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect(d.addr).unwrap();
    let local = s.local_addr().unwrap();
    for chunk in bytes.chunks(16 * 1024) {
        if s.write_all(chunk).is_err() {
            break; // the daemon closed on us: expected for floods
        }
    }
    let (got, _) = read_to_close(&mut s, Duration::from_secs(5));
    (local, got)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn junk_bytes_end_in_protocol_errors_and_invalid_utf8_names_are_refused() {
    let _cpu = heavy();
    let d = Daemon::start("[session]\nmax_request_bytes = 4096");
    let (control, base) = guard(&d);

    // Random bytes: whatever they parse as, the session ends as a protocol error.
    let junk = Junk::new(7).bytes(256 * 1024);
    let (peer, reply) = send_and_drain(&d, &junk);
    let reap = d.wait_reap_of_peer(peer, Duration::from_secs(5));
    assert_eq!(reap["reason"], "protocol-error", "{}", text(&reply));

    // Binary junk behind a multibulk marker: refused at the first byte.
    let (peer, reply) = send_and_drain(&d, b"*\xff\xfe\x00\x01junk\r\n");
    assert_eq!(
        text(&reply),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert_eq!(
        d.wait_reap_of_peer(peer, Duration::from_secs(5))["reason"],
        "protocol-error"
    );

    // A NUL flood is one endless inline word: refused once it passes max_request_bytes.
    let (peer, _) = send_and_drain(&d, &vec![0u8; 1 << 20]);
    assert_eq!(
        d.wait_reap_of_peer(peer, Duration::from_secs(5))["reason"],
        "protocol-error"
    );

    // Invalid UTF-8: names are refused, echoes are binary-safe, the session stays.
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CLIENT SETNAME \xff\xfe\r\n").unwrap();
    let line = read_line(&mut s).unwrap();
    assert!(
        line.starts_with("-ERR Client names cannot contain"),
        "{line}"
    );
    s.write_all(b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\na\xc3(\r\n")
        .unwrap();
    assert!(read_line(&mut s).unwrap().starts_with("-ERR Client names"));
    s.write_all(b"CLIENT SETINFO LIB-NAME \xc0\xaf\r\n")
        .unwrap();
    assert!(read_line(&mut s).unwrap().starts_with("-ERR lib-name"));
    s.write_all(b"\xe2\x82 arg\r\n").unwrap();
    let line = read_line(&mut s).unwrap();
    assert_eq!(
        line,
        "-ERR unknown command '\\xe2\\x82', with args beginning with: 'arg'"
    );
    s.write_all(b"*2\r\n$4\r\nECHO\r\n$2\r\n\xff\x00\r\n")
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "$2");
    s.write_all(b"PING\r\n").unwrap();
    // The echoed bytes, then PONG: the session survived all of it.
    let mut rest = Vec::new();
    while !rest.ends_with(b"+PONG\r\n") {
        let mut b = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut b).unwrap();
        assert!(n > 0, "closed");
        rest.extend_from_slice(&b[..n]);
    }
    assert_eq!(rest, b"\xff\x00\r\n+PONG\r\n");
    let id = {
        s.write_all(b"CLIENT ID\r\n").unwrap();
        read_line(&mut s).unwrap()
    };
    drop(s);
    let id: i64 = id.trim_start_matches(':').parse().unwrap();
    assert_eq!(d.wait_reap(id, Duration::from_secs(5))["reason"], "closed");

    let st = d.stats();
    assert_eq!(st["reap.protocol-error"], "3", "{st:?}");
    release(d.pid(), control, base, "junk");
}

#[test]
fn oversized_and_lying_headers_are_refused_without_allocating() {
    let _cpu = heavy();
    let d = Daemon::start("");
    let (control, base) = guard(&d);
    let limit_err = "-ERR Protocol error: request exceeds max_request_bytes (65536)\r\n";
    let cases: &[(&str, &[u8], &str)] = &[
        ("huge count", b"*2147483647\r\n", limit_err),
        ("huge length", b"*1\r\n$9999999999\r\n", limit_err),
        (
            "i64 overflow",
            b"*1\r\n$99999999999999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "negative length",
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "non-numeric length",
            b"*1\r\n$abc\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "non-numeric count",
            b"*1x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            "bulk longer than declared",
            b"*1\r\n$2\r\nPING\r\n",
            "-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
        (
            "bulk shorter than declared",
            b"*2\r\n$4\r\nECHO\r\n$10\r\nabc\r\n*1\r\n$4\r\nPING\r\n",
            "-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
        (
            "not a bulk",
            b"*1\r\n:5\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
    ];
    for (case, bytes, want) in cases {
        let rss0 = util::load::rss_kb(d.pid());
        let (peer, reply) = send_and_drain(&d, bytes);
        assert_eq!(text(&reply), *want, "{case}");
        let reap = d.wait_reap_of_peer(peer, Duration::from_secs(5));
        assert_eq!(reap["reason"], "protocol-error", "{case}");
        let grew = util::load::rss_kb(d.pid()).saturating_sub(rss0);
        assert!(grew < 1024, "{case}: RSS grew by {grew} KiB");
    }

    // A negative count is an empty request, as in Redis: the session goes on.
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"*-5\r\nPING\r\n").unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "+PONG");
    drop(s);

    // A line without a newline, growing past max_request_bytes in small pieces.
    let mut s = TcpStream::connect(d.addr).unwrap();
    let peer = s.local_addr().unwrap();
    let mut sent = 0;
    let piece = [b'A'; 1000];
    while sent < 200_000 && s.write_all(&piece).is_ok() {
        sent += piece.len();
    }
    let reap = d.wait_reap_of_peer(peer, Duration::from_secs(5));
    assert_eq!(reap["reason"], "protocol-error");
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(5));
    // The error line arrives unless the close turned into a reset (unread bytes): either way
    // the daemon did not buffer past the limit.
    assert!(
        reply.is_empty() || text(&reply) == limit_err,
        "{}",
        text(&reply)
    );
    assert!(
        reap["lifetime_ms"].parse::<u64>().unwrap() < 2000,
        "{reap:?}"
    );

    let st = d.stats();
    assert_eq!(st["reap.protocol-error"], (cases.len() + 1).to_string());
    release(d.pid(), control, base, "headers");
}

/// Sends one byte a second on each of `n` connections for `period`, never finishing a request.
/// Returns the client sockets (still open) and their local addresses.
fn slowloris(d: &Daemon, n: usize, period: Duration) -> Vec<TcpStream> {
    let mut socks: Vec<TcpStream> = (0..n)
        .map(|i| connect_from(source_ip(i), d.addr).expect("connect"))
        .collect();
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed() < period {
        for s in &mut socks {
            // A peer that was reaped resets: fine, it is what the test waits for.
            let _ = s.write(b"x");
        }
        tick += 1;
        let next = start + Duration::from_secs(u64::from(tick));
        // The attack itself: one byte a second.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    socks
}

#[test]
fn slowloris_clients_are_reaped_as_idle_and_never_stall_others() {
    let _cpu = light();
    let d = Daemon::start("[session]\nidle_timeout = \"2s\"");
    let (control, base) = guard(&d);
    let socks = slowloris(&d, 200, Duration::from_millis(4500));
    let reaps = d.log.wait_for_n(200, Duration::from_secs(3), |l| {
        l.contains(" reap ") && l.contains(" reason=idle-timeout ")
    });
    assert_eq!(reaps.len(), 200, "{}", d.log.text());
    let (mut lo, mut hi, mut silent_max) = (u64::MAX, 0, 0);
    for r in &reaps {
        let f = fields(r);
        // They were never silent for long: the unfinished request is what timed out.
        let silent: u64 = f["silent_ms"].parse().unwrap();
        assert!(silent < 1500, "{r}");
        let life: u64 = f["lifetime_ms"].parse().unwrap();
        assert!((2000..3500).contains(&life), "{r}");
        (lo, hi, silent_max) = (lo.min(life), hi.max(life), silent_max.max(silent));
    }
    eprintln!(
        "slowloris: 200 reaped as idle-timeout after {lo}..{hi} ms, silent at most {silent_max} ms"
    );
    drop(socks);
    let st = d.stats();
    assert_eq!(st["reap.idle-timeout"], "200");
    release(d.pid(), control, base, "slowloris");
}

#[test]
fn slowloris_without_idle_timeout_does_not_stall_others() {
    let _cpu = light();
    let d = Daemon::start("");
    let (control, base) = guard(&d);
    let socks = slowloris(&d, 200, Duration::from_millis(3500));
    assert_eq!(d.stats()["live"], "201");
    for s in socks {
        reset(s);
    }
    let reaps = d.log.wait_for_n(200, Duration::from_secs(5), |l| {
        l.contains(" reap ") && l.contains(" reason=reset ")
    });
    assert_eq!(reaps.len(), 200);
    release(d.pid(), control, base, "slowloris without idle_timeout");
}

/// Opens `n` connections from `src` and reads each one's first reply (or close).
fn flood(d: &Daemon, src: Ipv4Addr, n: usize) -> Vec<(TcpStream, Option<String>)> {
    let mut socks: Vec<TcpStream> = (0..n)
        .map(|_| connect_from(src, d.addr).expect("connect"))
        .collect();
    for s in &mut socks {
        s.write_all(b"PING\r\n").ok();
    }
    socks
        .into_iter()
        .map(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let line = read_line(&mut s).ok();
            (s, line)
        })
        .collect()
}

/// `n` sessions from `n` source addresses, each answered one PING.
fn hold(d: &Daemon, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect_from(source_ip(i), d.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"PING\r\n").unwrap();
            assert_eq!(read_line(&mut s).unwrap(), "+PONG");
            s
        })
        .collect()
}

#[test]
fn connection_floods_are_rejected_and_counted() {
    let _cpu = heavy();
    let d = Daemon::start("[server]\nmax_connections = 50\nmax_connections_per_ip = 10");
    let (control, base) = guard(&d);
    // 49 sessions from 49 addresses fill the table (with the control client: 50).
    let held = hold(&d, 49);
    // 3 × max_connections more: every one is told and closed.
    let excess = flood(&d, Ipv4Addr::new(127, 0, 2, 1), 150);
    for (mut s, line) in excess {
        assert_eq!(line.as_deref(), Some("-ERR max connections reached"));
        let (rest, _) = read_to_close(&mut s, Duration::from_secs(5));
        assert!(rest.is_empty());
    }
    let st = d.stats();
    assert_eq!(
        (st["live"].as_str(), st["rejected.max-connections"].as_str()),
        ("50", "150")
    );
    let warns = d
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("refusing connections: server.max_connections reached"))
        .count();
    assert!(
        (1..=3).contains(&warns),
        "rate-limited warning, got {warns}"
    );
    // The sessions already connected are untouched.
    for mut s in held {
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "+PONG");
    }
    // Those 49 are closed now: wait until the daemon has reaped them (the control client
    // alone is live) before the next flood counts what it takes.
    wait_until(
        Duration::from_secs(5),
        "the 49 held sessions reaped",
        || {
            let st = d.stats();
            if st["live"] == "1" {
                Ok(())
            } else {
                Err(format!("live={}", st["live"]))
            }
        },
    );

    // Per address: 10 from 127.0.3.1 are taken, 30 more are refused; others still connect.
    let per_ip = flood(&d, Ipv4Addr::new(127, 0, 3, 1), 40);
    let ok = per_ip
        .iter()
        .filter(|(_, l)| l.as_deref() == Some("+PONG"))
        .count();
    let refused = per_ip
        .iter()
        .filter(|(_, l)| l.as_deref() == Some("-ERR max connections per address reached"))
        .count();
    assert_eq!((ok, refused), (10, 30));
    let mut other = connect_from(Ipv4Addr::new(127, 0, 3, 2), d.addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_line(&mut other).unwrap(), "+PONG");
    let st = d.stats();
    assert_eq!(st["rejected.per-ip"], "30");
    assert_eq!(st["accepted"], "61"); // control + 49 + 10 + 1
    drop(per_ip);
    drop(other);
    release(d.pid(), control, base, "flood");
}

#[test]
fn clients_that_never_read_are_reaped_as_slow_consumers() {
    let _cpu = heavy();
    let d = Daemon::start("[session]\nmax_output_bytes = 65536");
    let (control, base) = guard(&d);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive window, so the kernel buffers fill and output queues in the daemon.
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&d.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    let peer = s.local_addr().unwrap();
    let payload = "x".repeat(1000);
    let request = format!("ECHO {payload}\r\n").repeat(100);
    let started = Instant::now();
    let mut sent = 0;
    // Pipelines up to 20,000 commands (about 20 MB of replies) and never reads.
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    while sent < 20_000 && s.write_all(request.as_bytes()).is_ok() {
        sent += 100;
    }
    let reap = d.wait_reap_of_peer(peer, Duration::from_secs(10));
    assert_eq!(reap["reason"], "slow-consumer", "{reap:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let _ = s.shutdown(Shutdown::Both);
    drop(s);
    assert_eq!(d.stats()["reap.slow-consumer"], "1");
    release(d.pid(), control, base, "slow consumer");
}

/// Lowers the running daemon's descriptor limit (soft and hard) with util-linux `prlimit`.
fn set_nofile(pid: i32, n: usize) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:{n}"))
        .output()
        .expect("run prlimit (util-linux)");
    assert!(out.status.success(), "prlimit: {out:?}");
}

#[test]
fn descriptor_exhaustion_is_logged_rarely_costs_little_and_recovers() {
    let _cpu = light();
    let d = Daemon::start("");
    let (control, base) = guard(&d);
    // Room for 20 more sessions. Set after start: the daemon raises its soft limit to the
    // hard one when it starts, so this is the way to give it a low limit and keep it there.
    let limit = base.fds + 20;
    set_nofile(d.pid(), limit);
    let mut sessions: Vec<TcpStream> = Vec::new();
    let mut refused = 0;
    let cpu0 = cpu_time(d.pid());
    let t0 = Instant::now();
    // Keep knocking for 3 s: 60 connections at once, then 100 a second.
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let burst = if i == 0 { 60 } else { 10 };
        for _ in 0..burst {
            let mut s = connect_from(source_ip(i), d.addr).unwrap();
            i += 1;
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"PING\r\n").unwrap();
            match read_line(&mut s) {
                Ok(l) if l == "+PONG" => sessions.push(s),
                Ok(l) => {
                    assert_eq!(l, "-ERR server out of file descriptors, try again later");
                    refused += 1;
                }
                Err(e) => panic!("connection {i} neither served nor told: {e}"),
            }
        }
        // The attack itself: ten more connections every 100 ms.
        std::thread::sleep(Duration::from_millis(100));
    }
    let window = t0.elapsed();
    let cpu = cpu_time(d.pid()) - cpu0;
    // The listener, reserve and control session are already counted in the baseline.
    assert!(
        (19..=21).contains(&sessions.len()),
        "{} sessions",
        sessions.len()
    );
    assert_eq!(sessions.len() + refused, i);
    let warns: Vec<String> = d
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains("out of file descriptors (EMFILE)"))
        .collect();
    assert!(
        !warns.is_empty() && warns.len() as u128 <= window.as_millis() / 1000 + 1,
        "{warns:?}"
    );
    assert!(
        cpu < window / 10,
        "daemon used {cpu:?} CPU in {window:?} while out of descriptors"
    );
    let st = d.stats();
    assert_eq!(st["rejected.descriptors"], refused.to_string());
    eprintln!(
        "descriptor exhaustion: {} sessions, {refused} refused, {} warnings, cpu {cpu:?} in {window:?}",
        sessions.len(),
        warns.len()
    );

    // Free five: new clients are served at once.
    for s in sessions.drain(..5) {
        reset(s);
    }
    d.log
        .wait_for_n(5, Duration::from_secs(5), |l| l.contains(" reason=reset "));
    for k in 0..5 {
        let mut s = connect_from(source_ip(1000 + k), d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "+PONG", "after recovery");
        sessions.push(s);
    }
    for s in sessions {
        reset(s);
    }
    release(d.pid(), control, base, "descriptors");
}

#[test]
fn sighup_every_100ms_under_a_flood_then_sigterm_exits_cleanly_with_stats_that_add_up() {
    let _cpu = heavy();
    let variant = |k: usize| {
        // Alternate settings that apply to live sessions, so each reload has work to do.
        let (idle, timeout) = if k.is_multiple_of(2) {
            (60, "0s")
        } else {
            (30, "1h")
        };
        util::complete_config(&format!(
            "[server]\nmax_connections = 30\n[keepalive]\nidle = {idle}\n\
             [session]\nidle_timeout = \"{timeout}\"\n[stats]\ninterval = \"1s\"\n"
        ))
    };
    let d = Daemon::start(&variant(0));
    let (control, _base) = guard(&d);
    // 28 held sessions + control: two concurrent flood clients sometimes find the table full.
    let held = hold(&d, 28);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = d.addr;
    let flooders: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                util::load::lower_priority();
                // (connected, answered PONG, told max connections)
                let mut counts = (0u64, 0u64, 0u64);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let Ok(mut s) = connect_from(source_ip(1000 + t * 100_000 + i % 50), addr)
                    else {
                        break; // the daemon is gone
                    };
                    counts.0 += 1;
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let reply = s.write_all(b"PING\r\n").and_then(|()| read_line(&mut s));
                    match reply.as_deref() {
                        Ok("+PONG") => counts.1 += 1,
                        Ok("-ERR max connections reached") => counts.2 += 1,
                        Ok(other) => panic!("unexpected reply {other:?}"),
                        Err(_) => {} // closed by the shutdown
                    }
                }
                counts
            })
        })
        .collect();

    let t0 = Instant::now();
    let mut hups = 0;
    for k in 1..=20 {
        std::fs::write(&d.config_path, variant(k)).unwrap();
        d.signal(libc::SIGHUP);
        hups += 1;
        let next = t0 + Duration::from_millis(100 * k as u64);
        // The test itself: a reload every 100 ms.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let report = control.stop();
    eprintln!(
        "signals under load: control {} pings, max {:?}",
        report.pings, report.max
    );
    let mut d = d;
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).expect("vigild exits");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut connected, mut answered, mut refused) = (0, 0, 0);
    for f in flooders {
        let c = f.join().expect("flood thread");
        connected += c.0;
        answered += c.1;
        refused += c.2;
    }
    drop(held);
    report.assert_ok("signals under load");
    assert_eq!(status.code(), Some(0), "{}", d.log.text());

    let log = d.log.lines();
    let reloads = log.iter().filter(|l| l.contains(" reloaded ")).count();
    assert!(
        reloads >= hups / 2 && reloads <= hups,
        "{reloads} reloads for {hups} SIGHUPs"
    );
    assert!(!log.iter().any(|l| l.contains("reload failed")));
    let last = log
        .iter()
        .find(|l| l.contains("; final stats "))
        .expect("final stats line");
    let st = fields(last);
    let num = |k: &str| st.get(k).map_or(0, |v| v.parse::<u64>().unwrap());
    // All sessions were reaped at shutdown, each one counted once.
    assert_eq!(num("live"), 0, "{last}");
    assert_eq!(num("accepted"), num("reaped"), "{last}");
    let by_reason: u64 = st
        .iter()
        .filter(|(k, _)| k.starts_with("reap."))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(by_reason, num("reaped"), "{last}");
    // The 28 held sessions were open at SIGTERM (the control client had just left): reaped
    // as shutdown, with any flood session caught in the middle.
    assert!(num("reap.shutdown") >= 28, "{last}");
    // Every connection the daemon took in was admitted or rejected; clients saw at least the
    // answered and refused ones, and at most every connect (some waited in the listen queue
    // at SIGTERM and were never accepted).
    let seen = num("accepted") + num("rejected");
    let clients = connected + 29;
    assert!(
        seen >= answered + refused + 29 && seen <= clients,
        "{last}\nclients: connected {connected}, answered {answered}, refused {refused}"
    );
    assert_eq!(num("rejected"), num("rejected.max-connections"), "{last}");
    assert!(num("rejected") >= refused, "{last}");
    eprintln!(
        "signals under load: {hups} SIGHUPs, {reloads} reloads, {connected} flood connects \
         ({answered} answered, {refused} refused); final: {}",
        last.split("final ").nth(1).unwrap_or("")
    );
}

#[test]
fn started_with_few_descriptors_it_warns_serves_and_refuses_the_rest() {
    let _cpu = light();
    // The hard limit is what counts: vigild raises its soft limit to the hard one at start.
    let d = Daemon::start_with("", |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit runs between fork and exec; it is async-signal-safe and
        // touches nothing but the child's own limits.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 24,
                    rlim_max: 24,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let line = d
        .log
        .wait_for(Duration::ZERO, |l| {
            l.contains("file descriptors: soft limit 24")
        })
        .expect("the limit is logged at start");
    assert!(line.contains("hard 24"), "{line}");
    assert!(
        d.log
            .wait_for(Duration::ZERO, |l| l.contains(
                "server.max_connections = 10000 exceeds what the descriptor limit allows"
            ))
            .is_some(),
        "{}",
        d.log.text()
    );
    let (control, base) = guard(&d);
    // Descriptors numbered below the limit are what it bounds (a test process may pass on
    // inherited ones numbered above it).
    let held = util::load::fds_below(d.pid(), 24);
    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        let mut s = connect_from(source_ip(i), d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        match read_line(&mut s).unwrap().as_str() {
            "+PONG" => served.push(s),
            "-ERR server out of file descriptors, try again later" => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // 24 descriptors minus what the daemon holds (stdio, poller, signal pipe, listener,
    // reserve and the control session) is what sessions can have.
    assert_eq!(
        served.len(),
        24 - held,
        "baseline {base:?}, {held} below 24"
    );
    assert_eq!(refused, 30 - served.len());
    assert_eq!(d.stats()["rejected.descriptors"], refused.to_string());
    for s in served {
        reset(s);
    }
    release(d.pid(), control, base, "started with 24 descriptors");
}

//! Output amplification and fan-out (issue 11, items 1 and 7): a client that asks for far more
//! output than it reads, and an admin connection that multiplies what it subscribes to.
//!
//! The bounds under test: a session's requests stop running once its pending output reaches
//! `session.max_output_bytes` (they wait, and resume when the output drains; a client that
//! keeps sending while it does not read is reaped `slow-consumer`), the loop's shared buffers
//! shrink back after a spike, and an admin connection's subscriptions are bounded in bytes.
//! Each attack runs beside a control client whose `PING` must stay under 50 ms; afterwards the
//! daemon's descriptors are back at their baseline and its RSS within 2 MiB; where memory is the
//! point, the peak (`VmHWM`) is measured too.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use util::load::{read_line, Control, Footprint};
use util::{fields, Daemon};

/// RSS a case may leave behind (allocator caches), in KiB.
const RSS_SLACK_KB: u64 = 2048;
/// Log lines an attack may cause (reap lines, a few debug lines per connection).
const LOG_LINES_BOUND: usize = 200;
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// One case at a time: each floods a debug-build daemon, and on two cores two of them would
/// measure each other.
static CPU: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `VmHWM`/`VmRSS`-style field of /proc/PID/status, in KiB.
fn status_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits for `cond`, failing with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The attack's surroundings: control client, baseline footprint, peak and log length.
struct Guard {
    control: Control,
    base: Footprint,
    hwm_kb: u64,
    log_len: usize,
}

impl Guard {
    fn start(d: &Daemon) -> Guard {
        let control = Control::start(d.addr, None);
        // Let the daemon settle (first allocations of its buffers) before the baseline.
        std::thread::sleep(Duration::from_millis(50));
        Guard {
            control,
            base: Footprint::of(d.pid()),
            hwm_kb: status_kb(d.pid(), "VmHWM"),
            log_len: d.log.len(),
        }
    }

    /// How much the peak grew since the baseline, in KiB.
    fn hwm_growth_kb(&self, d: &Daemon) -> u64 {
        status_kb(d.pid(), "VmHWM").saturating_sub(self.hwm_kb)
    }

    /// Checks the footprint is back, the log bounded and the control client fine.
    fn release(self, d: &Daemon, case: &str) {
        let after = self.base.assert_back(d.pid(), 0, RSS_SLACK_KB, case);
        let lines = d.log.len() - self.log_len;
        let report = self.control.stop();
        eprintln!(
            "{case}: control {} pings, max {:?}; fds {} -> {}; rss {} -> {} KiB; {lines} log lines",
            report.pings, report.max, self.base.fds, after.fds, self.base.rss_kb, after.rss_kb
        );
        assert!(
            lines <= LOG_LINES_BOUND,
            "{case}: {lines} log lines (bound {LOG_LINES_BOUND})"
        );
        report.assert_ok(case);
    }
}

/// A client socket with a small receive buffer, so that the kernel holds little of what the
/// daemon sends and the rest waits in the daemon.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The `CLIENT LIST` line of the session whose peer is `peer`, as fields.
fn client_fields(admin: &mut redis::Connection, peer: SocketAddr) -> Option<Vec<(String, String)>> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
    let needle = format!("addr={peer} ");
    let line = list.lines().find(|l| l.contains(&needle))?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn field_num(fields: &[(String, String)], key: &str) -> u64 {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until the session from `peer` is paused: replies pending (`obl`) up to the limit,
/// `max_output` bytes, and requests waiting unexecuted (`qbuf`). Returns both.
fn wait_paused(admin: &mut redis::Connection, peer: SocketAddr, max_output: u64) -> (u64, u64) {
    let mut seen = (0, 0);
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.0 < max_output || seen.1 == 0 {
        assert!(
            Instant::now() < deadline,
            "the session from {peer} did not pause: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        let Some(f) = client_fields(admin, peer) else {
            continue;
        };
        seen = (field_num(&f, "obl"), field_num(&f, "qbuf"));
        last = Some(f);
    }
    seen
}

/// Reads one RESP reply's bytes (simple line, error or bulk string).
fn read_reply(r: &mut impl BufRead) -> Vec<u8> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).expect("reply line");
    assert!(
        line.ends_with(b"\r\n"),
        "{:?}",
        String::from_utf8_lossy(&line)
    );
    line.truncate(line.len() - 2);
    if line.first() != Some(&b'$') {
        return line;
    }
    let len: usize = std::str::from_utf8(&line[1..])
        .ok()
        .and_then(|l| l.parse().ok())
        .expect("bulk length");
    let mut body = vec![0; len + 2];
    r.read_exact(&mut body).expect("bulk body");
    body.truncate(len);
    body
}

/// The attack: long name, lib-name and lib-ver (if the daemon keeps them), then one
/// write of `CLIENT INFO` × 1000, never read. Before: about 340 MiB of peak growth, `PING` held
/// for 213-317 ms, 170-190 MiB kept after the attacker left.
#[test]
fn client_info_amplification_is_bounded_by_max_output_bytes() {
    let _cpu = alone();
    let d = Daemon::start(ADMIN);
    let mut admin = d.admin();
    let g = Guard::start(&d);
    let mut s = small_window_client(d.addr);
    let peer = s.local_addr().unwrap();
    let long = "n".repeat(60_000);
    // Whatever the daemon answers (a bound on names may refuse them), the session stays.
    for cmd in [
        "CLIENT SETNAME",
        "CLIENT SETINFO LIB-NAME",
        "CLIENT SETINFO LIB-VER",
    ] {
        s.write_all(format!("{cmd} {long}\r\n").as_bytes()).unwrap();
        let reply = read_line(&mut s).unwrap();
        assert!(reply == "+OK" || reply.starts_with("-ERR"), "{reply}");
    }
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "+PONG");
    let attack = "CLIENT INFO\r\n".repeat(1000);
    s.write_all(attack.as_bytes()).unwrap();
    let (obl, qbuf) = wait_paused(&mut admin, peer, 1 << 20);
    let hwm = g.hwm_growth_kb(&d);
    eprintln!("CLIENT INFO x1000: paused with obl={obl} qbuf={qbuf}; VmHWM +{hwm} KiB");
    // Pending output stops at the limit plus one reply (at most three 64 KiB fields).
    assert!(obl <= (1 << 20) + 256 * 1024, "obl={obl}");
    // The bound: twice max_output_bytes (the batch, and its copy in the session) + 4 MiB.
    assert!(hwm < 6 * 1024, "VmHWM grew by {hwm} KiB");
    drop(s);
    d.wait_reap_of_peer(peer, Duration::from_secs(5));
    g.release(&d, "CLIENT INFO amplification");
}

/// The same without long names: `CLIENT INFO` × 20,000 in one write (260 KB, 8 MB of
/// replies: more than the 2-4 MiB the kernel's buffers take on loopback), never read. The
/// session pauses and holds at most `max_output_bytes` of replies.
#[test]
fn pipelined_client_info_without_long_names_pauses() {
    let _cpu = alone();
    let d = Daemon::start(ADMIN);
    let mut admin = d.admin();
    let g = Guard::start(&d);
    let mut s = small_window_client(d.addr);
    let peer = s.local_addr().unwrap();
    s.write_all("CLIENT INFO\r\n".repeat(20_000).as_bytes())
        .unwrap();
    let (obl, qbuf) = wait_paused(&mut admin, peer, 1 << 20);
    let hwm = g.hwm_growth_kb(&d);
    eprintln!("CLIENT INFO x20000: paused with obl={obl} qbuf={qbuf}; VmHWM +{hwm} KiB");
    assert!(obl <= (1 << 20) + 4096, "obl={obl}");
    assert!(hwm < 6 * 1024, "VmHWM grew by {hwm} KiB");
    // Paused, not reaped: it sent no more, and its output may still drain.
    assert!(client_fields(&mut admin, peer).is_some());
    drop(s);
    let reap = d.wait_reap_of_peer(peer, Duration::from_secs(5));
    assert_ne!(reap["reason"], "slow-consumer", "{reap:?}");
    g.release(&d, "CLIENT INFO x20000");
}

/// `ECHO` of 60 KB × 1000 (60 MB of requests) written by a client that never reads: it keeps
/// sending while paused, so it is reaped `slow-consumer`, and the daemon's peak grows by about
/// `max_output_bytes` plus the held input, not by the 60 MB of replies.
#[test]
fn pipelined_large_echoes_never_read_are_slow_consumers() {
    let _cpu = alone();
    let d = Daemon::start("");
    let one = format!("ECHO {}\r\n", "e".repeat(60_000));
    let flood = |s: &mut TcpStream| {
        let mut sent = 0usize;
        for _ in 0..1000 {
            if s.write_all(one.as_bytes()).is_err() {
                break; // reset by the daemon: the expected end
            }
            sent += one.len();
        }
        sent
    };
    // Once before the baseline: the first slow consumer pages in code the debug binary has
    // not run yet (about 1.5 MiB of its text counts in VmRSS), which is not memory kept. The
    // peak is measured over both floods.
    let hwm_before = status_kb(d.pid(), "VmHWM");
    let mut warm = small_window_client(d.addr);
    let warm_peer = warm.local_addr().unwrap();
    flood(&mut warm);
    d.wait_reap_of_peer(warm_peer, Duration::from_secs(10));
    drop(warm);
    let g = Guard::start(&d);
    let mut s = small_window_client(d.addr);
    let peer = s.local_addr().unwrap();
    let started = Instant::now();
    let sent = flood(&mut s);
    let reap = d.wait_reap_of_peer(peer, Duration::from_secs(10));
    assert_eq!(reap["reason"], "slow-consumer", "{reap:?}");
    let hwm = status_kb(d.pid(), "VmHWM").saturating_sub(hwm_before);
    eprintln!(
        "ECHO 60KB x1000: reaped slow-consumer after {} KiB sent, {:?}; VmHWM +{hwm} KiB",
        sent >> 10,
        started.elapsed()
    );
    assert!(sent < 30_000_000, "the daemon kept reading: {sent} bytes");
    assert!(hwm < 6 * 1024, "VmHWM grew by {hwm} KiB");
    let _ = s.shutdown(Shutdown::Both);
    drop(s);
    g.release(&d, "ECHO 60KB x1000");
}

/// The payload of `ECHO` number `i`: its number, then a letter that depends on it.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:06}-").into_bytes();
    p.resize(100, b'a' + (i % 26) as u8);
    p
}

/// `CLIENT INFO`s after each `ECHO` in the pipeline.
const INFOS_PER_ECHO: usize = 9;

/// A paused pipeline resumes when the client reads: every reply arrives once, in order. The
/// pipeline (2,000 × `ECHO <numbered payload>` + 9 × `CLIENT INFO`: 450 KB of requests, 8 MB
/// of replies) is checked reply by reply: each `ECHO` returns its own payload, and each
/// `CLIENT INFO` a `tot-cmds` that counts every command before it.
#[test]
fn a_paused_pipeline_resumes_in_order_when_the_client_reads() {
    let _cpu = alone();
    // Room for the whole pipeline as held input (one request of max_request_bytes + 256 KiB).
    let d = Daemon::start(&format!(
        "[session]\nmax_output_bytes = 65536\nmax_request_bytes = 1048576\n{ADMIN}"
    ));
    let mut admin = d.admin();
    let g = Guard::start(&d);
    let mut s = small_window_client(d.addr);
    let peer = s.local_addr().unwrap();
    const N: usize = 2000;
    let mut pipeline = Vec::new();
    for i in 0..N {
        pipeline.extend_from_slice(b"ECHO ");
        pipeline.extend_from_slice(&payload(i));
        pipeline.extend_from_slice(b"\r\n");
        for _ in 0..INFOS_PER_ECHO {
            pipeline.extend_from_slice(b"CLIENT INFO\r\n");
        }
    }
    pipeline.extend_from_slice(b"PING\r\n");
    s.write_all(&pipeline).unwrap();
    let (obl, qbuf) = wait_paused(&mut admin, peer, 65536);
    eprintln!(
        "paused with obl={obl} qbuf={qbuf} of {} bytes sent",
        pipeline.len()
    );
    assert!(obl <= 65536 + 1024, "obl={obl}");
    let mut r = BufReader::with_capacity(64 * 1024, s.try_clone().unwrap());
    let mut offset = None;
    for i in 0..N {
        let got = read_reply(&mut r);
        assert!(
            got == payload(i),
            "ECHO {i}: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(16)])
        );
        for j in 0..INFOS_PER_ECHO {
            let info = String::from_utf8(read_reply(&mut r)).unwrap();
            let cmds: i64 = fields(&info)["tot-cmds"].parse().unwrap();
            // The command's place in the pipeline, minus what tot-cmds says: constant.
            let place = (i * (INFOS_PER_ECHO + 1) + j + 1) as i64;
            let o = *offset.get_or_insert(place - cmds);
            assert_eq!(place - cmds, o, "CLIENT INFO {j} after ECHO {i}: {info}");
        }
    }
    assert_eq!(read_reply(&mut r), b"+PONG");
    // Nothing more, and the session is fine.
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_reply(&mut r), b"+PONG");
    let f = client_fields(&mut admin, peer).expect("still connected");
    assert_eq!(field_num(&f, "qbuf"), 0, "{f:?}");
    assert_eq!(field_num(&f, "obl"), 0, "{f:?}");
    drop(r);
    drop(s);
    let reap = d.wait_reap_of_peer(peer, Duration::from_secs(5));
    assert_eq!(reap["reason"], "closed", "{reap:?}");
    g.release(&d, "paused pipeline resumes");
}

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

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use util::load::{hwm_kb, multibulk, read_line, Control, Footprint, RSS_SLACK_KB};
use util::{fields, wait_until, Daemon};

/// Log lines an attack may cause (reap lines, a few debug lines per connection).
const LOG_LINES_BOUND: usize = 200;
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// One case at a time: each floods a debug-build daemon, and on two cores two of them would
/// measure each other.
static CPU: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|e| e.into_inner())
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
        Guard {
            control,
            base: Footprint::settled(d.pid()),
            hwm_kb: hwm_kb(d.pid()),
            log_len: d.log.len(),
        }
    }

    /// How much the peak grew since the baseline, in KiB.
    fn hwm_growth_kb(&self, d: &Daemon) -> u64 {
        hwm_kb(d.pid()).saturating_sub(self.hwm_kb)
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
    wait_until(
        Duration::from_secs(10),
        &format!("the session from {peer} to pause (obl {max_output}, qbuf above 0)"),
        || {
            let f = client_fields(admin, peer).ok_or("no CLIENT LIST line".to_string())?;
            let seen = (field_num(&f, "obl"), field_num(&f, "qbuf"));
            if seen.0 >= max_output && seen.1 > 0 {
                Ok(seen)
            } else {
                Err(format!("{f:?}"))
            }
        },
    )
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

/// The attack: long name, lib-name and lib-ver, then one write of `CLIENT INFO` × 1000,
/// never read. Before: about 340 MiB of peak growth, `PING` held for 213-317 ms, 170-190 MiB
/// kept after the attacker left. The field bounds are raised to let the 60 KB values in, so
/// that the output bound alone is what holds (with the default bounds they are refused:
/// tests/bounds_fields.rs).
#[test]
fn client_info_amplification_is_bounded_by_max_output_bytes() {
    let _cpu = alone();
    let d = Daemon::start(&format!(
        "[session]\nmax_name_bytes = 65536\nmax_lib_bytes = 65536\n{ADMIN}"
    ));
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
    let hwm_before = hwm_kb(d.pid());
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
    let hwm = hwm_kb(d.pid()).saturating_sub(hwm_before);
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

/// One RESP value as the tests read it: a line (`+`, `-`, `:`), a bulk (`$`), or an array of
/// those.
#[derive(Debug, PartialEq)]
enum Value {
    Line(String),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

fn read_value(r: &mut impl BufRead) -> Value {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).expect("a RESP line");
    assert!(
        line.ends_with(b"\r\n"),
        "{:?}",
        String::from_utf8_lossy(&line)
    );
    let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
    match text.as_bytes().first() {
        Some(b'$') if text == "$-1" => Value::Nil,
        Some(b'$') => {
            let len: usize = text[1..].parse().expect("bulk length");
            let mut body = vec![0; len + 2];
            r.read_exact(&mut body).expect("bulk body");
            body.truncate(len);
            Value::Bulk(body)
        }
        Some(b'*') | Some(b'>') => {
            let n: usize = text[1..].parse().expect("array length");
            Value::Array((0..n).map(|_| read_value(r)).collect())
        }
        _ => Value::Line(text),
    }
}

/// A raw connection to the admin listener, with a buffered reader beside it.
fn admin_raw(d: &Daemon) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(d.ops_listener("admin")).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::with_capacity(64 * 1024, s.try_clone().unwrap());
    (s, r)
}

/// The case: 1024 subscriptions with 60 KB names (about 64 MB kept per connection
/// before, and not given back after close). Now each is refused; then 1024 names of 200 bytes:
/// 327 fit in `admin.max_subscription_bytes` (64 KiB), the rest are refused, and the connection
/// stays usable throughout.
#[test]
fn long_or_too_many_subscription_names_are_refused_and_memory_returns() {
    let _cpu = alone();
    let d = Daemon::start(ADMIN);
    let g = Guard::start(&d);
    let (mut s, mut r) = admin_raw(&d);
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..1024usize {
                let mut name = format!("{i:04}").into_bytes();
                name.resize(60_000, b'c');
                s.write_all(&multibulk(&[b"SUBSCRIBE", &name])).unwrap();
            }
        })
    };
    for i in 0..1024 {
        match read_value(&mut r) {
            Value::Line(l) => assert_eq!(
                l, "-ERR channel name is 60000 bytes, at most 256 (admin.max_channel_bytes)",
                "SUBSCRIBE {i}"
            ),
            other => panic!("SUBSCRIBE {i}: {other:?}"),
        }
    }
    writer.join().unwrap();
    let mut confirmed = 0;
    let mut refused = 0;
    for batch in 0..16usize {
        let names: Vec<Vec<u8>> = (0..64)
            .map(|j| {
                let mut n = format!("{:04}", batch * 64 + j).into_bytes();
                n.resize(200, b'd');
                n
            })
            .collect();
        let mut words: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        words.extend(names.iter().map(|n| n.as_slice()));
        s.write_all(&multibulk(&words)).unwrap();
        for _ in 0..64 {
            match read_value(&mut r) {
                Value::Array(v) => {
                    confirmed += 1;
                    assert_eq!(v[2], Value::Line(format!(":{confirmed}")), "{v:?}");
                }
                Value::Line(l) if l.contains("(admin.max_subscription_bytes)") => refused += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!((confirmed, refused), (327, 1024 - 327));
    // Still a working (subscribed) connection.
    s.write_all(&multibulk(&[b"PING"])).unwrap();
    assert_eq!(
        read_value(&mut r),
        Value::Array(vec![Value::Bulk(b"pong".to_vec()), Value::Bulk(vec![])])
    );
    let hwm = g.hwm_growth_kb(&d);
    eprintln!("subscriptions: {confirmed} held, {refused} + 1024 refused; VmHWM +{hwm} KiB");
    assert!(hwm < 8 * 1024, "VmHWM grew by {hwm} KiB");
    drop(r);
    drop(s);
    g.release(&d, "long subscription names");
}

/// Reads presence frames until `PING`'s `pong` arrives; returns the event of each, as
/// (kind of frame, pattern or channel, seq, event name).
fn frames_until_pong(r: &mut impl BufRead) -> Vec<(String, String, u64, String)> {
    let mut got = Vec::new();
    loop {
        let Value::Array(v) = read_value(r) else {
            panic!("not a frame");
        };
        let text = |x: &Value| match x {
            Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        let kind = text(&v[0]);
        if kind == "pong" {
            return got;
        }
        let json: serde_json::Value = serde_json::from_str(&text(&v[v.len() - 1])).unwrap();
        got.push((
            kind,
            text(&v[1]),
            json["seq"].as_u64().unwrap(),
            json["event"].as_str().unwrap().to_string(),
        ));
    }
}

/// A pattern (or channel) subscribed twice is one subscription, as in Redis: the same count in
/// each confirmation, and each event once per pattern, once per channel.
#[test]
fn a_duplicate_pattern_is_one_subscription_and_delivers_once() {
    let _cpu = alone();
    let d = Daemon::start(ADMIN);
    let (mut s, mut r) = admin_raw(&d);
    s.write_all(&multibulk(&[b"PSUBSCRIBE", b"pres*", b"pres*"]))
        .unwrap();
    s.write_all(&multibulk(&[b"PSUBSCRIBE", b"pres*"])).unwrap();
    s.write_all(&multibulk(&[b"SUBSCRIBE", b"presence", b"presence"]))
        .unwrap();
    let counts: Vec<Value> = (0..5)
        .map(|_| match read_value(&mut r) {
            Value::Array(mut v) => v.pop().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let n = |k: &str| Value::Line(format!(":{k}"));
    assert_eq!(counts, vec![n("1"), n("1"), n("1"), n("2"), n("2")]);
    let mut c = TcpStream::connect(d.addr).unwrap();
    c.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_line(&mut c).unwrap(), "+PONG");
    drop(c);
    // The joined and left events, each once by channel and once by pattern, then the pong.
    let mut got = Vec::new();
    wait_until(Duration::from_secs(5), "the joined and left events", || {
        s.write_all(&multibulk(&[b"PING"])).unwrap();
        got.extend(frames_until_pong(&mut r));
        got.len() >= 4
    });
    let kinds: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|(k, p, _, e)| (k.as_str(), p.as_str(), e.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("message", "presence", "joined"),
            ("pmessage", "pres*", "joined"),
            ("message", "presence", "left"),
            ("pmessage", "pres*", "left"),
        ]
    );
}

/// A burst of events (a client pipelining 400 `CLIENT SETNAME`s in one write) to two
/// subscribers, each holding 256 patterns that all match `presence`: 200,000 frames, which one
/// turn built all at once before. Delivery is spread over turns (1 MiB of frames each, so an
/// event often reaches one subscriber a turn before the other), the control client's `PING`
/// stays fast, and each subscriber gets every event once per pattern, in order.
#[test]
fn a_fan_out_burst_is_spread_over_turns_in_order() {
    let _cpu = alone();
    const PATTERNS: usize = 256;
    const RENAMES: u64 = 400;
    let d = Daemon::start(&format!(
        "[session]\nmax_output_bytes = 67108864\n{ADMIN}[log]\nlevel = \"info\"\n"
    ));
    let patterns: Vec<Vec<u8>> = (0..PATTERNS)
        .map(|i| format!("[p{i}]*").into_bytes())
        .collect();
    let mut words: Vec<&[u8]> = vec![b"PSUBSCRIBE"];
    words.extend(patterns.iter().map(|p| p.as_slice()));
    let subscribers: Vec<(TcpStream, BufReader<TcpStream>)> = (0..2)
        .map(|_| {
            let (mut s, mut r) = admin_raw(&d);
            s.write_all(&multibulk(&words)).unwrap();
            for i in 0..PATTERNS {
                match read_value(&mut r) {
                    Value::Array(v) => assert_eq!(v[2], Value::Line(format!(":{}", i + 1))),
                    other => panic!("{other:?}"),
                }
            }
            (s, r)
        })
        .collect();
    let g = Guard::start(&d);
    // Each subscriber reads everything as it comes, counting frames per event.
    let mut keep = Vec::new();
    let mut readers = Vec::new();
    for (s, mut r) in subscribers {
        keep.push(s);
        readers.push(std::thread::spawn(move || {
            let mut per_seq: Vec<(u64, usize)> = Vec::new();
            let mut named = 0;
            while named < RENAMES {
                let Value::Array(v) = read_value(&mut r) else {
                    panic!("not a frame");
                };
                let Value::Bulk(json) = &v[3] else {
                    panic!("{v:?}");
                };
                // Events begin `{"seq":N,"event":"...`: read just that (a JSON parser per
                // frame in a debug build would take the CPU the daemon is measured on).
                let head = std::str::from_utf8(&json[..json.len().min(48)]).unwrap_or("");
                let seq: u64 = head
                    .strip_prefix("{\"seq\":")
                    .and_then(|r| r.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{head}"));
                match per_seq.last_mut() {
                    Some((last, n)) if *last == seq => *n += 1,
                    _ => {
                        if head.contains("\"event\":\"named\"") {
                            named += 1;
                        }
                        per_seq.push((seq, 1));
                    }
                }
            }
            // The last event's frames.
            while per_seq.last().is_some_and(|(_, n)| *n < PATTERNS) {
                let _ = read_value(&mut r);
                per_seq.last_mut().unwrap().1 += 1;
            }
            per_seq
        }));
    }
    let mut c = TcpStream::connect(d.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let burst: String = (0..RENAMES)
        .map(|i| format!("CLIENT SETNAME n{i}\r\n"))
        .collect();
    let started = Instant::now();
    c.write_all(burst.as_bytes()).unwrap();
    let seen: Vec<Vec<(u64, usize)>> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let took = started.elapsed();
    for per_seq in &seen {
        // Every event, each once per pattern, numbers consecutive (none lost, none twice).
        assert!(per_seq.iter().all(|(_, n)| *n == PATTERNS), "{per_seq:?}");
        for w in per_seq.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "events out of order or missing: {w:?}");
        }
    }
    assert_eq!(seen[0], seen[1], "both subscribers saw the same events");
    eprintln!(
        "fan-out: {} events x {PATTERNS} patterns x 2 subscribers delivered in {took:?}",
        seen[0].len()
    );
    let mut ok = BufReader::new(c.try_clone().unwrap());
    for _ in 0..RENAMES {
        assert_eq!(read_value(&mut ok), Value::Line("+OK".into()));
    }
    drop(ok);
    drop(c);
    // The subscribers were there before the baseline; they leave after the check.
    g.release(&d, "fan-out burst");
    drop(keep);
}

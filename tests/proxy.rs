//! The PROXY protocol (issue 16): a real HAProxy (`send-proxy-v2`, `send-proxy`) and nginx
//! (`stream` with `proxy_protocol on`) in front of vigild give sessions their clients' addresses; per-address limits apply to those; an
//! untrusted source, a late header and hostile headers (split byte by byte, oversized TLVs,
//! bad numbers, garbage) each have a clear outcome, are counted, and leak no descriptor.
//! `partition_behind_haproxy` (root, a private network namespace, nft) measures what vigild
//! sees of a client that vanishes behind HAProxy: the table in docs/detection.md.
//!
//! Clients bind distinct loopback sources (127.0.0.7, 127.0.0.8) so their addresses differ
//! from HAProxy's (127.0.0.1), which is the only trusted proxy.

mod util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::load::fd_count;
use util::{connect_from, fields, info, netns, skip, wait_until, Daemon, TempDir};

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// A HAProxy child process, killed on drop, with its config in a temporary directory.
struct Haproxy {
    child: Child,
    /// One frontend address per backend line given to [`Haproxy::start`].
    fronts: Vec<SocketAddr>,
    _dir: TempDir,
}

/// The `haproxy` binary, or a skip.
fn haproxy_bin() -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join("haproxy");
        if p.exists() {
            return Some(p);
        }
    }
    skip(
        "haproxy is not installed",
        "scripts/test installs the Debian package haproxy",
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Haproxy {
    /// Starts HAProxy with one TCP frontend per `(server line options, frontend options)`
    /// pair, each forwarding to `backend`. `defaults` goes into the defaults section.
    fn start(
        bin: &PathBuf,
        backend: SocketAddr,
        fronts: &[(&str, &str)],
        defaults: &str,
    ) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let mut cfg = format!(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 2s\n{defaults}\n"
        );
        let mut addrs = Vec::new();
        for (i, (server, front)) in fronts.iter().enumerate() {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            addrs.push(addr);
            cfg.push_str(&format!(
                "frontend f{i}\n  bind {addr}\n{front}\n  default_backend b{i}\nbackend b{i}\n  server v {backend} {server}\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let log_path = dir.path().join("haproxy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        netns::kill_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn haproxy");
        let mut h = Haproxy {
            child,
            fronts: addrs,
            _dir: dir,
        };
        // Listening once the kernel shows the listener (a probe connection would reach vigild;
        // binding the port to probe it raced HAProxy's own bind and made it exit).
        for &a in &h.fronts.clone() {
            wait_until(Duration::from_secs(10), "haproxy to listen", || {
                if let Ok(Some(status)) = h.child.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!("haproxy exited: {status}; config:\n{cfg}\nstderr:\n{log}");
                }
                listening(a)
            });
        }
        h
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something listens on `addr` (an IPv4 loopback address the test picked).
fn listening(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => netns::listening(a),
        SocketAddr::V6(_) => false,
    }
}

/// Sends `cmd` (inline) and reads one reply line.
fn ask(s: &mut TcpStream, cmd: &str) -> String {
    s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    read_line(s)
}

fn read_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(_) => out.push(b[0]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the daemon closes (or 5 s pass): what it said, and whether it closed.
fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// The admin's `CLIENT LIST` line of the session whose `addr=` is `addr`.
fn listed(d: &Daemon, addr: SocketAddr) -> Option<std::collections::HashMap<String, String>> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut d.admin())
        .unwrap();
    list.lines()
        .map(fields)
        .find(|f| f.get("addr").map(String::as_str) == Some(&addr.to_string()))
}

fn stat(d: &Daemon, key: &str) -> u64 {
    let mut admin = d.admin();
    info(&mut admin, "stats")
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in INFO"))
        .parse()
        .unwrap()
}

fn v2_header(src: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = src else {
        panic!("v4")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11]);
    h.extend(((12 + tlvs.len()) as u16).to_be_bytes());
    h.extend(v4.ip().octets());
    h.extend([127, 0, 0, 1]);
    h.extend(v4.port().to_be_bytes());
    h.extend(7379u16.to_be_bytes());
    h.extend(tlvs);
    h
}

#[test]
fn haproxy_v1_and_v2_give_sessions_their_clients_addresses() {
    let Some(bin) = haproxy_bin() else { return };
    let d = Daemon::start(&format!(
        "[server]\nproxy_protocol = \"any\"\nproxy_trusted = [\"127.0.0.1/32\"]\n{ADMIN}"
    ));
    let h = Haproxy::start(
        &bin,
        d.addr,
        &[("send-proxy-v2", ""), ("send-proxy", "")],
        "  timeout client 1m\n  timeout server 1m",
    );
    for (version, front) in [("v2", h.fronts[0]), ("v1", h.fronts[1])] {
        let mut c = connect_from(CLIENT, front).unwrap();
        let me = c.local_addr().unwrap();
        assert_eq!(ask(&mut c, "PING"), "+PONG\r\n", "{version}");
        let f = wait_until(Duration::from_secs(5), "the session listed", || {
            listed(&d, me)
        });
        let hop = f.get("proxy").expect("proxy= listed");
        assert!(hop.starts_with("127.0.0.1:"), "{version}: proxy={hop}");
        assert_ne!(f["addr"], *hop);
        // CLIENT INFO on the session itself says the same.
        let mine = ask(&mut c, "CLIENT INFO");
        assert!(mine.starts_with('$'), "{mine}");
        let line = read_line(&mut c);
        assert!(line.contains(&format!("addr={me} ")), "{line}");
        drop(c);
        let reap = d.wait_reap_of_peer(me, Duration::from_secs(5));
        assert_eq!(reap["reason"], "closed");
        assert_eq!(
            reap["proxy"], *hop,
            "{version}: the reap line names the hop"
        );
        eprintln!("{version}: addr={me} proxy={hop}");
    }
    assert_eq!(stat(&d, "proxy_headers_accepted"), 2);
    let log = d.log.text();
    assert!(!log.contains("proxy protocol: refused"), "{log}");
}

/// nginx with its stream module, proxying one port with `proxy_protocol on` (v1); killed on
/// drop.
struct Nginx {
    child: Child,
    front: SocketAddr,
    _dir: TempDir,
}

impl Nginx {
    fn start(backend: SocketAddr) -> Option<Nginx> {
        let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
        if !std::path::Path::new("/usr/sbin/nginx").exists()
            || !std::path::Path::new(module).exists()
        {
            skip(
                "nginx or its stream module is not installed",
                "scripts/test installs the Debian packages nginx and libnginx-mod-stream",
            );
            return None;
        }
        let dir = TempDir::new("nginx");
        let port = free_port();
        let front: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let d = dir.path().display();
        let cfg = format!(
            "load_module {module};\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\nmaster_process off;\nevents {{}}\nstream {{\n  server {{\n    listen {front};\n    proxy_pass {backend};\n    proxy_protocol on;\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, &cfg).unwrap();
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        netns::kill_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn nginx");
        wait_until(Duration::from_secs(10), "nginx to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx exited: {status}; config:\n{cfg}\nlog:\n{log}");
            }
            listening(front)
        });
        Some(Nginx {
            child,
            front,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nginx_stream_with_proxy_protocol_gives_the_client_address() {
    let d = Daemon::start(&format!(
        "[server]\nproxy_protocol = \"v1\"\nproxy_trusted = [\"127.0.0.1/32\"]\n{ADMIN}"
    ));
    let Some(n) = Nginx::start(d.addr) else {
        return;
    };
    let mut c = connect_from(CLIENT, n.front).unwrap();
    let me = c.local_addr().unwrap();
    assert_eq!(ask(&mut c, "PING"), "+PONG\r\n");
    let f = wait_until(Duration::from_secs(5), "the session listed", || {
        listed(&d, me)
    });
    assert!(f["proxy"].starts_with("127.0.0.1:"), "{f:?}");
    drop(c);
    assert_eq!(
        d.wait_reap_of_peer(me, Duration::from_secs(5))["reason"],
        "closed"
    );
    assert_eq!(stat(&d, "proxy_headers_accepted"), 1);
    eprintln!("nginx: addr={me} proxy={}", f["proxy"]);
}

#[test]
fn per_ip_limits_apply_to_the_client_address() {
    let Some(bin) = haproxy_bin() else { return };
    let d = Daemon::start(&format!(
        "[server]\nmax_connections_per_ip = 2\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1/32\"]\n{ADMIN}"
    ));
    let h = Haproxy::start(
        &bin,
        d.addr,
        &[("send-proxy-v2", "")],
        "  timeout client 1m\n  timeout server 1m",
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect_from(CLIENT, h.fronts[0]).unwrap();
        assert_eq!(ask(&mut c, "PING"), "+PONG\r\n");
        held.push(c);
    }
    // All of them come from HAProxy's one address; only the client's counts.
    let mut third = connect_from(CLIENT, h.fronts[0]).unwrap();
    third.write_all(b"PING\r\n").unwrap();
    let (said, closed) = read_to_close(&mut third);
    assert_eq!(said, "-ERR max connections per address reached\r\n");
    assert!(closed);
    let mut other = connect_from(OTHER, h.fronts[0]).unwrap();
    assert_eq!(
        ask(&mut other, "PING"),
        "+PONG\r\n",
        "another client is fine"
    );
    assert_eq!(stat(&d, "rejected_per-ip"), 1);
    assert_eq!(stat(&d, "proxy_headers_accepted"), 4);
    let stats = d.stats();
    assert_eq!(stats["live"], "3", "the refused one is not counted live");
    assert_eq!(stats["accepted"], "3", "nor accepted");
}

/// A direct connection, as a proxy would make it, from `src`.
fn direct(d: &Daemon, src: Ipv4Addr) -> TcpStream {
    connect_from(src, d.addr).unwrap()
}

#[test]
fn untrusted_late_and_hostile_headers_are_refused_counted_and_leak_nothing() {
    let d = Daemon::start(&format!(
        "[server]\nproxy_protocol = \"any\"\nproxy_trusted = [\"127.0.0.1/32\"]\nproxy_header_timeout = \"1s\"\n{ADMIN}"
    ));
    let pid = d.pid();
    // Warm up the admin connection and logging, then take the baseline.
    stat(&d, "proxy_headers_accepted");
    let baseline = fd_count(pid);
    let client: SocketAddr = "192.0.2.7:40001".parse().unwrap();

    // An untrusted source sending a perfectly good header: refused at accept.
    let mut u = direct(&d, CLIENT);
    let _ = u.write_all(&v2_header(client, &[]));
    let (said, closed) = read_to_close(&mut u);
    assert_eq!(
        said,
        "-ERR connections are accepted only from a trusted proxy\r\n"
    );
    assert!(closed);
    assert_eq!(stat(&d, "proxy_refused_untrusted"), 1);

    // No header at all within the bound: reaped protocol-error, counted as a timeout.
    let start = Instant::now();
    let mut silent = direct(&d, Ipv4Addr::LOCALHOST);
    let (said, closed) = read_to_close(&mut silent);
    let waited = start.elapsed();
    assert_eq!(said, "-ERR PROXY protocol header not received in time\r\n");
    assert!(closed);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    eprintln!("no header: reaped after {waited:?} (proxy_header_timeout 1s)");
    let me = silent.local_addr().unwrap();
    assert_eq!(
        d.wait_reap_of_peer(me, Duration::from_secs(2))["reason"],
        "protocol-error"
    );
    assert_eq!(stat(&d, "proxy_refused_timeout"), 1);

    // Half a header, then nothing: also late.
    let mut half = direct(&d, Ipv4Addr::LOCALHOST);
    half.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
    let (said, _) = read_to_close(&mut half);
    assert_eq!(said, "-ERR PROXY protocol header not received in time\r\n");
    assert_eq!(stat(&d, "proxy_refused_timeout"), 2);

    // Byte by byte with pauses (v1 and v2 with a TLV), then a request: the address is taken
    // and the request answered.
    let tlv = [0x04, 0x00, 0x03, b'a', b'b', b'c'];
    for (i, header) in [
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40002 7379\r\n".to_vec(),
        v2_header("192.0.2.7:40003".parse().unwrap(), &tlv),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = direct(&d, Ipv4Addr::LOCALHOST);
        s.set_nodelay(true).unwrap();
        for b in &header {
            s.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ask(&mut s, "PING"), "+PONG\r\n", "split header {i}");
        let addr: SocketAddr = format!("192.0.2.7:{}", 40002 + i).parse().unwrap();
        let f = wait_until(Duration::from_secs(5), "the split session listed", || {
            listed(&d, addr)
        });
        assert_eq!(f["proxy"], s.local_addr().unwrap().to_string());
    }
    assert_eq!(stat(&d, "proxy_headers_accepted"), 2);

    // The header and the first requests in one segment: nothing after the header is lost.
    let mut one = direct(&d, Ipv4Addr::LOCALHOST);
    let mut bytes = v2_header("192.0.2.7:40009".parse().unwrap(), &[]);
    bytes.extend_from_slice(b"*1\r\n$4\r\nPING\r\nECHO hi\r\n");
    one.write_all(&bytes).unwrap();
    assert_eq!(read_line(&mut one), "+PONG\r\n");
    assert_eq!(read_line(&mut one), "$2\r\n");
    assert_eq!(read_line(&mut one), "hi\r\n");

    // v2 with 1 KiB + 1 of TLVs; v1 with bad numbers; garbage; a header cut by FIN.
    let mut big = vec![0xE0];
    big.extend(1022u16.to_be_bytes());
    big.resize(1025, b'x');
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        (
            "oversized TLVs",
            v2_header(client, &big),
            "too large",
            "proxy_refused_too_large",
        ),
        (
            "v1 port 99999",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 7379\r\nPING\r\n".to_vec(),
            "invalid",
            "proxy_refused_malformed",
        ),
        (
            "v1 address 300.1.1.1",
            b"PROXY TCP4 300.1.1.1 127.0.0.1 1 7379\r\n".to_vec(),
            "invalid",
            "proxy_refused_malformed",
        ),
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "invalid",
            "proxy_refused_malformed",
        ),
        (
            "a v1 line past 107 bytes",
            [b"PROXY TCP4 ".as_slice(), &[b'9'; 120]].concat(),
            "too large",
            "proxy_refused_too_large",
        ),
    ];
    for (what, bytes, word, counter) in cases {
        let before = stat(&d, counter);
        let mut s = direct(&d, Ipv4Addr::LOCALHOST);
        let me = s.local_addr().unwrap();
        let _ = s.write_all(&bytes);
        let (said, closed) = read_to_close(&mut s);
        assert!(
            said.starts_with("-ERR ") && said.contains(word),
            "{what}: {said:?}"
        );
        assert!(closed, "{what}");
        assert_eq!(stat(&d, counter), before + 1, "{what}");
        let reap = d.wait_reap_of_peer(me, Duration::from_secs(2));
        assert_eq!(reap["reason"], "protocol-error", "{what}");
        assert!(!reap.contains_key("proxy"), "{what}: no address was taken");
        eprintln!("{what}: {}", said.trim_end());
    }
    let mut cut = direct(&d, Ipv4Addr::LOCALHOST);
    cut.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    let (said, _) = read_to_close(&mut cut);
    assert_eq!(
        said, "-ERR invalid PROXY protocol header\r\n",
        "cut short by FIN"
    );

    drop((u, silent, half, one, cut));
    let back = wait_until(
        Duration::from_secs(5),
        "the daemon's descriptors back to the baseline",
        || {
            let n = fd_count(pid);
            if n <= baseline {
                Ok(n)
            } else {
                Err(format!("{n} descriptors, baseline {baseline}"))
            }
        },
    );
    eprintln!("descriptors: baseline {baseline}, after {back}");
    let d_info = info(&mut d.admin(), "stats");
    assert_eq!(d_info["proxy_refused_malformed"], "4");
    assert_eq!(d_info["proxy_refused_too_large"], "2");
}

#[test]
fn check_config_and_the_start_up_log_say_keepalive_reaches_only_the_proxy() {
    let cfg = "[server]\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1/32\"]\n";
    let d = Daemon::start(cfg);
    let caveat = "keepalive probes reach only the proxy";
    let line = d
        .log
        .wait_for(Duration::ZERO, |l| l.contains(caveat))
        .unwrap_or_else(|| panic!("no caveat in the start-up log:\n{}", d.log.text()));
    for needle in [
        "session.idle_timeout",
        "PING",
        "option clitcpka",
        "clitcpka-idle",
        "tcp-ut",
    ] {
        assert!(line.contains(needle), "{needle}: {line}");
    }
    let out = Command::new(util::vigild_bin())
        .arg("--check-config")
        .arg(&d.config_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(caveat), "{text}");
    // Without the protocol, no such line.
    let plain = Daemon::start("");
    assert!(plain
        .log
        .wait_for(Duration::ZERO, |l| l.contains(caveat))
        .is_none());
}

/// One partition case: what vigild reported for a client cut off behind HAProxy.
struct Measured {
    case: &'static str,
    /// Seconds from the cut to the reap, and the reason; `None`: not reaped in the window.
    reaped: Option<(f64, String)>,
}

/// In the calling thread's private namespace: vigild (keepalive 2s/1s/3) behind HAProxy, a
/// client from 127.0.0.2 that goes quiet (or PINGs every second, with `pings`), then nft
/// drops everything to and from 127.0.0.2, so HAProxy's hop to vigild stays up. Waits up to
/// `window` for the session's reap line.
fn partition_case(
    bin: &PathBuf,
    case: &'static str,
    vigild_extra: &str,
    haproxy_defaults: &str,
    pings: bool,
    window: Duration,
) -> Measured {
    let d = Daemon::start(&format!(
        "[server]\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1/32\"]\n[keepalive]\nidle = \"2s\"\ninterval = \"1s\"\nprobes = 3\n{vigild_extra}"
    ));
    let h = Haproxy::start(bin, d.addr, &[("send-proxy-v2", "")], haproxy_defaults);
    let src = Ipv4Addr::new(127, 0, 0, 2);
    let mut c = connect_from(src, h.fronts[0]).unwrap();
    let me = c.local_addr().unwrap();
    assert_eq!(ask(&mut c, "PING"), "+PONG\r\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = pings.then(|| {
        let (mut w, stop) = (c.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = w.write_all(b"PING\r\n");
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    });
    // Quiet for a moment, so no delayed ACK turns it into a retransmission case.
    std::thread::sleep(Duration::from_millis(600));
    netns::nft(
        "table inet cut {\n chain i {\n type filter hook input priority -300; policy accept;\n ip saddr 127.0.0.2 drop\n ip daddr 127.0.0.2 drop\n }\n}\n",
    )
    .expect("nft");
    let cut = Instant::now();
    let needle = format!(" peer={me} ");
    let line = d
        .log
        .wait_for(window, |l| l.contains(" reap ") && l.contains(&needle));
    let reaped = line.map(|l| (cut.elapsed().as_secs_f64(), fields(&l)["reason"].clone()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = pinger {
        let _ = t.join();
    }
    netns::nft("delete table inet cut\n").expect("nft delete");
    drop((c, h, d));
    Measured { case, reaped }
}

#[test]
fn partition_behind_haproxy() {
    if let Err(why) = netns::probe() {
        return skip(
            &why,
            "run as root with nftables (scripts/test installs nftables)",
        );
    }
    let Some(bin) = haproxy_bin() else { return };
    let rows = std::thread::spawn(move || {
        netns::enter_private().expect("private namespace");
        let long = "  timeout client 1h\n  timeout server 1h";
        vec![
            partition_case(&bin, "no idle timeout, HAProxy timeout client 1h", "", long, false, Duration::from_secs(12)),
            partition_case(
                &bin,
                "no idle timeout, HAProxy timeout client 8s",
                "",
                "  timeout client 8s\n  timeout server 1h",
                false,
                Duration::from_secs(15),
            ),
            partition_case(
                &bin,
                "no idle timeout, HAProxy option clitcpka 2s/1s/3",
                "",
                "  timeout client 1h\n  timeout server 1h\n  option clitcpka\n  clitcpka-idle 2s\n  clitcpka-intvl 1s\n  clitcpka-cnt 3",
                false,
                Duration::from_secs(15),
            ),
            partition_case(
                &bin,
                "session.idle_timeout 3s, client PING every 1s",
                "[session]\nidle_timeout = \"3s\"\n",
                long,
                true,
                Duration::from_secs(10),
            ),
        ]
    })
    .join()
    .expect("the partition thread");
    eprintln!("| case | vigild reports |");
    for r in &rows {
        let what = match &r.reaped {
            Some((t, reason)) => format!("`{reason}` {t:.2} s after the cut"),
            None => "nothing (not reaped in the window)".to_owned(),
        };
        eprintln!("| {} | {what} |", r.case);
    }
    // Keepalive sees only HAProxy, which answers for the vanished client.
    assert!(rows[0].reaped.is_none(), "{:?}", rows[0].reaped);
    let within = |i: usize, reasons: &[&str], lo: f64, hi: f64| {
        let (t, r) = rows[i]
            .reaped
            .clone()
            .unwrap_or_else(|| panic!("{} not reaped", rows[i].case));
        assert!(reasons.contains(&r.as_str()), "{}: {r}", rows[i].case);
        assert!((lo..hi).contains(&t), "{}: {t:.2} s", rows[i].case);
    };
    // HAProxy gives up on its client side, and closes its hop to vigild (after a timeout with
    // a FIN; after its keepalive found the client dead, with a reset).
    within(1, &["closed"], 6.0, 11.0);
    within(2, &["closed", "reset"], 3.5, 9.0);
    // The application's own timer sees the missing PINGs.
    within(3, &["idle-timeout"], 1.5, 5.0);
}

#[test]
fn presence_announces_the_client_address_once_the_header_is_taken_and_local_keeps_the_proxys() {
    let d = Daemon::start(&format!(
        "[server]\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1/32\"]\n{ADMIN}"
    ));
    let mut admin = d.admin();
    let mut ps = admin.as_pubsub();
    ps.subscribe("presence").expect("SUBSCRIBE presence");
    ps.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut next = || -> Option<serde_json::Value> {
        let msg = ps.get_message().ok()?;
        let payload: String = msg.get_payload().unwrap();
        Some(serde_json::from_str(&payload).unwrap())
    };
    // A refused header: never announced, so no `left` either.
    let mut bad = direct(&d, Ipv4Addr::LOCALHOST);
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = read_to_close(&mut bad);
    // A proxied client: `joined` with its address, after the header, then `left`.
    let client: SocketAddr = "192.0.2.7:40100".parse().unwrap();
    let mut s = direct(&d, Ipv4Addr::LOCALHOST);
    s.write_all(&v2_header(client, &[])).unwrap();
    assert_eq!(ask(&mut s, "PING"), "+PONG\r\n");
    drop(s);
    let joined = next().expect("joined");
    assert_eq!(joined["event"], "joined", "{joined}");
    assert_eq!(joined["addr"], client.to_string(), "{joined}");
    let left = next().expect("left");
    assert_eq!(
        (left["event"].as_str(), left["addr"].as_str()),
        (Some("left"), Some("192.0.2.7:40100"))
    );
    assert!(
        next().is_none(),
        "nothing else: the refused connection was never announced"
    );
    drop(ps);
    // LOCAL (a proxy's health check): the connection's own address, no proxy=.
    let mut local = direct(&d, Ipv4Addr::LOCALHOST);
    let me = local.local_addr().unwrap();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    local.write_all(&h).unwrap();
    assert_eq!(ask(&mut local, "PING"), "+PONG\r\n");
    let f = wait_until(Duration::from_secs(5), "the LOCAL session listed", || {
        listed(&d, me)
    });
    assert!(!f.contains_key("proxy"), "{f:?}");
}

/// PROXY v2 before a TLS handshake: HAProxy in TCP mode passes the TLS stream through after
/// its header; the session gets the client's address from the header and its identity from
/// the certificate, and the handshake starts right after the header's last byte.
#[test]
fn haproxy_in_front_of_a_tls_listener_gives_the_client_address_and_the_certificate_identity() {
    let Some(bin) = haproxy_bin() else { return };
    let dir = TempDir::new("proxy-tls");
    let setup = util::certs::Setup::new(dir.path());
    let d = Daemon::start(&format!(
        "[server]\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1/32\"]\n{}{ADMIN}",
        setup.table("client_auth = \"required\"")
    ));
    let tls = util::tls_client::tls_addr(&d);
    let h = Haproxy::start(
        &bin,
        tls,
        &[("send-proxy-v2", "")],
        "  timeout client 1m\n  timeout server 1m",
    );
    let leaf = setup.ca.issue(&util::certs::Leaf::client("dev-1"));
    let config = util::tls_client::config(
        &setup.ca.pem(),
        Some((&leaf.cert_pem(), &leaf.key_pem())),
        util::tls_client::Versions::Both,
    );
    let tcp = connect_from(CLIENT, h.fronts[0]).unwrap();
    let me = tcp.local_addr().unwrap();
    let mut c = util::tls_client::TlsClient::over(tcp, &config).expect("TLS through HAProxy");
    let info = c.cmd(&["CLIENT", "INFO"]).unwrap().text();
    assert!(info.contains(&format!("addr={me} ")), "{info}");
    assert!(
        info.contains(" identity=dev-1 ") && info.contains(" name=dev-1 "),
        "{info}"
    );
    assert!(info.contains(" proxy=127.0.0.1:"), "{info}");
    assert!(info.contains(" tls=1.3 "), "{info}");
    // A plaintext client through the same proxy is refused by the TLS layer, not parsed.
    let mut plain = connect_from(CLIENT, h.fronts[0]).unwrap();
    let refused = ask(&mut plain, "PING");
    assert!(refused.contains("this port speaks TLS"), "{refused}");
    c.close_notify().unwrap();
    let reap = d.wait_reap_of_peer(me, Duration::from_secs(5));
    assert_eq!(reap["reason"], "closed");
    assert!(reap["proxy"].starts_with("127.0.0.1:"), "{reap:?}");
    assert_eq!(stat(&d, "proxy_headers_accepted"), 2);
}

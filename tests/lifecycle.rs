//! The daemon's life: start-up errors, reaping with reasons, limits, reload and shutdown.
//! Each test drives the real binary and asserts on its log lines and statistics.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{client_id, fields, vigild_bin, wait_until, Daemon, TempDir};

fn ping(con: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(con).unwrap();
    assert_eq!(pong, "PONG");
}

fn keepalive_of(con: &mut redis::Connection) -> (String, String, String, String) {
    let info: String = redis::cmd("CLIENT").arg("INFO").query(con).unwrap();
    let f = fields(&info);
    (
        f["ka-idle"].clone(),
        f["ka-intvl"].clone(),
        f["ka-cnt"].clone(),
        f["user-timeout-ms"].clone(),
    )
}

#[test]
fn fin_is_reaped_as_closed_within_100ms() {
    let d = Daemon::start("");
    let mut con = d.redis();
    let id = client_id(&mut con);
    let t0 = Instant::now();
    drop(con);
    let reap = d.wait_reap(id, Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(reap["reason"], "closed");
    assert_eq!(reap["errno"], "-");
    assert!(took < Duration::from_millis(100), "took {took:?}");
    assert_eq!(d.stats()["reap.closed"], "1");
}

#[test]
fn linger_zero_close_is_reaped_as_reset_within_100ms() {
    let d = Daemon::start("");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.write_all(b"CLIENT ID\r\n").unwrap();
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap();
    let id: i64 = std::str::from_utf8(&buf[1..n])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let t0 = Instant::now();
    drop(s);
    let reap = d.wait_reap(id, Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(reap["reason"], "reset");
    assert_eq!(reap["errno"], "ECONNRESET");
    assert!(took < Duration::from_millis(100), "took {took:?}");
    assert_eq!(d.stats()["reap.reset"], "1");
}

#[test]
fn silent_session_is_reaped_at_idle_timeout_and_active_one_is_not() {
    let d = Daemon::start("[session]\nidle_timeout = \"1s\"\n");
    let mut quiet = d.redis();
    let mut busy = d.redis();
    let quiet_id = client_id(&mut quiet);
    let busy_id = client_id(&mut busy);
    let t0 = Instant::now();
    // Keep one session talking past the other's deadline (the pacing is the test: a ping every
    // 100 ms for 1.6 s).
    while t0.elapsed() < Duration::from_millis(1600) {
        ping(&mut busy);
        std::thread::sleep(Duration::from_millis(100));
    }
    let reap = d.wait_reap(quiet_id, Duration::from_secs(3));
    assert_eq!(reap["reason"], "idle-timeout");
    let silent: u64 = reap["silent_ms"].parse().unwrap();
    assert!((1000..2000).contains(&silent), "silent_ms={silent}");
    assert!(
        !d.log.lines().iter().any(|l| util::is_reap_of(l, busy_id)),
        "the active session must stay"
    );
    ping(&mut busy);
    let stats = d.stats();
    assert_eq!(stats["reap.idle-timeout"], "1");
    assert!(stats.contains_key("latency_ms.idle-timeout"), "{stats:?}");
}

#[test]
fn max_connections_rejects_the_excess_with_an_error_and_counts_it() {
    let d = Daemon::start("[server]\nmax_connections = 3\n");
    let mut held: Vec<redis::Connection> = (0..3).map(|_| d.redis()).collect();
    for con in &mut held {
        ping(con);
    }
    for _ in 0..2 {
        let mut s = TcpStream::connect(d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "-ERR max connections reached\r\n");
    }
    for con in &mut held {
        ping(con);
    }
    let stats = d.stats();
    assert_eq!(stats["live"], "3");
    assert_eq!(stats["rejected"], "2");
    assert_eq!(stats["rejected.max-connections"], "2");
    // A slot freed is a slot usable.
    drop(held.pop());
    // The daemon sees the FIN a moment later: until then a new client is still refused.
    let client = redis::Client::open(d.url()).unwrap();
    wait_until(Duration::from_secs(5), "the freed slot usable", || {
        client
            .get_connection_with_timeout(Duration::from_secs(5))
            .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
            .map_err(|e| format!("{e:?}"))
    });
}

#[test]
fn per_ip_limit_rejects_the_excess() {
    let d = Daemon::start("[server]\nmax_connections_per_ip = 2\n");
    let mut a = d.redis();
    let mut b = d.redis();
    ping(&mut a);
    ping(&mut b);
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "-ERR max connections per address reached\r\n");
    assert_eq!(d.stats()["rejected.per-ip"], "1");
}

#[test]
fn sigterm_closes_every_session_and_exits_zero_with_final_statistics() {
    let mut d = Daemon::start("");
    let mut cons: Vec<redis::Connection> = (0..5).map(|_| d.redis()).collect();
    for con in &mut cons {
        ping(con);
    }
    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    let last = d
        .log
        .wait_for(Duration::from_secs(2), |l| l.contains("final stats"))
        .expect("final statistics line");
    let f = fields(&last);
    assert_eq!(f["live"], "0");
    assert_eq!(f["reap.shutdown"], "5");
    assert_eq!(f["accepted"], "5");
    for con in &mut cons {
        assert!(redis::cmd("PING").query::<String>(con).is_err());
    }
}

#[test]
fn sighup_reload_applies_new_keepalive_to_live_sockets() {
    let d = Daemon::start("[keepalive]\nidle = \"60s\"\ninterval = \"10s\"\nprobes = 6\n");
    let mut con = d.redis();
    assert_eq!(
        keepalive_of(&mut con),
        ("60".into(), "10".into(), "6".into(), "120000".into())
    );
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    let text = text
        .replace("idle = \"60s\"", "idle = \"5s\"")
        .replace("interval = \"10s\"", "interval = \"2s\"")
        .replace("probes = 6", "probes = 3");
    std::fs::write(&d.config_path, text).unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| l.contains("reloaded "))
        .expect("reload line");
    assert_eq!(
        keepalive_of(&mut con),
        ("5".into(), "2".into(), "3".into(), "11000".into())
    );
    // New sessions get the new values too.
    assert_eq!(keepalive_of(&mut d.redis()).0, "5");
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_config() {
    let d = Daemon::start("[keepalive]\nidle = \"30s\"\n");
    let mut con = d.redis();
    std::fs::write(&d.config_path, "[keepalive]\nprobes = 0\n").unwrap();
    d.signal(libc::SIGHUP);
    let line = d
        .log
        .wait_for(Duration::from_secs(5), |l| l.contains("reload failed"))
        .expect("reload failure line");
    assert!(line.contains("keepalive.probes"), "{line}");
    assert_eq!(keepalive_of(&mut con).0, "30");
    ping(&mut con);
}

#[test]
fn sigusr1_logs_statistics_and_the_stats_interval_logs_them_too() {
    let d = Daemon::start("[stats]\ninterval = \"1s\"\n");
    ping(&mut d.redis());
    let line = d
        .log
        .wait_for(Duration::from_secs(3), |l| l.contains(" INFO  stats "))
        .expect("periodic stats line");
    assert!(fields(&line).contains_key("accepted"), "{line}");
}

fn run_vigild(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(vigild_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_is_refused_with_one_clear_line() {
    let dir = TempDir::new("badcfg");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[keepalive]\nidle = \"500ms\"\n").unwrap();
    let p = path.to_str().unwrap();
    for args in [vec!["--config", p], vec!["--check-config", p]] {
        let (code, _, err) = run_vigild(&args);
        assert_ne!(code, 0);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("vigild: "), "{err}");
        assert!(err.contains(p) && err.contains("keepalive.idle"), "{err}");
    }
    std::fs::write(&path, "[keepalive]\nidel = \"5s\"\n").unwrap();
    let (code, _, err) = run_vigild(&["--check-config", p]);
    assert_ne!(code, 0);
    assert!(err.contains("idel"), "{err}");
    let (code, _, err) = run_vigild(&["--config", "/nonexistent/vigild.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/vigild.toml"), "{err}");
}

#[test]
fn print_config_prints_the_effective_config() {
    // Issue 14: --check-config prints a summary instead (tests/check_config.rs); the effective
    // config is --print-config's, or --check-config --verbose's.
    for args in [
        &["--print-config", "config/vigild.toml"][..],
        &["--check-config", "config/vigild.toml", "--verbose"],
    ] {
        let (code, out, err) = run_vigild(args);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("[keepalive]") && out.contains("probes = 6"),
            "{out}"
        );
    }
    let (code, out, _) = run_vigild(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("vigild "));
    let (code, out, _) = run_vigild(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--check-config"));
    let (code, _, err) = run_vigild(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"));
}

#[test]
fn address_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new("inuse");
    let path = dir.path().join("v.toml");
    std::fs::write(&path, format!("[server]\nlisten = [\"{addr}\"]\n")).unwrap();
    let (code, _, err) = run_vigild(&["--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("vigild: cannot listen on ") && last.contains(&addr.to_string()),
        "{err}"
    );
}

#[test]
fn sighup_reload_opens_and_closes_listeners_to_match_the_file() {
    let d = Daemon::start("");
    let mut old_con = d.redis();
    ping(&mut old_con);
    // Pick a free port for the new listener.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_addr = free.local_addr().unwrap();
    drop(free);
    let text = std::fs::read_to_string(&d.config_path).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"{new_addr}\"]"),
    );
    std::fs::write(&d.config_path, text).unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| l.contains("reloaded "))
        .expect("reload line");
    assert!(d.log.text().contains("reload: closed listener 127.0.0.1:0"));
    let mut con = redis::Client::open(format!("redis://{new_addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    ping(&mut con);
    assert!(
        TcpStream::connect(d.addr).is_err(),
        "the old listener is closed"
    );
    // Sessions accepted on the old listener live on.
    ping(&mut old_con);
}

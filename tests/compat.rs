//! The client compatibility matrix: every popular Redis client library, with its default
//! options, against the real daemon. Each case runs one library (at one protocol) through
//! `tests/clients/matrix.js` or `matrix.py`: ping, echo, client setname / getname / id, info,
//! client info, hello, a transactional pipeline, presence events seen through the same library
//! on the admin listener, and a daemon restart on the same port that the library survives by
//! itself (it reconnects and re-sends its name). The `redis` crate and the tools
//! (`redis-cli --stat`, `--latency`, `redis-benchmark`) are driven from here.
//!
//! `scripts/test` installs the libraries (npm packages into `target/test-node`, Python ones into
//! venvs under `target/`) and sets `VIGILD_TEST_NODE_PATH`, `VIGILD_TEST_PYTHON` and
//! `VIGILD_TEST_PYTHON_HIREDIS`. Without them a case skips loudly, except with
//! `VIGILD_TESTS_NO_SKIP=1` (as in CI), where it fails.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{installed, Daemon};

/// How long one library's whole run may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// A port on loopback that nothing listens on now, so the daemon can be restarted on it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn config(port: u16) -> String {
    format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n")
}

fn admin_port(d: &Daemon) -> String {
    d.ops_listener("admin")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs `program args... CLIENT_PORT ADMIN_PORT` against a daemon, restarting the daemon on the
/// same port when the script asks ("restart-me"). Returns the script's output lines; panics
/// with all of them when a step failed or the script did not finish.
fn run_matrix(program: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let port = free_port();
    let mut daemon = Daemon::start(&config(port));
    let mut child = Command::new(program)
        .args(args)
        .arg(port.to_string())
        .arg(admin_port(&daemon))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take();
    let mut lines = Vec::new();
    let deadline = Instant::now() + CASE_TIMEOUT;
    let mut restarts = 0;
    let outcome = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let restart = line == "restart-me";
                let done = line == "done";
                lines.push(line);
                if done {
                    break Ok(());
                }
                if restart {
                    restarts += 1;
                    daemon.signal(libc::SIGTERM);
                    assert!(
                        daemon.wait_exit(Duration::from_secs(10)).is_some(),
                        "vigild did not stop on SIGTERM"
                    );
                    daemon = Daemon::start(&config(port));
                    if let Some(s) = stdin.as_mut() {
                        let _ = s.write_all(b"restarted\n");
                        let _ = s.flush();
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break Err("did not finish in time"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("exited before \"done\""),
        }
    };
    drop(stdin);
    let status = child.wait().expect("wait for the script");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let shown = lines.join("\n");
    assert!(
        outcome.is_ok() && status.success(),
        "{program} {args:?}: {} (exit {status}):\n{shown}\n{stderr}\nvigild's log:\n{}",
        outcome.err().unwrap_or("failed"),
        daemon.log.text()
    );
    assert_eq!(restarts, 1, "the script asks for one restart:\n{shown}");
    // Every step of the scenario ran, in order.
    let steps: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ok "))
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        steps,
        [
            "connect",
            "ping",
            "echo",
            "getname",
            "setname",
            "id",
            "info",
            "client-info",
            "hello",
            "multi-exec",
            "presence",
            "restart"
        ],
        "{shown}"
    );
    eprintln!("{shown}");
    lines
}

fn node(lib: &str, proto: &str) {
    let Some(node_path) = installed("VIGILD_TEST_NODE_PATH", "ioredis and node-redis") else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/matrix.js");
    run_matrix(
        "node",
        &[script, lib, proto],
        &[("NODE_PATH", node_path.as_str())],
    );
}

fn python(var: &str, module: &str, proto: &str) {
    let Some(python) = installed(var, "redis-py, hiredis and valkey-py") else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/matrix.py");
    let lines = run_matrix(&python, &[script, module, proto], &[]);
    let want = if var == "VIGILD_TEST_PYTHON_HIREDIS" {
        "parser=hiredis"
    } else {
        "parser=python"
    };
    assert!(
        lines[0].contains(want),
        "{var} should run with {want}: {}",
        lines[0]
    );
}

#[test]
fn ioredis5_default() {
    node("ioredis5", "default");
}

#[test]
fn ioredis6_default_resp3() {
    node("ioredis6", "default");
}

#[test]
fn ioredis6_resp2() {
    node("ioredis6", "2");
}

#[test]
fn node_redis4_default() {
    node("redis4", "default");
}

#[test]
fn node_redis5_default() {
    node("redis5", "default");
}

#[test]
fn node_redis5_resp3() {
    node("redis5", "3");
}

#[test]
fn node_redis6_default_resp3() {
    node("redis6", "default");
}

#[test]
fn node_redis6_resp2() {
    node("redis6", "2");
}

#[test]
fn redis_py_default_resp3() {
    python("VIGILD_TEST_PYTHON", "redis", "default");
}

#[test]
fn redis_py_resp2() {
    python("VIGILD_TEST_PYTHON", "redis", "2");
}

#[test]
fn redis_py_hiredis_default_resp3() {
    python("VIGILD_TEST_PYTHON_HIREDIS", "redis", "default");
}

#[test]
fn redis_py_hiredis_resp2() {
    python("VIGILD_TEST_PYTHON_HIREDIS", "redis", "2");
}

#[test]
fn valkey_py_default() {
    python("VIGILD_TEST_PYTHON", "valkey", "default");
}

#[test]
fn valkey_py_resp3() {
    python("VIGILD_TEST_PYTHON", "valkey", "3");
}

/// The `redis` crate (the one the rest of the suite uses) at both protocols: the same scenario
/// in Rust. Its sync `Connection` does not reconnect by itself; a new connection from the same
/// `Client` after the restart is what an application does with it.
fn redis_crate(resp3: bool) {
    let port = free_port();
    let mut d = Daemon::start(&config(port));
    let query = if resp3 { "?protocol=resp3" } else { "" };
    let url = format!("redis://127.0.0.1:{port}/{query}");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hé").query(&mut con).expect("ECHO");
    assert_eq!(echo, "hé");
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("compat-rs")
        .query(&mut con)
        .expect("SETNAME");
    let name: Option<String> = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(&mut con)
        .expect("GETNAME");
    assert_eq!(name.as_deref(), Some("compat-rs"));
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).expect("ID");
    assert!(id > 0);
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut con).expect("INFO");
    assert!(info.get::<String>("redis_version").is_some(), "{info:?}");
    assert_eq!(info.get::<i64>("loading"), Some(0), "{info:?}");
    let client_info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query(&mut con)
        .expect("CLIENT INFO");
    for field in [" oll=", " omem=", " tot-mem=", " resp=", " user=default "] {
        assert!(client_info.contains(field), "{field} in {client_info}");
    }
    let hello: std::collections::HashMap<String, redis::Value> =
        redis::cmd("HELLO").query(&mut con).expect("HELLO");
    assert_eq!(
        hello.get("proto"),
        Some(&redis::Value::Int(if resp3 { 3 } else { 2 })),
        "{hello:?}"
    );
    let (p, e): (String, String) = redis::pipe()
        .atomic()
        .cmd("PING")
        .cmd("ECHO")
        .arg("x")
        .query(&mut con)
        .expect("MULTI/EXEC pipeline");
    assert_eq!((p.as_str(), e.as_str()), ("PONG", "x"));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
    let _d = Daemon::start(&config(port));
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("reconnect after the restart");
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING again");
    assert_eq!(pong, "PONG");
}

#[test]
fn redis_crate_resp2() {
    redis_crate(false);
}

#[test]
fn redis_crate_resp3() {
    redis_crate(true);
}

/// Runs a tool to completion (or until `limit`, then stops it with SIGINT, as a person would
/// with ^C) and returns its output. Line-buffered (`stdbuf -oL`), so what it printed before
/// the signal is not lost in a pipe's buffer.
fn tool(program: &str, args: &[&str], limit: Duration) -> (String, String) {
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    // The tools print a few lines a second: the pipes cannot fill while this polls. (Not
    // `wait_until`: reaching `limit` is no failure, it is when a person would press ^C.)
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("poll the tool").is_none() {
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on our own child, which has not been reaped yet (try_wait said
            // it is running), so its pid cannot have been reused.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("tool output");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn port_of(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map(|a| a.port().to_string())
        .unwrap_or_default()
}

#[test]
fn redis_benchmark_runs_without_warnings() {
    let d = Daemon::start("");
    let port = d.addr.port().to_string();
    let (out, err) = tool(
        "redis-benchmark",
        &["-p", &port, "-n", "2000", "-c", "4", "-t", "ping", "-q"],
        Duration::from_secs(30),
    );
    let all = format!("{out}{err}");
    assert!(
        all.contains("PING_INLINE") && all.contains("PING_MBULK"),
        "{all}"
    );
    assert!(!all.to_lowercase().contains("warn"), "{all}");
    assert!(!all.contains("Could not fetch"), "{all}");
}

#[test]
fn redis_cli_stat_reads_the_admin_info() {
    let d = Daemon::start("[admin]\nlisten = \"127.0.0.1:0\"\n");
    let admin = port_of(&d.ops_listener("admin"));
    let _held = d.redis();
    let (out, err) = tool(
        "redis-cli",
        &["-p", &admin, "--stat", "-i", "0.2"],
        Duration::from_millis(1500),
    );
    // Header, then one line per sample: keys, mem, clients, blocked, requests, connections.
    let samples: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(samples.len() >= 2, "redis-cli --stat:\n{out}\n{err}");
    for line in &samples {
        assert!(!line.contains('-'), "a negative figure in {line:?}:\n{out}");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "{line:?}");
        assert!(cols[1].ends_with('B') || cols[1].ends_with('K') || cols[1].ends_with('M'));
        assert_eq!(
            cols[2], "1",
            "connected_clients counts client sessions: {line:?}"
        );
    }
}

#[test]
fn redis_cli_latency_on_the_client_port() {
    let d = Daemon::start("");
    let port = d.addr.port().to_string();
    let (out, err) = tool(
        "redis-cli",
        &["-p", &port, "--latency", "-i", "0.2"],
        Duration::from_millis(1000),
    );
    // Without a tty redis-cli prints one line at the end: min, max and average in ms, and the
    // number of samples.
    let line = out.lines().last().unwrap_or_default();
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(f.len(), 4, "--latency:\n{out}\n{err}");
    assert!(f[3] >= 3.0, "samples in {line}");
    assert!(f[0] <= f[2] && f[2] <= f[1], "min <= avg <= max in {line}");
    assert!(!err.contains("ERR"), "{err}");
}

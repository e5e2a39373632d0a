//! The admin listener, driven by real clients (the `redis` crate and `redis-cli`): CLIENT LIST
//! and KILL, INFO, CONFIG GET, the unix socket, and the refusal of an exposed listener.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::{client_id, fields, info_map, Daemon, TempDir};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// Runs `redis-cli` with `args` and returns its standard output.
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (Debian package redis-tools, installed by scripts/test)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `redis-cli -h IP -p PORT` arguments for an `ip:port` listener.
fn cli_to(addr: &str) -> Vec<String> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    vec!["-h".into(), host.into(), "-p".into(), port.into()]
}

fn cli(addr: &str, words: &[&str]) -> String {
    let mut args = cli_to(addr);
    args.extend(words.iter().map(|w| w.to_string()));
    redis_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The `CLIENT LIST` line of the session named `name`.
fn line_named<'a>(list: &'a str, name: &str) -> &'a str {
    list.lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .unwrap_or_else(|| panic!("no session named {name} in:\n{list}"))
}

#[test]
fn client_list_shows_named_sessions_with_their_keepalive_fields() {
    let d = Daemon::start(&format!(
        "[keepalive]\nidle = \"7s\"\ninterval = \"3s\"\nprobes = 4\n{ADMIN}"
    ));
    let mut sensor = d.redis();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("sensor-7")
        .query(&mut sensor)
        .unwrap();
    let id = client_id(&mut sensor);
    let _other = d.redis();

    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut d.admin())
        .unwrap();
    assert_eq!(
        list.lines().count(),
        2,
        "one line per client session:\n{list}"
    );
    let f = fields(line_named(&list, "sensor-7"));
    assert_eq!(f["id"], id.to_string());
    assert_eq!(f["laddr"], d.addr.to_string());
    for (key, want) in [
        ("keepalive", "1"),
        ("ka-idle", "7"),
        ("ka-intvl", "3"),
        ("ka-cnt", "4"),
        ("user-timeout-ms", "19000"),
        ("tcpi-probes", "0"),
        ("state", "ok"),
    ] {
        assert_eq!(f[key], want, "{key} in {f:?}");
    }
    // Right after a reply the client's ACK may still be delayed: unacked can read 0 or 1.
    for key in ["tcpi-rtt-us", "tcpi-unacked"] {
        assert!(f[key].parse::<u32>().is_ok(), "{key} in {f:?}");
    }

    // The same through redis-cli, as an operator would type it.
    let list = cli(&d.ops_listener("admin"), &["client", "list"]);
    assert_eq!(fields(line_named(&list, "sensor-7"))["id"], id.to_string());
    let only: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id)
        .query(&mut d.admin())
        .unwrap();
    assert_eq!(only.lines().count(), 1, "{only}");
}

#[test]
fn client_kill_reaps_with_reason_killed_and_the_client_sees_the_connection_closed() {
    let d = Daemon::start(ADMIN);
    let admin_addr = d.ops_listener("admin");
    let mut con = d.admin();

    // KILL ID: the victim is a raw socket, so the end of the connection is seen exactly.
    let mut victim = TcpStream::connect(d.addr).unwrap();
    victim.write_all(b"CLIENT ID\r\n").unwrap();
    victim
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = victim.read(&mut buf).unwrap();
    let id: i64 = String::from_utf8_lossy(&buf[..n])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let mut bystander = d.redis();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    let reap = d.wait_reap(id, Duration::from_secs(5));
    assert_eq!(reap["reason"], "killed");
    match victim.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the killed client should see its connection closed: {other:?}"),
    }
    let pong: String = redis::cmd("PING").query(&mut bystander).unwrap();
    assert_eq!(pong, "PONG", "other sessions are untouched");
    let none: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut con)
        .unwrap();
    assert_eq!(none, 0, "a session is killed once");

    // KILL ADDR with redis-cli, and the old form `CLIENT KILL ip:port`.
    let mut second = d.redis();
    let second_id = client_id(&mut second);
    let second_addr = fields(
        &redis::cmd("CLIENT")
            .arg("INFO")
            .query::<String>(&mut second)
            .unwrap(),
    )["addr"]
        .clone();
    assert_eq!(
        cli(&admin_addr, &["client", "kill", "addr", &second_addr]).trim(),
        "1"
    );
    assert_eq!(
        d.wait_reap(second_id, Duration::from_secs(5))["reason"],
        "killed"
    );
    assert!(
        redis::cmd("PING").query::<String>(&mut second).is_err(),
        "the killed redis client's next command fails"
    );
    let mut third = d.redis();
    let third_id = client_id(&mut third);
    let third_addr = fields(
        &redis::cmd("CLIENT")
            .arg("INFO")
            .query::<String>(&mut third)
            .unwrap(),
    )["addr"]
        .clone();
    let ok: String = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(&third_addr)
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(
        d.wait_reap(third_id, Duration::from_secs(5))["reason"],
        "killed"
    );
    let err = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(&third_addr)
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("No such client"), "{err}");

    // Counted as `killed` in the statistics and in INFO.
    assert_eq!(d.stats()["reap.killed"], "3");
    let info: String = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
    assert!(info.contains("reaped_killed:3\r\n"), "{info}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "the admin connection itself stays");
}

#[test]
fn info_sections_in_redis_format() {
    let d = Daemon::start(&format!(
        "[keepalive]\nidle = \"9s\"\ninterval = \"2s\"\nprobes = 3\n\
         [session]\nidle_timeout = \"1s\"\n{ADMIN}"
    ));
    let admin_addr = d.ops_listener("admin");

    // One session that quits and one that stays silent until the idle timeout reaps it.
    let mut quitter = d.redis();
    let quitter_id = client_id(&mut quitter);
    let _: String = redis::cmd("QUIT").query(&mut quitter).unwrap();
    let silent = TcpStream::connect(d.addr).unwrap();
    let reap = d.log.wait_for(Duration::from_secs(5), |l| {
        l.contains(" reap ") && l.contains("reason=idle-timeout")
    });
    let reap = fields(&reap.expect("the silent session is reaped"));
    d.wait_reap(quitter_id, Duration::from_secs(5));
    drop(silent);

    let text = cli(&admin_addr, &["info"]);
    for header in [
        "# Server",
        "# Clients",
        "# Stats",
        "# Keepalive",
        "# Reaper",
    ] {
        assert!(text.contains(header), "{header} missing:\n{text}");
    }
    let info = info_map(&text);
    assert_eq!(info["vigild_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["process_id"], d.pid().to_string());
    assert_eq!(info["tcp_port"], d.addr.port().to_string());
    assert_eq!(info["admin_listener"], admin_addr);
    assert_eq!(info["metrics_listener"], "off");
    assert_eq!(info["total_connections_received"], "2");
    assert_eq!(info["reaped_quit"], "1");
    assert_eq!(info["reaped_idle-timeout"], "1");
    assert_eq!(info["reaped_keepalive-timeout"], "0");
    assert_eq!(info["keepalive_idle_seconds"], "9");
    assert_eq!(info["keepalive_interval_seconds"], "2");
    assert_eq!(info["keepalive_probes"], "3");
    assert_eq!(info["keepalive_user_timeout_ms"], "15000");
    assert_eq!(info["keepalive_detection_bound_seconds"], "15");
    assert_eq!(info["session_idle_timeout_ms"], "1000");
    assert_eq!(info["reaped_detections"], "1");
    // The reaper's latency is the reap line's silent_ms, to the millisecond.
    let latency = &info["latency_idle-timeout"];
    let silent_ms = &reap["silent_ms"];
    for field in [
        "count=1".to_string(),
        format!("min_ms={silent_ms}"),
        format!("max_ms={silent_ms}"),
    ] {
        assert!(
            latency.split(',').any(|f| f == field),
            "{field} in {latency}"
        );
    }
    assert!(info["lifetime_quit"].starts_with("count=1,"), "{info:?}");

    // One section, any case; the redis crate too.
    let ka: String = redis::cmd("INFO")
        .arg("KeepAlive")
        .query(&mut d.admin())
        .unwrap();
    assert!(ka.starts_with("# Keepalive\r\n"), "{ka}");
    assert!(!ka.contains("# Server"));
    let clients = info_map(&cli(&admin_addr, &["info", "clients"]));
    assert_eq!(clients["connected_clients"], "0");
    assert_eq!(clients["peak_clients"], "1");
    assert_eq!(clients["admin_clients"], "1");
}

#[test]
fn config_get_shows_the_effective_config_and_follows_a_reload() {
    let d = Daemon::start(&format!("[keepalive]\nidle = \"45s\"\nprobes = 5\n{ADMIN}"));
    let mut con = d.admin();
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("keepalive.*")
        .query(&mut con)
        .unwrap();
    let map: std::collections::HashMap<&str, &str> = pairs
        .chunks(2)
        .map(|kv| (kv[0].as_str(), kv[1].as_str()))
        .collect();
    assert_eq!(map.len(), 5, "{pairs:?}");
    assert_eq!(map["keepalive.idle"], "45s");
    assert_eq!(map["keepalive.probes"], "5");
    assert_eq!(map["keepalive.user_timeout"], "auto");
    assert_eq!(map["keepalive.enabled"], "true");

    let out = cli(&d.ops_listener("admin"), &["config", "get", "*listen"]);
    let lines: Vec<&str> = out.lines().collect();
    // tls.listen is empty (no TLS listener): its value is an empty line.
    assert_eq!(
        lines.len(),
        6,
        "admin.listen, server.listen, tls.listen:\n{out}"
    );
    assert!(out.contains("tls.listen\n"), "{out}");
    assert!(out.contains("admin.listen\n127.0.0.1:0\n"), "{out}");
    let none: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("nosuch.*")
        .query(&mut con)
        .unwrap();
    assert!(none.is_empty());
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("keepalive.probes")
        .arg("3")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("SIGHUP"), "{err}");

    // Edit the file, SIGHUP: CONFIG GET and INFO follow.
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(&d.config_path, text.replace("probes = 5", "probes = 8")).unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| l.contains("reloaded "))
        .expect("reloaded");
    let probes: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("keepalive.probes")
        .query(&mut con)
        .unwrap();
    assert_eq!(probes, ["keepalive.probes", "8"]);
    let stats = info_map(
        &redis::cmd("INFO")
            .arg("stats")
            .query::<String>(&mut con)
            .unwrap(),
    );
    assert_eq!(stats["config_reloads"], "1");
    assert_eq!(stats["last_reload_ok"], "1");
}

/// The client port refuses what reads or changes other sessions, and answers what client
/// libraries probe (INFO, CONFIG GET) without operator data (issue 12: ioredis's ready check
/// sends INFO, redis-benchmark asks CONFIG GET save).
#[test]
fn the_client_listener_refuses_admin_commands() {
    let d = Daemon::start(ADMIN);
    let mut con = d.redis();
    let id = client_id(&mut con);
    for cmd in [
        redis::cmd("CLIENT").arg("LIST").clone(),
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).clone(),
    ] {
        let err = cmd.query::<String>(&mut con).unwrap_err();
        assert!(err.to_string().contains("admin listener"), "{err}");
    }
    for section in [None, Some("server"), Some("clients"), Some("everything")] {
        let mut cmd = redis::cmd("INFO");
        if let Some(s) = section {
            cmd.arg(s);
        }
        let info = info_map(&cmd.query::<String>(&mut con).unwrap());
        for operator_only in [
            "connected_clients",
            "reaped_sessions",
            "config_file",
            "process_id",
        ] {
            assert!(!info.contains_key(operator_only), "{section:?}: {info:?}");
        }
    }
    let info = info_map(&redis::cmd("INFO").query::<String>(&mut con).unwrap());
    assert_eq!(info["loading"], "0");
    assert_eq!(info["server_name"], "vigild");
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query(&mut con)
        .unwrap();
    assert!(
        config.iter().all(|k| !k.contains('.')),
        "no vigild key on the client port: {config:?}"
    );
    let out = cli(&d.addr.to_string(), &["client", "list"]);
    assert!(
        out.contains("only available on the admin listener"),
        "{out}"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "the session stays open");
    assert!(!d.log.text().contains("reason=killed"));
}

#[test]
fn the_admin_listener_survives_garbage_and_quit() {
    let d = Daemon::start(ADMIN);
    let admin_addr = d.ops_listener("admin");
    let mut junk = TcpStream::connect(&admin_addr).unwrap();
    junk.write_all(b"*2\r\n$4\r\nPING\r\n!!!!\r\n").unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    let _ = junk.read_to_string(&mut reply);
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");

    let mut quitter = TcpStream::connect(&admin_addr).unwrap();
    quitter.write_all(b"PING\r\nQUIT\r\nPING\r\n").unwrap();
    quitter
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = String::new();
    let _ = quitter.read_to_string(&mut reply);
    assert_eq!(
        reply, "+PONG\r\n+OK\r\n",
        "QUIT answers and closes; nothing after it runs"
    );

    let pong: String = redis::cmd("PING").query(&mut d.admin()).unwrap();
    assert_eq!(pong, "PONG");
    let pong: String = redis::cmd("PING").query(&mut d.redis()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn unix_socket_admin_is_mode_0600_replaces_a_stale_file_and_is_removed_at_shutdown() {
    let dir = TempDir::new("admin-unix");
    let path = dir.path().join("admin.sock");
    // What a crashed daemon leaves behind: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut d = Daemon::start(&format!("[admin]\nlisten = \"{}\"\n", path.display()));
    assert_eq!(d.ops_listener("admin"), path.display().to_string());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only vigild's user may connect");

    let mut session = d.redis();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("over-unix")
        .query(&mut session)
        .unwrap();
    let list = redis_cli(&["-s", path.to_str().unwrap(), "client", "list"]);
    line_named(&list, "over-unix");
    let url = format!("redis+unix://{}", path.display());
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    assert!(
        info.contains(&format!("admin_listener:{}\r\n", path.display())),
        "{info}"
    );

    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

/// Runs `vigild` on a config and returns its exit code and stderr.
fn run_vigild(args: &[&str]) -> (i32, String) {
    let out = Command::new(util::vigild_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_exposed_admin_or_metrics_listener_is_refused_without_allow_remote() {
    let dir = TempDir::new("admin-remote");
    let path = dir.path().join("vigild.toml");
    let path = path.to_str().unwrap();
    for (table, addr) in [
        ("admin", "0.0.0.0:0"),
        ("metrics", "[::]:0"),
        ("admin", "192.0.2.1:7380"),
    ] {
        std::fs::write(
            path,
            format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[{table}]\nlisten = \"{addr}\"\n"),
        )
        .unwrap();
        for args in [&["--config", path][..], &["--check-config", path]] {
            let (code, stderr) = run_vigild(args);
            assert_eq!(code, 1, "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
            for needle in [
                format!("{table}.listen: "),
                "is not a loopback address".to_string(),
                format!("{table}.allow_remote = true"),
            ] {
                assert!(stderr.contains(&needle), "{needle:?} in {stderr}");
            }
            assert!(
                !stderr.contains("listening on"),
                "nothing was opened: {stderr}"
            );
        }
    }
    // Saying so explicitly is accepted, with a warning for the admin listener. (Checked with
    // --check-config, so no test ever listens beyond loopback.)
    std::fs::write(
        path,
        "[admin]\nlisten = \"0.0.0.0:7380\"\nallow_remote = true\n",
    )
    .unwrap();
    let (code, stderr) = run_vigild(&["--check-config", path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: admin.listen = 0.0.0.0:7380"),
        "{stderr}"
    );
}

#[test]
fn sighup_moves_the_admin_listener() {
    let dir = TempDir::new("admin-move");
    let path = dir.path().join("moved.sock");
    let d = Daemon::start(ADMIN);
    let before = d.ops_listener("admin");
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    let moved = text.replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"{}\"", path.display()),
    );
    assert_ne!(moved, text);
    std::fs::write(&d.config_path, moved).unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains(&format!("admin listener on {}", path.display()))
        })
        .expect("the admin listener moved");
    assert!(
        TcpStream::connect(&before).is_err(),
        "the old port is closed"
    );
    let list = redis_cli(&["-s", path.to_str().unwrap(), "ping"]);
    assert_eq!(list.trim(), "PONG");
}

/// The daemon's resident memory, from /proc.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_client_that_pipelines_without_reading_is_held_back_then_fully_answered() {
    let d = Daemon::start(ADMIN);
    let baseline = rss_kib(d.pid());
    let mut s = TcpStream::connect(d.ops_listener("admin")).unwrap();
    const N: usize = 20_000; // about 25 MB of INFO replies
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let batch = b"INFO\r\n".repeat(N);
        writer.write_all(&batch).unwrap();
    });
    // Not reading yet: the daemon must stop taking requests once 1 MiB of replies waits. Wait
    // until it has stopped writing (what reached this socket no longer grows).
    util::load::wait_stuck(std::slice::from_ref(&s), Duration::from_secs(10));
    let held = rss_kib(d.pid());
    assert!(
        held < baseline + 16 * 1024,
        "memory grew from {baseline} KiB to {held} KiB while the client did not read"
    );
    // Other clients are served meanwhile.
    let pong: String = redis::cmd("PING").query(&mut d.redis()).unwrap();
    assert_eq!(pong, "PONG");
    // Now read everything: every request is answered, in order, none lost.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let marker = b"# Server\r\n";
    let mut seen = 0;
    let mut buf = vec![0u8; 1 << 16];
    // The last bytes of the previous read, shorter than the marker: a marker split across
    // two reads is counted once, and none is counted twice.
    let mut window = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < N {
        assert!(
            std::time::Instant::now() < deadline,
            "only {seen} of {N} replies"
        );
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("{e} after {seen} of {N} replies: the daemon stopped answering"),
        };
        assert!(n > 0, "closed after {seen} replies");
        window.extend_from_slice(&buf[..n]);
        seen += window.windows(marker.len()).filter(|w| w == marker).count();
        let keep = marker.len() - 1;
        window.drain(..window.len().saturating_sub(keep));
    }
    assert_eq!(seen, N);
    sender.join().unwrap();
}

/// Requests pipelined behind a `CLIENT KILL` run after its sessions are reaped: the second
/// kill of the same id finds nothing, and a listing of it is empty.
#[test]
fn requests_pipelined_after_a_kill_see_the_session_gone() {
    let d = Daemon::start(ADMIN);
    let mut victim = d.redis();
    let id = client_id(&mut victim);
    let mut admin = TcpStream::connect(d.ops_listener("admin")).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let kill = format!("CLIENT KILL ID {id}\r\n");
    let pipeline = format!("{kill}{kill}CLIENT LIST ID {id}\r\nPING\r\n");
    admin.write_all(pipeline.as_bytes()).unwrap();
    let want = b":1\r\n:0\r\n$0\r\n\r\n+PONG\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < want.len() {
        match admin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading the replies: {e} (so far {:?})",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    assert_eq!(d.wait_reap(id, Duration::from_secs(5))["reason"], "killed");
}

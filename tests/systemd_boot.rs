//! vigild under a real systemd: a container boots this machine's own systemd as PID 1
//! (tests/util/container.rs), vigild is installed into it the way its package installs it, and
//! every check goes through `systemctl` and `journalctl` inside, with clients on the
//! container's private loopback. One boot serves every check, in sequence (a boot costs 5 to
//! 20 s); each check leaves the units as the next expects them.
//!
//! Root only: without root it skips (and fails under `VIGILD_TESTS_NO_SKIP=1`).

mod util;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use util::container::{self, Container, Leftovers};
use util::{fields, wait_until};

/// Where vigild listens inside the container (its own network: no collision with the host).
const PORT: u16 = 7379;

/// The test's config: the defaults, with keepalive spelled out so the reload check can change
/// it and read the change back.
fn config(idle_s: u64) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{PORT}\"]\n\n[keepalive]\nidle = \"{idle_s}s\"\n\
         interval = \"10s\"\nprobes = 6\n\n[log]\nlevel = \"info\"\n"
    )
}

/// Builds the package (`scripts/deb`) and puts it where the container sees it, as
/// `/vigild-stage/vigild.deb`; returns that folder on the host side, for the caller to remove.
fn stage_package(c: &Container) -> std::path::PathBuf {
    let out = std::process::Command::new("scripts/deb")
        .output()
        .expect("run scripts/deb");
    assert!(out.status.success(), "scripts/deb: {out:?}");
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stage = c.root().join("vigild-stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(&deb, stage.join("vigild.deb")).unwrap();
    stage
}

/// Installs vigild into the booted container the way a user does: `dpkg -i` of the package
/// `scripts/deb` builds (the binary at `/usr/bin/vigild` lands in the overlay on `/usr`, so the
/// host's `/usr` is untouched; the units in `/usr/lib/systemd/system`; the config at
/// `/etc/vigild/vigild.toml`). Its postinst enables and starts vigild.service with the packaged
/// config; the test's own config then replaces it and the service restarts.
fn install_vigild(c: &Container) {
    let stage = stage_package(c);
    // This machine's image forbids starting services from maintainer scripts (a container
    // build's /usr/sbin/policy-rc.d exits 101); a user's machine has none. Removed inside only
    // (a whiteout in the overlay), so the postinst does what it does for a user.
    c.ok("rm -f /usr/sbin/policy-rc.d");
    let t = Instant::now();
    let installed = c.ok("dpkg -i /vigild-stage/vigild.deb 2>&1");
    eprintln!(
        "install: dpkg -i in {:.2} s: {}; vigild.service {} / {}",
        t.elapsed().as_secs_f64(),
        installed.trim().replace('\n', " | "),
        c.sh("systemctl is-enabled vigild.service")
            .stdout
            .escape_ascii(),
        active_state(c, "vigild.service")
    );
    assert_eq!(active_state(c, "vigild.service"), "active", "{installed}");
    let enabled = |unit: &str| {
        let out = c.sh(&format!("systemctl is-enabled {unit}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(enabled("vigild.service"), "enabled");
    assert_eq!(enabled("vigild.socket"), "disabled");
    assert!(
        !Path::new("/usr/bin/vigild").exists(),
        "dpkg -i inside wrote the host's /usr"
    );
    write_config(c, &config(60));
    c.ok("systemctl restart vigild.service");
    std::fs::remove_dir_all(&stage).unwrap();
}

/// Replaces the config the way the docs say (write another file, rename it over), from the
/// host: the container's `/etc` is the skeleton's.
fn write_config(c: &Container, text: &str) {
    let etc = c.root().join("etc/vigild");
    std::fs::write(etc.join("vigild.toml.new"), text).unwrap();
    std::fs::rename(etc.join("vigild.toml.new"), etc.join("vigild.toml")).unwrap();
}

/// One journal entry of the unit: its message and priority.
#[derive(Debug, Clone)]
struct Entry {
    message: String,
    priority: u8,
    /// Who wrote it: `vigild` or `systemd` (PID 1 about the unit).
    ident: String,
}

/// Every journal entry about vigild (`-u vigild.service`, vigild's own lines and systemd's
/// about the unit), oldest first, from `journalctl -o json`.
fn journal(c: &Container) -> Vec<Entry> {
    let out = c.ok("journalctl -u vigild.service -o json --no-pager");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Entry {
            message: v["MESSAGE"].as_str().unwrap_or_default().to_string(),
            priority: v["PRIORITY"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(255),
            ident: v["SYSLOG_IDENTIFIER"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

/// Waits for a journal entry after the first `after` matching `pred`.
#[track_caller]
fn wait_entry(c: &Container, after: usize, what: &str, pred: impl Fn(&Entry) -> bool) -> Entry {
    wait_until(Duration::from_secs(20), what, || {
        let all = journal(c);
        all.iter()
            .skip(after)
            .find(|e| pred(e))
            .cloned()
            .ok_or_else(|| {
                let tail: Vec<String> = all
                    .iter()
                    .skip(after)
                    .map(|e| format!("<{}> {}", e.priority, e.message))
                    .collect();
                format!("journal since the step:\n{}", tail.join("\n"))
            })
    })
}

/// `systemctl show -p ...` of a unit as `key -> value`.
fn show(c: &Container, unit: &str, props: &[&str]) -> HashMap<String, String> {
    let props: Vec<String> = props.iter().map(|p| format!("-p {p}")).collect();
    c.ok(&format!("systemctl show {} {unit}", props.join(" ")))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn active_state(c: &Container, unit: &str) -> String {
    let out = c.sh(&format!("systemctl is-active {unit}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main_pid(c: &Container) -> i32 {
    show(c, "vigild.service", &["MainPID"])["MainPID"]
        .parse()
        .unwrap()
}

/// A client session on the container's loopback (a socket in its network namespace).
fn connect(c: &Container) -> redis::Connection {
    c.in_netns(|| {
        redis::Client::open(format!("redis://127.0.0.1:{PORT}/"))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
    })
    .expect("connect to vigild inside the container")
}

/// `CLIENT INFO` of a connection, as `key -> value`.
fn client_info(con: &mut redis::Connection) -> HashMap<String, String> {
    let text: String = redis::cmd("CLIENT").arg("INFO").query(con).unwrap();
    fields(&text)
}

/// Connects (inside the container's network), sends PING and reads the reply; `Err` says what
/// went wrong (`refused` for ECONNREFUSED).
fn ping_raw(limit: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "refused".to_string()
        } else {
            format!("connect: {e}")
        }
    })?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(b"PING\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!("reply {:?}", String::from_utf8_lossy(&buf)))
    }
}

/// One check of the sequence, run on the shared container.
type Check = fn(&Container);

#[test]
fn vigild_under_a_booted_systemd() {
    if let Err(why) = container::probe() {
        util::skip(&why, "run as root; scripts/test installs systemd-container");
        return;
    }
    let started = Instant::now();
    let c = Container::boot("boot");
    let leftovers = Leftovers::of(&c);
    install_vigild(&c);
    let steps: &[(&str, Check)] = &[
        ("start", start),
        ("reload", reload),
        ("bad reload", bad_reload),
        ("priorities", priorities),
        ("sandbox", sandbox),
        ("watchdog", watchdog),
        ("socket activation", socket_activation),
        ("stop", stop),
        ("port taken", port_taken),
        ("dpkg inside", dpkg_inside),
        ("upgrade and remove", upgrade_and_remove),
    ];
    // A failing check still powers the container off and is then checked for leftovers, before
    // its panic goes on.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for (name, step) in steps {
            let t = Instant::now();
            step(&c);
            eprintln!("check {name}: passed in {:.1} s", t.elapsed().as_secs_f64());
        }
    }));
    drop(c);
    leftovers.assert_none();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!(
        "booted-systemd test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

/// `systemctl start vigild` reaches `active (running)` (Type=notify: READY=1 arrived), with
/// `STATUS=` live/peak/reaped, and answers PING through redis-cli and our own client.
fn start(c: &Container) {
    c.ok("systemctl start vigild.service");
    assert_eq!(active_state(c, "vigild.service"), "active");
    let p = show(c, "vigild.service", &["SubState", "StatusText", "MainPID"]);
    assert_eq!(p["SubState"], "running", "{p:?}");
    let status = fields(&p["StatusText"]);
    for key in ["live", "peak", "reaped"] {
        assert!(status.contains_key(key), "StatusText {p:?} has no {key}");
    }
    eprintln!("start: StatusText={}", p["StatusText"]);
    let pong = c.ok(&format!("redis-cli -p {PORT} PING"));
    assert_eq!(pong.trim(), "PONG");
    let mut con = connect(c);
    let reply: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(reply, "PONG");
    // STATUS= follows the sessions (sent with every stats line, SIGUSR1 asks for one).
    c.ok(&format!("kill -USR1 {}", main_pid(c)));
    let live = wait_until(Duration::from_secs(10), "STATUS= with live=1", || {
        let text = show(c, "vigild.service", &["StatusText"])["StatusText"].clone();
        if fields(&text).get("live").map(String::as_str) == Some("1") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    eprintln!("start: with one client, StatusText={live}");
}

/// `systemctl reload` with a changed keepalive: the journal says `reloaded` and the live
/// session's socket has the new idle time (CLIENT INFO reads it back from the kernel).
fn reload(c: &Container) {
    let mut con = connect(c);
    assert_eq!(client_info(&mut con)["ka-idle"], "60");
    let after = journal(c).len();
    write_config(c, &config(30));
    let t = Instant::now();
    c.ok("systemctl reload vigild.service");
    let reloaded = wait_entry(c, after, "`reloaded` in the journal", |e| {
        e.message.contains("reloaded /etc/vigild/vigild.toml")
    });
    let applied = wait_entry(c, after, "the keepalive applied line", |e| {
        e.message.contains("applied to ")
    });
    let info = client_info(&mut con);
    assert_eq!(info["ka-idle"], "30", "{info:?}");
    eprintln!(
        "reload: in {:.2} s: <{}> {:?}; <{}> {:?}; live session now ka-idle={} user-timeout-ms={}",
        t.elapsed().as_secs_f64(),
        reloaded.priority,
        reloaded.message,
        applied.priority,
        applied.message,
        info["ka-idle"],
        info["user-timeout-ms"]
    );
    assert_eq!(reloaded.priority, 6, "{reloaded:?}");
    assert_eq!(active_state(c, "vigild.service"), "active");
}

/// A bad config on reload: the running config stays (the session keeps ka-idle=30, the service
/// stays active) and the journal says so at warning (`journalctl -p warning`).
fn bad_reload(c: &Container) {
    let mut con = connect(c);
    let after = journal(c).len();
    write_config(c, "[keepalive]\nidle = \"soon\"\n");
    c.ok("systemctl reload vigild.service");
    let refused = wait_entry(c, after, "the refused reload", |e| {
        e.message.contains("keeping the running config")
    });
    eprintln!("bad reload: <{}> {:?}", refused.priority, refused.message);
    assert_eq!(
        refused.priority, 4,
        "a refused reload is a warning: {refused:?}"
    );
    let seen = c.ok("journalctl -u vigild.service -p warning -o cat --no-pager");
    assert!(seen.contains(&refused.message), "-p warning: {seen}");
    assert_eq!(client_info(&mut con)["ka-idle"], "30");
    assert_eq!(active_state(c, "vigild.service"), "active");
    write_config(c, &config(60));
    c.ok("systemctl reload vigild.service");
}

/// Each line at its journald priority (`journalctl -o json`, field `PRIORITY`): a config
/// warning at 4, info at 6, reap lines at their documented levels (a vanished or misbehaving
/// peer, here `idle-timeout`, at 4; `reset` at 6; an ordinary `quit` at 7, debug).
fn priorities(c: &Container) {
    let after = journal(c).len();
    write_config(
        c,
        &format!(
            "{}\n[session]\nidle_timeout = \"1s\"\n",
            config(60)
                .replace("level = \"info\"", "level = \"debug\"")
                .replace("probes = 6", "probes = 6\nuser_timeout = \"2s\"")
        ),
    );
    c.ok("systemctl reload vigild.service");
    let warning = wait_entry(c, after, "the user_timeout warning", |e| {
        e.message.contains("config: keepalive.user_timeout = ")
    });
    let reloaded = wait_entry(c, after, "`reloaded`", |e| {
        e.message.contains("reloaded /etc/vigild/vigild.toml")
    });
    // One session idles into the timeout, one resets, one says QUIT.
    let (idle, reset, quit) = c.in_netns(|| {
        let idle = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        let reset = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        let mut quit = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
        let peers = (
            idle.local_addr().unwrap(),
            reset.local_addr().unwrap(),
            quit.local_addr().unwrap(),
        );
        quit.write_all(b"QUIT\r\n").unwrap();
        let mut buf = [0u8; 5];
        let _ = quit.read_exact(&mut buf);
        // A PING first, so the session is surely accepted before the RST arrives.
        let mut r = &reset;
        r.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 7];
        let _ = r.read_exact(&mut buf);
        socket2::SockRef::from(&reset)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reset);
        std::thread::sleep(Duration::from_millis(1500));
        drop(idle);
        peers
    });
    let reap_of = |peer: std::net::SocketAddr, reason: &'static str| {
        let needle = format!(" peer={peer} ");
        wait_entry(
            c,
            after,
            &format!("the {reason} reap of {peer}"),
            move |e| {
                e.message.contains("reap ")
                    && e.message.contains(&needle)
                    && e.message.contains(&format!("reason={reason} "))
            },
        )
    };
    let idle_reap = reap_of(idle, "idle-timeout");
    let reset_reap = reap_of(reset, "reset");
    let quit_reap = reap_of(quit, "quit");
    for (e, want) in [
        (&warning, 4),
        (&reloaded, 6),
        (&idle_reap, 4),
        (&reset_reap, 6),
        (&quit_reap, 7),
    ] {
        eprintln!("priorities: <{}> {:?}", e.priority, e.message);
        assert_eq!(e.priority, want, "{e:?}");
        assert!(!has_level_text(&e.message), "level text doubled: {e:?}");
    }
    let seen = c.ok("journalctl -u vigild.service -p warning -o cat --no-pager");
    for e in [&warning, &idle_reap] {
        assert!(seen.contains(&e.message), "-p warning lacks {e:?}");
    }
    assert!(
        !seen.contains(&reset_reap.message),
        "-p warning has {reset_reap:?}"
    );
    // The same warning from the CLI itself: `ExecStartPre=vigild --check-config` on a restart.
    let after = journal(c).len();
    c.ok("systemctl restart vigild.service");
    let cli = wait_entry(c, after, "--check-config's warning", |e| {
        e.ident == "vigild"
            && e.message.contains("keepalive.user_timeout = 2s is below")
            && !e.message.contains("config: keepalive")
    });
    eprintln!(
        "priorities: --check-config: <{}> {:?}",
        cli.priority, cli.message
    );
    assert_eq!(cli.priority, 4, "{cli:?}");
    write_config(c, &config(60));
    c.ok("systemctl restart vigild.service");
}

/// Whether a message starts with a level word, as the logger writes for a terminal.
fn has_level_text(message: &str) -> bool {
    ["TRACE ", "DEBUG ", "INFO  ", "WARN  ", "ERROR "]
        .iter()
        .any(|l| message.starts_with(l))
}

/// The sandbox holds: a dynamic user, /etc read-only and /home out of reach in the service's
/// own mount namespace (tried as its user and as root), and `systemd-analyze security` <= 2.0.
fn sandbox(c: &Container) {
    let pid = main_pid(c);
    let p = show(c, "vigild.service", &["DynamicUser", "User"]);
    assert_eq!(p["DynamicUser"], "yes", "{p:?}");
    let status = c.ok(&format!("cat /proc/{pid}/status"));
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("Uid: in /proc/PID/status");
    // systemd's dynamic users are 61184..=65519.
    assert!((61184..=65519).contains(&uid), "vigild runs as uid {uid}");
    for (who, path) in [
        (format!("-S {uid} -G {uid}"), "/etc/vigild/probe"),
        (format!("-S {uid} -G {uid}"), "/home/probe"),
        (String::new(), "/etc/probe"),
        (String::new(), "/home/probe"),
    ] {
        let out = c.sh(&format!(
            "nsenter -t {pid} -m {who} sh -c 'echo x > {path}'"
        ));
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(!out.status.success(), "wrote {path} as {who:?}");
        // As root, only the service's own mounts can refuse (no permission check would).
        if who.is_empty() {
            assert!(err.contains("Read-only file system"), "{path}: {err}");
        }
        eprintln!(
            "sandbox: writing {path} as {}: {err}",
            if who.is_empty() {
                "root"
            } else {
                "vigild's user"
            }
        );
    }
    let security = c.ok("systemd-analyze security vigild.service --no-pager 2>&1 | tail -n 1");
    let score: f64 = security
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no score in {security:?}"));
    eprintln!("sandbox: uid={uid}; {}", security.trim());
    assert!(score <= 2.0, "{security}");
}

/// The watchdog: with `WatchdogSec=3s` (a drop-in), a stopped loop (SIGSTOP) is killed with
/// SIGABRT and `Restart=on-failure` starts a new vigild.
fn watchdog(c: &Container) {
    c.ok("mkdir -p /run/systemd/system/vigild.service.d
        printf '[Service]\\nWatchdogSec=3s\\n' > /run/systemd/system/vigild.service.d/watchdog.conf
        systemctl daemon-reload && systemctl restart vigild.service");
    let old = main_pid(c);
    let restarts = show(c, "vigild.service", &["NRestarts"])["NRestarts"].clone();
    let after = journal(c).len();
    let t = Instant::now();
    c.ok(&format!("kill -STOP {old}"));
    let timeout = wait_entry(c, after, "the watchdog timeout", |e| {
        e.message.contains("Watchdog timeout")
    });
    let killed_at = t.elapsed();
    let abort = wait_entry(c, after, "the SIGABRT exit", |e| e.message.contains("ABRT"));
    let new = wait_until(Duration::from_secs(20), "a restarted vigild", || {
        let p = show(
            c,
            "vigild.service",
            &["MainPID", "ActiveState", "NRestarts"],
        );
        let pid: i32 = p["MainPID"].parse().unwrap_or(0);
        if p["ActiveState"] == "active" && pid != 0 && pid != old && p["NRestarts"] != restarts {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    });
    eprintln!(
        "watchdog: SIGSTOP pid {old}; {:?} after {:.1} s; {:?}; active again after {:.1} s as pid {} (NRestarts {restarts} -> {})",
        timeout.message,
        killed_at.as_secs_f64(),
        abort.message,
        t.elapsed().as_secs_f64(),
        new["MainPID"],
        new["NRestarts"]
    );
    c.ok("rm -r /run/systemd/system/vigild.service.d && systemctl daemon-reload");
    c.ok(&format!("redis-cli -p {PORT} PING"));
}

/// Socket activation: with the service stopped, the first connection starts it; connections
/// made while the service restarts wait in the socket's backlog and are all served (none
/// refused).
fn socket_activation(c: &Container) {
    // As `systemctl enable --now vigild.socket` does it: the socket takes the port over from
    // the service, which nothing has started (installing enables neither).
    c.ok("systemctl stop vigild.service && systemctl start vigild.socket");
    assert_eq!(active_state(c, "vigild.socket"), "active");
    assert_eq!(active_state(c, "vigild.service"), "inactive");
    let after = journal(c).len();
    let t = Instant::now();
    let first = c.in_netns(|| ping_raw(Duration::from_secs(10)));
    assert_eq!(first, Ok(()), "the first connection");
    eprintln!(
        "socket activation: stopped service started by the first connection, PONG in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(active_state(c, "vigild.service"), "active");
    let passed = wait_entry(c, after, "the listener passed by systemd", |e| {
        e.message.contains("socket activation: listener fd=3")
    });
    eprintln!(
        "socket activation: <{}> {:?}",
        passed.priority, passed.message
    );
    // Connections waiting in the backlog while no vigild runs at all: the loop is stopped
    // (SIGSTOP), clients connect and send PING (the kernel completes their handshakes on
    // systemd's socket), the stopped vigild is killed and Restart=on-failure starts another
    // (after RestartSec=2s), which must serve every one of them.
    let stopped = main_pid(c);
    c.ok(&format!("kill -STOP {stopped}"));
    let waiting = c.in_netns(|| {
        (0..20)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", PORT)).map_err(|e| e.to_string())?;
                s.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
                Ok(s)
            })
            .collect::<Vec<Result<TcpStream, String>>>()
    });
    let t = Instant::now();
    c.ok(&format!("kill -KILL {stopped}"));
    let mut served = 0;
    let mut failures = Vec::new();
    for s in waiting {
        let result = s.and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).map_err(|e| e.to_string())?;
            if &buf == b"+PONG\r\n" {
                Ok(())
            } else {
                Err(format!("{:?}", String::from_utf8_lossy(&buf)))
            }
        });
        match result {
            Ok(()) => served += 1,
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "socket activation: 20 clients queued while pid {stopped} was stopped, then killed: {served} served by pid {} after {:.2} s, failures: {failures:?}",
        main_pid(c),
        t.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:?}");
    // Clients that keep connecting while the service restarts.
    let pid = c.pid1();
    let clients = std::thread::spawn(move || {
        util::netns::enter_netns_of(pid).expect("setns");
        let mut handles = Vec::new();
        for _ in 0..40 {
            handles.push(std::thread::spawn(|| {
                (Instant::now(), ping_raw(Duration::from_secs(15)))
            }));
            std::thread::sleep(Duration::from_millis(50));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Instant::now(), Err("panicked".into())))
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(200));
    let old = main_pid(c);
    let t = Instant::now();
    c.ok("systemctl restart vigild.service");
    let restart = t.elapsed();
    let results = clients.join().unwrap();
    let failed: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    let during = results
        .iter()
        .filter(|(at, _)| *at >= t && *at <= t + restart)
        .count();
    eprintln!(
        "socket activation: restart (pid {old} -> {}) took {:.2} s; {} of {} clients got PONG ({during} connected during the restart), failures: {failed:?}",
        main_pid(c),
        restart.as_secs_f64(),
        results.len() - failed.len(),
        results.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
}

/// `systemctl stop` logs the final statistics and vigild exits 0 within TimeoutStopSec.
fn stop(c: &Container) {
    let _held = connect(c);
    let after = journal(c).len();
    let t = Instant::now();
    c.ok("systemctl stop vigild.socket vigild.service");
    let took = t.elapsed();
    let last = wait_entry(c, after, "the final statistics", |e| {
        e.message.contains("; final ")
    });
    let p = show(
        c,
        "vigild.service",
        &[
            "Result",
            "ExecMainCode",
            "ExecMainStatus",
            "TimeoutStopUSec",
        ],
    );
    eprintln!(
        "stop: in {:.2} s: <{}> {:?}; {p:?}",
        took.as_secs_f64(),
        last.priority,
        last.message
    );
    let done = wait_entry(c, after, "systemd's word on the stop", |e| {
        e.ident == "systemd"
            && e.message
                .contains("vigild.service: Deactivated successfully")
    });
    eprintln!("stop: <{}> {:?}", done.priority, done.message);
    assert_eq!(p["Result"], "success", "{p:?}");
    assert_eq!(p["ExecMainStatus"], "0", "{p:?}");
    assert!(took < Duration::from_secs(30), "stop took {took:?}");
    assert_eq!(active_state(c, "vigild.service"), "inactive");
}

/// The port is taken: vigild's own fatal line reaches the journal at priority 3
/// (`journalctl -p err` shows it) and the unit fails cleanly (a failed start, exit status 1, not a hang or a crash).
fn port_taken(c: &Container) {
    c.ok(&format!(
        "systemctl mask --runtime vigild.socket
        systemd-run --unit=squatter python3 -c 'import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"127.0.0.1\", {PORT}))
s.listen()
time.sleep(120)'"
    ));
    wait_until(Duration::from_secs(10), "the squatter to listen", || {
        if c.in_netns(|| TcpStream::connect(("127.0.0.1", PORT)).is_ok()) {
            Ok(())
        } else {
            Err(c.ok("systemctl status squatter --no-pager; journalctl -u squatter --no-pager"))
        }
    });
    let after = journal(c).len();
    let out = c.sh("systemctl start vigild.service");
    assert!(!out.status.success(), "vigild started on a taken port");
    let fatal = wait_entry(c, after, "vigild's fatal line", |e| {
        e.ident == "vigild" && e.message.contains("cannot listen on 127.0.0.1:")
    });
    let p = show(
        c,
        "vigild.service",
        &[
            "Result",
            "ExecMainCode",
            "ExecMainStatus",
            "ActiveState",
            "SubState",
        ],
    );
    let err = c.ok("journalctl -u vigild.service -p err -o cat --no-pager");
    eprintln!(
        "port taken: <{}> {:?}; {p:?}; in `-p err`: {}",
        fatal.priority,
        fatal.message,
        err.contains("cannot listen on")
    );
    assert_eq!(p["Result"], "exit-code", "{p:?}");
    // Exited (CLD_EXITED = 1) with a status of its own: no crash, no signal.
    assert_eq!(p["ExecMainCode"], "1", "{p:?}");
    assert_ne!(p["ExecMainStatus"], "0", "{p:?}");
    assert_eq!(fatal.priority, 3, "{fatal:?}");
    assert!(err.contains(&fatal.message), "-p err: {err}");
    c.ok("systemctl stop vigild.service squatter.service
        systemctl reset-failed vigild.service
        systemctl unmask --runtime vigild.socket");
}

/// The path the package will take: `dpkg -i` inside the container of a trivial package built
/// here (`dpkg-deb`) lands its file in the overlay (visible inside, absent from the host's
/// `/usr`), and `dpkg -r` removes it.
fn dpkg_inside(c: &Container) {
    let stage = c.root().join("probe-deb");
    let pkg = stage.join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/vigild-probe")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: vigild-probe\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: vigild tests <tests@invalid>\nDescription: probe for dpkg inside\n",
    )
    .unwrap();
    std::fs::write(pkg.join("usr/share/vigild-probe/hello"), "hello\n").unwrap();
    let built = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&pkg)
        .arg(stage.join("vigild-probe.deb"))
        .output()
        .expect("dpkg-deb");
    assert!(built.status.success(), "{built:?}");
    let t = Instant::now();
    c.ok("dpkg -i /probe-deb/vigild-probe.deb");
    assert_eq!(c.ok("cat /usr/share/vigild-probe/hello"), "hello\n");
    assert!(
        !Path::new("/usr/share/vigild-probe").exists(),
        "dpkg -i inside wrote the host's /usr"
    );
    c.ok("dpkg -r vigild-probe");
    assert!(!c
        .sh("test -e /usr/share/vigild-probe/hello")
        .status
        .success());
    eprintln!(
        "dpkg inside: installed, read back inside, absent on the host, removed, in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&stage).unwrap();
}

/// The package upgrades and removes cleanly inside: `dpkg -i` again (an upgrade in place)
/// keeps the edited config and restarts the running service; `dpkg -r` stops it and removes
/// the binary and units but keeps the conffile; `dpkg --purge` removes that too.
fn upgrade_and_remove(c: &Container) {
    c.ok("systemctl start vigild.service");
    let before = main_pid(c);
    let stage = stage_package(c);
    let edited = config(45);
    write_config(c, &edited);
    let upgraded = c.ok("dpkg -i /vigild-stage/vigild.deb 2>&1");
    assert_eq!(
        std::fs::read_to_string(c.root().join("etc/vigild/vigild.toml")).unwrap(),
        edited,
        "the upgrade replaced the edited config: {upgraded}"
    );
    assert_eq!(active_state(c, "vigild.service"), "active");
    let after = main_pid(c);
    assert_ne!(
        before, after,
        "the upgrade did not restart vigild: {upgraded}"
    );
    let mut con = connect(c);
    assert_eq!(client_info(&mut con)["ka-idle"], "45");
    drop(con);
    eprintln!(
        "upgrade: edited config kept, pid {before} -> {after}, the new one reads it (ka-idle=45)"
    );
    let removed = c.ok("dpkg -r vigild 2>&1");
    assert_eq!(active_state(c, "vigild.service"), "inactive", "{removed}");
    for gone in [
        "/usr/bin/vigild",
        "/usr/lib/systemd/system/vigild.service",
        "/usr/lib/systemd/system/vigild.socket",
    ] {
        assert!(
            !c.sh(&format!("test -e {gone}")).status.success(),
            "{gone} left after dpkg -r"
        );
    }
    assert!(
        c.root().join("etc/vigild/vigild.toml").exists(),
        "dpkg -r removed the conffile"
    );
    c.ok("dpkg --purge vigild");
    assert!(
        !c.root().join("etc/vigild/vigild.toml").exists(),
        "dpkg --purge kept the conffile"
    );
    eprintln!(
        "remove: {}; purge removed /etc/vigild/vigild.toml",
        removed.trim().replace('\n', " | ")
    );
    std::fs::remove_dir_all(&stage).unwrap();
}

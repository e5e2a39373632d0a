//! systemd integration, with the test acting as the service manager: the `sd_notify`
//! protocol over a real `NOTIFY_SOCKET` (READY, STATUS, WATCHDOG, RELOADING, STOPPING, in
//! order), socket activation with a listener passed as fd 3, journald log priorities, and the
//! unit files checked by `systemd-analyze` (through `systemd/check-units`).

mod util;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use util::{complete_config, fields, vigild_bin, wait_until, Daemon, TempDir};

/// Socket activation as systemd does it, with the socket given as stdin: `sh` moves it to
/// fd 3, puts its own pid (which `exec` hands to vigild) in `LISTEN_PID`, and execs vigild.
/// (`Command` has no safe way to place a descriptor at fd 3; stdin it can.)
const ACTIVATE: &str = r#"exec 3<&0 0</dev/null; export LISTEN_PID=$$; exec "$@""#;

/// One notification datagram and when it arrived.
#[derive(Clone, Debug)]
struct Note {
    at: Instant,
    text: String,
}

impl Note {
    fn has(&self, assignment: &str) -> bool {
        self.text.lines().any(|l| l == assignment)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The service manager's end of `NOTIFY_SOCKET`: a datagram socket in a temporary directory
/// and a thread that records every message.
struct Manager {
    path: std::path::PathBuf,
    notes: Arc<Mutex<Vec<Note>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl Manager {
    fn new() -> Manager {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (notes.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().unwrap().push(Note {
                        at: Instant::now(),
                        text,
                    });
                }
            }
        });
        Manager {
            path,
            notes,
            stop,
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap().clone()
    }

    /// Waits for the first message at index >= `from` that satisfies `pred`; returns its index.
    fn wait(&self, from: usize, timeout: Duration, pred: impl Fn(&Note) -> bool) -> usize {
        wait_until(timeout, &format!("a notification after #{from}"), || {
            let notes = self.notes();
            match notes.iter().skip(from).position(&pred) {
                Some(i) => Ok(from + i),
                None => Err(format!("{notes:#?}")),
            }
        })
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn notifies_ready_status_watchdog_reloading_and_stopping_in_order() {
    let manager = Manager::new();
    let mut d = Daemon::start_with("", |cmd| {
        cmd.env("NOTIFY_SOCKET", &manager.path)
            .env("WATCHDOG_USEC", "400000");
    });
    assert!(
        d.log
            .wait_for(WAIT, |l| l.contains("watchdog ping every 200ms"))
            .is_some(),
        "{}",
        d.log.text()
    );

    // READY=1 comes first, with the status of an empty daemon.
    let ready = manager.wait(0, WAIT, |n| n.has("READY=1"));
    assert_eq!(
        ready,
        0,
        "READY=1 is the first message: {:#?}",
        manager.notes()
    );
    let status = manager.notes()[0].value("STATUS").map(fields).unwrap();
    assert_eq!(status["live"], "0");
    assert_eq!(status["reaped"], "0");

    // Watchdog pings at half of WATCHDOG_USEC, from the loop's own timer.
    let fifth = (0..5).fold(ready, |from, _| {
        manager.wait(from + 1, WAIT, |n| n.has("WATCHDOG=1"))
    });
    let pings: Vec<Instant> = manager.notes()[..=fifth]
        .iter()
        .filter(|n| n.has("WATCHDOG=1"))
        .map(|n| n.at)
        .collect();
    assert_eq!(pings.len(), 5);
    let mean = (pings[4] - pings[0]) / 4;
    assert!(
        mean >= Duration::from_millis(170) && mean <= Duration::from_millis(320),
        "pings every {mean:?}, expected about 200ms"
    );

    // STATUS follows the sessions: one live, then one reaped as closed.
    let mut con = d.redis();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let live = manager.wait(fifth, WAIT, |n| {
        n.value("STATUS").is_some_and(|s| fields(s)["live"] == "1")
    });
    assert!(
        manager.notes()[live].has("WATCHDOG=1"),
        "the status rides on a watchdog ping"
    );
    drop(con);
    let reaped = manager.wait(live + 1, WAIT, |n| {
        n.value("STATUS").is_some_and(|s| {
            let f = fields(s);
            f["live"] == "0"
                && f["reaped"] == "1"
                && f.get("reap.closed").map(|v| &**v) == Some("1")
        })
    });
    // The statistics line says the same.
    let stats = d.stats();
    assert_eq!((&*stats["live"], &*stats["reaped"]), ("0", "1"));

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again.
    d.signal(libc::SIGHUP);
    let reloading = manager.wait(reaped + 1, WAIT, |n| n.has("RELOADING=1"));
    let usec: u64 = manager.notes()[reloading]
        .value("MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec > 0);
    let ready_again = manager.wait(reloading + 1, WAIT, |n| n.has("READY=1"));
    assert!(d
        .log
        .wait_for(WAIT, |l| l.contains("INFO  reloaded "))
        .is_some());
    // Pings go on after the reload.
    manager.wait(ready_again + 1, WAIT, |n| n.has("WATCHDOG=1"));

    // SIGTERM: STOPPING=1, then nothing more, and a clean exit.
    d.signal(libc::SIGTERM);
    let stopping = manager.wait(ready_again + 1, WAIT, |n| n.has("STOPPING=1"));
    let status = d.wait_exit(WAIT).expect("vigild exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // Absence is the point: a message after STOPPING=1 would have 100 ms to arrive.
    std::thread::sleep(Duration::from_millis(100));
    let notes = manager.notes();
    assert_eq!(
        stopping,
        notes.len() - 1,
        "STOPPING=1 is the last message: {notes:#?}"
    );
    assert!(ready < reloading && reloading < ready_again && ready_again < stopping);
}

#[test]
fn watchdog_meant_for_another_process_is_left_alone() {
    let manager = Manager::new();
    let mut d = Daemon::start_with("", |cmd| {
        cmd.env("NOTIFY_SOCKET", &manager.path)
            .env("WATCHDOG_USEC", "100000")
            // The pid of a process that is not vigild (its parent: this test).
            .env("WATCHDOG_PID", std::process::id().to_string());
    });
    manager.wait(0, WAIT, |n| n.has("READY=1"));
    // Absence is the point: four watchdog intervals in which no WATCHDOG=1 may come.
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        manager.notes().iter().all(|n| !n.has("WATCHDOG=1")),
        "{:#?}",
        manager.notes()
    );
    d.signal(libc::SIGTERM);
    manager.wait(0, WAIT, |n| n.has("STOPPING=1"));
    assert!(d.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[test]
fn a_missing_notify_socket_does_not_stop_the_daemon() {
    let dir = TempDir::new("nonotify");
    let mut d = Daemon::start_with("", |cmd| {
        cmd.env("NOTIFY_SOCKET", dir.path().join("nobody-listens"))
            .env("WATCHDOG_USEC", "200000");
    });
    let mut con = d.redis();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert!(d
        .log
        .wait_for(WAIT, |l| l
            .contains("WARN  cannot notify the service manager"))
        .is_some());
    // Warned once, not once per ping. Absence is the point: 300 ms spans a few watchdog pings,
    // each a chance for a second warning.
    std::thread::sleep(Duration::from_millis(300));
    let warnings = d
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("cannot notify"))
        .count();
    assert_eq!(warnings, 1, "{}", d.log.text());
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[test]
fn serves_a_socket_activated_listener_passed_as_fd_3() {
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let passed_addr = passed.local_addr().unwrap();
    // server.listen names an address this test holds: binding it would fail, so a successful
    // start proves it was ignored.
    let occupied = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!(
        "[server]\nlisten = [\"{}\"]\n",
        occupied.local_addr().unwrap()
    );
    let mut d = Daemon::start_wrapped(&config, &["/bin/sh", "-c", ACTIVATE, "sh"], |cmd| {
        cmd.env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "vigild")
            // Moved: only vigild holds the listener from now on.
            .stdin(OwnedFd::from(passed));
    });

    let line = d
        .log
        .wait_for(Duration::ZERO, |l| l.contains("socket activation: "))
        .unwrap_or_else(|| panic!("no socket activation line:\n{}", d.log.text()));
    let f = fields(&line);
    assert_eq!(f["fd"], "3");
    assert_eq!(f["name"], "vigild");
    assert_eq!(f["addr"], passed_addr.to_string());
    assert_eq!(d.addr, passed_addr, "it serves on the passed listener");

    let mut con = d.redis();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");

    // A reload does not replace the passed listener with server.listen.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr: SocketAddr = other.local_addr().unwrap();
    drop(other);
    std::fs::write(
        &d.config_path,
        complete_config(&format!("[server]\nlisten = [\"{other_addr}\"]\n")),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.log
            .wait_for(WAIT, |l| l.contains("server.listen ignored"))
            .is_some(),
        "{}",
        d.log.text()
    );
    assert!(d.log.wait_for(WAIT, |l| l.contains("reloaded ")).is_some());
    let mut con2 = d.redis();
    let pong: String = redis::cmd("PING").query(&mut con2).unwrap();
    assert_eq!(pong, "PONG");
    assert!(
        std::net::TcpStream::connect(other_addr).is_err(),
        "nothing listens on the new server.listen"
    );
    drop(occupied);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[test]
fn refuses_a_passed_descriptor_that_is_not_a_tcp_listener() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("activation-udp");
    let config_path = dir.path().join("vigild.toml");
    std::fs::write(&config_path, complete_config("")).unwrap();
    let out = Command::new("/bin/sh")
        .args(["-c", ACTIVATE, "sh", vigild_bin(), "--config"])
        .arg(&config_path)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("RUST_LOG")
        .stdin(OwnedFd::from(udp))
        .output()
        .expect("run vigild");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("socket activation: descriptor 3 is a datagram (UDP)")
            && stderr.contains("not a listening TCP socket"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn under_journald_lines_carry_syslog_priorities_and_no_timestamp() {
    // JOURNAL_STREAM names stderr's device and inode, as systemd sets it. A config warning
    // shows the <4> lines.
    let wrapper =
        r#"export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$@""#.to_string();
    let config = "[keepalive]\nuser_timeout = \"2s\"\n";
    let mut d = Daemon::start_wrapped(config, &["/bin/sh", "-c", &wrapper, "sh"], |_| {});
    let mut con = d.redis();
    let _: String = redis::cmd("PING").query(&mut con).unwrap();
    drop(con);
    // (`Daemon::wait_reap` looks for ` reap `, after a level word.)
    let reap = d.log.wait_for(WAIT, |l| {
        l.split_once('>')
            .is_some_and(|(_, m)| m.starts_with("reap ") && m.contains(" id=1 "))
    });
    assert!(reap.is_some(), "{}", d.log.text());
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).is_some_and(|s| s.success()));
    let lines = d.log.lines();
    let mut seen = Vec::new();
    for line in &lines {
        let (prio, rest) = line.split_at(line.find('>').map_or(0, |i| i + 1));
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&prio),
            "line without its priority: {line:?}"
        );
        // Issue 14: the priority says the level, so the message does not repeat it.
        let first = rest.split_whitespace().next().unwrap_or("");
        assert!(
            !["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&first),
            "level written twice: {line:?}"
        );
        seen.push(prio);
    }
    assert!(seen.contains(&"<6>") && seen.contains(&"<7>"), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("<6>ready: ")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("<4>config: keepalive.user_timeout = 2s is below")));
    // The timer summary, once.
    let summary = lines
        .iter()
        .filter(|l| l.starts_with("<6>detection: an idle dead peer is reaped after 1m10s"))
        .count();
    assert_eq!(summary, 1, "{lines:#?}");
}

#[test]
fn a_journal_stream_that_is_not_stderr_changes_nothing() {
    let mut d = Daemon::start_with("", |cmd| {
        cmd.env("JOURNAL_STREAM", "0:0");
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).is_some_and(|s| s.success()));
    for line in d.log.lines() {
        let ts = line.split_whitespace().next().unwrap_or("");
        assert!(
            ts.len() > 10 && ts.as_bytes()[0].is_ascii_digit() && !line.starts_with('<'),
            "expected a timestamped line: {line:?}"
        );
    }
}

/// Runs `check-units` from `dir` against the built binary; returns (success, output).
fn check_units(dir: &Path) -> (bool, String) {
    let out = Command::new(dir.join("check-units"))
        .arg(vigild_bin())
        .output()
        .expect("run systemd/check-units (needs /bin/sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unit_files_pass_systemd_analyze_and_the_check_catches_regressions() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let (ok, text) = check_units(&shipped);
    assert!(
        ok,
        "systemd/check-units failed (Debian: apt-get install systemd):\n{text}"
    );
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    assert!(score <= 2.0, "{text}");

    // The same check on broken copies must fail: an unknown key, and lost hardening.
    let dir = TempDir::new("units");
    for f in [
        "check-units",
        "vigild.service",
        "vigild.socket",
        "vigild@.service",
    ] {
        std::fs::copy(shipped.join(f), dir.path().join(f)).unwrap();
    }
    let unit = std::fs::read_to_string(shipped.join("vigild.service")).unwrap();
    let service = dir.path().join("vigild.service");
    std::fs::write(
        &service,
        unit.replace("[Service]\n", "[Service]\nRestartt=always\n"),
    )
    .unwrap();
    let (ok, text) = check_units(dir.path());
    assert!(!ok && text.contains("Restartt"), "{text}");

    let weaken = |unit: &str| -> String {
        unit.lines()
            .filter(|l| {
                ![
                    "DynamicUser=",
                    "CapabilityBoundingSet=",
                    "SystemCallFilter=",
                    "PrivateUsers=",
                    "ProtectSystem=",
                    "RestrictNamespaces=",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    // The template alone loses hardening: it no longer follows the plain unit.
    let template = std::fs::read_to_string(shipped.join("vigild@.service")).unwrap();
    std::fs::write(&service, &unit).unwrap();
    std::fs::write(dir.path().join("vigild@.service"), weaken(&template)).unwrap();
    let (ok, text) = check_units(dir.path());
    assert!(
        !ok && text.contains("differs from vigild.service"),
        "{text}"
    );
    // Both lose it: the exposure score catches it.
    std::fs::write(&service, weaken(&unit)).unwrap();
    let (ok, text) = check_units(dir.path());
    assert!(!ok && text.contains("is above 2.0"), "{text}");
}

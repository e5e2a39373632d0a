//! Shared helpers for the integration tests: start the real `vigild` binary with a temporary
//! config, capture its log, wait for log lines, parse `key=value` fields, and send signals.
//!
//! Every test gets its own port (the config listens on `127.0.0.1:0`; the bound port is read
//! from the "listening on" log line) and its own temporary directory, removed on drop. The
//! daemon process is killed on drop if the test did not stop it.

#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;
pub mod certs;
pub mod container;
pub mod load;
pub mod netns;
pub mod redis_server;
pub mod tls_client;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn vigild_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigild")
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vigild-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Log lines collected from the daemon's stderr by a reader thread.
#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// When each line arrived, by the test's clock (for detection times).
    at: Vec<Instant>,
    closed: bool,
}

#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<LogState>, Condvar)>);

impl Log {
    fn push(&self, line: String) {
        let (m, c) = &*self.0;
        let mut st = m.lock().unwrap();
        st.lines.push(line);
        st.at.push(Instant::now());
        c.notify_all();
    }

    fn close(&self) {
        let (m, c) = &*self.0;
        m.lock().unwrap().closed = true;
        c.notify_all();
    }

    pub fn lines(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().lines.clone()
    }

    /// The lines with their arrival times.
    pub fn lines_at(&self) -> Vec<(String, Instant)> {
        let st = self.0 .0.lock().unwrap();
        st.lines
            .iter()
            .cloned()
            .zip(st.at.iter().copied())
            .collect()
    }

    /// How many lines match `pred` (without copying them).
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0
             .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// Like [`Log::wait_for`], also returning when the line arrived.
    pub fn wait_for_at(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(String, Instant)> {
        self.wait_for(timeout, &pred)?;
        self.lines_at().into_iter().find(|(l, _)| pred(l))
    }

    /// When the last line arrived, if any.
    pub fn last_at(&self) -> Option<Instant> {
        self.0 .0.lock().unwrap().at.last().copied()
    }

    /// How many lines have been logged so far.
    pub fn len(&self) -> usize {
        self.0 .0.lock().unwrap().lines.len()
    }

    /// The lines logged after the first `n` (cheap where `lines()` would copy a long log).
    pub fn lines_from(&self, n: usize) -> Vec<String> {
        let st = self.0 .0.lock().unwrap();
        st.lines
            .get(n..)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line (from the start of the log) matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_for_after(0, timeout, pred)
    }

    /// Waits for a line after the first `n` (see [`Log::len`]) matching `pred`.
    pub fn wait_for_after(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.0;
        let mut st = m.lock().unwrap();
        loop {
            if let Some(l) = st.lines.iter().skip(n).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if st.closed || now >= deadline {
                return None;
            }
            st = c.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits until `n` lines match `pred`; returns them.
    pub fn wait_for_n(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.0;
        let mut st = m.lock().unwrap();
        loop {
            let found: Vec<String> = st.lines.iter().filter(|l| pred(l)).cloned().collect();
            let now = Instant::now();
            if found.len() >= n || st.closed || now >= deadline {
                return found;
            }
            st = c.wait_timeout(st, deadline - now).unwrap().0;
        }
    }
}

/// How often [`wait_until`] looks again: at first after 1 ms, then twice as long each time up to
/// [`POLL_MAX`], so a quick condition is seen at once and a slow one (a stats line per look, a
/// `CLIENT LIST`) is not asked thousands of times.
pub const POLL_MIN: Duration = Duration::from_millis(1);
pub const POLL_MAX: Duration = Duration::from_millis(50);
/// How often [`Daemon::wait_exit`] looks.
const POLL_EXIT: Duration = Duration::from_millis(5);

/// What a [`wait_until`] condition returns: `bool` (done or not), `Option<T>` (done with a
/// value) or `Result<T, String>` (done with a value, or not yet, saying what it saw: the last
/// such report goes into the failure message).
pub trait Outcome {
    type Value;
    fn done(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T> Outcome for Result<T, String> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// Polls `cond` (see [`POLL_MIN`]) until it is done and returns its value; after `timeout` it
/// fails saying what it waited for (`what`), for how long, and the condition's last report.
/// The one way the tests wait for the daemon to get somewhere.
#[track_caller]
pub fn wait_until<O: Outcome>(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> O,
) -> O::Value {
    let start = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        let last = match cond().done() {
            Ok(value) => return value,
            Err(last) => last,
        };
        let waited = start.elapsed();
        if waited >= timeout {
            match last {
                Some(last) => {
                    panic!("gave up after {waited:.1?} waiting for {what}; last seen: {last}")
                }
                None => panic!("gave up after {waited:.1?} waiting for {what}"),
            }
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Waits (see [`wait_until`]) for `child` to exit and returns its status; on a timeout the
/// child is killed before the failure, so a failing test leaves no process behind.
#[track_caller]
pub fn wait_child_exit(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    struct KillIfFailing<'a>(&'a mut Child);
    impl Drop for KillIfFailing<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let guard = KillIfFailing(child);
    wait_until(timeout, what, || guard.0.try_wait().unwrap())
}

/// Parses the `key=value` fields of a log line (values contain no spaces).
pub fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The reap line of session `id`, if logged.
pub fn is_reap_of(line: &str, id: i64) -> bool {
    line.contains(" reap ") && line.contains(&format!(" id={id} "))
}

/// Adds `listen = ["127.0.0.1:0"]` and `[log] level = "debug"` with every reap logged
/// (`reap_lines_per_second = 0`, `bytes_per_second = 0`) to a config unless it sets them
/// itself.
pub fn complete_config(body: &str) -> String {
    let mut text = String::new();
    if !sets_server_listen(body) {
        if body.contains("[server]") {
            text = body.replacen("[server]", "[server]\nlisten = [\"127.0.0.1:0\"]", 1);
        } else {
            text.push_str("[server]\nlisten = [\"127.0.0.1:0\"]\n");
            text.push_str(body);
        }
    } else {
        text.push_str(body);
    }
    if !body.contains("[log]") {
        text.push_str(
            "\n[log]\nlevel = \"debug\"\nreap_lines_per_second = 0\nbytes_per_second = 0\n",
        );
    }
    text
}

/// Whether `body` has a `listen` key in its `[server]` table (other tables have one too).
fn sets_server_listen(body: &str) -> bool {
    let mut table = "";
    for line in body.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
        } else if table == "[server]" && line.starts_with("listen") {
            return true;
        }
    }
    false
}

/// A running `vigild`.
pub struct Daemon {
    pub child: Child,
    pub log: Log,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    pub dir: TempDir,
}

/// How long start-up may take before a test gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// Starts vigild with `config` (completed by [`complete_config`]) and waits until it is
    /// ready.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(config, |_| {})
    }

    /// Like [`Daemon::start`], letting the caller adjust the command (environment, limits).
    pub fn start_with(config: &str, adjust: impl FnOnce(&mut Command)) -> Daemon {
        Daemon::start_wrapped(config, &[], adjust)
    }

    /// Like [`Daemon::start_with`], running vigild through `wrapper` (a program and its
    /// arguments, to which vigild's command line is appended), e.g.
    /// `["/bin/sh", "-c", "export LISTEN_PID=$$; exec \"$@\"", "sh"]` for what only the
    /// process itself can know.
    pub fn start_wrapped(
        config: &str,
        wrapper: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Daemon {
        let dir = TempDir::new("daemon");
        let config_path = dir.path().join("vigild.toml");
        std::fs::write(&config_path, complete_config(config)).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(vigild_bin());
                cmd
            }
            None => Command::new(vigild_bin()),
        };
        cmd.arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn vigild");
        let log = Log::default();
        let stderr = child.stderr.take().unwrap();
        // A roomy pipe (1 MiB instead of 64 KiB), so a test whose reader thread is briefly
        // starved of CPU does not block the daemon's logging, which would stall its loop and
        // show up as a slow client that the daemon did not cause.
        // SAFETY: fcntl(F_SETPIPE_SZ) on a pipe descriptor we own; failure only keeps 64 KiB.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&stderr),
                libc::F_SETPIPE_SZ,
                1 << 20,
            )
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            // The daemon blocks when its log pipe is full: keep up with it (where allowed).
            load::raise_priority(0);
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => sink.push(l),
                    Err(_) => break,
                }
            }
            sink.close();
        });
        let mut daemon = Daemon {
            child,
            log,
            addr: "127.0.0.1:0".parse().unwrap(),
            config_path,
            dir,
        };
        let ready = daemon
            .log
            // Under journald a line is `<6>ready: ...`, with no timestamp or level word.
            .wait_for(START_TIMEOUT, |l| {
                l.contains(" ready: ") || l.starts_with("<6>ready: ")
            });
        assert!(
            ready.is_some(),
            "vigild did not become ready; log:\n{}",
            daemon.log.text()
        );
        let listening = daemon
            .log
            .wait_for(Duration::ZERO, |l| l.contains("listening on "))
            .expect("a listening line");
        daemon.addr = listening
            .rsplit("listening on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .expect("listening address");
        daemon
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A connection from the `redis` crate.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect with redis")
    }

    /// A `redis` crate connection to the admin listener (configured on `ip:port`).
    pub fn admin(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.ops_listener("admin")))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to the admin listener")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(POLL_EXIT);
        }
    }

    /// Asks for a statistics line (SIGUSR1) and returns it parsed.
    pub fn stats(&self) -> HashMap<String, String> {
        let before = self.log.len();
        self.signal(libc::SIGUSR1);
        let line = self
            .log
            .wait_for_after(before, Duration::from_secs(5), |l| {
                l.contains(" INFO  stats ")
            });
        fields(&line.unwrap_or_else(|| panic!("no stats line within 5 s:\n{}", self.log.text())))
    }

    /// A plain socket to the client port, its reads bounded to 5 s.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// `http://<metrics listener><path>`.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops_listener("metrics"))
    }

    /// Where the `admin` or `metrics` listener listens (`ip:port` or a socket path), from its
    /// start-up line.
    pub fn ops_listener(&self, role: &str) -> String {
        let marker = format!(" {role} listener on ");
        let line = self
            .log
            .wait_for(Duration::ZERO, |l| l.contains(&marker))
            .unwrap_or_else(|| panic!("no {role} listener line; log:\n{}", self.log.text()));
        let rest = line.rsplit(&marker).next().unwrap_or_default();
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits for the reap line of the session whose peer (client) address is `peer`.
    pub fn wait_reap_of_peer(
        &self,
        peer: SocketAddr,
        timeout: Duration,
    ) -> HashMap<String, String> {
        let needle = format!(" peer={peer} ");
        let line = self
            .log
            .wait_for(timeout, |l| l.contains(" reap ") && l.contains(&needle))
            .unwrap_or_else(|| panic!("{peer} not reaped; log:\n{}", self.log.text()));
        fields(&line)
    }

    /// Waits for the reap line of session `id`, returns its fields.
    pub fn wait_reap(&self, id: i64, timeout: Duration) -> HashMap<String, String> {
        let line = self
            .log
            .wait_for(timeout, |l| is_reap_of(l, id))
            .unwrap_or_else(|| panic!("session {id} not reaped; log:\n{}", self.log.text()));
        fields(&line)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a raw RESP command and reads one reply line-level (for tests that want raw bytes).
pub fn client_id(con: &mut redis::Connection) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query(con)
        .expect("CLIENT ID")
}

/// Connects to `addr` from source address `src` (any 127.x.y.z works on loopback). The source
/// port is chosen at connect time (`IP_BIND_ADDRESS_NO_PORT`), so thousands of connections can
/// share few source addresses without exhausting bind's port search.
pub fn connect_from(src: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    netns::bind_address_no_port(&sock)?;
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    sock.connect(&addr.into())?;
    Ok(sock.into())
}

/// Raises this process's soft descriptor limit to its hard limit (tests holding thousands of
/// connections need it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one valid, local rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// `INFO` text as `key -> value`, section headers and blank lines left out.
pub fn info_map(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `INFO section` from a connection (the admin listener's), as `key -> value`.
pub fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    info_map(&text)
}

/// CPU time of process `pid` so far, nanoseconds (`/proc/PID/schedstat`).
pub fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/PID/schedstat")
}

/// The environment variable that turns every skip into a failure: with `VIGILD_TESTS_NO_SKIP=1`
/// (CI sets it) a test that cannot run here, for want of root and network namespaces, a tool
/// (`promtool`) or a client library (`scripts/test` installs them), fails instead of skipping.
pub const NO_SKIP: &str = "VIGILD_TESTS_NO_SKIP";

/// Whether `VIGILD_TESTS_NO_SKIP=1`: a skip is a failure.
pub fn no_skip() -> bool {
    std::env::var(NO_SKIP).as_deref() == Ok("1")
}

/// Skips (the caller returns) with a loud `SKIPPED: {why} ({fix})`, or fails with the same
/// words when `VIGILD_TESTS_NO_SKIP=1`. `why` says what is missing, `fix` what provides it.
#[track_caller]
pub fn skip(why: &str, fix: &str) {
    assert!(
        !no_skip(),
        "{why} ({fix}); {NO_SKIP}=1: a skip is a failure"
    );
    eprintln!("SKIPPED: {why} ({fix}; with {NO_SKIP}=1 this fails)");
}

/// What `scripts/test` installed and named in the environment variable `var` (a program or a
/// folder), or `None`: a loud skip (see [`skip`]).
#[track_caller]
pub fn installed(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            skip(
                &format!("{var} is not set"),
                &format!("run the suite through scripts/test: it installs {what}"),
            );
            None
        }
    }
}

/// Validates `body` with `promtool check metrics`: it must pass with nothing to report (a
/// skip when promtool cannot run: scripts/test installs it).
pub fn promtool_check(body: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            skip(
                &format!("promtool check: cannot run promtool: {e}"),
                "Debian package prometheus; scripts/test installs it",
            );
            return;
        }
    };
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    // promtool exits 0 on lint problems too; they are printed, and there must be none.
    assert!(report.trim().is_empty(), "promtool lint:\n{report}");
}

/// An HTTP client for the metrics listener: a status is an answer to look at, not an error;
/// 5 s at most per request.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

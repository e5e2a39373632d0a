//! `vigild --check-config`, `--print-config` and the start-up error through the real binary:
//! the one line and the timer summary, the quiet form `ExecStartPre=` uses, the effective
//! config, and, with `JOURNAL_STREAM` naming the pipe given as stdout and stderr (as systemd
//! connects both to one journal stream), every line at its sd-daemon priority.

mod util;

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{vigild_bin, TempDir};

const DEADLINE: Duration = Duration::from_secs(10);

/// A config that draws one warning (a user timeout below the keepalive bound).
const WARNED: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 2000\n\
                      [keepalive]\nidle = \"30s\"\ninterval = \"5s\"\nprobes = 4\n\
                      user_timeout = \"20s\"\n[session]\nidle_timeout = \"10m\"\n";

/// What a run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Waits for `child` at most [`DEADLINE`], killing it past that; returns its exit code.
fn wait(mut child: Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for vigild") {
            return status.code();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vigild did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs vigild by hand: stdout and stderr are separate pipes, no `JOURNAL_STREAM`.
fn run(args: &[&str]) -> Run {
    let child = Command::new(vigild_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigild");
    let mut child = child;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    // Both pipes are read to the end after the exit: the output is a few KiB at most.
    let code = wait(child);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out.read_to_string(&mut stdout).unwrap();
    err.read_to_string(&mut stderr).unwrap();
    Run {
        code,
        stdout,
        stderr,
    }
}

/// Runs vigild as systemd would: stdout and stderr are one pipe, and `JOURNAL_STREAM` is that
/// pipe's device and inode (`named = true`) or another file's. Returns the exit code and what
/// came out of the pipe.
fn run_journal(args: &[&str], named: bool) -> (Option<i32>, String) {
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let meta = if named {
        std::fs::File::from(std::os::fd::OwnedFd::from(writer.try_clone().unwrap()))
            .metadata()
            .unwrap()
    } else {
        std::fs::metadata("/dev/null").unwrap()
    };
    let child = Command::new(vigild_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("spawn vigild");
    // The Command held the only other write ends; they are gone once it is spawned and
    // dropped, so the read below ends when vigild exits.
    let code = wait(child);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    (code, text)
}

fn write_config(dir: &TempDir, text: &str) -> String {
    write_named(dir, "vigild.toml", text)
}

fn write_named(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

const WARNING: &str = "vigild: warning: keepalive.user_timeout = 20s is below keepalive.idle + \
                       keepalive.interval × keepalive.probes = 30s + 5s × 4 = 50s: once set, \
                       TCP_USER_TIMEOUT overrides TCP_KEEPCNT, so the kernel gives up at the \
                       first probe past 20s and keepalive is cut short of 4 probes; use \"auto\" \
                       or at least 50s.";

fn summary(path: &str) -> String {
    format!(
        "vigild: {path} is valid: listens on 127.0.0.1:0, up to 2000 sessions, keepalive on
  detection: an idle dead peer is reaped after 35s (keepalive.user_timeout 20s ends the probing of idle 30s + interval 5s × 4 probes); one that dies with a reply in flight after 20s (keepalive.user_timeout fixed); any session silent for 10m is reaped (session.idle_timeout)
  glitch tolerance: a healthy idle session is cut if the network drops every packet for longer than 5s (interval 5s × 1 probe); a shorter outage is survived
  probe cost: a probe and its ACK every 30s per idle session, 52 bytes each (IPv4 + TCP header with timestamps, no payload): 292.5 KiB a day per session, 571.3 MiB a day for 2000 (server.max_connections)
"
    )
}

#[test]
fn check_config_prints_one_line_and_the_timer_summary() {
    let dir = TempDir::new("check-summary");
    let path = write_config(&dir, WARNED);
    let r = run(&["--check-config", &path]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, summary(&path));
    assert_eq!(r.stderr, format!("{WARNING}\n"));
    // The default config: 2m, 1m, 146.2 KiB and 1.4 GiB a day.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vigild.toml");
    let r = run(&["--check-config", shipped]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("reaped after 2m (idle 1m + interval 10s × 6 probes)")
            && r.stdout
                .contains("longer than 1m (interval 10s × 6 probes)")
            && r.stdout
                .contains("146.2 KiB a day per session, 1.4 GiB a day for 10000"),
        "{}",
        r.stdout
    );
}

#[test]
fn quiet_prints_the_one_line_and_the_warnings_only() {
    let dir = TempDir::new("check-quiet");
    let path = write_config(&dir, WARNED);
    for args in [
        ["--check-config", "--quiet", &path],
        ["--check-config", &path, "-q"],
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(
            r.stdout,
            format!(
                "vigild: {path} is valid: listens on 127.0.0.1:0, up to 2000 sessions, \
                 keepalive on\n"
            )
        );
        assert_eq!(r.stderr, format!("{WARNING}\n"));
    }
    // The unit's ExecStartPre= uses the quiet form.
    for unit in ["vigild.service", "vigild@.service"] {
        let text =
            std::fs::read_to_string(format!("{}/systemd/{unit}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let pre = text
            .lines()
            .find(|l| l.starts_with("ExecStartPre="))
            .unwrap_or_else(|| panic!("no ExecStartPre= in {unit}"));
        assert!(pre.contains(" --check-config --quiet "), "{unit}: {pre}");
    }
}

#[test]
fn print_config_and_verbose_print_the_effective_config() {
    let dir = TempDir::new("check-print");
    let path = write_config(&dir, WARNED);
    for args in [
        &["--print-config", &path][..],
        &["--check-config", "--verbose", &path],
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let table: toml::Table = toml::from_str(&r.stdout).expect("stdout is the config alone");
        assert_eq!(table["keepalive"]["user_timeout"].as_str(), Some("20s"));
        assert_eq!(table["server"]["max_connections"].as_integer(), Some(2000));
        assert_eq!(r.stderr, format!("{WARNING}\nvigild: {path} is valid\n"));
    }
    let r = run(&["--print-config", &path, "--quiet"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(
        r.stderr,
        "vigild: --quiet goes with --check-config (see vigild --help)\n"
    );
}

#[test]
fn under_journald_every_line_carries_its_priority() {
    let dir = TempDir::new("check-journal");
    let path = write_config(&dir, WARNED);
    // Warnings at 4, the verdict and the summary at 6 (stderr before stdout: one pipe).
    let (code, text) = run_journal(&["--check-config", &path], true);
    assert_eq!(code, Some(0), "{text}");
    let expected: String = std::iter::once(format!("<4>{WARNING}\n"))
        .chain(summary(&path).lines().map(|l| format!("<6>{l}\n")))
        .collect();
    assert_eq!(text, expected);
    let (code, text) = run_journal(&["--check-config", "--quiet", &path], true);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text,
        format!(
            "<4>{WARNING}\n<6>vigild: {path} is valid: listens on 127.0.0.1:0, up to 2000 \
             sessions, keepalive on\n"
        )
    );
    // A broken file at 3.
    let bad = write_named(&dir, "bad.toml", "[keepalive]\nidel = \"5s\"\n");
    let (code, text) = run_journal(&["--check-config", "--quiet", &bad], true);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!("<3>vigild: {bad}: ")) && text.contains("idel"),
        "{text}"
    );
    // Not the journal (JOURNAL_STREAM names another file): the same lines, no prefix.
    let (code, text) = run_journal(&["--check-config", &path], false);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text, format!("{WARNING}\n{}", summary(&path)));
}

#[test]
fn under_journald_the_fatal_start_up_error_is_at_priority_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new("check-fatal");
    let path = write_config(
        &dir,
        // Few sessions, so no descriptor-limit warning comes before the error.
        &format!(
            "[server]\nlisten = [\"{addr}\"]\nmax_connections = 100\n[log]\nlevel = \"info\"\n"
        ),
    );
    let (code, text) = run_journal(&["--config", &path], true);
    assert_eq!(code, Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let fatal = format!("<3>vigild: cannot listen on {addr}: Address already in use");
    assert!(
        lines.last().is_some_and(|l| l.starts_with(&fatal)),
        "{text}"
    );
    // The logger's lines before it: at 6, the summary once, no level word.
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("<6>")),
        "{text}"
    );
    assert!(!text.contains("INFO ") && !text.contains("WARN "), "{text}");
    let summaries = lines
        .iter()
        .filter(|l| l.starts_with("<6>detection: an idle dead peer is reaped after 2m "))
        .count();
    assert_eq!(summaries, 1, "{text}");
    drop(taken);
}

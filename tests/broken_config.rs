//! Broken config files, through the real binary: for each kind of mistake both
//! `vigild --check-config PATH` and `vigild --config PATH` exit non-zero with exactly one line
//! on stderr that names the file and the key (or the line and column when there is no key).

mod util;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use util::{vigild_bin, TempDir};

/// Runs vigild with `args`, killing it if it has not exited within 10 s.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(vigild_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigild");
    util::wait_child_exit(
        &mut child,
        Duration::from_secs(10),
        &format!("vigild {args:?} to exit"),
    );
    child.wait_with_output().unwrap()
}

/// Both modes refuse `path` with one stderr line containing every needle.
fn refused(case: &str, path: &std::path::Path, needles: &[&str]) {
    for mode in ["--check-config", "--config"] {
        let out = run(&[mode.as_ref(), path.as_os_str()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case} {mode}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{case} {mode}: one line wanted, got {stderr:?}"
        );
        let line = lines[0];
        let prefix = format!("vigild: {}: ", path.display());
        assert!(line.starts_with(&prefix), "{case} {mode}: {line}");
        for needle in needles {
            assert!(
                line.contains(needle),
                "{case} {mode}: {line:?} lacks {needle:?}"
            );
        }
        assert!(
            out.stdout.is_empty(),
            "{case} {mode}: stdout {:?}",
            out.stdout
        );
    }
}

#[test]
fn each_kind_of_mistake_gives_one_line_naming_the_key() {
    let dir = TempDir::new("broken-config");
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "unknown key",
            b"[server]\nlisten_on = 1\n",
            &["server.listen_on", "unknown field"],
        ),
        (
            "unknown table",
            b"[sever]\nlisten = []\n",
            &["line 1", "sever", "unknown field"],
        ),
        (
            "wrong type",
            b"[server]\nmax_connections = \"many\"\n",
            &["server.max_connections", "an integer"],
        ),
        (
            "out of range",
            b"[server]\nbacklog = 0\n",
            &["server.backlog", "use 1 to 65535"],
        ),
        (
            "negative",
            b"[session]\nmax_output_bytes = -1\n",
            &["session.max_output_bytes", "out of range"],
        ),
        (
            "huge integer",
            b"[keepalive]\nprobes = 99999999999999999999\n",
            &["keepalive.probes", "too large"],
        ),
        (
            "bad duration",
            b"[keepalive]\nidle = \"10 parsecs\"\n",
            &["keepalive.idle", "\"1m30s\""],
        ),
        (
            "sub-second keepalive",
            b"[keepalive]\ninterval = \"500ms\"\n",
            &["keepalive.interval", "whole seconds"],
        ),
        (
            "contradicting timers",
            b"[keepalive]\nidle = 32767\ninterval = 32767\nprobes = 127\n",
            &["keepalive.user_timeout", "lower keepalive.idle"],
        ),
        (
            "host name",
            b"[server]\nlisten = [\"localhost:7379\"]\n",
            &["server.listen[0]", "not ip:port"],
        ),
        (
            "empty listen",
            b"[server]\nlisten = []\n",
            &["server.listen", "at least one address"],
        ),
        (
            "duplicate listen",
            b"[server]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
            &["server.listen[1]", "listed twice"],
        ),
        (
            "duplicate key",
            b"[log]\nlevel = \"info\"\nlevel = \"debug\"\n",
            &["line 3", "log.level", "duplicate"],
        ),
        (
            "bad level",
            b"[log]\nlevel = \"loud\"\n",
            &["log.level", "off, error, warn"],
        ),
        (
            "unclosed table",
            b"[server\nlisten = []\n",
            &["line 1, column 8"],
        ),
        (
            "unclosed string",
            b"[log]\nlevel = \"info\n",
            &["line 2", "log.level"],
        ),
        (
            "not UTF-8",
            b"[log]\nlevel = \"inf\xff\"\n",
            &["line 2, column 13", "0xff", "UTF-8"],
        ),
        ("NUL byte", b"[log]\nlevel = \"info\"\n\0\n", &["line 3"]),
        (
            "password twice",
            b"[server]\npassword = \"a\"\npassword_file = \"pw\"\n",
            &["server.password_file", "keep one"],
        ),
        (
            "password file missing",
            b"[server]\npassword_file = \"missing\"\n",
            &["server.password_file", "cannot read"],
        ),
        (
            "password file is a directory",
            b"[server]\npassword_file = \".\"\n",
            &["server.password_file", "not a regular file"],
        ),
    ];
    for (i, (case, text, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        refused(case, &path, needles);
    }
    refused(
        "missing file",
        &dir.path().join("nope.toml"),
        &["cannot read", "No such file"],
    );
    refused("a directory", dir.path(), &["cannot read"]);
    // A device is refused before anything is read (it could be endless, or block).
    refused(
        "endless input",
        std::path::Path::new("/dev/zero"),
        &["cannot read", "is a character device, not a regular file"],
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 1024 * 1024 + 1]).unwrap();
    refused("a file over the cap", &big, &["larger than 1024 KiB"]);
}

#[test]
fn a_good_file_passes_check_config_and_hides_the_password() {
    let dir = TempDir::new("good-config");
    let path = dir.path().join("vigild.toml");
    std::fs::write(&path, "[server]\npassword = \"hunter2\"\n").unwrap();
    // Issue 14: the effective config is --print-config's; --check-config prints a summary.
    let out = run(&["--print-config".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("password = \"(redacted)\""), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    let out = run(&["--check-config".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("is valid: ") && !all.contains("hunter2"),
        "{all}"
    );
}

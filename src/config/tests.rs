//! Unit tests for the config: defaults, the shipped example, round trips through `to_toml`,
//! and one test per kind of rejected value or warning, each checking the message.

use super::validate::check_user_timeout_range;
use super::*;
use std::os::unix::fs::PermissionsExt as _;

const PATH: &str = "test.toml";

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

fn loaded(text: &str) -> Loaded {
    parse(text).unwrap_or_else(|err| panic!("rejected {text:?}: {err}"))
}

fn config(text: &str) -> Config {
    loaded(text).config
}

/// The one-line message, checked to start with the path and to contain every needle.
fn error(text: &str, needles: &[&str]) -> ConfigError {
    let err = match parse(text) {
        Ok(loaded) => panic!("accepted {text:?}: {:?}", loaded.config),
        Err(err) => err,
    };
    let msg = err.to_string();
    assert!(
        msg.starts_with("test.toml: ") && !msg.contains('\n'),
        "{msg:?}"
    );
    for needle in needles {
        assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
    }
    err
}

/// An `Invalid` error naming exactly `key`, whose message contains `needle`.
fn invalid(text: &str, key: &str, needle: &str) {
    match error(text, &[&format!("test.toml: {key}: "), needle]) {
        ConfigError::Invalid { key: got, .. } => assert_eq!(got, key, "{text:?}"),
        other => panic!("{text:?}: expected Invalid, got {other:?}"),
    }
}

/// A `Parse` error (stage 1): located by line and column, naming the key.
fn rejected(text: &str, needles: &[&str]) {
    let err = error(text, needles);
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("line "), "{err}");
}

fn warnings(text: &str) -> Vec<String> {
    loaded(text).warnings
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn defaults_are_the_designed_ones() {
    let c = Config::default();
    assert_eq!(
        c.server.listen,
        vec!["127.0.0.1:7379".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!((c.server.backlog, c.server.max_connections), (1024, 10_000));
    assert_eq!(c.server.max_connections_per_ip, 0);
    assert!(!c.server.reuse_port);
    let ka = c.keepalive;
    assert!(ka.enabled);
    assert_eq!((ka.idle, ka.interval, ka.probes), (secs(60), secs(10), 6));
    assert_eq!(ka.user_timeout, UserTimeout::Auto);
    assert_eq!(c.session.idle_timeout, None);
    assert_eq!(c.session.max_request_bytes, 65_536);
    assert_eq!(c.session.max_output_bytes, 1_048_576);
    assert_eq!(c.stats.interval, Some(secs(60)));
    assert_eq!(c.log.level, LevelFilter::Info);
}

#[test]
fn empty_file_and_empty_tables_give_defaults_without_warnings() {
    for text in [
        "",
        "# nothing\n",
        "[server]\n[keepalive]\n[session]\n[stats]\n[log]\n",
    ] {
        let l = loaded(text);
        assert_eq!(l.config, Config::default());
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }
}

#[test]
fn shipped_example_is_the_default_config() {
    let l = loaded(include_str!("../../config/vigild.toml"));
    assert_eq!(l.config, Config::default());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn detection_bound_and_effective_user_timeout() {
    let mut ka = KeepaliveConfig::default();
    assert_eq!(ka.detection_bound(), secs(120));
    assert_eq!(ka.effective_user_timeout(), Some(secs(120)));
    ka.enabled = false;
    assert_eq!(ka.effective_user_timeout(), None);
    ka.user_timeout = UserTimeout::Fixed(secs(8));
    assert_eq!(ka.effective_user_timeout(), Some(secs(8)));
    ka.enabled = true;
    assert_eq!(ka.effective_user_timeout(), Some(secs(8)));
    ka.user_timeout = UserTimeout::Off;
    assert_eq!(ka.effective_user_timeout(), None);
    ka.idle = Duration::MAX;
    assert_eq!(ka.detection_bound(), Duration::MAX);
}

#[test]
fn to_toml_round_trips_the_default() {
    let text = Config::default().to_toml();
    let l = loaded(&text);
    assert_eq!(l.config, Config::default());
    assert!(l.warnings.is_empty());
    for key in [
        "[server]",
        "listen",
        "backlog",
        "max_connections =",
        "max_connections_per_ip",
        "reuse_port = false",
        "busy_poll_us = 0",
        "proxy_protocol = \"off\"",
        "proxy_trusted = []",
        "proxy_header_timeout = \"3s\"",
        "[keepalive]",
        "enabled",
        "idle =",
        "interval",
        "probes",
        "user_timeout = \"auto\"",
        "[session]",
        "idle_timeout = \"0s\"",
        "max_request_bytes",
        "max_output_bytes",
        "unique_names = false",
        "[stats]",
        "[log]",
        "level = \"info\"",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}

#[test]
fn to_toml_round_trips_a_non_default_config() {
    let text = r#"
        [server]
        listen = ["0.0.0.0:7000", "[::1]:7001"]
        backlog = 4096
        max_connections = 50000
        max_connections_per_ip = 100
        reuse_port = true
        busy_poll_us = 25
        [keepalive]
        enabled = false
        idle = "1m30s"
        interval = 3
        probes = 4
        user_timeout = "2m500ms"
        [session]
        idle_timeout = "1h"
        max_request_bytes = 1024
        max_output_bytes = 4096
        unique_names = true
        [stats]
        interval = "0s"
        [log]
        level = "DEBUG"
    "#;
    let c = config(text);
    assert!(c.session.unique_names);
    assert!(c.server.reuse_port);
    assert_eq!(c.server.busy_poll, Duration::from_micros(25));
    assert_eq!(
        c.keepalive.user_timeout,
        UserTimeout::Fixed(Duration::from_millis(120_500))
    );
    assert_eq!(c.log.level, LevelFilter::Debug);
    assert_eq!(c.stats.interval, None);
    let rendered = c.to_toml();
    assert!(rendered.contains("idle = \"1m30s\""), "{rendered}");
    assert!(rendered.contains("level = \"debug\""), "{rendered}");
    assert_eq!(config(&rendered), c);
    let off = config("[keepalive]\nuser_timeout = \"off\"");
    assert_eq!(off.keepalive.user_timeout, UserTimeout::Off);
    assert_eq!(config(&off.to_toml()), off);
}

#[test]
fn integers_are_whole_seconds() {
    let c = config(
        "[keepalive]\nidle = 30\ninterval = 5\nuser_timeout = 120\n\
         [session]\nidle_timeout = 300\n[stats]\ninterval = 0\n",
    );
    assert_eq!(
        (c.keepalive.idle, c.keepalive.interval),
        (secs(30), secs(5))
    );
    assert_eq!(c.keepalive.user_timeout, UserTimeout::Fixed(secs(120)));
    assert_eq!(c.session.idle_timeout, Some(secs(300)));
    assert_eq!(c.stats.interval, None);
    assert_eq!(
        config("[keepalive]\nuser_timeout = 0")
            .keepalive
            .user_timeout,
        UserTimeout::Off
    );
    assert_eq!(
        config("[keepalive]\nuser_timeout = \" AUTO \"")
            .keepalive
            .user_timeout,
        UserTimeout::Auto
    );
}

#[test]
fn unknown_keys_are_rejected_naming_the_key() {
    let fields = "expected one of";
    rejected(
        "verbose = true",
        &["line 1, column 1", "verbose: unknown field `verbose`"],
    );
    rejected(
        "[server]\n[admn]\nx = 1",
        &["line 2, column 2", "admn: unknown field `admn`"],
    );
    rejected(
        "[server]\nlisen = []",
        &["line 2", "server.lisen: unknown field", fields],
    );
    rejected(
        "[keepalive]\nidel = 5",
        &["keepalive.idel: unknown field `idel`", fields],
    );
    rejected(
        "[session]\n\n  timeout = 5",
        &["line 3, column 3", "session.timeout: unknown"],
    );
    rejected(
        "[stats]\nperiod = 5",
        &["stats.period: unknown field `period`"],
    );
    rejected("[log]\nlevels = 5", &["log.levels: unknown field `levels`"]);
    rejected("server.idel = 3", &["server.idel: unknown field `idel`"]);
}

#[test]
fn wrong_types_are_rejected_naming_the_key() {
    rejected(
        "[server]\nbacklog = \"x\"",
        &["line 2, column 11", "server.backlog: invalid type"],
    );
    rejected(
        "[server]\nbacklog = 1.5",
        &["server.backlog:", "expected an integer"],
    );
    rejected(
        "[server]\nlisten = \"127.0.0.1:1\"",
        &["server.listen: invalid type"],
    );
    rejected(
        "[server]\nlisten = [\n\"127.0.0.1:1\",\n 5]",
        &["line 4", "server.listen: "],
    );
    rejected(
        "[keepalive]\nenabled = \"yes\"",
        &["keepalive.enabled:", "a boolean"],
    );
    rejected(
        "[server]\nbusy_poll_us = \"15us\"",
        &["server.busy_poll_us:", "expected an integer"],
    );
    rejected(
        "[server]\nreuse_port = 1",
        &["server.reuse_port:", "a boolean"],
    );
    invalid(
        "[server]\nbusy_poll_us = 1001",
        "server.busy_poll_us",
        "1001 is out of range: use 0 to 1000 (microseconds",
    );
    invalid(
        "[server]\nbusy_poll_us = -1",
        "server.busy_poll_us",
        "-1 is out of range",
    );
    rejected(
        "[keepalive]\nidle = true",
        &["keepalive.idle:", "expected a duration"],
    );
    rejected(
        "[keepalive]\nidle = -5",
        &["keepalive.idle:", "expected a duration"],
    );
    rejected("[log]\nlevel = 3", &["log.level: invalid type", "a string"]);
    rejected("server = 5", &["server: invalid type", "a [server] table"]);
    rejected(
        "[server]\nbacklog = 99999999999999999999",
        &["server.backlog", "too large"],
    );
    rejected(
        "[server]\nbacklog = 1\nbacklog = 2",
        &["line 3", "server.backlog: duplicate"],
    );
    rejected("[server\n", &["line 1, column 8", "unclosed table"]);
}

#[test]
fn listen_errors() {
    invalid(
        "[server]\nlisten = []",
        "server.listen",
        "at least one address",
    );
    let bad = ["localhost:7379", "127.0.0.1", "::1:7379", "[::1]", ""];
    for entry in bad {
        let text = format!("[server]\nlisten = [\"127.0.0.1:1\", \"{entry}\"]");
        invalid(
            &text,
            "server.listen[1]",
            "\"[::1]:7379\" (host names are not resolved)",
        );
    }
    let dup = "[server]\nlisten = [\"[::1]:1\", \"127.0.0.1:2\", \" [::1]:1\"]";
    invalid(
        dup,
        "server.listen[2]",
        "listed twice (also server.listen[0])",
    );
    let both = config("[server]\nlisten = [\"0.0.0.0:0\", \"[::]:7379\"]")
        .server
        .listen;
    assert_eq!(both.len(), 2);
}

#[test]
fn integer_range_errors() {
    let cases = [
        ("server", "backlog", "0", "use 1 to 65535"),
        ("server", "backlog", "65536", "net.core.somaxconn"),
        ("server", "max_connections", "0", "per-process file limit"),
        ("server", "max_connections", "1000001", "use 1 to 1000000"),
        ("server", "max_connections_per_ip", "-1", "0 means no limit"),
        ("keepalive", "probes", "0", "TCP_KEEPCNT"),
        ("keepalive", "probes", "128", "use 1 to 127"),
        ("session", "max_request_bytes", "63", "64 bytes to 512 MiB"),
        (
            "session",
            "max_request_bytes",
            "536870913",
            "use 64 to 536870912",
        ),
        ("session", "max_output_bytes", "1023", "1 KiB to 1 GiB"),
        (
            "session",
            "max_output_bytes",
            "1073741825",
            "use 1024 to 1073741824",
        ),
    ];
    for (table, key, value, needle) in cases {
        invalid(
            &format!("[{table}]\n{key} = {value}"),
            &format!("{table}.{key}"),
            needle,
        );
    }
    let edges = "[server]\nbacklog = 65535\nmax_connections = 1000000\n\
                 [keepalive]\nprobes = 127\n\
                 [session]\nmax_request_bytes = 64\nmax_output_bytes = 1073741824";
    assert_eq!(config(edges).keepalive.probes, 127);
}

#[test]
fn keepalive_timer_errors() {
    for key in ["idle", "interval"] {
        let full = format!("keepalive.{key}");
        let text = |v: &str| format!("[keepalive]\n{key} = {v}");
        invalid(&text("\"0s\""), &full, "keepalive.enabled = false");
        invalid(&text("0"), &full, "must be at least \"1s\"");
        invalid(&text("\"500ms\""), &full, "not whole seconds");
        invalid(&text("\"1500ms\""), &full, "use \"1s\" or \"2s\"");
        invalid(&text("32768"), &full, "kernel limit");
        invalid(&text("\"10x\""), &full, "\"1m30s\"");
        invalid(
            &text("\"ten seconds\""),
            &full,
            "or an integer for whole seconds",
        );
        assert!(parse(&text("32767")).is_ok());
    }
}

#[test]
fn user_timeout_errors() {
    let key = "keepalive.user_timeout";
    invalid(
        "[keepalive]\nuser_timeout = \"soon\"",
        key,
        "use \"auto\", \"off\" or a duration",
    );
    invalid("[keepalive]\nuser_timeout = \"597h\"", key, "2147483647 ms");
    invalid("[keepalive]\nuser_timeout = 2147484", key, "kernel limit");
    let huge_auto = "[keepalive]\nidle = 32767\ninterval = 32767\nprobes = 127";
    invalid(huge_auto, key, "lower keepalive.idle");
    assert!(parse(&format!("{huge_auto}\nenabled = false")).is_ok());
    assert!(parse(&format!("{huge_auto}\nuser_timeout = \"off\"")).is_ok());
    let check = Check {
        path: Path::new(PATH),
    };
    let err = check_user_timeout_range(Duration::from_micros(500), &check);
    assert!(err.is_err_and(|e| e.to_string().contains("below 1ms")));
}

#[test]
fn session_stats_and_log_errors() {
    invalid(
        "[session]\nidle_timeout = \"500ms\"",
        "session.idle_timeout",
        "at least \"1s\"",
    );
    invalid(
        "[session]\nidle_timeout = \"1d\"",
        "session.idle_timeout",
        "unknown unit",
    );
    invalid(
        "[stats]\ninterval = \"999ms\"",
        "stats.interval",
        "only on demand",
    );
    invalid("[stats]\ninterval = \"-1s\"", "stats.interval", "negative");
    invalid(
        "[log]\nlevel = \"verbose\"",
        "log.level",
        "off, error, warn, info",
    );
    assert_eq!(
        config("[log]\nlevel = \"Trace\"").log.level,
        LevelFilter::Trace
    );
    assert_eq!(config("[log]\nlevel = \"off\"").log.level, LevelFilter::Off);
}

#[test]
fn load_reads_the_file_and_reports_unreadable_ones() {
    let dir = std::env::temp_dir().join(format!("vigild-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vigild.toml");
    std::fs::write(&path, "[keepalive]\nprobes = 3\n").unwrap();
    assert_eq!(Config::load(&path).unwrap().config.keepalive.probes, 3);
    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn one_warning(text: &str, needles: &[&str]) {
    let w = warnings(text);
    assert_eq!(w.len(), 1, "{text:?}: {w:?}");
    for needle in needles {
        assert!(w[0].contains(needle), "{:?} lacks {needle:?}", w[0]);
    }
}

#[test]
fn user_timeout_against_the_detection_bound() {
    one_warning(
        "[keepalive]\nuser_timeout = \"30s\"",
        &[
            "keepalive.user_timeout = 30s",
            "1m + 10s × 6 = 2m",
            "first probe past 30s",
        ],
    );
    one_warning(
        "[keepalive]\nuser_timeout = \"5m\"",
        &["keepalive.user_timeout = 5m", "after 5m"],
    );
    assert!(warnings("[keepalive]\nuser_timeout = \"2m\"").is_empty());
    assert!(warnings("[keepalive]\nuser_timeout = \"off\"").is_empty());
}

#[test]
fn idle_timeout_shorter_than_keepalive() {
    one_warning(
        "[session]\nidle_timeout = \"30s\"",
        &[
            "session.idle_timeout = 30s",
            "detection bound",
            "= 2m",
            "not keepalive",
        ],
    );
    assert!(warnings("[session]\nidle_timeout = \"2m\"").is_empty());
    assert!(warnings("[session]\nidle_timeout = \"1h\"").is_empty());
}

#[test]
fn keepalive_disabled() {
    one_warning(
        "[keepalive]\nenabled = false",
        &["keepalive.enabled = false", "never found"],
    );
    one_warning(
        "[keepalive]\nenabled = false\n[session]\nidle_timeout = \"5m\"",
        &["only by session.idle_timeout = 5m"],
    );
    let w = warnings("[keepalive]\nenabled = false\nuser_timeout = \"30s\"");
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("keepalive.user_timeout = 30s") && w[0].contains("data in flight"));
    assert!(w[1].contains("never found"));
}

#[test]
fn passwords() {
    assert_eq!(config("[server]\npassword = \"\"").server.password, None);
    let c = config("[server]\npassword = \"s3cret\"");
    let pw = c.server.password.as_ref().expect("a password");
    assert!(pw.matches(b"s3cret") && !pw.matches(b"s3cre"));
    let shown = c.to_toml();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("password = \"(redacted)\""), "{shown}");
    let long = "x".repeat(secret::MAX_PASSWORD_BYTES + 1);
    invalid(
        &format!("[server]\npassword = \"{long}\""),
        "server.password",
        "at most 1024",
    );
    invalid(
        "[server]\npassword = \"a\"\npassword_file = \"b\"",
        "server.password_file",
        "keep one of them",
    );
    invalid(
        "[server]\npassword_file = \"no-such-file\"",
        "server.password_file",
        "cannot read",
    );
    rejected("[server]\npassword = 5", &["server.password: invalid type"]);

    let dir = std::env::temp_dir().join(format!("vigild-config-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let mode = |m| std::fs::Permissions::from_mode(m);
    std::fs::set_permissions(&file, mode(0o600)).unwrap();
    let cfg_path = dir.join("vigild.toml");
    // Relative to the config file's directory, not to the working directory.
    let l = Config::parse("[server]\npassword_file = \"pw\"", &cfg_path).unwrap();
    let pw = l.config.server.password.as_ref().unwrap();
    assert!(pw.matches(b"from-file"));
    assert_eq!(pw.source, PasswordSource::File(file.clone()));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let again = Config::parse(&l.config.to_toml(), &cfg_path).unwrap();
    assert_eq!(again.config, l.config);
    std::fs::set_permissions(&file, mode(0o644)).unwrap();
    let l = Config::parse("[server]\npassword_file = \"pw\"", &cfg_path).unwrap();
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].contains("chmod 600"), "{:?}", l.warnings);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn per_ip_limit_above_the_total() {
    one_warning(
        "[server]\nmax_connections = 10\nmax_connections_per_ip = 11",
        &[
            "server.max_connections_per_ip = 11",
            "server.max_connections = 10",
            "never applies",
        ],
    );
    assert!(warnings("[server]\nmax_connections = 10\nmax_connections_per_ip = 10").is_empty());
}

#[test]
fn field_bounds_and_the_log_byte_budget() {
    let c = Config::default();
    assert_eq!(
        (c.session.max_name_bytes, c.session.max_lib_bytes),
        (256, 128)
    );
    assert_eq!(c.log.bytes_per_second, 512 * 1024);
    let c =
        config("[session]\nmax_name_bytes = 1\nmax_lib_bytes = 65536\n[log]\nbytes_per_second = 0");
    assert_eq!(
        (c.session.max_name_bytes, c.session.max_lib_bytes),
        (1, 65_536)
    );
    assert_eq!(c.log.bytes_per_second, 0);
    assert_eq!(config(&c.to_toml()), c);
    assert_eq!(
        config("[log]\nbytes_per_second = 4096")
            .log
            .bytes_per_second,
        4096
    );
    for (table, key, value, needle) in [
        ("session", "max_name_bytes", "0", "use 1 to 65536"),
        ("session", "max_name_bytes", "65537", "CLIENT LIST"),
        ("session", "max_lib_bytes", "0", "LIB-NAME and LIB-VER"),
        ("session", "max_lib_bytes", "100000", "use 1 to 65536"),
        ("log", "bytes_per_second", "-1", "0 means no limit"),
        (
            "log",
            "bytes_per_second",
            "4095",
            "use 0 (no limit) or at least 4096",
        ),
        (
            "log",
            "bytes_per_second",
            "1073741825",
            "use 0 to 1073741824",
        ),
    ] {
        invalid(
            &format!("[{table}]\n{key} = {value}"),
            &format!("{table}.{key}"),
            needle,
        );
    }
}

#[test]
fn auth_timeout_and_backoff_keys() {
    let d = config("");
    assert_eq!(d.server.auth_timeout, Some(secs(5)));
    assert_eq!(d.server.auth_failures_before_backoff, 10);
    assert_eq!(d.server.auth_backoff_max, secs(60));
    let c = config(
        "[server]\nauth_timeout = \"2s\"\nauth_failures_before_backoff = 3\nauth_backoff_max = \"5m\"",
    );
    assert_eq!(c.server.auth_timeout, Some(secs(2)));
    assert_eq!(c.server.auth_failures_before_backoff, 3);
    assert_eq!(c.server.auth_backoff_max, secs(300));
    assert_eq!(config(&c.to_toml()), c);
    let off = config("[server]\nauth_timeout = \"0s\"\nauth_failures_before_backoff = 0");
    assert_eq!(off.server.auth_timeout, None);
    assert_eq!(config(&off.to_toml()), off);
    invalid(
        "[server]\nauth_timeout = \"500ms\"",
        "server.auth_timeout",
        "\"0s\" for no deadline for AUTH",
    );
    invalid(
        "[server]\nauth_timeout = \"2h\"",
        "server.auth_timeout",
        "at most \"1h\"",
    );
    invalid(
        "[server]\nauth_failures_before_backoff = 1001",
        "server.auth_failures_before_backoff",
        "use 0 to 1000",
    );
    invalid(
        "[server]\nauth_backoff_max = \"0s\"",
        "server.auth_backoff_max",
        "\"1s\" to \"1h\"",
    );
    // Turning either off with a password set is legal, and warned about.
    let w = warnings("[server]\npassword = \"x\"\nauth_timeout = \"0s\"");
    assert!(
        w.len() == 1 && w[0].contains("can fill server.max_connections"),
        "{w:?}"
    );
    let w = warnings("[server]\npassword = \"x\"\nauth_failures_before_backoff = 0");
    assert!(
        w.len() == 1 && w[0].contains("not limited per address"),
        "{w:?}"
    );
    assert!(warnings("[server]\nauth_timeout = \"0s\"").is_empty());
}

#[test]
fn load_refuses_what_is_not_a_regular_file_and_files_that_changed() {
    let dir = std::env::temp_dir().join(format!("vigild-config-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("vigild.toml");
    crate::os::sys::make_fifo(&fifo).unwrap();
    let err = Config::load(&fifo).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: is a FIFO (named pipe), not a regular file; the config must be a \
             regular file",
            fifo.display()
        )
    );
    let err = Config::load(&dir).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    let err = Config::load(Path::new("/dev/zero")).unwrap_err();
    assert!(err.to_string().contains("is a character device"), "{err}");
    // A password file that is a FIFO: named, with the key.
    let pw_fifo = dir.join("pw");
    crate::os::sys::make_fifo(&pw_fifo).unwrap();
    let cfg = dir.join("real.toml");
    std::fs::write(&cfg, "[server]\npassword_file = \"pw\"\n").unwrap();
    let err = Config::load(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("server.password_file: ") && err.contains("pw is a FIFO (named pipe)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn takeover_policy_silence_and_flapping_keys() {
    let c = Config::default();
    assert_eq!(c.session.takeover, TakeoverPolicy::Stale);
    assert_eq!(c.session.takeover_after, None);
    assert_eq!(c.session.flap_threshold, 5);
    let c = config(
        "[session]\nunique_names = true\ntakeover = \"newest\"\ntakeover_after = \"1s\"\n\
         flap_threshold = 0",
    );
    assert_eq!(c.session.takeover, TakeoverPolicy::Newest);
    assert_eq!(c.session.takeover_after, Some(Duration::from_secs(1)));
    assert_eq!(c.session.flap_threshold, 0);
    assert_eq!(config(&c.to_toml()), c);
    let rendered = Config::default().to_toml();
    for key in [
        "takeover = \"stale\"",
        "takeover_after = \"0s\"",
        "flap_threshold = 5",
    ] {
        assert!(rendered.contains(key), "{key} missing from:\n{rendered}");
    }
    assert_eq!(
        config("[session]\ntakeover = \" Stale \"").session.takeover,
        TakeoverPolicy::Stale
    );
    assert_eq!(
        config("[session]\ntakeover_after = \"0s\"")
            .session
            .takeover_after,
        None
    );
    for (key, value, needle) in [
        ("takeover", "\"oldest\"", "use \"stale\""),
        ("takeover_after", "\"500ms\"", "use at least \"1s\""),
        ("takeover_after", "\"soon\"", ""),
        ("flap_threshold", "-1", "use 0 to 10000"),
        ("flap_threshold", "10001", "0 turns the warning off"),
    ] {
        invalid(
            &format!("[session]\n{key} = {value}"),
            &format!("session.{key}"),
            needle,
        );
    }
}

#[test]
fn proxy_protocol_keys() {
    let d = Config::default();
    assert_eq!(d.server.proxy.mode, ProxyMode::Off);
    assert_eq!(d.server.proxy.header_timeout, secs(3));
    let c = config(
        "[server]\nproxy_protocol = \"v2\"\nproxy_trusted = [\"127.0.0.1\", \"10.0.0.0/8\"]\nproxy_header_timeout = \"500ms\"",
    );
    assert_eq!(c.server.proxy.mode, ProxyMode::V2);
    assert!(c.server.proxy.trusts("10.9.8.7".parse().unwrap()));
    assert!(!c.server.proxy.trusts("127.0.0.7".parse().unwrap()));
    assert_eq!(c.server.proxy.header_timeout, Duration::from_millis(500));
    assert_eq!(loaded(&c.to_toml()).config, c, "round trip");
    for (text, key, needle) in [
        (
            "[server]\nproxy_protocol = \"v3\"",
            "server.proxy_protocol",
            "is not one of",
        ),
        (
            "[server]\nproxy_protocol = \"any\"",
            "server.proxy_trusted",
            "every connection would be refused",
        ),
        (
            "[server]\nproxy_trusted = [\"10.0.0.0/40\"]",
            "server.proxy_trusted[0]",
            "prefix length",
        ),
        (
            "[server]\nproxy_header_timeout = \"10ms\"",
            "server.proxy_header_timeout",
            "out of range",
        ),
        (
            "[server]\nproxy_header_timeout = \"2m\"",
            "server.proxy_header_timeout",
            "out of range",
        ),
    ] {
        invalid(text, key, needle);
    }
}

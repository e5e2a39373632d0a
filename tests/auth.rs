//! Client authentication with `[server] password` / `password_file`: real clients (the redis
//! crate's password URL, raw sockets), the NOAUTH gate, counted and rate-limited failures,
//! sessions closed after repeated failures, and a password changed by SIGHUP.

mod util;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use util::load::{connect_from, read_line, read_to_close, say, source_ip, Control};
use util::Daemon;

#[test]
fn redis_clients_authenticate_and_others_get_noauth() {
    let d = Daemon::start("[server]\npassword = \"s3cret pw\"");
    let url = format!("redis://:s3cret%20pw@{}/", d.addr);
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with the right password");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");

    let wrong = format!("redis://:nope@{}/", d.addr);
    let err = redis::Client::open(wrong)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .err()
        .expect("a wrong password is refused");
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");

    let mut s = d.raw();
    assert_eq!(say(&mut s, "PING"), "-NOAUTH Authentication required.");
    assert_eq!(say(&mut s, "CLIENT ID"), "-NOAUTH Authentication required.");
    assert!(say(&mut s, "HELLO 2").starts_with("-NOAUTH HELLO must be called"));
    assert!(say(&mut s, "HELLO 3").starts_with("-NOAUTH HELLO must be called"));
    assert_eq!(
        say(&mut s, "HELLO 4"),
        "-NOPROTO unsupported protocol version"
    );
    assert_eq!(say(&mut s, "AUTH \"s3cret pw\""), "+OK");
    assert_eq!(say(&mut s, "PING"), "+PONG");
    // HELLO with AUTH authenticates in one step, as redis clients on RESP2 may do.
    let mut h = d.raw();
    assert_eq!(say(&mut h, "HELLO 2 AUTH default \"s3cret pw\""), "*14");
    drop(h);
    // And on RESP3, which is how redis-py 8 opens a connection with a password.
    let mut h3 = d.raw();
    assert_eq!(say(&mut h3, "HELLO 3 AUTH default \"s3cret pw\""), "%7");
    drop(h3);
    // QUIT works before AUTH.
    let mut q = d.raw();
    assert_eq!(say(&mut q, "QUIT"), "+OK");
    let st = d.stats();
    assert_eq!(st["auth.failed"], "1", "{st:?}");
}

#[test]
fn repeated_failures_close_the_session_and_are_logged_at_most_once_a_second() {
    let d = Daemon::start("[server]\npassword = \"right\"");
    let control = Control::start(d.addr, Some("right"));
    let t0 = Instant::now();
    // 100 connections over 1.5 s, each pipelining 10 guesses: the session is closed after the
    // third.
    let mut peers = Vec::new();
    for i in 0..100 {
        // The attack's pace (the test: 100 connections over 1.5 s).
        std::thread::sleep(Duration::from_millis(15));
        let mut s = connect_from(source_ip(i), d.addr).unwrap();
        peers.push(s.local_addr().unwrap());
        s.write_all("AUTH guess\r\n".repeat(10).as_bytes()).unwrap();
        let (reply, _) = read_to_close(&mut s, Duration::from_secs(5));
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert_eq!(
            reply,
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n".repeat(3),
            "connection {i}"
        );
    }
    let elapsed = t0.elapsed();
    for peer in peers {
        assert_eq!(
            d.wait_reap_of_peer(peer, Duration::from_secs(5))["reason"],
            "auth-failed"
        );
    }
    let st = d.stats();
    assert_eq!(st["auth.failed"], "300");
    assert_eq!(st["reap.auth-failed"], "100");
    let warns: Vec<String> = d
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains(" auth failed "))
        .collect();
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        !warns.is_empty() && warns.len() <= allowed,
        "{} warnings in {elapsed:?}: {warns:?}",
        warns.len()
    );
    assert!(warns[0].contains(" WARN "), "{}", warns[0]);
    let report = control.stop();
    eprintln!(
        "auth brute force: 300 wrong passwords on 100 connections in {elapsed:?}, {} warning \
         lines; control {} pings, max {:?}",
        warns.len(),
        report.pings,
        report.max
    );
    report.assert_ok("auth brute force");
}

#[test]
fn password_file_and_reload() {
    let d0 = util::TempDir::new("auth-file");
    let pw_path = d0.path().join("pw");
    std::fs::write(&pw_path, "first\n").unwrap();
    std::fs::set_permissions(&pw_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!("[server]\npassword_file = \"{}\"", pw_path.display());
    let d = Daemon::start(&config);
    let mut old = d.raw();
    assert_eq!(say(&mut old, "AUTH first"), "+OK");

    std::fs::write(&pw_path, "second\n").unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(Duration::from_secs(5), |l| l.contains("reloaded "))
        .expect("reloaded");
    let mut s = d.raw();
    assert!(say(&mut s, "AUTH first").starts_with("-WRONGPASS"));
    assert_eq!(say(&mut s, "AUTH second"), "+OK");
    // The session that authenticated before the change keeps its access.
    assert_eq!(say(&mut old, "PING"), "+PONG");

    // Without a password, AUTH says so and everything else runs.
    std::fs::write(&d.config_path, util::complete_config("")).unwrap();
    d.signal(libc::SIGHUP);
    d.log
        .wait_for_n(2, Duration::from_secs(5), |l| l.contains("reloaded "));
    let mut free = d.raw();
    assert_eq!(say(&mut free, "PING"), "+PONG");
    assert!(say(&mut free, "AUTH x").starts_with("-ERR AUTH <password> called without"));
}

#[test]
fn before_auth_requests_are_limited_to_4_kib() {
    let d = Daemon::start("[server]\npassword = \"pw\"");
    let big = "x".repeat(10_000);
    let mut s = d.raw();
    let peer = s.local_addr().unwrap();
    s.write_all(format!("ECHO {big}\r\n").as_bytes()).unwrap();
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-ERR Protocol error: unauthenticated request exceeds 4096 bytes; send AUTH first\r\n"
    );
    assert_eq!(
        d.wait_reap_of_peer(peer, Duration::from_secs(5))["reason"],
        "protocol-error"
    );
    // Authenticated, in the same write even, the configured limit applies.
    let mut s = d.raw();
    s.write_all(format!("AUTH pw\r\nECHO {big}\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "+OK");
    assert_eq!(read_line(&mut s).unwrap(), "$10000");
    assert_eq!(read_line(&mut s).unwrap(), big);
}

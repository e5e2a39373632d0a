//! `server.busy_poll_us`: with it set, the loop stays awake between a client's back-to-back
//! requests instead of sleeping in `epoll_wait` after each one, and it still goes to sleep
//! once the traffic stops; a reload turns it off. Sleeps are counted from the daemon's voluntary
//! context switches.

mod util;

use std::time::Duration;

use util::{cpu_ns, info, wait_until, Daemon};

/// Voluntary context switches of every thread of `pid` so far: one per sleep in `epoll_wait`.
fn sleeps(pid: i32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("voluntary_ctxt_switches");
    }
    total
}

/// The scheduler state of `pid`'s main thread (the loop), from `/proc/PID/stat`: `'S'` while
/// it sleeps in `epoll_wait`, `'R'` while it busy-polls.
fn loop_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name, in parentheses, may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .expect("a state in /proc/PID/stat")
}

const REQUESTS: u64 = 2_000;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// `(busy_poll_windows, busy_poll_windows_caught)` from `INFO stats`.
fn windows(admin: &mut redis::Connection) -> (u64, u64) {
    let stats = info(admin, "stats");
    let field = |name: &str| -> u64 {
        stats
            .get(name)
            .unwrap_or_else(|| panic!("{name} in INFO stats: {stats:?}"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        field("busy_poll_windows"),
        field("busy_poll_windows_caught"),
    )
}

/// Sleeps of the daemon per request while one client sends `REQUESTS` PINGs back to back.
fn sleeps_per_request(d: &Daemon) -> f64 {
    let mut con = d.redis();
    let _: String = redis::cmd("PING").query(&mut con).unwrap();
    let before = sleeps(d.pid());
    for _ in 0..REQUESTS {
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
    }
    (sleeps(d.pid()) - before) as f64 / REQUESTS as f64
}

#[test]
fn busy_polling_keeps_the_loop_awake_between_requests_and_sleeps_after() {
    let off = Daemon::start(&format!("[server]\nbusy_poll_us = 0\n{ADMIN}"));
    let on = Daemon::start(&format!("[server]\nbusy_poll_us = 1000\n{ADMIN}"));
    let mut on_admin = on.admin();
    let before = windows(&mut on_admin);

    // Without busy polling the loop sleeps after most replies (0.7 to 1.0 a request here: now
    // and then the next request arrives before the turn ends); with a 1 ms window the next
    // request, tens of microseconds later, finds it awake (under 0.005 here). A client
    // descheduled for a millisecond lets it sleep now and then, hence the wide margins.
    let (a, b) = (sleeps_per_request(&off), sleeps_per_request(&on));
    println!("sleeps per request: busy_poll_us = 0: {a:.3}, busy_poll_us = 1000: {b:.3}");
    assert!(
        a > 0.3,
        "without busy polling the loop sleeps between requests: {a:.3}"
    );
    assert!(
        b < 0.1,
        "with busy polling it stays awake between requests: {b:.3}"
    );
    // Operators see it work: nearly every request came inside a window.
    let (opened, caught) = windows(&mut on_admin);
    let (opened, caught) = (opened - before.0, caught - before.1);
    println!("windows opened {opened}, caught {caught}");
    assert!(
        caught >= REQUESTS * 9 / 10 && opened >= caught,
        "{opened} / {caught}"
    );
    assert_eq!(
        windows(&mut off.admin()),
        (0, 0),
        "none without busy polling"
    );

    // Pipelined requests from several clients are all answered.
    let mut cons: Vec<_> = (0..4).map(|_| on.redis()).collect();
    for con in &mut cons {
        let mut pipe = redis::pipe();
        for _ in 0..500 {
            pipe.cmd("PING");
        }
        let pongs: Vec<String> = pipe.query(con).unwrap();
        assert!(pongs.len() == 500 && pongs.iter().all(|p| p == "PONG"));
    }

    // The window closes once traffic stops: holding the sessions costs no CPU.
    wait_until(
        Duration::from_secs(5),
        "the loop asleep in epoll_wait (state S) after the traffic",
        || match loop_state(on.pid()) {
            'S' => Ok(()),
            other => Err(format!("state {other}")),
        },
    );
    let (cpu0, sleeps0) = (cpu_ns(on.pid()), sleeps(on.pid()));
    // The measured interval: one idle second.
    std::thread::sleep(Duration::from_secs(1));
    let idle_ms = (cpu_ns(on.pid()) - cpu0) as f64 / 1e6;
    println!("idle after traffic: {idle_ms:.3} ms of CPU in 1 s");
    assert!(
        idle_ms < 20.0,
        "the daemon keeps polling after traffic stopped: {idle_ms:.1} ms of CPU in 1 s"
    );
    assert!(
        sleeps(on.pid()) - sleeps0 <= 5,
        "it sleeps in epoll_wait again"
    );

    // The effective value is visible to operators.
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("server.busy_poll_us")
        .query(&mut on_admin)
        .unwrap();
    assert_eq!(got, ["server.busy_poll_us", "1000"]);

    // A reload that turns it off applies from the next turn.
    let text = std::fs::read_to_string(&on.config_path).unwrap();
    std::fs::write(
        &on.config_path,
        text.replace("busy_poll_us = 1000", "busy_poll_us = 0"),
    )
    .unwrap();
    on.signal(libc::SIGHUP);
    on.log
        .wait_for(Duration::from_secs(5), |l| l.contains("reloaded "))
        .expect("reload line");
    let c = sleeps_per_request(&on);
    println!("sleeps per request after the reload to 0: {c:.3}");
    assert!(c > 0.3, "busy polling is off after the reload: {c:.3}");
}

#[test]
fn busy_polling_stops_opening_windows_for_a_client_slower_than_the_window() {
    let d = Daemon::start(&format!("[server]\nbusy_poll_us = 1000\n{ADMIN}"));
    let mut ops = d.admin();
    let mut con = d.redis();
    // A request every 3 ms: every 1 ms window expires empty. Polling through each would cost
    // about 1 ms of CPU a request (300 ms here); once the loop sees that, it opens only one
    // window in 16 busy turns.
    let n = 300;
    let cpu0 = cpu_ns(d.pid());
    for _ in 0..n {
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        // The test itself: a client slower than the window, one request every 3 ms.
        std::thread::sleep(Duration::from_millis(3));
    }
    let spent_ms = (cpu_ns(d.pid()) - cpu0) as f64 / 1e6;
    let (opened, caught) = windows(&mut ops);
    println!(
        "{n} requests 3 ms apart with busy_poll_us = 1000: {spent_ms:.1} ms of CPU, \
         {opened} windows opened, {caught} caught"
    );
    assert!(opened < 60, "one busy turn in 16 opens a window: {opened}");
    assert!(
        spent_ms < 100.0,
        "windows that keep expiring empty are still opened: {spent_ms:.1} ms of CPU"
    );
}

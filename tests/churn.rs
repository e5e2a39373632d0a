//! Connection churn: 100,000 connect → PING → close cycles and 100,000 connect → RST cycles,
//! from parallel clients spread over many loopback source addresses, while a control client
//! keeps getting `PONG` within 50 ms. Afterwards every session is accounted for in the
//! statistics and the daemon's descriptors and memory are back at their baseline.
//!
//! Its own test binary because it loads both cores for several seconds: the two cases run
//! one after the other, and not next to other tests' floods.

mod util;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::load::{
    connect_from, listen_drops, lower_priority, read_line, reset, source_ip, Control,
    ControlReport, Footprint,
};
use util::{fields, wait_until, Daemon};

const CYCLES: usize = 100_000;
/// Client threads. One keeps the daemon (the bottleneck) just as busy: two gave the same
/// 16,000-20,000 cycles a second but saturated both cores of the test machine, and then the
/// daemon waited up to 87 ms in 100 ms for a CPU (`/proc/PID/schedstat` run delay), which a
/// control client measures as a slow PONG that vigild did not cause.
const CLIENT_THREADS: usize = 1;
/// Each client thread makes one round trip on a session of its own every this many cycles:
/// the daemon answers it at the earliest on its next turn, in which it also accepts up to 64
/// connections, so the clients can never run ahead of accept by more than
/// `CLIENT_THREADS * SYNC_EVERY` and the listen queue never overflows. (Unpaced, resets
/// outran a debug build, the kernel dropped SYNs from the full queue, and each dropped SYN
/// cost its client a one-second retransmission: 20 s instead of 4 for 100,000 cycles.)
const SYNC_EVERY: usize = 16;
/// Generous: a debug build on two shared cores does one case in a few seconds.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// RSS the churn may leave behind (allocator caches, the session slab's high-water mark).
const RSS_SLACK_KB: u64 = 4096;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `cycle(i)` for i in 0..CYCLES over the client threads; returns the time taken.
/// Each thread also holds one pacing session (see [`SYNC_EVERY`]), closed at the end.
fn churn(addr: SocketAddr, cycle: impl Fn(usize) + Send + Sync + 'static) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let cycle = Arc::new(cycle);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|_| {
            let (next, cycle) = (next.clone(), cycle.clone());
            let mut sync = TcpStream::connect(addr).expect("pacing session");
            sync.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            std::thread::spawn(move || {
                lower_priority();
                let mut done = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CYCLES {
                        break;
                    }
                    cycle(i);
                    done += 1;
                    if done % SYNC_EVERY == 0 {
                        sync.write_all(b"PING\r\n").unwrap();
                        assert_eq!(read_line(&mut sync).unwrap(), "+PONG");
                    }
                    assert!(
                        t0.elapsed() < TIME_LIMIT,
                        "churn took too long ({i} cycles)"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    t0.elapsed()
}

/// Spreads connections over 200 source addresses (500 connections each), so neither the
/// ephemeral port search nor TIME_WAIT gets in the way.
fn source(i: usize) -> std::net::Ipv4Addr {
    source_ip(i % 200)
}

/// Checks the footprint and that the statistics add up; returns them and what the control
/// client saw (checked by [`with_one_retry`]).
fn check_after(
    d: &Daemon,
    control: Control,
    base: Footprint,
    case: &str,
    took: Duration,
    unseen_allowed: u64,
) -> (HashMap<String, String>, ControlReport) {
    let st = d.stats();
    let after = base.assert_back(d.pid(), 0, RSS_SLACK_KB, case);
    let report = control.stop();
    eprintln!(
        "{case}: {CYCLES} cycles in {took:?} ({:.0}/s), daemon cpu {:?}; control {} pings, \
         max {:?}; fds {} -> {}; rss {} -> {} KiB; stats {}",
        CYCLES as f64 / took.as_secs_f64(),
        util::load::cpu_time(d.pid()),
        report.pings,
        report.max,
        base.fds,
        after.fds,
        base.rss_kb,
        after.rss_kb,
        d.log
            .lines()
            .iter()
            .rev()
            .find(|l| l.contains(" stats "))
            .cloned()
            .unwrap_or_default()
    );
    assert!(
        report.error.is_none(),
        "{case}: control client failed: {report:?}"
    );
    // Every connection that reached accept was admitted (the control session too) and all
    // but the control were reaped: nothing is left behind.
    let num = |k: &str| st.get(k).map_or(0, |v| v.parse::<u64>().unwrap());
    let cycles = (CYCLES + CLIENT_THREADS) as u64;
    assert_eq!(num("accepted"), num("reaped") + num("live"), "{st:?}");
    assert_eq!((num("live"), num("rejected")), (1, 0), "{st:?}");
    let unseen = cycles.saturating_sub(num("reaped"));
    eprintln!("{case}: {unseen} connections never reached accept");
    assert!(
        num("reaped") <= cycles && unseen <= unseen_allowed,
        "{unseen} of {cycles} connections never seen (allowed {unseen_allowed}): {st:?}"
    );
    (st, report)
}

/// Runs a case; if its only failure was the control client's latency bound (every other
/// check held), runs it once more, and then it must pass. Each case keeps both cores busy for
/// seconds, and on a machine shared with other work one PONG in several hundred has come
/// back after 50-60 ms because the daemon waited for a CPU (run delay in
/// `/proc/PID/schedstat`) while another tenant's work ran.
fn with_one_retry(case: &str, run: impl Fn() -> ControlReport) {
    let first = run();
    if first.is_ok() {
        return;
    }
    eprintln!("{case}: control client {first:?}; running the case once more");
    run().assert_ok(case);
}

fn start() -> (Daemon, Control, Footprint) {
    // info: the per-session debug lines would be 200,000 lines of log per case.
    let d = Daemon::start("[server]\nbacklog = 4096\n[log]\nlevel = \"info\"");
    // The load is ours; the rest of a shared machine's is not: as root, put the daemon ahead
    // of it (the control client does the same for itself).
    util::load::raise_priority(d.pid());
    let control = Control::start(d.addr, None);
    let base = Footprint::settled(d.pid());
    (d, control, base)
}

#[test]
fn connect_ping_close_100k() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_one_retry("connect-ping-close", ping_close_case);
}

fn ping_close_case() -> ControlReport {
    let (d, control, base) = start();
    let addr = d.addr;
    let took = churn(addr, move |i| {
        let mut s = connect_from(source(i), addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "+PONG");
    });
    // Sessions end as `closed` once the daemon has read each FIN.
    wait_reaped(&d, CYCLES + CLIENT_THREADS);
    // Every one of them got its PONG, so none can have been dropped.
    let (st, report) = check_after(&d, control, base, "connect-ping-close", took, 0);
    assert_eq!(st["reap.closed"], (CYCLES + CLIENT_THREADS).to_string());
    report
}

#[test]
fn connect_reset_100k() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_one_retry("connect-reset", reset_case);
}

fn reset_case() -> ControlReport {
    let (d, control, base) = start();
    let addr = d.addr;
    let drops0 = listen_drops();
    let took = churn(addr, move |i| {
        reset(connect_from(source(i), addr).expect("connect"));
    });
    // A connection its client resets before the daemon accepts it may never reach accept:
    // the kernel drops it when the listen queue is full (counted), or discards it when the
    // reset is processed first. Allow those, and 0.1 % for the uncounted kind.
    let dropped = listen_drops() - drops0;
    let allowed = dropped + (CYCLES / 1000) as u64;
    wait_reaped(&d, CYCLES + CLIENT_THREADS);
    let (st, report) = check_after(&d, control, base, "connect-reset", took, allowed);
    // Every session the daemon saw ended as a reset, except the pacing sessions.
    let resets: u64 = st["reap.reset"].parse().unwrap();
    let reaped: u64 = st["reaped"].parse().unwrap();
    assert_eq!(resets + CLIENT_THREADS as u64, reaped, "{st:?}");
    // Each reset was logged, or counted in a "reap lines left out" warning (at most 1000
    // lines a second are written); the warning comes at most once a second, so the last one
    // may take a second to arrive.
    let (logged, left_out, reports) = wait_until(
        Duration::from_secs(3),
        &format!("{resets} resets logged or counted as left out"),
        || {
            let lines = d.log.lines();
            let logged = lines
                .iter()
                .filter(|l| l.contains(" reap ") && l.contains(" reason=reset "))
                .count() as u64;
            let reports: Vec<String> = lines
                .into_iter()
                .filter(|l| l.contains("reap lines left out"))
                .collect();
            let left_out: u64 = reports
                .iter()
                .map(|l| {
                    fields(l)
                        .get("reap.reset")
                        .map_or(0, |v| v.parse().unwrap())
                })
                .sum();
            if logged + left_out >= resets {
                Ok((logged, left_out, reports))
            } else {
                Err(format!(
                    "{logged} logged, {left_out} left out in {reports:?}"
                ))
            }
        },
    );
    eprintln!(
        "connect-reset: {logged} reset lines written, {left_out} left out in {} warnings",
        reports.len()
    );
    assert_eq!(logged + left_out, resets, "{reports:?}");
    assert!(
        reports.len() as f64 <= took.as_secs_f64() + 2.0,
        "{reports:?}"
    );
    report
}

/// Waits until `n` sessions besides the control one have been reaped, or until the count has
/// stopped moving for half a second with only the control session live (SIGUSR1 stats).
fn wait_reaped(d: &Daemon, n: usize) {
    let mut last = (0, Instant::now());
    wait_until(
        Duration::from_secs(20),
        &format!("{n} sessions reaped (or the count still with the control session alone)"),
        || {
            let st = d.stats();
            let reaped: usize = st["reaped"].parse().unwrap();
            if reaped >= n {
                return Ok(());
            }
            if reaped != last.0 {
                last = (reaped, Instant::now());
            } else if st["live"] == "1" && last.1.elapsed() > Duration::from_millis(500) {
                return Ok(());
            }
            Err(format!("{st:?}"))
        },
    );
}

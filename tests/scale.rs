//! Many sessions at once: 10,000 held connections, then SIGTERM. The daemon must close them
//! all with reason `shutdown`, log statistics that add up, and exit 0 well under a second.

mod util;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use util::{connect_from, fields, raise_fd_limit, wait_until, Daemon};

const SESSIONS: usize = 10_000;
/// Connections per source address: more makes the kernel's source-port search slow.
const PER_SOURCE: usize = 1_000;

#[test]
fn ten_thousand_sessions_shut_down_cleanly_in_under_a_second() {
    let limit = raise_fd_limit();
    assert!(
        limit as usize > SESSIONS + 100,
        "this test needs {} descriptors, the hard limit is {limit}",
        SESSIONS + 100
    );
    let mut d = Daemon::start(
        "[server]\nmax_connections = 12000\nbacklog = 4096\n[log]\nlevel = \"info\"\n",
    );
    let started = Instant::now();
    let mut held = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let src = Ipv4Addr::new(127, 0, 1, 1 + (i / PER_SOURCE) as u8);
        held.push(connect_from(src, d.addr).expect("connect"));
    }
    // Wait until the daemon has accepted them all.
    wait_until(
        Duration::from_secs(30),
        &format!("{SESSIONS} sessions live"),
        || {
            let stats = d.stats();
            if stats["live"] == SESSIONS.to_string() {
                Ok(())
            } else {
                Err(format!("{} live", stats["live"]))
            }
        },
    );
    eprintln!("{SESSIONS} sessions connected in {:?}", started.elapsed());

    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).expect("exit");
    let took = t0.elapsed();
    eprintln!("shutdown with {SESSIONS} sessions took {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    let last = d
        .log
        .wait_for(Duration::from_secs(2), |l| l.contains("final stats"))
        .expect("final stats");
    let f = fields(&last);
    assert_eq!(f["reap.shutdown"], SESSIONS.to_string());
    assert_eq!(f["accepted"], SESSIONS.to_string());
    assert_eq!(f["live"], "0");
    assert_eq!(f["peak"], SESSIONS.to_string());
}

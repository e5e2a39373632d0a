//! Mass partition: 2,000 idle sessions from one source address (127.0.0.2) are cut at once
//! while a control client on 127.0.0.1 keeps pinging. All 2,000 must die `keepalive-timeout`
//! within the bound, and the live client must not notice: every PING round trip < 10 ms.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::check::{self, expect_stats, Bound, Row, QUIET};
use crate::client::Client;
use crate::util::{fields, netns};

const SESSIONS: usize = 2_000;
const CUT_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const IDLE_BOUND: Bound = Bound::around(5_000, 500, 1_000);
/// The control client's PING round trip must stay below this.
const MAX_RTT: Duration = Duration::from_millis(10);
/// Pause between control PINGs.
const CONTROL_EVERY: Duration = Duration::from_millis(5);

/// Pings from 127.0.0.1 until `stop`; returns every round trip.
fn control(mut con: redis::Connection, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut rtts = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let pong: String = redis::cmd("PING").query(&mut con).expect("control PING");
        rtts.push(t.elapsed());
        assert_eq!(pong, "PONG");
        thread::sleep(CONTROL_EVERY);
    }
    rtts
}

pub fn mass_partition() -> Row {
    netns::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let d = check::start(&check::config("auto", ""));
    let source = Some(IpAddr::V4(CUT_SOURCE));
    let mut clients: Vec<Client> = (0..SESSIONS)
        .map(|i| {
            Client::connect_from(d.addr, source)
                .unwrap_or_else(|e| panic!("connect #{i} from {CUT_SOURCE}: {e}"))
        })
        .collect();
    // Each session answers once, then all go quiet: each one's last packet is known.
    let last: HashMap<SocketAddr, Instant> =
        clients.iter_mut().map(|c| (c.local, c.ping())).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let con = d.redis();
        con.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let stop = stop.clone();
        // Started from this thread, so it runs in this case's namespace.
        thread::spawn(move || control(con, stop))
    };
    thread::sleep(QUIET);
    let before = netns::tcp_ext("TCPKeepAlive").expect("TcpExt counters");
    check::cut_address(&CUT_SOURCE.to_string());

    let cut_prefix = format!(" peer={CUT_SOURCE}:");
    let newest = last.values().max().copied().expect("sessions");
    let deadline = newest + Duration::from_millis(IDLE_BOUND.hi() + 3_000);
    let reaps = loop {
        let reaps: Vec<(String, Instant)> = d
            .log
            .lines_at()
            .into_iter()
            .filter(|(l, _)| l.contains(" reap ") && l.contains(&cut_prefix))
            .collect();
        if reaps.len() >= SESSIONS || Instant::now() >= deadline {
            break reaps;
        }
        thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    let rtts = pinger.join().expect("control client");
    let probes = netns::tcp_ext("TCPKeepAlive").expect("TcpExt counters") - before;
    assert_eq!(
        reaps.len(),
        SESSIONS,
        "sessions reaped by the deadline; log tail:\n{}",
        d.log
            .lines()
            .iter()
            .rev()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let (mut test_min, mut test_max, mut silent_min, mut silent_max) = (u64::MAX, 0, u64::MAX, 0);
    for (line, at) in &reaps {
        let f = fields(line);
        assert_eq!(
            f.get("reason").map(String::as_str),
            Some("keepalive-timeout"),
            "{line}"
        );
        let peer: SocketAddr = f["peer"].parse().expect("peer address");
        let since = last
            .get(&peer)
            .unwrap_or_else(|| panic!("unknown peer: {line}"));
        let test_ms = at.saturating_duration_since(*since).as_millis() as u64;
        let silent_ms: u64 = f["silent_ms"].parse().expect("silent_ms");
        IDLE_BOUND.check("detection time by the test's clock", test_ms, line);
        IDLE_BOUND.check("the daemon's silent_ms", silent_ms, line);
        (test_min, test_max) = (test_min.min(test_ms), test_max.max(test_ms));
        (silent_min, silent_max) = (silent_min.min(silent_ms), silent_max.max(silent_ms));
    }

    let rtt_max = rtts.iter().max().copied().unwrap_or_default();
    let rtt_p50 = {
        let mut sorted = rtts.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    };
    assert!(
        rtts.len() >= 100,
        "the control client pinged throughout ({} PINGs)",
        rtts.len()
    );
    assert!(
        rtt_max < MAX_RTT,
        "control PING round trip {rtt_max:?} (p50 {rtt_p50:?}, {} PINGs)",
        rtts.len()
    );
    assert_eq!(
        probes,
        3 * SESSIONS as u64,
        "TcpExtTCPKeepAlive must rise by 3 probes per session"
    );
    let s = expect_stats(&d, "keepalive-timeout", SESSIONS as u64, Some(IDLE_BOUND));
    assert_eq!(
        s.get("live").map(String::as_str),
        Some("1"),
        "only the control client is left: {s:?}"
    );
    drop(clients);

    Row {
        expected: "2000 × keepalive-timeout, control RTT < 10 ms",
        got: format!("{} × keepalive-timeout", reaps.len()),
        test_ms: test_max,
        daemon_ms: Some(silent_max),
        bound: IDLE_BOUND.to_string(),
        note: format!(
            "test {test_min}..{test_max} ms, silent {silent_min}..{silent_max} ms; control RTT p50 {:.2} ms max {:.2} ms over {} PINGs; TcpExtTCPKeepAlive +{probes}",
            rtt_p50.as_secs_f64() * 1e3,
            rtt_max.as_secs_f64() * 1e3,
            rtts.len()
        ),
    }
}

//! The fleet while Redis is away (docs/fleet.md, "Failure cases"): three nodes under client
//! churn, Redis `kill -9`ed for 10 s and started again, once with its data gone (no
//! persistence) and once with it kept (append-only file, fsync always). The nodes keep
//! answering PING within 50 ms all along (so this binary is in the serial timing set of
//! scripts/test), count what they could not write, and the table in Redis equals the nodes'
//! `CLIENT LIST`s within the stated bound (lease + 2 s) after Redis is back.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use util::redis_server::{
    fleet_info, pinger, read_stream, start_node, wait_converged, RedisServer,
};
use util::Daemon;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Connects, names itself and quits, over and over, keeping every fifth session open.
fn churn(d: &Daemon, node: &str, stop: &AtomicBool) -> (Vec<TcpStream>, u64) {
    let mut kept = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(d.addr) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = format!("{node}-{n}");
        let req = util::load::multibulk(&[b"CLIENT", b"SETNAME", name.as_bytes()]);
        s.write_all(&req).unwrap();
        assert_eq!(util::load::read_line(&mut s).unwrap(), "+OK");
        if n.is_multiple_of(5) && kept.len() < 200 {
            kept.push(s);
        } else {
            s.write_all(b"QUIT\r\n").unwrap();
            let _ = util::load::read_line(&mut s);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    (kept, n)
}

fn outage(aof: bool) {
    let mut redis = RedisServer::start(aof);
    let url = redis.url();
    let nodes: Vec<Daemon> = NAMES
        .iter()
        .map(|n| start_node(&url, n, "3s", ""))
        .collect();
    let stop_churn = AtomicBool::new(false);
    let stop_ping = AtomicBool::new(false);
    let mut kept = Vec::new();
    let (mut restarted_at, mut worst) = (None, Vec::new());
    std::thread::scope(|scope| {
        let churners: Vec<_> = nodes
            .iter()
            .zip(NAMES)
            .map(|(d, n)| {
                let stop = &stop_churn;
                scope.spawn(move || churn(d, n, stop))
            })
            .collect();
        let pingers: Vec<_> = nodes
            .iter()
            .map(|d| {
                let stop = &stop_ping;
                scope.spawn(move || pinger(d, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        redis.kill();
        std::thread::sleep(Duration::from_secs(10));
        redis.restart();
        restarted_at = Some(Instant::now());
        stop_churn.store(true, Ordering::Relaxed);
        let mut total = 0;
        for c in churners {
            let (k, n) = c.join().unwrap();
            kept.extend(k);
            total += n;
        }
        println!("churn: {total} sessions over the run");
        // The pings go on while the nodes resynchronise.
        std::thread::sleep(Duration::from_secs(1));
        stop_ping.store(true, Ordering::Relaxed);
        worst = pingers.into_iter().map(|p| p.join().unwrap()).collect();
    });
    let pairs: Vec<(&str, &Daemon)> = NAMES.iter().copied().zip(nodes.iter()).collect();
    wait_converged(&redis, &pairs, Duration::from_secs(5));
    let converged = restarted_at.unwrap().elapsed();
    let dropped: Vec<String> = nodes
        .iter()
        .map(|d| fleet_info(d)["fleet_events_dropped"].clone())
        .collect();
    let resyncs: Vec<String> = nodes
        .iter()
        .map(|d| fleet_info(d)["fleet_resyncs"].clone())
        .collect();
    println!(
        "Redis {} down 10 s: slowest PING per node {worst:?}; converged {converged:?} after the \
         restart (bound: lease + 2 s = 5 s); dropped events per node {dropped:?}, resyncs {resyncs:?}",
        if aof { "(data kept, AOF)" } else { "(data gone)" }
    );
    for w in &worst {
        assert!(*w < Duration::from_millis(50), "a PING took {w:?}");
    }
    assert!(
        converged < Duration::from_secs(5) + Duration::from_secs(1),
        "{converged:?}"
    );
    let mut con = redis.conn();
    let stream = read_stream(&mut con, "-");
    if aof {
        // The live nodes re-registered before anyone swept: no spurious node-lost.
        let lost = stream
            .iter()
            .filter(|(_, e)| e["reason"] == "node-lost")
            .count();
        assert_eq!(lost, 0, "node-lost after a Redis restart with live nodes");
    }
    for d in &nodes {
        assert_eq!(fleet_info(d)["fleet_redis_up"], "1");
    }
    drop(kept);
}

#[test]
fn redis_killed_for_10s_with_its_data_gone_nodes_keep_serving_and_the_view_converges() {
    outage(false);
}

#[test]
fn redis_killed_for_10s_with_its_data_kept_nodes_keep_serving_and_the_view_converges() {
    outage(true);
}

//! The fleet on a real Redis Cluster (docs/fleet.md, "Redis Cluster"): redis-server processes
//! with `cluster-enabled yes` on loopback ports, three masters (master 1 owns the `{vigild}`
//! tag's slot) and, for the failover case, a replica of master 1. Three vigild nodes, each
//! seeded with a different cluster node, so two of them are answered `MOVED` and must follow
//! it: every event once and in order, a `kill -9`ed node's sessions `left node-lost` once
//! each within lease + 2 s; master 1 `kill -9`ed, its replica promoted, the nodes (one of them
//! seeded with the dead master) find it, answer PING within 50 ms meanwhile (so this binary
//! is in the serial timing set of scripts/test) and the view converges within the stated
//! bound; a cluster on TLS ports only, where a redirect keeps the link's certificates; the
//! docs' redis-py watcher run with redis-py's `RedisCluster`; and a single Redis not taken
//! for a cluster.
//!
//! `scripts/test` installs `redis-server` (7) and redis-py.

mod util;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use util::certs::{Leaf, Setup};
use util::redis_server::{
    apply, churn, client_lists, connect, docs_watcher, epoch_of, fleet_info, ids_on, own_seqs,
    pinger, presence_seq, read_stream, request, snapshot, start_node, wait_table_equals,
    watch_under_churn, watcher_view, ClusterTls, Entry, FleetView, RedisCluster, RedisServer,
};
use util::{Daemon, TempDir};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Names are unique across the fleet.
const UNIQUE: &str = "\n[session]\nunique_names = true\n";

/// The view converges within this long after the tag's master is killed: the cluster marks
/// it failed after its node timeout (1 s) and promotes the replica within about a second
/// more; each node then reaches the new owner within a few reconnects (250 ms apart) and
/// resynchronises.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

fn redirects(d: &Daemon) -> u64 {
    fleet_info(d)["fleet_redirects"].parse().unwrap()
}

/// `n` sessions on `d`, every other one named `{prefix}-{i}`.
fn sessions(d: &Daemon, prefix: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect(d);
            if i % 2 == 0 {
                let name = format!("{prefix}-{i}");
                assert_eq!(request(&mut s, &["CLIENT", "SETNAME", &name]), "+OK");
            }
            s
        })
        .collect()
}

#[test]
fn a_single_redis_is_not_taken_for_a_cluster() {
    let redis = RedisServer::start(false);
    let d = start_node(&redis.url(), "a", "3s", "");
    let _s = sessions(&d, "s", 4);
    // 4 joined, 2 named.
    util::wait_until(Duration::from_secs(5), "6 events written", || {
        fleet_info(&d)["fleet_events_written"] == "6"
    });
    assert_eq!(redirects(&d), 0);
    assert_eq!(fleet_info(&d)["fleet_errors"], "0");
    let text = d.log.text();
    assert!(
        !text.contains("CLUSTER") && !text.contains("Cluster"),
        "{text}"
    );
}

#[test]
fn three_nodes_seeded_on_different_cluster_nodes_share_one_view_and_a_killed_node_is_lost_once() {
    util::raise_fd_limit();
    let cluster = RedisCluster::start(false);
    assert_eq!(cluster.owner(), Some(1), "master 1 holds the tag's slot");
    let owner_port = cluster.nodes[1].port;
    let nodes: Vec<Daemon> = NAMES
        .iter()
        .zip(&cluster.nodes)
        .map(|(n, seed)| start_node(&seed.url(), n, "3s", UNIQUE))
        .collect();
    let moved: Vec<u64> = nodes.iter().map(redirects).collect();
    assert!(moved[0] >= 1 && moved[2] >= 1 && moved[1] == 0, "{moved:?}");
    let said = format!("moved slot 5821 to 127.0.0.1:{owner_port}: reconnecting there");
    assert!(
        nodes[0].log.text().contains(&said),
        "{}",
        nodes[0].log.text()
    );

    let mut kept = Vec::new();
    std::thread::scope(|scope| {
        let churners: Vec<_> = nodes
            .iter()
            .zip(NAMES)
            .map(|(d, n)| scope.spawn(move || churn(d, n, 40)))
            .collect();
        for c in churners {
            kept.extend(c.join().unwrap());
        }
    });
    let pairs: Vec<(&str, &Daemon)> = NAMES.iter().copied().zip(nodes.iter()).collect();
    let took = wait_table_equals(|| cluster.owner_conn(), &pairs, Duration::from_secs(10));
    let mut con = cluster.owner_conn().unwrap();
    let all = read_stream(&mut con, "-");
    for (d, n) in nodes.iter().zip(NAMES) {
        let seqs = own_seqs(&all, n, epoch_of(d));
        let want: Vec<u64> = (1..=presence_seq(d)).collect();
        assert_eq!(seqs, want, "node {n}: every event once, in order");
        let info = fleet_info(d);
        assert_eq!(info["fleet_events_dropped"], "0", "{info:?}");
        assert_eq!(info["fleet_redis_up"], "1");
    }
    println!(
        "redirects per node {moved:?}; {} stream entries; table converged {took:?} after the churn",
        all.len()
    );

    // A name taken across nodes (the claim, inbox and release steps on the cluster): a's
    // holder is reaped `replaced`, its `left` before c's `named`.
    let mut holder = connect(&nodes[0]);
    assert_eq!(request(&mut holder, &["CLIENT", "SETNAME", "dev-x"]), "+OK");
    util::wait_until(Duration::from_secs(5), "dev-x held on a", || {
        snapshot(&mut con)
            .0
            .values()
            .any(|n| n.as_deref() == Some("dev-x"))
    });
    let (_, before_claim) = snapshot(&mut con);
    let mut claimant = connect(&nodes[2]);
    assert_eq!(
        request(&mut claimant, &["CLIENT", "SETNAME", "dev-x"]),
        "+OK"
    );
    holder
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(holder.read(&mut buf), Ok(0) | Err(_)),
        "a closed its holder"
    );
    let events = util::wait_until(Duration::from_secs(5), "c's named dev-x", || {
        let events = read_stream(&mut con, &before_claim);
        events
            .iter()
            .any(|(_, e)| e["event"] == "named" && e["node"] == "c" && e["name"] == "dev-x")
            .then_some(events)
    });
    let at = |what: &str, node: &str| {
        events
            .iter()
            .position(|(_, e)| e["event"] == what && e["node"] == node && e["name"] == "dev-x")
    };
    let left = at("left", "a").expect("a's left");
    assert_eq!(events[left].1["reason"], "replaced");
    assert!(left < at("named", "c").unwrap(), "{events:?}");
    kept.push(claimant);

    // kill -9 of c with some hundreds of sessions.
    let mut c_sockets = sessions(&nodes[2], "c-many", 300);
    let pairs_c: Vec<(&str, &Daemon)> = vec![pairs[2]];
    util::wait_until(Duration::from_secs(20), "c's sessions in the table", || {
        let (table, _) = snapshot(&mut con);
        ids_on(&table, "c") == ids_on(&client_lists(&pairs_c), "c")
    });
    let (table, pos) = snapshot(&mut con);
    let ids = ids_on(&table, "c");
    assert!(ids.len() >= 300, "{}", ids.len());
    let epoch = epoch_of(&nodes[2]);
    let mut nodes = nodes;
    let mut c = nodes.pop().unwrap();
    c.signal(libc::SIGKILL);
    let killed_ms = unix_ms();
    let _ = c.wait_exit(Duration::from_secs(5));
    let lost = |con: &mut redis::Connection| -> Vec<Entry> {
        read_stream(con, &pos)
            .into_iter()
            .filter(|(_, e)| e["reason"] == "node-lost")
            .collect()
    };
    util::wait_until(
        Duration::from_secs(5 + 2),
        "every c session left node-lost",
        || lost(&mut con).len() >= ids.len(),
    );
    // A moment more: a duplicate would come now if at all.
    std::thread::sleep(Duration::from_millis(1500));
    let mut per_id: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last_ms = 0;
    for (_, e) in lost(&mut con) {
        assert_eq!(
            (e["node"].as_str(), e["epoch"].as_u64()),
            (Some("c"), Some(epoch))
        );
        *per_id.entry(e["id"].as_u64().unwrap()).or_default() += 1;
        last_ms = last_ms.max(e["at"].as_u64().unwrap().saturating_sub(killed_ms));
    }
    assert_eq!(
        per_id
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        ids
    );
    assert!(per_id.values().all(|&n| n == 1), "a leave published twice");
    assert!(last_ms <= 5_000, "last leave {last_ms} ms after the kill");
    println!(
        "kill -9 of c ({} sessions): the last node-lost {last_ms} ms after",
        ids.len()
    );
    c_sockets.clear();

    // A clean stop of a: its last script takes it out of the fleet.
    let mut a = nodes.remove(0);
    a.signal(libc::SIGTERM);
    assert!(a
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let fleet: Vec<String> = redis::cmd("HKEYS")
        .arg("{vigild}:nodes")
        .query(&mut con)
        .unwrap();
    assert_eq!(fleet, ["b"], "a left the fleet");
    drop(kept);
}

#[test]
fn the_tag_s_master_killed_its_replica_takes_over_and_the_view_converges() {
    let mut cluster = RedisCluster::start(true);
    assert_eq!(cluster.owner(), Some(1));
    // a's seed is the master about to die.
    let seeds = [1, 0, 2];
    let nodes: Vec<Daemon> = NAMES
        .iter()
        .zip(seeds)
        .map(|(n, i)| start_node(&cluster.nodes[i].url(), n, "3s", ""))
        .collect();
    let mut kept: Vec<TcpStream> = nodes
        .iter()
        .zip(NAMES)
        .flat_map(|(d, n)| sessions(d, n, 30))
        .collect();
    let pairs: Vec<(&str, &Daemon)> = NAMES.iter().copied().zip(nodes.iter()).collect();
    wait_table_equals(|| cluster.owner_conn(), &pairs, Duration::from_secs(10));
    // A watcher's snapshot, replicated before the kill (replication is asynchronous: what
    // the replica had not got would be lost with the master).
    let mut old = cluster.owner_conn().unwrap();
    let (mut view, pos): (FleetView, String) = snapshot(&mut old);
    let acked: u64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut old).unwrap();
    assert_eq!(acked, 1, "the replica has the table");
    let before: Vec<u64> = nodes.iter().map(redirects).collect();

    let stop_churn = AtomicBool::new(false);
    let stop_ping = AtomicBool::new(false);
    let (mut killed_at, mut promoted, mut worst) = (Instant::now(), Duration::ZERO, Vec::new());
    std::thread::scope(|scope| {
        let churners: Vec<_> = nodes
            .iter()
            .zip(NAMES)
            .map(|(d, n)| {
                let stop = &stop_churn;
                scope.spawn(move || {
                    let mut kept = Vec::new();
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        kept.extend(churn(d, &format!("{n}-f{round}"), 8));
                        round += 1;
                        std::thread::sleep(Duration::from_millis(150));
                    }
                    kept
                })
            })
            .collect();
        let pingers: Vec<_> = nodes
            .iter()
            .map(|d| {
                let stop = &stop_ping;
                scope.spawn(move || pinger(d, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        cluster.nodes[1].kill();
        killed_at = Instant::now();
        util::wait_until(Duration::from_secs(10), "the replica promoted", || {
            cluster.owner() == Some(3)
        });
        promoted = killed_at.elapsed();
        // Churn on through the nodes' reconnects.
        std::thread::sleep(Duration::from_secs(1));
        stop_churn.store(true, Ordering::Relaxed);
        for c in churners {
            kept.extend(c.join().unwrap());
        }
        wait_table_equals(|| cluster.owner_conn(), &pairs, FAILOVER_BOUND);
        stop_ping.store(true, Ordering::Relaxed);
        worst = pingers.into_iter().map(|p| p.join().unwrap()).collect();
    });
    let converged = killed_at.elapsed();
    // When each node had resynchronised with the new master, after the kill.
    let resynced: Vec<Duration> = nodes
        .iter()
        .map(|d| {
            d.log
                .lines_at()
                .into_iter()
                .find(|(l, at)| *at > killed_at && l.contains("live sessions (resync)"))
                .map(|(_, at)| at - killed_at)
                .expect("a resync after the failover")
        })
        .collect();
    let mut new = cluster.owner_conn().unwrap();
    let after = read_stream(&mut new, &pos);
    let lost = after
        .iter()
        .filter(|(_, e)| e["reason"] == "node-lost")
        .count();
    apply(&mut view, &after);
    let truth = client_lists(&pairs);
    assert_eq!(view, truth, "the watcher's snapshot + the stream after it");
    let moved: Vec<u64> = nodes.iter().map(redirects).collect();
    println!(
        "failover: replica promoted {promoted:?} after the kill, the nodes resynchronised with \
         it {resynced:?} after the kill, the view (churn stopped 1 s after the promotion) \
         converged {converged:?} after it (bound {FAILOVER_BOUND:?}); {} sessions; redirects per node {before:?} → \
         {moved:?}; {} entries after the snapshot ({lost} node-lost); slowest PING per node \
         {worst:?}",
        truth.len(),
        after.len()
    );
    assert!(converged <= FAILOVER_BOUND, "{converged:?}");
    for (d, (b, m)) in nodes.iter().zip(before.iter().zip(&moved)) {
        assert!(
            m > b,
            "every node was sent to the new owner: {before:?} → {moved:?}"
        );
        assert_eq!(fleet_info(d)["fleet_redis_up"], "1");
    }
    for w in &worst {
        assert!(*w < Duration::from_millis(50), "a PING took {w:?}");
    }
    kept.clear();
}

/// Over TLS (`rediss://`, the cluster on TLS ports only with `tls-cluster yes` and client
/// certificates required): nodes seeded with nodes that do not own the tag's slot follow
/// `MOVED` to the owner's TLS port with the link's CA and client certificate.
#[test]
fn over_tls_a_redirect_keeps_the_link_s_certificates() {
    let dir = TempDir::new("fleet-cluster-tls");
    let files = Setup::new(dir.path());
    let client = files.client(dir.path(), "client", &Leaf::client("vigild-node"));
    let tls = ClusterTls {
        cert_file: files.cert_file.clone(),
        key_file: files.key_file.clone(),
        ca_file: files.ca_file.clone(),
        client: client.clone(),
    };
    let cluster = RedisCluster::start_with(false, Some(tls));
    assert_eq!(cluster.owner(), Some(1));
    let keys = format!(
        "tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        files.ca_file.display().to_string(),
        client.0.display().to_string(),
        client.1.display().to_string()
    );
    let seeds = [("a", 0), ("c", 2)];
    let nodes: Vec<Daemon> = seeds
        .iter()
        .map(|(n, i)| start_node(&cluster.nodes[*i].url(), n, "3s", &keys))
        .collect();
    let mut kept = Vec::new();
    for (d, (n, _)) in nodes.iter().zip(seeds) {
        assert!(redirects(d) >= 1, "{}", d.log.text());
        let text = d.log.text();
        assert!(
            text.contains("connected to Redis over TLS as node"),
            "{text}"
        );
        kept.extend(sessions(d, n, 10));
    }
    let pairs: Vec<(&str, &Daemon)> = vec![("a", &nodes[0]), ("c", &nodes[1])];
    let took = wait_table_equals(|| cluster.owner_conn(), &pairs, Duration::from_secs(10));
    println!(
        "over TLS: redirects {:?}; table converged {took:?} after the sessions",
        nodes.iter().map(redirects).collect::<Vec<_>>()
    );
    drop(kept);
}

/// The redis-py watcher of docs/fleet.md with `RedisCluster` for `Redis`, seeded with a node
/// that does not own the tag's slot, arriving while three nodes churn: it ends with the union
/// of the nodes' `CLIENT LIST`s.
#[test]
fn the_docs_redis_py_watcher_on_redis_cluster_ends_equal_to_the_client_lists() {
    let Some(python) = util::installed("VIGILD_TEST_PYTHON", "redis-py") else {
        return;
    };
    let cluster = RedisCluster::start(false);
    let harness = docs_watcher(cluster.nodes[0].port, true);
    let nodes: Vec<Daemon> = NAMES
        .iter()
        .zip(&cluster.nodes)
        .map(|(n, seed)| start_node(&seed.url(), n, "3s", ""))
        .collect();
    let pairs: Vec<(&str, &Daemon)> = NAMES.iter().copied().zip(nodes.iter()).collect();
    let (stdout, kept) = watch_under_churn(&python, &harness, &pairs, 3);
    wait_table_equals(|| cluster.owner_conn(), &pairs, Duration::from_secs(5));
    let (seen, lefts) = watcher_view(&stdout);
    assert_eq!(seen, client_lists(&pairs));
    println!(
        "the redis-py RedisCluster watcher printed {lefts} leaves and ended with {} sessions, \
         as the nodes",
        seen.len()
    );
    drop(kept);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

//! A real `redis-server` for the fleet tests (tests/fleet.rs, tests/fleet_outage.rs), started
//! by the test on a loopback port in its own temporary directory, killed on drop; a real
//! Redis Cluster of such servers (tests/fleet_cluster.rs); and the fleet's nodes: vigild
//! daemons sharing it, clients churning on them, plus readers of the stream and live tables
//! the way a watcher reads them (docs/fleet.md, its redis-py watcher included).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{wait_until, Daemon, TempDir};

/// A running redis-server (`scripts/test` installs it).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// `appendonly yes` with `appendfsync always`: a `kill -9` loses nothing acknowledged.
    aof: bool,
    /// Addresses it listens on (127.0.0.1, and 127.0.0.2 for a node that nftables cuts off).
    binds: Vec<&'static str>,
}

/// A free loopback port (bound, then released: a small race with other tests, which start
/// their own servers on ports the kernel hands out the same way).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start(aof: bool) -> RedisServer {
        RedisServer::start_on(aof, &["127.0.0.1"])
    }

    /// Listening on every address of `binds` (inside a test's network namespace, 127.0.0.2
    /// lets nftables cut one node's Redis connection and no other).
    pub fn start_on(aof: bool, binds: &[&'static str]) -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir: TempDir::new("redis"),
            aof,
            binds: binds.to_vec(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .args(&self.binds)
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        self.child = Some(child);
        let url = self.url();
        wait_until(Duration::from_secs(10), "redis-server answers PING", || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (`SIGSTOP`: a Redis that hangs, as behind a partition; `SIGCONT`).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Starts it again on the same port (with its data when `aof`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The config of one fleet node.
pub fn node_config(url: &str, node: &str, lease: &str, extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[fleet]\nredis = \"{url}\"\nnode = \"{node}\"\n\
         lease = \"{lease}\"\n{extra}\n\n[log]\nlevel = \"info\"\n"
    )
}

/// Starts a node and waits until it announced itself in the fleet.
pub fn start_node(url: &str, node: &str, lease: &str, extra: &str) -> Daemon {
    let d = Daemon::start(&node_config(url, node, lease, extra));
    let announced = d.log.wait_for(Duration::from_secs(10), |l| {
        l.contains("live sessions (resync)")
    });
    assert!(
        announced.is_some(),
        "{node} never joined the fleet:\n{}",
        d.log.text()
    );
    d
}

/// One stream entry: its ID and its `event` JSON.
pub type Entry = (String, serde_json::Value);

/// Every entry after `from` (exclusive; "-" for all).
pub fn read_stream(con: &mut redis::Connection, from: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut start = if from == "-" {
        "-".to_owned()
    } else {
        format!("({from}")
    };
    loop {
        let chunk: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("{vigild}:presence")
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query(con)
            .unwrap();
        if chunk.is_empty() {
            return out;
        }
        for (id, fields) in chunk {
            start = format!("({id}");
            for (k, v) in fields {
                if k == "event" {
                    out.push((id.clone(), serde_json::from_str(&v).unwrap()));
                }
            }
        }
    }
}

/// A session of the fleet view: (node, id) → name.
pub type FleetView = BTreeMap<(String, u64), Option<String>>;

/// The watcher's snapshot script of docs/fleet.md: the stream position and every live row,
/// in one atomic step.
pub const SNAPSHOT: &str = r#"
local tag = ARGV[1]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local out = {'0-0'}
if #last > 0 then out[1] = last[1][1] end
for _, n in ipairs(redis.call('HKEYS', tag .. ':nodes')) do
  for _, row in ipairs(redis.call('HVALS', tag .. ':live:' .. n)) do
    table.insert(out, n)
    table.insert(out, row)
  end
end
return out
"#;

/// The snapshot: the view and the stream position it reflects.
pub fn snapshot(con: &mut redis::Connection) -> (FleetView, String) {
    try_snapshot(con).unwrap()
}

/// [`snapshot`], or Redis's error (a cluster in the middle of a failover).
pub fn try_snapshot(con: &mut redis::Connection) -> redis::RedisResult<(FleetView, String)> {
    let flat: Vec<String> = redis::cmd("EVAL")
        .arg(SNAPSHOT)
        .arg(1)
        .arg("{vigild}:presence")
        .arg("{vigild}")
        .query(con)?;
    let pos = flat[0].clone();
    let mut view = FleetView::new();
    for pair in flat[1..].chunks(2) {
        let row: serde_json::Value = serde_json::from_str(&pair[1]).unwrap();
        view.insert(
            (pair[0].clone(), row["id"].as_u64().unwrap()),
            row["name"].as_str().map(str::to_owned),
        );
    }
    Ok((view, pos))
}

/// Applies stream events to a view, as a watcher does.
pub fn apply(view: &mut FleetView, events: &[Entry]) {
    for (_, e) in events {
        let key = (
            e["node"].as_str().unwrap_or("").to_owned(),
            e["id"].as_u64().unwrap_or(0),
        );
        match e["event"].as_str() {
            Some("joined") => {
                view.insert(key, e["name"].as_str().map(str::to_owned));
            }
            Some("named") => {
                view.insert(key, e["name"].as_str().map(str::to_owned));
            }
            Some("left") => {
                view.remove(&key);
            }
            _ => {}
        }
    }
}

/// The union of the nodes' `CLIENT LIST`s, as a view.
pub fn client_lists(nodes: &[(&str, &Daemon)]) -> FleetView {
    let mut view = FleetView::new();
    for (name, d) in nodes {
        let mut admin = d.admin();
        let text: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
        for line in text.lines() {
            let f = super::fields(line);
            let id: u64 = f["id"].parse().unwrap();
            let n = f.get("name").filter(|n| !n.is_empty()).cloned();
            view.insert(((*name).to_owned(), id), n);
        }
    }
    view
}

/// Waits until the table in Redis (a snapshot) equals the nodes' `CLIENT LIST`s; returns how
/// long that took.
pub fn wait_converged(redis: &RedisServer, nodes: &[(&str, &Daemon)], limit: Duration) -> Duration {
    wait_converged_on(&mut redis.conn(), nodes, limit)
}

/// [`wait_converged`] reading Redis through `con` (a TLS connection, say).
pub fn wait_converged_on(
    con: &mut redis::Connection,
    nodes: &[(&str, &Daemon)],
    limit: Duration,
) -> Duration {
    table_equals(|| try_snapshot(con), nodes, limit)
}

/// [`wait_converged`] with the connection `con` opens for each look (`None`: no Redis to
/// ask yet, as a cluster without an owner for the tag's slot; a Redis error is waited out
/// the same way).
pub fn wait_table_equals(
    mut con: impl FnMut() -> Option<redis::Connection>,
    nodes: &[(&str, &Daemon)],
    limit: Duration,
) -> Duration {
    table_equals(
        || match con() {
            Some(mut con) => try_snapshot(&mut con),
            None => Err(redis::RedisError::from(std::io::Error::other(
                "no Redis to read the table from",
            ))),
        },
        nodes,
        limit,
    )
}

/// Waits until the table `look` reads equals the nodes' `CLIENT LIST`s.
fn table_equals(
    mut look: impl FnMut() -> redis::RedisResult<(FleetView, String)>,
    nodes: &[(&str, &Daemon)],
    limit: Duration,
) -> Duration {
    let t0 = Instant::now();
    wait_until(
        limit,
        "the fleet table to equal the nodes' CLIENT LISTs",
        || {
            let (table, _) = look().map_err(|e| format!("snapshot: {e}"))?;
            let truth = client_lists(nodes);
            if table == truth {
                return Ok(());
            }
            let extra: Vec<_> = table
                .iter()
                .filter(|(k, v)| truth.get(*k) != Some(*v))
                .take(5)
                .collect();
            let missing: Vec<_> = truth
                .iter()
                .filter(|(k, v)| table.get(*k) != Some(*v))
                .take(5)
                .collect();
            Err(format!(
            "table {} sessions, truth {}; in the table only: {extra:?}; in the truth only: {missing:?}",
            table.len(),
            truth.len()
        ))
        },
    );
    t0.elapsed()
}

/// The fleet's `INFO fleet` of a node.
pub fn fleet_info(d: &Daemon) -> std::collections::HashMap<String, String> {
    super::info(&mut d.admin(), "fleet")
}

/// The ids of a view's sessions on `node`.
pub fn ids_on(view: &FleetView, node: &str) -> BTreeSet<u64> {
    view.keys()
        .filter(|(n, _)| n == node)
        .map(|(_, id)| *id)
        .collect()
}

/// One RESP request on a raw socket, and its one-line reply.
pub fn request(s: &mut TcpStream, words: &[&str]) -> String {
    s.write_all(&super::load::multibulk(
        &words.iter().map(|w| w.as_bytes()).collect::<Vec<_>>(),
    ))
    .unwrap();
    super::load::read_line(s).unwrap()
}

/// A client socket to a node, reads bounded.
pub fn connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Events of `node` under `epoch` that the node itself wrote (not resyncs, not node-lost).
pub fn own_seqs(stream: &[Entry], node: &str, epoch: u64) -> Vec<u64> {
    stream
        .iter()
        .filter(|(_, e)| e["node"] == node && e["epoch"] == epoch && e["seq"].is_u64())
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect()
}

/// The node's process epoch.
pub fn epoch_of(d: &Daemon) -> u64 {
    fleet_info(d)["fleet_epoch"].parse().unwrap()
}

/// The node's last presence `seq`.
pub fn presence_seq(d: &Daemon) -> u64 {
    super::info(&mut d.admin(), "presence")["presence_seq"]
        .parse()
        .unwrap()
}

/// Churn on one node: sessions that join, take a name (some rename), and leave by QUIT, FIN
/// or reset; every fourth stays. Returns the sessions kept open.
pub fn churn(d: &Daemon, node: &str, n: usize) -> Vec<TcpStream> {
    let mut kept = Vec::new();
    for i in 0..n {
        let mut s = connect(d);
        assert_eq!(
            request(&mut s, &["CLIENT", "SETNAME", &format!("{node}-{i}")]),
            "+OK"
        );
        if i % 3 == 0 {
            assert_eq!(
                request(&mut s, &["CLIENT", "SETNAME", &format!("{node}-{i}-b")]),
                "+OK"
            );
        }
        match i % 4 {
            0 => kept.push(s),
            1 => assert_eq!(request(&mut s, &["QUIT"]), "+OK"),
            2 => super::load::reset(s),
            _ => drop(s),
        }
        // Spread over about half a second, so a watcher can arrive in the middle.
        std::thread::sleep(Duration::from_millis(8));
    }
    kept
}

/// Runs the docs' redis-py watcher `harness` ([`docs_watcher`]) with `python`, arriving while
/// every node of `nodes` churns `rounds` rounds of 20 sessions ([`churn`]). Returns what it
/// printed (it must exit 0) and the sessions kept open; [`watcher_view`] reads its verdict.
pub fn watch_under_churn(
    python: &str,
    harness: &str,
    nodes: &[(&str, &Daemon)],
    rounds: usize,
) -> (String, Vec<TcpStream>) {
    let mut kept = Vec::new();
    let watcher = std::thread::scope(|scope| {
        let churners: Vec<_> = nodes
            .iter()
            .map(|&(n, d)| {
                scope.spawn(move || {
                    let mut kept = Vec::new();
                    for round in 0..rounds {
                        kept.extend(churn(d, &format!("{n}{round}"), 20));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    kept
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let watcher = scope.spawn(|| {
            Command::new(python)
                .arg("-c")
                .arg(harness)
                .arg(rounds.to_string())
                .output()
                .unwrap()
        });
        for c in churners {
            kept.extend(c.join().unwrap());
        }
        watcher.join().unwrap()
    });
    let stdout = String::from_utf8_lossy(&watcher.stdout).into_owned();
    assert!(
        watcher.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&watcher.stderr)
    );
    (stdout, kept)
}

/// The fleet view the watcher ended with (its last line), and how many leaves it printed.
pub fn watcher_view(stdout: &str) -> (FleetView, usize) {
    let last = stdout.lines().last().unwrap_or("[]");
    let seen: Vec<(String, u64, Option<String>)> = serde_json::from_str(last).unwrap();
    let view = seen
        .into_iter()
        .map(|(n, i, name)| ((n, i), name))
        .collect();
    (
        view,
        stdout.lines().filter(|l| l.contains(" left: ")).count(),
    )
}

/// The redis-py watcher of docs/fleet.md as written, with only its Redis changed: port
/// `port`, and with `cluster` redis-py's `RedisCluster` (seeded with that node) for
/// `redis.Redis`. Run as `python -c <this> <seconds>`: it watches that long and prints the
/// live sessions as JSON `[[node, id, name], ...]` on its last line.
pub fn docs_watcher(port: u16, cluster: bool) -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fleet.md")).unwrap();
    let from = doc
        .find("### In Python (redis-py)")
        .expect("the redis-py section");
    let block = &doc[from..];
    let start = block.find("```python\n").unwrap() + "```python\n".len();
    let code = &block[start..start + block[start..].find("```").unwrap()];
    let client = "r = redis.Redis(host=\"127.0.0.1\", port=6379,";
    assert!(code.contains(client), "the watcher's client line: {code}");
    let class = if cluster { "RedisCluster" } else { "Redis" };
    let code = code.replace(
        client,
        &format!("r = redis.{class}(host=\"127.0.0.1\", port={port},"),
    );
    format!(
        "{code}\nimport sys, time\ndeadline = time.time() + float(sys.argv[1])\n\
         live = watch(stop=lambda: time.time() > deadline)\n\
         print(json.dumps(sorted([[n, i, name] for (n, i), name in live.items()])))\n"
    )
}

/// PINGs every 10 ms on one connection; returns the slowest round trip.
pub fn pinger(d: &Daemon, stop: &std::sync::atomic::AtomicBool) -> Duration {
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut worst = Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(super::load::read_line(&mut s).unwrap(), "+PONG");
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    worst
}

/// The hash slot of the fleet's keys (`CLUSTER KEYSLOT {vigild}`).
pub const TAG_SLOT: u16 = 5821;

/// TLS for a [`RedisCluster`]: the servers' certificate, the CA, and a client certificate
/// the servers present to each other (cluster bus, replication) and the test presents to
/// them (`tls-auth-clients yes`).
#[derive(Clone)]
pub struct ClusterTls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    pub ca_file: std::path::PathBuf,
    pub client: (std::path::PathBuf, std::path::PathBuf),
}

/// One redis-server of a [`RedisCluster`].
pub struct ClusterNode {
    child: Option<Child>,
    pub port: u16,
    /// Its cluster bus port (`CLUSTER MEET` must be told).
    bus_port: u16,
    tls: Option<ClusterTls>,
    _dir: TempDir,
}

impl ClusterNode {
    fn spawn(tls: Option<&ClusterTls>) -> ClusterNode {
        let (port, bus_port) = (free_port(), free_port());
        let dir = TempDir::new("redis-cluster");
        let mut cmd = Command::new("redis-server");
        match tls {
            None => cmd.arg("--port").arg(port.to_string()),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--tls-auth-clients", "yes"])
                .arg("--tls-cert-file")
                .arg(&t.cert_file)
                .arg("--tls-key-file")
                .arg(&t.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca_file)
                .arg("--tls-client-cert-file")
                .arg(&t.client.0)
                .arg("--tls-client-key-file")
                .arg(&t.client.1),
        };
        let child = cmd
            // A port of its own for the cluster bus (the default, port + 10000, may be taken
            // or past 65535 for a port the kernel handed out).
            .arg("--cluster-port")
            .arg(bus_port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", "1000"])
            // A replica takes over however long it was cut from its master.
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--cluster-config-file")
            .arg(dir.path().join("nodes.conf"))
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        ClusterNode {
            child: Some(child),
            port,
            bus_port,
            tls: tls.cloned(),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// A connection, or none (the node is dead or not up yet).
    pub fn try_conn(&self) -> Option<redis::Connection> {
        self.child.as_ref()?;
        let client = match &self.tls {
            None => redis::Client::open(self.url().as_str()).ok()?,
            Some(t) => {
                let certs = redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: std::fs::read(&t.client.0).ok()?,
                        client_key: std::fs::read(&t.client.1).ok()?,
                    }),
                    root_cert: Some(std::fs::read(&t.ca_file).ok()?),
                };
                redis::Client::build_with_tls(self.url(), certs).ok()?
            }
        };
        client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("a live cluster node")
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{cmd:?} on port {}: {e}", self.port))
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster on loopback: three masters holding the slots as `redis-cli --cluster
/// create` splits them (so master 1 holds [`TAG_SLOT`]), and with `replica` a fourth server,
/// `nodes[3]`, replicating master 1. Node timeout 1 s. Every server is killed on drop (each
/// is a [`ClusterNode`]), whatever the test's outcome.
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    pub fn start(replica: bool) -> RedisCluster {
        RedisCluster::start_with(replica, None)
    }

    /// [`RedisCluster::start`], with `tls` on TLS ports only (`tls-cluster yes`: the nodes
    /// speak TLS to each other too, and `MOVED` names TLS ports).
    pub fn start_with(replica: bool, tls: Option<ClusterTls>) -> RedisCluster {
        let n = if replica { 4 } else { 3 };
        let nodes: Vec<ClusterNode> = (0..n).map(|_| ClusterNode::spawn(tls.as_ref())).collect();
        let c = RedisCluster { nodes };
        for node in &c.nodes {
            wait_until(Duration::from_secs(10), "a cluster node answers", || {
                node.try_conn().is_some()
            });
        }
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (i, (node, (from, to))) in c.nodes.iter().zip(ranges).enumerate() {
            let _: () = node.query(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(from).arg(to));
            let _: () = node.query(
                redis::cmd("CLUSTER")
                    .arg("SET-CONFIG-EPOCH")
                    .arg(i as u64 + 1),
            );
        }
        for node in &c.nodes[1..] {
            let _: () = c.nodes[0].query(
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port)
                    .arg(node.bus_port),
            );
        }
        c.wait_state_ok(n);
        if replica {
            let owner: String = c.nodes[1].query(redis::cmd("CLUSTER").arg("MYID"));
            wait_until(
                Duration::from_secs(10),
                "the replica to follow master 1",
                || {
                    c.nodes[3]
                        .try_conn()
                        .and_then(|mut con| {
                            redis::cmd("CLUSTER")
                                .arg("REPLICATE")
                                .arg(&owner)
                                .query::<()>(&mut con)
                                .ok()
                        })
                        .is_some()
                },
            );
            wait_until(Duration::from_secs(10), "the replica in sync", || {
                let info: String = c.nodes[3].query(redis::cmd("INFO").arg("replication"));
                info.contains("master_link_status:up")
            });
        }
        c
    }

    /// Waits until every node says `cluster_state:ok` and knows all `n` nodes.
    fn wait_state_ok(&self, n: usize) {
        for node in &self.nodes {
            wait_until(Duration::from_secs(15), "the cluster to form", || {
                let info: String = node.query(redis::cmd("CLUSTER").arg("INFO"));
                let ok = info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{n}\r"));
                if ok {
                    Ok(())
                } else {
                    Err(info)
                }
            });
        }
    }

    /// A connection to the master that owns [`TAG_SLOT`] now, as the live nodes say (`None`
    /// while none does, as during a failover).
    pub fn owner_conn(&self) -> Option<redis::Connection> {
        let owner = self.owner()?;
        self.nodes[owner].try_conn()
    }

    /// Which node owns [`TAG_SLOT`] now, as the first live node answers `CLUSTER SLOTS`.
    pub fn owner(&self) -> Option<usize> {
        for node in &self.nodes {
            let Some(mut con) = node.try_conn() else {
                continue;
            };
            let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<redis::Value>(&mut con)
            else {
                continue;
            };
            let int = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(i)) => *i,
                _ => -1,
            };
            let port = ranges.iter().find_map(|r| {
                let redis::Value::Array(r) = r else {
                    return None;
                };
                let slot = i64::from(TAG_SLOT);
                if !(int(r.first())..=int(r.get(1))).contains(&slot) {
                    return None;
                }
                let Some(redis::Value::Array(master)) = r.get(2) else {
                    return None;
                };
                u16::try_from(int(master.get(1))).ok()
            })?;
            return self.nodes.iter().position(|n| n.port == port);
        }
        None
    }
}

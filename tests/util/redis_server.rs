//! A real `redis-server` for the fleet tests (tests/fleet.rs, tests/fleet_outage.rs), started
//! by the test on a loopback port in its own temporary directory, killed on drop; and the
//! fleet's nodes: vigild daemons sharing it, plus readers of the stream and live tables the
//! way a watcher reads them (docs/fleet.md).

use std::collections::{BTreeMap, BTreeSet};
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
    let flat: Vec<String> = redis::cmd("EVAL")
        .arg(SNAPSHOT)
        .arg(1)
        .arg("{vigild}:presence")
        .arg("{vigild}")
        .query(con)
        .unwrap();
    let pos = flat[0].clone();
    let mut view = FleetView::new();
    for pair in flat[1..].chunks(2) {
        let row: serde_json::Value = serde_json::from_str(&pair[1]).unwrap();
        view.insert(
            (pair[0].clone(), row["id"].as_u64().unwrap()),
            row["name"].as_str().map(str::to_owned),
        );
    }
    (view, pos)
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
    let t0 = Instant::now();
    wait_until(
        limit,
        "the fleet table to equal the nodes' CLIENT LISTs",
        || {
            let (table, _) = snapshot(con);
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

//! Redis Cluster routing for the fleet's one connection (docs/fleet.md, "Redis Cluster").
//!
//! Every fleet key carries one hash tag, so all of them live in one slot, owned by one master.
//! The configured URL is only the seed: a node that does not own the slot answers
//! `MOVED <slot> host:port`, and the worker reconnects there at once and sends the same
//! command again (a MOVED reply means it did not run, so nothing is lost or written twice).
//! Only host and port change: [`Route::aim`] rewrites the seed's address and nothing else,
//! so the password, the socket settings and TLS stay those of the configured link.
//!
//! When the owner cannot be reached (it died; a replica takes over its slots), the next
//! connects try the seed and then, in turn, the nodes the cluster listed at the last connect
//! (`CLUSTER SLOTS`, at most [`MAX_NODES`]): any live node answers MOVED to the slot's owner,
//! old or new. `ASK` is not followed: it only happens while the tag's slot migrates, when
//! its keys are split between two nodes and no node can run a script over them (see the
//! docs); the call fails, is counted, and is retried like any Redis error.
//!
//! A single Redis behaves exactly as before: `INFO cluster` (which never fails, on any
//! Redis) says `cluster_enabled:0`, no CLUSTER command is sent, the route stays on the seed.
//!
//! Time is a parameter (the log throttle's); the only I/O is [`Route::learn`]'s two queries.

use std::time::{Duration, Instant};

use log::{debug, info};
use redis::{ConnectionAddr, Value};

/// A redirect is logged at most this often (the rest are counted in `fleet_redirects`): in
/// a failover the nodes send the worker back and forth for a few seconds.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

/// Nodes remembered from `CLUSTER SLOTS` at most (masters and replicas).
pub(super) const MAX_NODES: usize = 16;

/// A cluster node, as MOVED and `CLUSTER SLOTS` name it.
pub(super) type Node = (String, u16);

/// Where the worker's next connect goes, and what it knows about the cluster.
#[derive(Debug, Default)]
pub(super) struct Route {
    /// The seed's own host and port (none for a Unix socket).
    seed: Option<Node>,
    /// The node the last MOVED named: tried first until it cannot be reached.
    owner: Option<Node>,
    /// The other nodes the cluster listed at the last connect (not the seed).
    known: Vec<Node>,
    /// Which candidate is tried when there is no owner: 0 the seed, `i` `known[i - 1]`.
    turn: usize,
    /// The last connect found a cluster (`cluster_enabled:1`).
    cluster: bool,
    /// When a redirect was last logged.
    logged_at: Option<Instant>,
}

impl Route {
    /// A route that starts at the seed, `url`'s address.
    pub(super) fn new(seed: &ConnectionAddr) -> Route {
        Route {
            seed: node_of(seed),
            ..Route::default()
        }
    }

    /// The address the next connect dials, as a rewrite of the seed's `addr` (same variant,
    /// so TLS settings carry over); `None`: the seed itself.
    pub(super) fn aim(&self, addr: &ConnectionAddr) -> Option<ConnectionAddr> {
        let (host, port) = self.target()?;
        Some(match addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        })
    }

    /// The node the next connect dials, unless it is the seed.
    fn target(&self) -> Option<Node> {
        if let Some(owner) = &self.owner {
            return Some(owner.clone());
        }
        match self.turn % (self.known.len() + 1) {
            0 => None,
            i => Some(self.known[i - 1].clone()),
        }
    }

    /// A `MOVED` reply named `to` (`host:port`) as the owner of `slot`: the next connect goes
    /// there. `redirects` is the count so far, this one included (for the log line, at most
    /// one per [`LOG_EVERY`]). False when `to` is no address (then the call fails as any error).
    pub(super) fn moved(&mut self, to: &str, slot: u16, redirects: u64, now: Instant) -> bool {
        let Some(node) = parse_node(to) else {
            debug!("fleet: Redis Cluster redirect to an unusable address {to:?}");
            return false;
        };
        if self.logged_at.is_none_or(|at| now >= at + LOG_EVERY) {
            self.logged_at = Some(now);
            info!(
                "fleet: Redis Cluster moved slot {slot} to {to}: reconnecting there \
                 (fleet_redirects={redirects})"
            );
        }
        self.owner = Some(node);
        true
    }

    /// The node last dialled could not be reached: the next connect tries the seed (after an
    /// owner), then each known node in turn.
    pub(super) fn unreachable(&mut self) {
        if self.owner.take().is_none() {
            self.turn = (self.turn + 1) % (self.known.len() + 1);
        }
    }

    /// Whether the last connect found a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// After a connect: whether Redis runs as a cluster (`INFO cluster`, quietly: a Redis
    /// that refuses INFO is taken for a single server) and, if so, its nodes
    /// (`CLUSTER SLOTS`), to try when the owner and the seed are gone.
    pub(super) fn learn(&mut self, conn: &mut redis::Connection) {
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(conn)
            .unwrap_or_default();
        self.cluster = info.lines().any(|l| l.trim() == "cluster_enabled:1");
        if !self.cluster {
            return;
        }
        match redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(conn) {
            Ok(slots) => {
                let nodes = slot_nodes(&slots, self.seed.as_ref());
                if !nodes.is_empty() {
                    self.known = nodes;
                }
            }
            Err(e) => debug!("fleet: CLUSTER SLOTS failed: {e}; keeping the known nodes"),
        }
    }
}

/// The host and port of a TCP address.
fn node_of(addr: &ConnectionAddr) -> Option<Node> {
    match addr {
        ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
        ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
        _ => None,
    }
}

/// `host:port` (an IPv6 host bare or in brackets).
fn parse_node(s: &str) -> Option<Node> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

/// The nodes of a `CLUSTER SLOTS` reply (`[[start, end, [host, port, id, ...], ...], ...]`),
/// each once, the seed left out, at most [`MAX_NODES`].
fn slot_nodes(reply: &Value, seed: Option<&Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    let Value::Array(ranges) = reply else {
        return out;
    };
    for range in ranges {
        let Value::Array(parts) = range else {
            continue;
        };
        for part in parts.iter().skip(2) {
            let Value::Array(node) = part else {
                continue;
            };
            let (Some(host), Some(Value::Int(port))) = (node.first(), node.get(1)) else {
                continue;
            };
            let host = match host {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => continue,
            };
            // "" or "?" when a node does not know its own address.
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            if host.is_empty() || host == "?" || port == 0 {
                continue;
            }
            let node = (host, port);
            if Some(&node) != seed && !out.contains(&node) && out.len() < MAX_NODES {
                out.push(node);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> ConnectionAddr {
        ConnectionAddr::Tcp("127.0.0.1".into(), 7000)
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(nodes: Vec<Value>) -> Value {
        let mut v = vec![Value::Int(0), Value::Int(5460)];
        v.extend(nodes);
        Value::Array(v)
    }

    #[test]
    fn a_single_redis_stays_on_the_seed() {
        let mut r = Route::new(&seed());
        assert!(r.aim(&seed()).is_none());
        r.unreachable();
        r.unreachable();
        assert!(r.aim(&seed()).is_none(), "no other node to try");
        assert!(!r.is_cluster());
    }

    #[test]
    fn moved_aims_at_the_owner_keeping_the_variant_and_an_unreachable_owner_falls_back() {
        let now = Instant::now();
        let mut r = Route::new(&seed());
        assert!(r.moved("127.0.0.1:7002", 5821, 1, now));
        match r.aim(&seed()) {
            Some(ConnectionAddr::Tcp(h, p)) => assert_eq!((h.as_str(), p), ("127.0.0.1", 7002)),
            other => panic!("{other:?}"),
        }
        let tls = ConnectionAddr::TcpTls {
            host: "10.0.0.5".into(),
            port: 7000,
            insecure: true,
            tls_params: None,
        };
        match r.aim(&tls) {
            Some(ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            }) => assert_eq!((host.as_str(), port, insecure), ("127.0.0.1", 7002, true)),
            other => panic!("{other:?}"),
        }
        r.unreachable();
        assert!(r.aim(&seed()).is_none(), "back to the seed");
        assert!(!r.moved("no-port", 1, 2, now));
        assert!(!r.moved(":7001", 1, 2, now));
        assert!(r.aim(&seed()).is_none());
        assert!(r.moved("[::1]:7003", 1, 3, now));
        assert_eq!(r.target(), Some(("::1".to_owned(), 7003)));
    }

    #[test]
    fn the_known_nodes_are_tried_in_turn_after_the_seed() {
        let reply = Value::Array(vec![
            range(vec![node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            range(vec![node("127.0.0.1", 7001), node("?", 7009)]),
            range(vec![node("127.0.0.1", 7002), node("127.0.0.1", 7001)]),
            Value::Int(3),
        ]);
        let seed_node = ("127.0.0.1".to_owned(), 7000);
        let nodes = slot_nodes(&reply, Some(&seed_node));
        let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
        assert_eq!(ports, [7003, 7001, 7002]);
        let mut r = Route::new(&seed());
        r.known = nodes;
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(r.target().map_or(7000, |n| n.1));
            r.unreachable();
        }
        assert_eq!(seen, [7000, 7003, 7001, 7002, 7000]);
    }

    #[test]
    fn cluster_slots_are_bounded() {
        let many: Vec<Value> = (1..100).map(|p| node("10.0.0.1", p)).collect();
        let reply = Value::Array(vec![range(many)]);
        assert_eq!(slot_nodes(&reply, None).len(), MAX_NODES);
        assert!(slot_nodes(&Value::Nil, None).is_empty());
    }
}

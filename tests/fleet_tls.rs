//! The fleet's link to Redis over TLS (`rediss://`, docs/fleet.md): a real `redis-server` that
//! the test starts with a TLS port only (no plain port to fall back to), its certificate from a
//! CA the test makes, and `tls-auth-clients yes` so the nodes must present a client
//! certificate. Two nodes share the view through it and one's `kill -9` is published
//! `node-lost`. A node with the wrong CA, no client certificate or a URL host the certificate
//! does not name is refused by the handshake, says why, counts it and keeps serving its
//! clients, and picks up a fixed file at its next connect; `--check-config` names every bad
//! `fleet.tls_*` file.
//!
//! `scripts/test` installs `redis-server` (Debian's is built with TLS).

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{ClientTlsConfig, TlsCertificates};
use util::certs::{Ca, Leaf, Setup};
use util::redis_server::{fleet_info, read_stream, snapshot, wait_converged_on};
use util::{Daemon, TempDir};

/// A redis-server listening on a loopback TLS port only, killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    /// The CA, and a client certificate it issued, for the test's own connection.
    ca_file: PathBuf,
    client: (PathBuf, PathBuf),
    _dir: TempDir,
}

impl TlsRedis {
    fn start(files: &Setup, client: (PathBuf, PathBuf), dir: TempDir) -> TlsRedis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            // 127.0.0.2 too: a name its certificate (127.0.0.1, localhost) does not carry.
            .args(["--bind", "127.0.0.1", "127.0.0.2"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&files.cert_file)
            .arg("--tls-key-file")
            .arg(&files.key_file)
            .arg("--tls-ca-cert-file")
            .arg(&files.ca_file)
            .args(["--tls-auth-clients", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let r = TlsRedis {
            child,
            port,
            ca_file: files.ca_file.clone(),
            client,
            _dir: dir,
        };
        util::wait_until(
            Duration::from_secs(10),
            "redis-server answers PING over TLS",
            || {
                r.try_conn()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        );
        r
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        let certs = TlsCertificates {
            client_tls: Some(ClientTlsConfig {
                client_cert: std::fs::read(&self.client.0).unwrap(),
                client_key: std::fs::read(&self.client.1).unwrap(),
            }),
            root_cert: Some(std::fs::read(&self.ca_file).unwrap()),
        };
        redis::Client::build_with_tls(self.url(), certs)?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    fn conn(&self) -> redis::Connection {
        self.try_conn().expect("a TLS connection to redis-server")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[fleet]` TLS keys for these files.
fn tls_keys(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> String {
    let mut out = format!("tls_ca_file = {:?}\n", ca.display().to_string());
    if let Some((c, k)) = cert {
        out += &format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            c.display().to_string(),
            k.display().to_string()
        );
    }
    out
}

fn node(url: &str, name: &str, tls: &str) -> Daemon {
    Daemon::start(&util::redis_server::node_config(url, name, "3s", tls))
}

fn joined(d: &Daemon) -> bool {
    d.log
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("live sessions (resync)")
        })
        .is_some()
}

fn ping(d: &Daemon) {
    let mut c = d.redis();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn two_nodes_share_the_view_over_tls_with_client_certificates() {
    let dir = TempDir::new("fleet-tls");
    let files = Setup::new(dir.path());
    let ca_copy = files.ca.write(dir.path(), "ca-copy");
    let node_cert = files.client(dir.path(), "node", &Leaf::client("vigild-node"));
    let test_cert = files.client(dir.path(), "test", &Leaf::client("the-test"));
    let redis = TlsRedis::start(&files, test_cert, TempDir::new("redis-tls"));
    let keys = tls_keys(&ca_copy, Some(&node_cert));
    let a = node(&redis.url(), "a", &keys);
    let mut b = node(&redis.url(), "b", &keys);
    for d in [&a, &b] {
        assert!(joined(d), "never joined over TLS:\n{}", d.log.text());
        assert_eq!(
            d.log
                .count(|l| l.contains("fleet: connected to Redis over TLS as node")),
            1,
            "{}",
            d.log.text()
        );
        assert_eq!(fleet_info(d)["fleet_redis_up"], "1");
    }
    // Sessions on both, named and not: the table over TLS equals the nodes' CLIENT LISTs.
    let mut held = Vec::new();
    for (i, d) in [&a, &b, &b].into_iter().enumerate() {
        let mut c = d.redis();
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("dev-{i}"))
            .query(&mut c)
            .unwrap();
        held.push(c);
        held.push(d.redis());
    }
    let mut con = redis.conn();
    let took = wait_converged_on(&mut con, &[("a", &a), ("b", &b)], Duration::from_secs(10));
    eprintln!("converged over TLS in {took:?}");
    let (view, pos) = snapshot(&mut con);
    let on_b = util::redis_server::ids_on(&view, "b");
    assert_eq!(on_b.len(), 4, "{view:?}");
    // b dies: a publishes each of b's sessions `left node-lost` once (the bound as in
    // tests/fleet.rs: lease + 2 s, plus 2 s for a loaded machine).
    b.signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = b.wait_exit(Duration::from_secs(5));
    let lost = |con: &mut redis::Connection| -> Vec<u64> {
        read_stream(con, &pos)
            .into_iter()
            .filter(|(_, e)| e["reason"] == "node-lost" && e["node"] == "b")
            .map(|(_, e)| e["id"].as_u64().unwrap())
            .collect()
    };
    util::wait_until(Duration::from_secs(5 + 2), "b's 4 node-lost lefts", || {
        lost(&mut con).len() >= 4
    });
    eprintln!(
        "b's sessions published node-lost {:?} after the kill",
        killed.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let mut ids = lost(&mut con);
    ids.sort_unstable();
    assert_eq!(
        ids,
        on_b.into_iter().collect::<Vec<_>>(),
        "each exactly once"
    );
    drop(held);
}

#[test]
fn a_node_refused_by_the_handshake_says_why_keeps_serving_and_uses_a_fixed_file() {
    let dir = TempDir::new("fleet-tls-bad");
    let files = Setup::new(dir.path());
    let node_cert = files.client(dir.path(), "node", &Leaf::client("vigild-node"));
    let test_cert = files.client(dir.path(), "test", &Leaf::client("the-test"));
    let redis = TlsRedis::start(&files, test_cert, TempDir::new("redis-tls"));
    // The wrong CA: Redis's certificate does not chain to it.
    let wrong_ca = Ca::new("another CA").write(dir.path(), "wrong-ca");
    let a = node(&redis.url(), "a", &tls_keys(&wrong_ca, Some(&node_cert)));
    // The right CA but no client certificate: Redis (tls-auth-clients yes) refuses it.
    let b = node(&redis.url(), "b", &tls_keys(&files.ca_file, None));
    // Everything right but the host: Redis's certificate does not name 127.0.0.2.
    let c = node(
        &redis.url().replace("127.0.0.1", "127.0.0.2"),
        "c",
        &tls_keys(&files.ca_file, Some(&node_cert)),
    );
    for (d, why) in [
        (&a, "invalid peer certificate: UnknownIssuer"),
        (&b, "alert"),
        (&c, "not valid for name"),
    ] {
        let warned = d.log.wait_for(Duration::from_secs(10), |l| {
            l.contains("WARN") && l.contains("fleet: Redis connect failed") && l.contains(why)
        });
        assert!(warned.is_some(), "{}", d.log.text());
        eprintln!("{}", warned.unwrap());
        ping(d);
        let info = fleet_info(d);
        assert_eq!(info["fleet_redis_up"], "0", "{info:?}");
        assert!(
            info["fleet_errors"].parse::<u64>().unwrap() >= 1,
            "{info:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(1000));
    for d in [&a, &b, &c] {
        // Retried every 250 ms; warned at most once per 10 s.
        assert_eq!(
            d.log.count(|l| l.contains("fleet: Redis connect failed")),
            1,
            "{}",
            d.log.text()
        );
        assert!(fleet_info(d)["fleet_errors"].parse::<u64>().unwrap() >= 3);
    }
    let mut con = redis.conn();
    let nodes: Vec<String> = redis::cmd("HKEYS")
        .arg("{vigild}:nodes")
        .query(&mut con)
        .unwrap();
    assert!(nodes.is_empty(), "a refused node got in: {nodes:?}");
    // The operator fixes a's CA file in place: the next connect reads it and gets in.
    std::fs::copy(&files.ca_file, &wrong_ca).unwrap();
    assert!(
        joined(&a),
        "a never joined after its CA was fixed:\n{}",
        a.log.text()
    );
    assert_eq!(fleet_info(&a)["fleet_redis_up"], "1");
    // A file that turns bad later: the last good one is used, with a warning.
    std::fs::write(&wrong_ca, "not a certificate\n").unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    let warned = a.log.wait_for(Duration::from_secs(10), |l| {
        l.contains("fleet.tls_ca_file") && l.contains("connecting with the TLS files as last read")
    });
    assert!(warned.is_some(), "{}", a.log.text());
    let back = a.log.wait_for_n(2, Duration::from_secs(10), |l| {
        l.contains("fleet: connected to Redis over TLS as node a")
    });
    assert_eq!(back.len(), 2, "{}", a.log.text());
    ping(&a);
}

#[test]
fn check_config_names_each_bad_fleet_tls_setting() {
    let dir = TempDir::new("fleet-tls-check");
    let files = Setup::new(dir.path());
    let (cert, key) = files.client(dir.path(), "node", &Leaf::client("vigild-node"));
    let (_, other_key) = files.client(dir.path(), "other", &Leaf::client("other"));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let ca = q(&files.ca_file);
    let cases: Vec<(String, &str, String)> = vec![
        (
            format!(
                "redis = \"rediss://127.0.0.1:1/0\"\ntls_ca_file = {}\n",
                q(&garbage)
            ),
            "fleet.tls_ca_file",
            garbage.display().to_string(),
        ),
        (
            format!(
                "redis = \"rediss://127.0.0.1:1/0\"\ntls_ca_file = {}\n",
                q(&missing)
            ),
            "fleet.tls_ca_file",
            missing.display().to_string(),
        ),
        (
            format!(
                "redis = \"rediss://127.0.0.1:1/0\"\ntls_ca_file = {ca}\ntls_cert_file = {}\n\
                 tls_key_file = {}\n",
                q(&cert),
                q(&other_key)
            ),
            "fleet.tls_key_file",
            "does not match the certificate".to_owned(),
        ),
        (
            format!(
                "redis = \"rediss://127.0.0.1:1/0\"\ntls_cert_file = {}\n",
                q(&cert)
            ),
            "fleet.tls_key_file",
            "must be set with fleet.tls_cert_file".to_owned(),
        ),
        (
            format!("redis = \"redis://127.0.0.1:1/0\"\ntls_ca_file = {ca}\n"),
            "fleet.tls_ca_file",
            "not a rediss:// URL".to_owned(),
        ),
        (
            "redis = \"rediss://127.0.0.1:1/0#insecure\"\n".to_owned(),
            "fleet.redis",
            "#insecure".to_owned(),
        ),
    ];
    for (i, (table, key, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, format!("[fleet]\n{table}")).unwrap();
        let out = Command::new(util::vigild_bin())
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table}: accepted");
        assert!(
            err.contains(key) && err.contains(says.as_str()),
            "{table}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[fleet]\nredis = \"rediss://127.0.0.1:1/0\"\ntls_ca_file = {ca}\n\
             tls_cert_file = {}\ntls_key_file = {}\n",
            q(&cert),
            q(&key)
        ),
    )
    .unwrap();
    let out = Command::new(util::vigild_bin())
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

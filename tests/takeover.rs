//! Takeover with `session.unique_names` that tells a stale holder from a live one (issue 12,
//! docs/presence.md): two live clients configured with the same name, each reconnecting and
//! re-sending its name as client libraries do, no longer evict each other (the newcomer gets
//! `-ERR name in use by a live session`, counted); with `takeover = "newest"` they do, and the
//! flapping warning says so once; a holder silent past `session.takeover_after` is replaced,
//! with its `left` before the newcomer's `named`; a refused `HELLO 3 SETNAME` leaves the
//! protocol at 2; a refused `CLIENT SETNAME` inside `MULTI` is the error in its place in the
//! `EXEC` array; redis-py's `client_name=` (when `VIGILD_TEST_PYTHON` is set); and a holder
//! partitioned for real (nftables in a private network namespace, as root; skipped loudly
//! otherwise, a failure with `VIGILD_TESTS_NO_SKIP=1`) is replaced once its first
//! keepalive probe goes unanswered (`suspect`).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{fields, info, wait_until, Daemon};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";
const TIMEOUT: Duration = Duration::from_secs(10);
const IN_USE: &str = "-ERR name in use by a live session";
/// How long the two clients sharing a name run.
const FIGHT: Duration = Duration::from_secs(5);

/// A raw RESP client: its own socket, replies read line by line.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{line}\r\n").as_bytes())
    }

    /// One reply line without its CRLF; an error when the connection ended.
    fn line(&mut self) -> std::io::Result<String> {
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            reply.push(byte[0]);
        }
        reply.truncate(reply.len() - 2);
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Sends an inline command, returns the first line of its reply.
    fn cmd(&mut self, line: &str) -> String {
        self.send(line).unwrap();
        self.line().unwrap()
    }

    fn id(&mut self) -> i64 {
        self.cmd("CLIENT ID")[1..].parse().unwrap()
    }

    /// Whether the daemon closed the connection (read returns EOF or an error).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        !matches!(self.stream.read(&mut b), Ok(n) if n > 0)
    }
}

/// What one of the clients sharing a name saw.
#[derive(Debug, Default)]
struct Fought {
    /// `CLIENT SETNAME` answered `+OK`.
    named: u64,
    /// `CLIENT SETNAME` refused with [`IN_USE`].
    refused: u64,
    /// Connections it lost to the daemon (reaped while it held the name).
    lost: u64,
}

/// A client configured with `name` that behaves as client libraries do: it connects, sends
/// `CLIENT SETNAME`, then `PING`s every 20 ms; when its connection is closed it reconnects at
/// once and names itself again; when the name is refused it reconnects after 100 ms (a library
/// treats a failed connect handshake as a failed connection and retries). Until `stop`.
fn fight(
    addr: SocketAddr,
    name: &'static str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
) -> thread::JoinHandle<Fought> {
    thread::spawn(move || {
        let mut f = Fought::default();
        while !stop.load(Ordering::Relaxed) {
            let mut c = Raw::connect(addr);
            if c.send(&format!("CLIENT SETNAME {name}")).is_err() {
                continue;
            }
            let reply = c.line();
            answered.store(true, Ordering::Relaxed);
            match reply {
                Ok(l) if l == "+OK" => f.named += 1,
                Ok(l) if l == IN_USE => {
                    f.refused += 1;
                    // Refused, not closed: the connection still works, without the name.
                    assert_eq!(c.cmd("PING"), "+PONG");
                    assert_eq!(c.cmd("CLIENT GETNAME"), "$-1");
                    // Pacing, not waiting: a replica retries its name every 100 ms.
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
                other => panic!("CLIENT SETNAME {name}: {other:?}"),
            }
            while !stop.load(Ordering::Relaxed) {
                let alive = c.send("PING").is_ok() && c.line().is_ok_and(|l| l == "+PONG");
                if !alive {
                    f.lost += 1;
                    break;
                }
                // Pacing, not waiting: the holder speaks every 20 ms, so it stays live.
                thread::sleep(Duration::from_millis(20));
            }
        }
        f
    })
}

/// Two fighters for `name` for [`FIGHT`].
fn two_fight(addr: SocketAddr, name: &'static str) -> (Fought, Fought) {
    let stop = Arc::new(AtomicBool::new(false));
    let first_answered = Arc::new(AtomicBool::new(false));
    let a = fight(addr, name, stop.clone(), first_answered.clone());
    // The second starts once the first may hold the name (its SETNAME was answered), as a
    // second replica would.
    wait_until(
        TIMEOUT,
        "the first fighter's CLIENT SETNAME answered",
        || first_answered.load(Ordering::Relaxed),
    );
    let b = fight(addr, name, stop.clone(), Arc::new(AtomicBool::new(false)));
    // The fight itself: both replicas go on for FIGHT.
    thread::sleep(FIGHT);
    stop.store(true, Ordering::Relaxed);
    (a.join().unwrap(), b.join().unwrap())
}

fn count(st: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    st.get(key).map_or(0, |v| v.parse().unwrap())
}

#[test]
fn live_clients_sharing_a_name_do_not_flap_with_stale() {
    let d = Daemon::start(&format!("[session]\nunique_names = true\n{ADMIN}"));
    let (a, b) = two_fight(d.addr, "svc");
    eprintln!("stale: a {a:?}, b {b:?}");
    // The first took the name and kept it; the other was refused each time it tried.
    assert_eq!((a.named, a.lost, a.refused), (1, 0, 0), "{a:?}");
    assert_eq!((b.named, b.lost), (0, 0), "{b:?}");
    assert!(b.refused >= 20, "{b:?}");
    let st = d.stats();
    assert_eq!(count(&st, "reap.replaced"), 0, "{st:?}");
    assert_eq!(count(&st, "takeover.refused"), b.refused, "{st:?}");
    assert_eq!(count(&st, "takeover.replaced"), 0, "{st:?}");
    let mut ops = d.admin();
    let i = info(&mut ops, "stats");
    assert_eq!(i["takeover_refused"], b.refused.to_string());
    assert_eq!(i["takeover_replaced"], "0");
    assert_eq!(i["reaped_replaced"], "0");
    let refused = d
        .log
        .wait_for(Duration::ZERO, |l| l.contains(" refused the name svc: "))
        .expect("a refusal line");
    assert!(
        refused.contains("held by live session id=") && refused.contains(" silent_ms="),
        "{refused}"
    );
    assert_eq!(d.log.count(|l| l.contains(" is flapping: ")), 0);
}

#[test]
fn with_newest_live_clients_flap_and_the_warning_comes_once() {
    let d = Daemon::start(&format!(
        "[session]\nunique_names = true\ntakeover = \"newest\"\n{ADMIN}"
    ));
    let (a, b) = two_fight(d.addr, "svc");
    eprintln!("newest: a {a:?}, b {b:?}");
    assert_eq!(a.refused + b.refused, 0);
    let st = d.stats();
    let replaced = count(&st, "reap.replaced");
    // The issue's 19 to 50 in 5 s; at least past the threshold of 5.
    assert!(replaced > 5, "{st:?}");
    assert_eq!(count(&st, "takeover.replaced"), replaced, "{st:?}");
    // All of it within one minute: one warning, one count.
    assert_eq!(count(&st, "takeover.flapping"), 1, "{st:?}");
    let warnings: Vec<String> = d
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains(" is flapping: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.contains(" WARN ")
            && w.contains("name svc is flapping: replaced 6 times within a minute")
            && w.contains("session.flap_threshold = 5")
            && w.contains("session.takeover = \"stale\""),
        "{w}"
    );
    let mut ops = d.admin();
    assert_eq!(info(&mut ops, "stats")["takeover_flapping"], "1");
    let takeover = d
        .log
        .wait_for(Duration::ZERO, |l| l.contains(" takes the name svc: "))
        .unwrap();
    assert!(takeover.ends_with(" takeover=newest"), "{takeover}");
}

/// Subscribes to presence on the admin listener; returns the next events, parsed.
fn events(ps: &mut redis::PubSub<'_>, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let msg = ps.get_message().expect("a presence message");
            let payload: String = msg.get_payload().unwrap();
            serde_json::from_str(&payload).unwrap()
        })
        .collect()
}

#[test]
fn a_holder_silent_past_takeover_after_is_replaced_left_before_named() {
    let d = Daemon::start(&format!(
        "[session]\nunique_names = true\ntakeover_after = \"1s\"\n{ADMIN}"
    ));
    let mut con = d.admin();
    let mut ps = con.as_pubsub();
    ps.subscribe("presence").unwrap();
    ps.set_read_timeout(Some(TIMEOUT)).unwrap();

    let mut old = Raw::connect(d.addr);
    let old_id = old.id();
    assert_eq!(old.cmd("CLIENT SETNAME dev-1"), "+OK");
    let silent_from = Instant::now();
    let mut new = Raw::connect(d.addr);
    let new_id = new.id();
    // Live (it just spoke): refused. Then, once it has been silent for a second, replaced.
    assert_eq!(new.cmd("CLIENT SETNAME dev-1"), IN_USE);
    let taken = wait_until(TIMEOUT, "the silent holder of dev-1 replaced", || {
        let reply = new.cmd("CLIENT SETNAME dev-1");
        if reply == "+OK" {
            return Some(Instant::now());
        }
        assert_eq!(reply, IN_USE);
        None
    });
    assert!(taken - silent_from >= Duration::from_millis(900));
    let reap = d.wait_reap(old_id, TIMEOUT);
    assert_eq!(reap["reason"], "replaced");
    assert!(old.closed());
    let line = d
        .log
        .wait_for(Duration::ZERO, |l| l.contains(" takes the name dev-1: "))
        .unwrap();
    let f = fields(&line);
    assert_eq!(f["stale"], "silent", "{line}");
    assert!(f["silent_ms"].parse::<u64>().unwrap() >= 1000, "{line}");

    let ev = events(&mut ps, 5);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["joined", "named", "joined", "left", "named"],
        "{ev:?}"
    );
    assert_eq!(ev[3]["id"], old_id);
    assert_eq!(ev[3]["reason"], "replaced");
    assert_eq!(ev[4]["id"], new_id);
    assert_eq!(ev[4]["name"], "dev-1");
    let st = d.stats();
    assert_eq!(count(&st, "takeover.replaced"), 1, "{st:?}");
    assert!(count(&st, "takeover.refused") >= 1, "{st:?}");
    assert_eq!(count(&st, "takeover.flapping"), 0, "{st:?}");
}

/// The rest of a `HELLO` reply after its header: up to `modules`' empty array, its last line.
fn hello_rest(c: &mut Raw) -> Vec<String> {
    let mut out = Vec::new();
    while out.last().is_none_or(|l| l != "*0") {
        out.push(c.line().unwrap());
    }
    out
}

/// `CLIENT SETNAME ""` (clears the name), as RESP.
const CLEAR: &str = "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$0\r\n\r\n";

/// Reads `n` reply lines.
fn lines(c: &mut Raw, n: usize) -> Vec<String> {
    (0..n).map(|_| c.line().unwrap()).collect()
}

#[test]
fn a_refused_hello_setname_keeps_the_protocol_and_a_refused_setname_in_multi_is_in_exec() {
    let d = Daemon::start("[session]\nunique_names = true\n");
    let mut holder = Raw::connect(d.addr);
    assert_eq!(holder.cmd("CLIENT SETNAME dev-1"), "+OK");

    let mut c = Raw::connect(d.addr);
    assert_eq!(c.cmd("CLIENT SETNAME mine"), "+OK");
    // HELLO 3 SETNAME of a live holder's name: refused as a whole, RESP2 and the old name kept.
    assert_eq!(c.cmd("HELLO 3 SETNAME dev-1"), IN_USE);
    assert_eq!(c.cmd("CLIENT GETNAME"), "$4");
    assert_eq!(c.line().unwrap(), "mine");
    // A pipeline: the requests after the refused HELLO wait for it, and see RESP2.
    c.send(&format!("HELLO 3 SETNAME dev-1\r\n{CLEAR}CLIENT GETNAME"))
        .unwrap();
    assert_eq!(lines(&mut c, 3), [IN_USE, "+OK", "$-1"]);
    // A free name: HELLO 3 succeeds, the map in RESP3, and RESP3 from then on.
    assert_eq!(c.cmd("HELLO 3 SETNAME dev-2"), "%7");
    let map = hello_rest(&mut c);
    assert!(map.contains(&":3".to_string()), "{map:?}");
    c.stream.write_all(CLEAR.as_bytes()).unwrap();
    assert_eq!(c.line().unwrap(), "+OK");
    assert_eq!(c.cmd("CLIENT GETNAME"), "_");
    assert_eq!(c.cmd("HELLO 2"), "*14");
    hello_rest(&mut c);

    // MULTI: SETNAME queues; EXEC runs it through the same takeover: the error in its place.
    c.send("MULTI\r\nCLIENT SETNAME dev-1\r\nPING\r\nCLIENT SETNAME dev-3\r\nEXEC")
        .unwrap();
    assert_eq!(
        lines(&mut c, 8),
        ["+OK", "+QUEUED", "+QUEUED", "+QUEUED", "*3", IN_USE, "+PONG", "+OK"]
    );
    assert_eq!(c.cmd("CLIENT GETNAME"), "$5");
    assert_eq!(c.line().unwrap(), "dev-3");
    // The holder was never touched; the same name again is +OK, as before.
    assert_eq!(holder.cmd("CLIENT SETNAME dev-1"), "+OK");
    assert_eq!(holder.cmd("PING"), "+PONG");
    let st = d.stats();
    assert_eq!(count(&st, "takeover.refused"), 3, "{st:?}");
    assert_eq!(count(&st, "reap.replaced"), 0, "{st:?}");
}

fn python() -> Option<String> {
    util::installed("VIGILD_TEST_PYTHON", "redis-py")
}

/// Two redis-py clients with the same `client_name=` and default options (RESP3, retries),
/// each pinging for a few seconds: the first keeps its connection and name, the second's
/// connections are refused at their handshake.
const SCRIPT: &str = r#"
import json, sys, time
import redis

port = int(sys.argv[1])
a = redis.Redis(host="127.0.0.1", port=port, client_name="py-svc", decode_responses=True)
b = redis.Redis(host="127.0.0.1", port=port, client_name="py-svc", decode_responses=True)
out = {"a_ok": 0, "a_err": [], "b_ok": 0, "b_in_use": 0, "b_other": []}
assert a.ping() is True
a_id = a.client_id()
end = time.time() + 5
while time.time() < end:
    try:
        a.ping()
        out["a_ok"] += 1
    except Exception as e:
        out["a_err"].append(repr(e))
    try:
        b.ping()
        out["b_ok"] += 1
    except Exception as e:
        if "name in use by a live session" in str(e):
            out["b_in_use"] += 1
        else:
            out["b_other"].append(repr(e))
    time.sleep(0.05)
out["a_same"] = a.client_id() == a_id
out["a_name"] = a.client_getname()
print(json.dumps(out))
"#;

#[test]
fn redis_py_clients_with_the_same_client_name() {
    let Some(py) = python() else {
        return;
    };
    let d = Daemon::start("[session]\nunique_names = true\n");
    let out = Command::new(py)
        .arg("-c")
        .arg(SCRIPT)
        .arg(d.addr.port().to_string())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("redis-py: {v}");
    assert_eq!(v["a_err"], serde_json::json!([]), "{v}");
    assert_eq!(v["a_same"], true, "{v}");
    assert_eq!(v["a_name"], "py-svc", "{v}");
    assert_eq!(v["b_ok"], 0, "{v}");
    assert_eq!(v["b_other"], serde_json::json!([]), "{v}");
    assert!(v["b_in_use"].as_u64().unwrap() >= 20, "{v}");
    let st = d.stats();
    assert_eq!(count(&st, "reap.replaced"), 0, "{st:?}");
    assert!(count(&st, "takeover.refused") >= 20, "{st:?}");
}

/// Whether root-only fault tests can run here; skips loudly, or fails with
/// `VIGILD_TESTS_NO_SKIP=1` (as in CI), when they cannot.
fn can_partition() -> bool {
    match util::netns::probe() {
        Ok(()) => true,
        Err(why) => {
            util::skip(
                &format!("the partition test cannot run here: {why}"),
                "it needs root, private network namespaces and nft (Debian package nftables)",
            );
            false
        }
    }
}

/// A holder cut off for real (nftables in a private network namespace, its address only) reads
/// `suspect` once keepalive's first probe goes unanswered, and from then on a newcomer takes
/// its name, long before keepalive would have reaped it; before that it was refused.
#[test]
fn a_partitioned_holder_is_replaced_once_its_probe_goes_unanswered() {
    if !can_partition() {
        return;
    }
    // unshare(CLONE_NEWNET) moves only the calling thread: a thread of its own.
    thread::spawn(|| {
        util::netns::enter_private().expect("private network namespace");
        let d = Daemon::start_with(
            "[keepalive]\nidle = \"2s\"\ninterval = \"1s\"\nprobes = 5\n\
             [session]\nunique_names = true\n",
            util::netns::kill_with_parent,
        );
        let mut holder = Raw {
            stream: util::connect_from("127.0.0.2".parse().unwrap(), d.addr).unwrap(),
        };
        holder.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let holder_id = holder.id();
        assert_eq!(holder.cmd("CLIENT SETNAME dev-1"), "+OK");
        let last = Instant::now();
        // Quiet before the cut, so no delayed ACK turns it into a retransmission case.
        util::netns::wait_acked(d.addr.port(), Some("127.0.0.2"));
        util::netns::nft(
            "table inet cut {\n chain i {\n  type filter hook input priority -300; policy accept;\n  \
             ip saddr 127.0.0.2 drop\n  ip daddr 127.0.0.2 drop\n }\n}\n",
        )
        .expect("nft");
        let mut new = Raw::connect(d.addr);
        assert_eq!(new.cmd("CLIENT SETNAME dev-1"), IN_USE, "not suspect yet");
        let taken = wait_until(TIMEOUT, "the partitioned holder of dev-1 replaced", || {
            let reply = new.cmd("CLIENT SETNAME dev-1");
            if reply == "+OK" {
                return Some(last.elapsed());
            }
            assert_eq!(reply, IN_USE);
            None
        });
        eprintln!("partitioned holder replaced {taken:?} after its last request");
        // The first probe leaves at idle = 2 s; keepalive would reap it at 2 + 1 × 5 = 7 s.
        assert!(
            (Duration::from_millis(1900)..Duration::from_millis(4000)).contains(&taken),
            "{taken:?}"
        );
        assert_eq!(d.wait_reap(holder_id, TIMEOUT)["reason"], "replaced");
        let line = d
            .log
            .wait_for(Duration::ZERO, |l| l.contains(" takes the name dev-1: "))
            .unwrap();
        let f = fields(&line);
        assert_eq!(f["stale"], "suspect", "{line}");
        assert!(f["tcpi_probes"].parse::<u32>().unwrap() >= 1, "{line}");
        assert_eq!(new.cmd("PING"), "+PONG");
    })
    .join()
    .unwrap();
}

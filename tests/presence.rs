//! Presence events on the admin listener, driven by real clients: the `redis` crate's pub/sub
//! API and `redis-cli subscribe`, against the real binary. Events in order with their fields
//! (and the same facts as the reap log line), the subscribed-mode rules, unique names and
//! `replaced`, `CLIENT LOOKUP`, a slow subscriber dropped without stalling anyone, `shutdown`
//! events, and the resync recipe under churn. The partitioned peer (`keepalive-timeout`) is a
//! case of the fault-injection suite (tests/faults/presence.rs).

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use util::{cpu_ns, fields, info, wait_until, Daemon};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";
const TIMEOUT: Duration = Duration::from_secs(10);

fn admin_url(d: &Daemon) -> String {
    format!("redis://{}/", d.ops_listener("admin"))
}

/// Subscribes `con` to `presence` with the redis crate's pub/sub API.
fn subscribe(con: &mut redis::Connection) -> redis::PubSub<'_> {
    let mut ps = con.as_pubsub();
    ps.subscribe("presence").expect("SUBSCRIBE presence");
    ps.set_read_timeout(Some(TIMEOUT)).unwrap();
    ps
}

/// The next presence event, parsed.
fn next_event(ps: &mut redis::PubSub<'_>) -> Value {
    let msg = ps.get_message().expect("a presence message");
    assert_eq!(msg.get_channel_name(), "presence");
    let payload: String = msg.get_payload().unwrap();
    serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}: {payload}"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A raw RESP client: its own socket, so its address and the end of its connection are exact.
struct Raw {
    stream: TcpStream,
    local: SocketAddr,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let local = stream.local_addr().unwrap();
        Raw { stream, local }
    }

    /// Sends an inline command, returns its one-line reply without the CRLF.
    fn cmd(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            let n = self.stream.read(&mut byte).expect("a reply");
            assert_eq!(n, 1, "connection closed waiting for the reply to {line}");
            reply.push(byte[0]);
        }
        reply.truncate(reply.len() - 2);
        String::from_utf8(reply).unwrap()
    }

    fn id(&mut self) -> u64 {
        self.cmd("CLIENT ID")
            .trim_start_matches(':')
            .parse()
            .unwrap()
    }

    /// Waits for the server to close the connection (FIN, or a reset).
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the connection closed: {e}"),
            }
        }
    }
}

#[test]
fn joined_named_left_arrive_in_order_with_their_fields() {
    let d = Daemon::start(ADMIN);
    let mut con = d.admin();
    let mut other_admin = d.admin();
    let mut ps = subscribe(&mut con);
    let before = unix_ms();

    let mut c = Raw::connect(d.addr);
    let id = c.id();
    let joined = next_event(&mut ps);
    assert_eq!(joined["event"], "joined", "{joined}");
    assert_eq!(num(&joined, "seq"), 1, "the first event of the daemon");
    assert_eq!(num(&joined, "id"), id);
    assert_eq!(joined["addr"], c.local.to_string());
    assert_eq!(joined["laddr"], d.addr.to_string());
    let at = num(&joined, "at");
    assert!(
        (before.saturating_sub(1_000)..=unix_ms() + 1_000).contains(&at),
        "at={at} is the wall clock in ms"
    );

    assert_eq!(c.cmd("CLIENT SETNAME dev-1"), "+OK");
    let named = next_event(&mut ps);
    assert_eq!(
        (
            named["event"].as_str(),
            num(&named, "seq"),
            num(&named, "id")
        ),
        (Some("named"), 2, id)
    );
    assert_eq!(named["name"], "dev-1");
    assert!(named["previous"].is_null(), "{named}");
    // Pipelined: both renames are applied in order, and GETNAME after them sees the last.
    c.stream
        .write_all(b"CLIENT SETNAME dev-2\r\nCLIENT SETNAME dev-2\r\nCLIENT SETNAME \"\"\r\n")
        .unwrap();
    assert_eq!(c.cmd("CLIENT GETNAME"), "+OK");
    let mut rest = [0u8; 15];
    c.stream.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"+OK\r\n+OK\r\n$-1\r\n");
    let to_2 = next_event(&mut ps);
    assert_eq!(
        (to_2["name"].as_str(), to_2["previous"].as_str()),
        (Some("dev-2"), Some("dev-1"))
    );
    let cleared = next_event(&mut ps);
    assert_eq!(
        num(&cleared, "seq"),
        4,
        "the same name again is not a change"
    );
    assert!(cleared["name"].is_null() && cleared["previous"] == "dev-2");
    assert_eq!(c.cmd("CLIENT SETNAME dev-3"), "+OK");
    assert_eq!(next_event(&mut ps)["name"], "dev-3");

    // Each way a session ends, as a `left` with the reap line's facts.
    assert_eq!(c.cmd("QUIT"), "+OK");
    let left = next_event(&mut ps);
    assert_eq!(
        (left["event"].as_str(), num(&left, "seq")),
        (Some("left"), 6)
    );
    assert_eq!(num(&left, "id"), id);
    assert_eq!(left["addr"], c.local.to_string());
    assert_eq!(left["name"], "dev-3");
    assert_eq!(left["reason"], "quit");
    assert!(left["errno"].is_null(), "{left}");
    let reap = d.wait_reap(id as i64, TIMEOUT);
    for key in [
        "lifetime_ms",
        "silent_ms",
        "tcpi_state",
        "tcpi_probes",
        "tcpi_retransmits",
        "tcpi_backoff",
        "tcpi_unacked",
        "tcpi_total_retrans",
        "tcpi_last_data_recv_ms",
        "tcpi_notsent_bytes",
    ] {
        assert_eq!(
            left[key].to_string(),
            reap[key],
            "{key}: the event and the reap line agree"
        );
    }

    let closer = Raw::connect(d.addr);
    let closer_joined = next_event(&mut ps);
    assert_eq!(closer_joined["addr"], closer.local.to_string());
    drop(closer);
    let closed = next_event(&mut ps);
    assert_eq!(
        (closed["reason"].as_str(), num(&closed, "seq")),
        (Some("closed"), 8)
    );
    assert!(closed["name"].is_null());

    let mut victim = Raw::connect(d.addr);
    let victim_id = victim.id();
    assert_eq!(next_event(&mut ps)["event"], "joined");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(victim_id)
        .query(&mut other_admin)
        .unwrap();
    assert_eq!(killed, 1);
    let left = next_event(&mut ps);
    assert_eq!(
        (left["reason"].as_str(), num(&left, "id")),
        (Some("killed"), victim_id)
    );
    victim.expect_closed();

    // The counters: INFO, the statistics line, the metrics.
    let p = info(&mut other_admin, "presence");
    assert_eq!(p["presence_seq"], "10", "{p:?}");
    assert_eq!(p["presence_events_published"], "10");
    assert_eq!(p["presence_messages_delivered"], "10");
    assert_eq!(p["presence_subscribers"], "1");
    assert_eq!(p["presence_subscribers_dropped"], "0");
    assert_eq!(p["presence_unique_names"], "0");
    let s = d.stats();
    assert_eq!(
        (
            s["presence.events"].as_str(),
            s["presence.subscribers"].as_str()
        ),
        ("10", "1")
    );
}

#[test]
fn redis_cli_subscribe_prints_the_events() {
    let d = Daemon::start(ADMIN);
    let admin_addr = d.ops_listener("admin");
    let (host, port) = admin_addr.rsplit_once(':').unwrap();
    let mut cli = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "subscribe", "presence"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli (Debian package redis-tools)");
    let (tx, rx) = mpsc::channel();
    let stdout = cli.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(TIMEOUT).expect("a line from redis-cli");
    let confirmation: Vec<String> = (0..3).map(|_| next()).collect();
    assert_eq!(confirmation, ["subscribe", "presence", "1"]);
    let mut c = Raw::connect(d.addr);
    let id = c.id();
    assert_eq!((next(), next()), ("message".into(), "presence".into()));
    let joined: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(
        (joined["event"].as_str(), num(&joined, "id")),
        (Some("joined"), id)
    );
    assert_eq!(c.cmd("QUIT"), "+OK");
    assert_eq!((next(), next()), ("message".into(), "presence".into()));
    let left: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(left["reason"], "quit");
    let _ = cli.kill();
    let _ = cli.wait();
}

#[test]
fn a_subscribed_connection_follows_redis_rules() {
    let d = Daemon::start(ADMIN);
    let mut con = d.admin();
    let mut observer = d.admin();
    {
        let mut ps = subscribe(&mut con);
        ps.subscribe("not-published").unwrap();
        let pong: Vec<String> = ps.ping().unwrap();
        assert_eq!(pong, ["pong", ""], "Redis's subscribed PING");
        assert_eq!(info(&mut observer, "presence")["presence_subscribers"], "1");
        // Dropping the PubSub unsubscribes (UNSUBSCRIBE and PUNSUBSCRIBE) and waits for both.
    }
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    assert_eq!(
        list, "",
        "the connection is usable again after unsubscribing"
    );
    assert_eq!(info(&mut observer, "presence")["presence_subscribers"], "0");

    // The exact bytes, on a raw connection.
    let mut raw = TcpStream::connect(d.ops_listener("admin")).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    raw.write_all(b"SUBSCRIBE presence\r\nPING\r\nCLIENT LIST\r\nPSUBSCRIBE pres*\r\n")
        .unwrap();
    let expected = "*3\r\n$9\r\nsubscribe\r\n$8\r\npresence\r\n:1\r\n\
                    *2\r\n$4\r\npong\r\n$0\r\n\r\n\
                    -ERR Can't execute 'client|list': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are allowed in this context\r\n\
                    *3\r\n$10\r\npsubscribe\r\n$5\r\npres*\r\n:2\r\n";
    let mut got = vec![0u8; expected.len()];
    raw.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expected);
    // A pattern subscription gets its own pmessage, after the channel's message.
    let c = Raw::connect(d.addr);
    let mut reader = BufReader::new(raw.try_clone().unwrap());
    let mut lines = Vec::new();
    for _ in 0..(7 + 9) {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    assert_eq!(&lines[..5], ["*3", "$7", "message", "$8", "presence"]);
    assert_eq!(
        &lines[7..14],
        ["*4", "$8", "pmessage", "$5", "pres*", "$8", "presence"]
    );
    assert_eq!(lines[6], lines[15], "the same event");
    drop(c);
    let mut left = Vec::new();
    for _ in 0..(7 + 9) {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        left.push(l);
    }
    assert!(left[6].contains("\"event\":\"left\""), "{left:?}");
    // QUIT while subscribed: +OK, then the connection ends, with no message after it.
    raw.write_all(b"QUIT\r\n").unwrap();
    let _more = Raw::connect(d.addr);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "+OK\r\n");
}

#[test]
fn unique_names_replace_the_older_session_and_lookup_finds_the_holder() {
    // "newest": this tests the takeover itself, of a holder that is live on loopback
    // (tests/takeover.rs has the default, "stale").
    let d = Daemon::start(&format!(
        "[session]\nunique_names = true\ntakeover = \"newest\"\n{ADMIN}"
    ));
    let mut con = d.admin();
    let mut ops = d.admin();
    let mut ps = subscribe(&mut con);
    let lookup = |ops: &mut redis::Connection, name: &str| -> Option<String> {
        redis::cmd("CLIENT")
            .arg("LOOKUP")
            .arg(name)
            .query(ops)
            .unwrap()
    };
    assert_eq!(lookup(&mut ops, "dev-1"), None);

    let mut old = Raw::connect(d.addr);
    let old_id = old.id();
    assert_eq!(old.cmd("CLIENT SETNAME dev-1"), "+OK");
    let line = lookup(&mut ops, "dev-1").expect("the holder");
    assert_eq!(fields(&line)["id"], old_id.to_string());
    assert!(fields(&line).contains_key("presence-seq"), "{line}");

    // The device reconnects before keepalive found its old session.
    let mut new = Raw::connect(d.addr);
    let new_id = new.id();
    assert_eq!(new.cmd("CLIENT SETNAME dev-1"), "+OK");
    let events: Vec<Value> = (0..5).map(|_| next_event(&mut ps)).collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["joined", "named", "joined", "left", "named"]);
    let (left, named) = (&events[3], &events[4]);
    assert_eq!(num(left, "id"), old_id);
    assert_eq!(left["reason"], "replaced");
    assert_eq!(left["name"], "dev-1");
    assert_eq!(num(named, "id"), new_id);
    assert_eq!(named["name"], "dev-1");
    assert_eq!(d.wait_reap(old_id as i64, TIMEOUT)["reason"], "replaced");
    old.expect_closed();
    let line = lookup(&mut ops, "dev-1").expect("the new holder");
    assert_eq!(fields(&line)["id"], new_id.to_string());
    assert_eq!(line.lines().count(), 1);
    assert_eq!(info(&mut ops, "stats")["reaped_replaced"], "1");
    // Renaming away frees the name.
    assert_eq!(new.cmd("CLIENT SETNAME dev-2"), "+OK");
    assert_eq!(lookup(&mut ops, "dev-1"), None);
    assert_eq!(new.cmd("PING"), "+PONG");
}

#[test]
fn without_unique_names_sessions_share_a_name() {
    let d = Daemon::start(ADMIN);
    let mut ops = d.admin();
    let mut a = Raw::connect(d.addr);
    let mut b = Raw::connect(d.addr);
    let (a_id, b_id) = (a.id(), b.id());
    assert_eq!(a.cmd("CLIENT SETNAME twin"), "+OK");
    assert_eq!(b.cmd("CLIENT SETNAME twin"), "+OK");
    let both: String = redis::cmd("CLIENT")
        .arg("LOOKUP")
        .arg("twin")
        .query(&mut ops)
        .unwrap();
    let ids: Vec<String> = both.lines().map(|l| fields(l)["id"].clone()).collect();
    assert_eq!(ids, [a_id.to_string(), b_id.to_string()]);
    assert_eq!(a.cmd("PING"), "+PONG");
}

/// Connects a subscriber that never reads, with a small receive buffer, so its output piles
/// up in the daemon.
fn stuck_subscriber(admin_addr: &str) -> TcpStream {
    let addr: SocketAddr = admin_addr.parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = sock.into();
    stream.write_all(b"SUBSCRIBE presence\r\n").unwrap();
    stream
}

#[test]
fn a_slow_subscriber_is_dropped_without_stalling_the_loop_or_the_others() {
    const EVENTS: u64 = 300;
    let d = Daemon::start(&format!(
        "[session]\nmax_output_bytes = 262144\nmax_name_bytes = 65536\n{ADMIN}\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n"
    ));
    let mut ops = d.admin();
    let slow = stuck_subscriber(&d.ops_listener("admin"));
    // A fast subscriber reads everything on its own thread.
    let url = admin_url(&d);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (seqs_tx, seqs_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut ps = subscribe(&mut con);
        ready_tx.send(()).unwrap();
        let mut seqs = Vec::new();
        // The generator's and the pinger's `joined`, and a `named` per generated name.
        while seqs.len() < EVENTS as usize + 2 {
            seqs.push(num(&next_event(&mut ps), "seq"));
        }
        seqs_tx.send(seqs).unwrap();
        // Stays subscribed until the test has counted the subscribers.
        let _ = stop_rx.recv_timeout(TIMEOUT);
    });
    ready_rx.recv_timeout(TIMEOUT).unwrap();
    wait_until(TIMEOUT, "both subscribers counted", || {
        info(&mut ops, "presence")["presence_subscribers"] == "2"
    });

    // 300 events of 16 KiB each (long names): 4.8 MB, far beyond 256 KiB and the socket
    // buffers. A client session pings meanwhile.
    let mut gen = Raw::connect(d.addr);
    let mut pinger = Raw::connect(d.addr);
    let mut worst = Duration::ZERO;
    for i in 0..EVENTS {
        let name = format!("{}{i:04}", "n".repeat(16 * 1024));
        assert_eq!(gen.cmd(&format!("CLIENT SETNAME {name}")), "+OK");
        if i % 10 == 0 {
            let t = Instant::now();
            assert_eq!(pinger.cmd("PING"), "+PONG");
            worst = worst.max(t.elapsed());
        }
    }
    let seqs = seqs_rx
        .recv_timeout(TIMEOUT)
        .expect("the fast subscriber got every event");
    let first = seqs[0];
    assert!(
        seqs.iter().zip(first..).all(|(s, want)| *s == want),
        "the fast subscriber saw every sequence number in order: {seqs:?}"
    );
    let dropped = d
        .log
        .wait_for(TIMEOUT, |l| {
            l.contains("presence subscriber dropped: reason=slow-consumer")
        })
        .expect("the drop is logged");
    assert!(dropped.contains(" WARN "), "{dropped}");
    let p = info(&mut ops, "presence");
    assert_eq!(p["presence_subscribers_dropped"], "1", "{p:?}");
    assert_eq!(p["presence_subscribers"], "1", "the fast one stays");
    let metrics = ureq::get(format!("http://{}/metrics", d.ops_listener("metrics")))
        .call()
        .expect("scrape")
        .body_mut()
        .read_to_string()
        .unwrap();
    for sample in [
        "vigild_presence_subscribers_dropped_total 1\n",
        "vigild_presence_subscribers 1\n",
        &format!("vigild_presence_events_total {}\n", EVENTS + 2),
    ] {
        assert!(metrics.contains(sample), "{sample} in\n{metrics}");
    }
    let _ = stop_tx.send(());
    assert!(
        worst < Duration::from_millis(250),
        "a client PING took {worst:?} during the flood"
    );
    println!("worst PING during the flood: {worst:?}; {}", dropped);
    // The slow subscriber finds its connection closed once it reads what was sent.
    let mut slow = slow;
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the dropped subscriber's connection should end: {e}"),
        }
    }
}

#[test]
fn shutdown_publishes_a_left_for_every_session() {
    let mut d = Daemon::start(ADMIN);
    let mut con = d.admin();
    let clients: Vec<Raw> = (0..3).map(|_| Raw::connect(d.addr)).collect();
    let mut ps = subscribe(&mut con);
    // Wait until the three sessions are in the table (their joined may predate the
    // subscription): CLIENT LIST on another connection.
    let mut ops = d.admin();
    wait_until(TIMEOUT, "the three sessions in the table", || {
        info(&mut ops, "clients")["connected_clients"] == "3"
    });
    d.signal(libc::SIGTERM);
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let e = next_event(&mut ps);
        assert_eq!(e["event"], "left");
        reasons.push(e["reason"].as_str().unwrap().to_string());
    }
    assert_eq!(reasons, ["shutdown"; 3]);
    assert!(d.wait_exit(TIMEOUT).is_some_and(|s| s.success()));
    drop(clients);
}

/// What a watcher knows: live sessions by id, with their names.
type Live = BTreeMap<u64, Option<String>>;

/// Parses `CLIENT LIST`: the sessions and the presence sequence number the list reflects
/// (0 for an empty list, as docs/presence.md says).
fn snapshot(list: &str) -> (Live, u64) {
    let mut live = Live::new();
    let mut seq = None;
    for line in list.lines().filter(|l| !l.is_empty()) {
        let f = fields(line);
        let name = Some(f["name"].clone()).filter(|n| !n.is_empty());
        live.insert(f["id"].parse().unwrap(), name);
        let s: u64 = f["presence-seq"].parse().unwrap();
        assert!(seq.is_none_or(|x| x == s), "one seq per listing");
        seq = Some(s);
    }
    (live, seq.unwrap_or(0))
}

/// Applies one event after the snapshot; every event must make sense against what is known.
fn apply(live: &mut Live, e: &Value) {
    let id = num(e, "id");
    match e["event"].as_str() {
        Some("joined") => assert!(live.insert(id, None).is_none(), "joined twice: {e}"),
        Some("named") => {
            let slot = live
                .get_mut(&id)
                .unwrap_or_else(|| panic!("named unknown: {e}"));
            assert_eq!(
                slot.as_deref(),
                e["previous"].as_str(),
                "previous name: {e}"
            );
            *slot = e["name"].as_str().map(str::to_string);
        }
        Some("left") => {
            assert!(live.remove(&id).is_some(), "left unknown: {e}");
        }
        _ => panic!("unknown event {e}"),
    }
}

/// One churn thread: `joins` sessions, at most `keep` open at a time, each closed in one of
/// three ways (FIN, QUIT, reset); some named, some renamed. Returns the sessions left open.
fn churn(addr: SocketAddr, t: usize, joins: usize, keep: usize, done: &AtomicUsize) -> Vec<Raw> {
    let mut pool: Vec<Raw> = Vec::new();
    for i in 0..joins {
        let mut c = Raw::connect(addr);
        if i % 3 != 0 {
            assert_eq!(c.cmd(&format!("CLIENT SETNAME t{t}-{i}")), "+OK");
        }
        pool.push(c);
        if i % 4 == 0 {
            let j = (i * 7) % pool.len();
            assert_eq!(pool[j].cmd(&format!("CLIENT SETNAME t{t}-{i}-r")), "+OK");
        }
        if pool.len() > keep {
            let victim = pool.swap_remove((i * 13) % pool.len());
            match i % 3 {
                0 => drop(victim),
                1 => {
                    let mut v = victim;
                    assert_eq!(v.cmd("QUIT"), "+OK");
                }
                _ => {
                    socket2::SockRef::from(&victim.stream)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    drop(victim);
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    pool
}

#[test]
fn resync_recipe_matches_client_list_after_churn() {
    const THREADS: usize = 4;
    const JOINS: usize = 250;
    const KEEP: usize = 16;
    let d = Daemon::start(&format!("{ADMIN}\n[log]\nlevel = \"info\"\n"));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let done = Arc::clone(&done);
            let addr = d.addr;
            thread::spawn(move || churn(addr, t, JOINS, KEEP, &done))
        })
        .collect();
    // The watcher joins in the middle of the churn.
    wait_until(TIMEOUT, "200 joins of the churn done", || {
        done.load(Ordering::Relaxed) >= 200
    });
    // The watcher: a subscriber on its own thread (blocking reads, so no read ever stops in
    // the middle of a message), events handed over in order.
    let url = admin_url(&d);
    let (events_tx, events) = mpsc::channel::<Value>();
    let (ready_tx, ready) = mpsc::channel();
    thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut ps = subscribe(&mut con);
        ps.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        ready_tx.send(()).unwrap();
        while let Ok(e) = ps.get_message() {
            let payload: String = e.get_payload().unwrap();
            if events_tx
                .send(serde_json::from_str(&payload).unwrap())
                .is_err()
            {
                return;
            }
        }
    });
    ready.recv_timeout(TIMEOUT).expect("subscribed");
    // Step 2 of the recipe: CLIENT LIST on a second connection.
    let mut ops = d.admin();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut ops).unwrap();
    let (mut live, start_seq) = snapshot(&list);

    let mut last_seq = None;
    let mut skipped = 0;
    let mut applied = 0;
    let mut workers = Some(workers);
    let mut pools = Vec::new();
    let mut final_list: Option<(Live, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "churn and resync within 60 s");
        match events.recv_timeout(Duration::from_millis(20)) {
            Ok(e) => {
                let seq = num(&e, "seq");
                if let Some(prev) = last_seq {
                    assert_eq!(seq, prev + 1, "no gap in the sequence");
                }
                last_seq = Some(seq);
                // Step 3: apply what is newer than the list.
                if seq <= start_seq {
                    skipped += 1;
                } else {
                    apply(&mut live, &e);
                    applied += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("the watcher stopped: {e}"),
        }
        if workers
            .as_ref()
            .is_some_and(|w| w.iter().all(|h| h.is_finished()))
        {
            for h in workers.take().unwrap() {
                pools.extend(h.join().expect("churn thread"));
            }
        }
        if workers.is_none() && final_list.is_none() {
            // Quiescent once every close has been reaped.
            let n: usize = info(&mut ops, "clients")["connected_clients"]
                .parse()
                .unwrap();
            if n == pools.len() {
                let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut ops).unwrap();
                final_list = Some(snapshot(&list));
            }
        }
        if let Some((_, f)) = &final_list {
            if last_seq.is_some_and(|s| s >= *f) {
                break;
            }
        }
    }
    let (final_live, final_seq) = final_list.unwrap();
    assert_eq!(
        last_seq,
        Some(final_seq),
        "nothing happened after the final list"
    );
    assert_eq!(live, final_live, "the watcher's view equals CLIENT LIST");
    assert_eq!(live.len(), THREADS * KEEP);
    let reaped = info(&mut ops, "stats");
    assert_eq!(
        reaped["total_connections_received"],
        (THREADS * JOINS).to_string()
    );
    for reason in ["closed", "quit", "reset"] {
        let n: u64 = reaped[&format!("reaped_{reason}")].parse().unwrap();
        assert!(n > 100, "{reason}: {n} (the churn uses every way out)");
    }
    println!(
        "resync: snapshot at seq {start_seq} with {} events skipped and {applied} applied; \
         final seq {final_seq}, {} live",
        skipped,
        live.len()
    );
    drop(pools);
}

/// `n` sessions that each join, take a name and quit: 3 events each.
fn short_sessions(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let mut c = Raw::connect(addr);
        assert_eq!(c.cmd(&format!("CLIENT SETNAME s-{i}")), "+OK");
        assert_eq!(c.cmd("QUIT"), "+OK");
    }
}

/// A raw subscriber on its own thread: returns the sequence numbers it received once it has
/// `want` of them (and counts itself in `done`).
fn raw_subscriber(
    admin_addr: &str,
    want: usize,
    done: Arc<AtomicUsize>,
) -> thread::JoinHandle<Vec<u64>> {
    let mut stream = TcpStream::connect(admin_addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"SUBSCRIBE presence\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut confirmation = String::new();
    for _ in 0..6 {
        reader.read_line(&mut confirmation).unwrap();
    }
    assert!(confirmation.ends_with(":1\r\n"), "{confirmation}");
    thread::spawn(move || {
        let mut seqs = Vec::with_capacity(want);
        let mut line = String::new();
        while seqs.len() < want {
            line.clear();
            reader.read_line(&mut line).expect("a message line");
            if let Some(rest) = line.strip_prefix("{\"seq\":") {
                let end = rest.find(',').unwrap();
                seqs.push(rest[..end].parse().unwrap());
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
        seqs
    })
}

/// Opens `n` sessions and kills them all with one `CLIENT KILL` (one loop turn of `n` reaps);
/// returns the daemon's CPU time for the kill, once `delivered` says every event is out.
fn kill_burst(
    d: &Daemon,
    ops: &mut redis::Connection,
    n: usize,
    delivered: impl Fn() -> bool,
) -> u64 {
    let held: Vec<Raw> = (0..n).map(|_| Raw::connect(d.addr)).collect();
    wait_until(TIMEOUT, &format!("{n} sessions in the table"), || {
        info(ops, "clients")["connected_clients"] == n.to_string()
    });
    let before = cpu_ns(d.pid());
    let killed: usize = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("MAXAGE")
        .arg(0)
        .query(ops)
        .unwrap();
    assert_eq!(killed, n);
    wait_until(TIMEOUT, "the burst delivered", &delivered);
    let spent = cpu_ns(d.pid()) - before;
    drop(held);
    spent
}

/// Fan-out: 100 subscribers each receive every event, in order. Also measures the daemon's CPU
/// cost per event without and with them, one event per loop turn (a client round trip each)
/// and in a burst (500 reaps in one turn, written once per subscriber). Printed; the numbers in
/// docs/presence.md come from `cargo test --release --test presence fan_out -- --nocapture`.
#[test]
fn fan_out_to_a_hundred_subscribers() {
    const SUBSCRIBERS: usize = 100;
    const SESSIONS: usize = 300;
    const BURST: usize = 500;
    let d = Daemon::start(&format!("{ADMIN}\n[log]\nlevel = \"info\"\n"));
    let mut ops = d.admin();
    let before = cpu_ns(d.pid());
    short_sessions(d.addr, SESSIONS);
    let alone = cpu_ns(d.pid()) - before;
    let burst_alone = kill_burst(&d, &mut ops, BURST, || true);

    let admin_addr = d.ops_listener("admin");
    let base = 3 * SESSIONS + 2 * BURST;
    let events = 3 * SESSIONS + 2 * BURST;
    let done = Arc::new(AtomicUsize::new(0));
    let subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| raw_subscriber(&admin_addr, events, Arc::clone(&done)))
        .collect();
    assert_eq!(
        info(&mut ops, "presence")["presence_subscribers"],
        SUBSCRIBERS.to_string()
    );
    let before = cpu_ns(d.pid());
    short_sessions(d.addr, SESSIONS);
    let with = cpu_ns(d.pid()) - before;
    let burst_with = kill_burst(&d, &mut ops, BURST, || {
        done.load(Ordering::Relaxed) == SUBSCRIBERS
    });
    let first = (base + 1) as u64;
    for s in subs {
        let seqs = s.join().expect("a subscriber got every event");
        assert!(
            seqs.iter().zip(first..).all(|(s, want)| *s == want),
            "every event, in order"
        );
    }
    let p = info(&mut ops, "presence");
    assert_eq!(
        p["presence_messages_delivered"],
        (SUBSCRIBERS * events).to_string(),
        "{p:?}"
    );
    assert_eq!(p["presence_subscribers_dropped"], "0");
    let per = |ns: u64, n: usize| ns as f64 / n as f64 / 1e3;
    println!(
        "fan-out, one event per turn: daemon CPU per event {:.1} µs without subscribers, \
         {:.1} µs with {SUBSCRIBERS}; burst of {BURST} reaps in one turn: {:.1} µs per reap \
         without, {:.1} µs with {SUBSCRIBERS} ({:.2} µs per message)",
        per(alone, 3 * SESSIONS),
        per(with, 3 * SESSIONS),
        per(burst_alone, BURST),
        per(burst_with, BURST),
        per(burst_with.saturating_sub(burst_alone), BURST * SUBSCRIBERS),
    );
}

//! RESP3: current clients (redis-py 8, the `redis` crate with `protocol=resp3`) open with
//! `HELLO 3` and do not fall back to RESP2 when refused, so vigild speaks RESP3 on both
//! listeners: a map for `HELLO` and `CONFIG GET`, `_` for null, `>` pushes for pub/sub.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use util::Daemon;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn resp3(addr: impl std::fmt::Display) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/?protocol=resp3"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("a RESP3 connection")
}

/// Sends `req` on a raw socket and reads until the reply ends with `suffix`.
fn raw_until(s: &mut TcpStream, req: &[u8], suffix: &str) -> String {
    s.write_all(req).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(suffix.as_bytes()) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The end of every `HELLO` reply: the empty module list.
const HELLO_END: &str = "$7\r\nmodules\r\n*0\r\n";

/// Sends `req` on a raw socket and reads until `want` bytes arrived.
fn raw_exchange(s: &mut TcpStream, req: &[u8], want: usize) -> String {
    s.write_all(req).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn the_redis_crate_speaks_resp3_to_the_client_port() {
    let d = Daemon::start("");
    let mut con = resp3(d.addr);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, None);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("r3")
        .query(&mut con)
        .unwrap();
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name.as_deref(), Some("r3"));
    let hello: redis::Value = redis::cmd("HELLO").arg("3").query(&mut con).unwrap();
    assert!(matches!(hello, redis::Value::Map(_)), "{hello:?}");
}

#[test]
fn hello_3_changes_the_framing_and_hello_2_changes_it_back() {
    let d = Daemon::start("");
    let mut s = TcpStream::connect(d.addr).unwrap();
    let reply = raw_until(&mut s, b"HELLO 3 SETNAME raw-1\r\n", HELLO_END);
    assert!(reply.starts_with("%7\r\n"), "{reply}");
    assert_eq!(
        raw_exchange(&mut s, b"CLIENT GETNAME\r\n", 11),
        "$5\r\nraw-1\r\n"
    );
    assert_eq!(
        raw_exchange(&mut s, b"CLIENT SETNAME \"\"\r\n", 5),
        "+OK\r\n"
    );
    assert_eq!(raw_exchange(&mut s, b"CLIENT GETNAME\r\n", 3), "_\r\n");
    let reply = raw_until(&mut s, b"HELLO 2\r\n", HELLO_END);
    assert!(reply.starts_with("*14\r\n"), "{reply}");
    assert_eq!(raw_exchange(&mut s, b"CLIENT GETNAME\r\n", 5), "$-1\r\n");
    let refused = raw_exchange(&mut s, b"HELLO 4\r\n", 10);
    assert!(refused.starts_with("-NOPROTO"), "{refused}");
}

#[test]
fn admin_config_get_is_a_map_and_presence_events_are_pushes_in_resp3() {
    let d = Daemon::start(ADMIN);
    let admin = d.ops_listener("admin");
    let mut con = resp3(&admin);
    let cfg: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("keepalive.probes")
        .query(&mut con)
        .unwrap();
    assert_eq!(cfg["keepalive.probes"], "6");

    let mut sub = TcpStream::connect(&admin).unwrap();
    let confirm = raw_until(&mut sub, b"HELLO 3\r\n", HELLO_END);
    assert!(confirm.starts_with('%'));
    let want = ">3\r\n$9\r\nsubscribe\r\n$8\r\npresence\r\n:1\r\n";
    assert_eq!(
        raw_exchange(&mut sub, b"SUBSCRIBE presence\r\n", want.len()),
        want
    );
    // In RESP3 a subscribed connection answers PING as usual.
    assert_eq!(raw_exchange(&mut sub, b"PING\r\n", 7), "+PONG\r\n");
    // A client joins: the event arrives as a push.
    let _client = TcpStream::connect(d.addr).unwrap();
    let event = raw_exchange(&mut sub, b"", 40);
    assert!(
        event.starts_with(">3\r\n$7\r\nmessage\r\n$8\r\npresence\r\n"),
        "{event}"
    );
    assert!(event.contains("\"event\":\"joined\""), "{event}");
}

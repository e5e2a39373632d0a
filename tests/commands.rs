//! The client protocol, spoken by real clients: the `redis` crate and raw sockets (inline
//! commands as `nc` would send them, pipelining, protocol errors).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use util::{client_id, fields, wait_until, Daemon};

/// Reads from a raw socket until `expected` bytes arrived (or 5 s passed).
fn read_exact_reply(s: &mut TcpStream, expected: usize) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < expected {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}; got so far {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn ping_echo_names_and_ids_with_the_redis_crate() {
    let d = Daemon::start("");
    let mut con = d.redis();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let msg: String = redis::cmd("PING").arg("hello").query(&mut con).unwrap();
    assert_eq!(msg, "hello");
    let echoed: Vec<u8> = redis::cmd("ECHO")
        .arg(&b"bin\0\xffary"[..])
        .query(&mut con)
        .unwrap();
    assert_eq!(echoed, b"bin\0\xffary");

    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, None);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("sensor-7")
        .query(&mut con)
        .unwrap();
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name.as_deref(), Some("sensor-7"));
    let bad = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("two words")
        .query::<()>(&mut con);
    assert!(bad.is_err(), "names with spaces are refused");

    let id = client_id(&mut con);
    let mut other = d.redis();
    assert_ne!(client_id(&mut other), id, "each session has its own id");

    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
    let f = fields(&info);
    assert_eq!(f["id"], id.to_string());
    assert_eq!(f["name"], "sensor-7");
    assert_eq!(f["laddr"], d.addr.to_string());
}

#[test]
fn unknown_commands_get_an_error_and_the_session_stays() {
    let d = Daemon::start("");
    let mut con = d.redis();
    let err = redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    let err = redis::cmd("CLIENT")
        .arg("LIST")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("admin listener"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let d = Daemon::start("");
    let mut con = d.redis();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("ECHO").arg(format!("m{i}"));
    }
    let got: Vec<String> = pipe.query(&mut con).unwrap();
    let want: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);

    // Inline and multibulk mixed in one segment, as a raw client would send them.
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.write_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\nPING\nECHO \"x y\"\r\n")
        .unwrap();
    let want = "+PONG\r\n$3\r\nabc\r\n+PONG\r\n$3\r\nx y\r\n";
    assert_eq!(read_exact_reply(&mut s, want.len()), want);
}

#[test]
fn a_request_split_across_many_writes_is_reassembled() {
    let d = Daemon::start("");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_nodelay(true).unwrap();
    for b in b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n" {
        s.write_all(&[*b]).unwrap();
        // The test itself: a pause between bytes, so each arrives in a read of its own.
        std::thread::sleep(Duration::from_millis(2));
    }
    let want = "$5\r\nhello\r\n";
    assert_eq!(read_exact_reply(&mut s, want.len()), want);
}

#[test]
fn quit_replies_ok_then_closes_with_reason_quit() {
    let d = Daemon::start("");
    let mut con = d.redis();
    let id = client_id(&mut con);
    let ok: String = redis::cmd("QUIT").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let reap = d.wait_reap(id, Duration::from_secs(5));
    assert_eq!(reap["reason"], "quit");
}

#[test]
fn oversized_request_gets_an_error_then_protocol_error_reap() {
    let d = Daemon::start("[session]\nmax_request_bytes = 1024\n");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.write_all(b"CLIENT ID\r\n").unwrap();
    let id_line = read_exact_reply(&mut s, 3);
    let id: i64 = id_line.trim().trim_start_matches(':').parse().unwrap();
    let _ = s.write_all(&vec![b'a'; 4096]);
    let mut reply = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.starts_with("-ERR Protocol error: request exceeds max_request_bytes (1024)"),
        "{reply:?}"
    );
    let reap = d.wait_reap(id, Duration::from_secs(5));
    assert_eq!(reap["reason"], "protocol-error");
    // The daemon keeps serving everyone else.
    let pong: String = redis::cmd("PING").query(&mut d.redis()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn client_info_shows_the_keepalive_options_read_back_from_the_kernel() {
    let d = Daemon::start(
        "[keepalive]\nidle = \"7s\"\ninterval = \"3s\"\nprobes = 4\nuser_timeout = \"auto\"\n",
    );
    let mut con = d.redis();
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
    let f = fields(&info);
    assert_eq!(f["keepalive"], "1");
    assert_eq!(f["ka-idle"], "7");
    assert_eq!(f["ka-intvl"], "3");
    assert_eq!(f["ka-cnt"], "4");
    assert_eq!(f["user-timeout-ms"], "19000");
    assert_eq!(f["nodelay"], "1");

    // `ss` sees a keepalive timer on the daemon's side of the connection. Right after a
    // reply the retransmission timer shows until the client's (delayed) ACK arrives, so look
    // again for a moment.
    let peer = f["addr"].clone(); // the client's address, as the daemon sees it
    let mut last = String::new();
    wait_until(
        Duration::from_secs(2),
        "a keepalive timer on the daemon's socket (ss)",
        || {
            // Only the daemon's side: the client's line holds the same two addresses, swapped.
            let filter = format!("sport = :{}", d.addr.port());
            let out = std::process::Command::new("ss")
                .args(["-tno", "state", "established", &filter])
                .output()
                .expect("ss (iproute2) is installed by the test script");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (local, remote) = (d.addr.to_string(), peer.as_str());
            if let Some(line) = text.lines().find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(2) == Some(&local.as_str()) && cols.get(3) == Some(&remote)
            }) {
                if line.contains("timer:(keepalive") {
                    return Ok(());
                }
                last = line.to_string();
            }
            Err(format!("{last:?}"))
        },
    );
}

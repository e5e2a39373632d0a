//! The identity rule across the fleet (docs/fleet.md, "Identities across nodes"): a name held
//! on one node by a session that proved an identity (here a signed token) cannot be taken by a
//! session on another node without that identity, even when that node has identities off (a
//! fleet in the middle of a rolling config change). Refused at `CLIENT SETNAME` when the
//! claimant's node already sees the holder in its fleet view, and otherwise by the Redis script
//! that would queue the takeover, after which the claimant's node reaps its claimant
//! `name-refused`; the holder is never touched and the stream never shows the claim. The same
//! identity on a third node takes the name only from a stale holder (`session.takeover =
//! "stale"`, here silent past `takeover_after`): against a live one its claimant is reaped
//! `name-refused`, as a stolen token's would be. An identified claimant still takes a name
//! from a holder without one.
//!
//! `scripts/test` installs `redis-server`.

mod util;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use util::redis_server::{connect, read_stream, request, snapshot, start_node, RedisServer};
use util::{Daemon, TempDir};

const SECRET: &[u8] = b"a fleet-wide secret of at least 32 bytes";

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Whether the peer closes `s` within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// `T:names` for `name`, as Redis holds it.
fn holders(con: &mut redis::Connection, name: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg("{vigild}:names")
        .arg(name)
        .query(con)
        .unwrap()
}

fn lookup(d: &Daemon, name: &str) -> Option<String> {
    redis::cmd("CLIENT")
        .arg("LOOKUP")
        .arg(name)
        .query(&mut d.admin())
        .unwrap()
}

#[test]
fn an_identified_name_is_kept_from_other_identities_across_nodes() {
    let redis = RedisServer::start(false);
    let url = redis.url();
    let dir = TempDir::new("fleet-identity");
    let secret = dir.path().join("token.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let unique = "\n[session]\nunique_names = true\n";
    let tokens = format!(
        "{unique}takeover_after = \"2s\"\n\n[token]\nsecret_file = {:?}\n",
        secret.display().to_string()
    );
    // a and c take tokens; b has identities off.
    let a = start_node(&url, "a", "3s", &tokens);
    let b = start_node(&url, "b", "3s", unique);
    let c = start_node(&url, "c", "3s", &tokens);
    let mut con = redis.conn();
    let (_, pos) = snapshot(&mut con);

    let mut holder = connect(&a);
    assert_eq!(
        request(&mut holder, &["AUTH", "dev-1", &token("dev-1")]),
        "+OK"
    );
    util::wait_until(
        Duration::from_secs(5),
        "dev-1 held on a with its identity",
        || {
            holders(&mut con, "dev-1")
                .is_some_and(|h| h.contains(r#""a""#) && h.contains("dev-1\"]"))
        },
    );

    // 1. b's view shows the identified holder: b refuses the name at once.
    util::wait_until(Duration::from_secs(3), "b's view of dev-1", || {
        lookup(&b, "dev-1").is_some_and(|l| l.contains(" identity=dev-1 "))
    });
    let mut plain = connect(&b);
    let reply = request(&mut plain, &["CLIENT", "SETNAME", "dev-1"]);
    assert_eq!(
        reply,
        "-ERR name held by identity dev-1 on node a; only that identity can take it"
    );
    assert_eq!(request(&mut plain, &["PING"]), "+PONG", "the session stays");
    assert_eq!(request(&mut holder, &["PING"]), "+PONG", "the holder stays");

    // 2. Faster than b's view (refreshed every second): b says +OK, the script refuses the
    //    claim, and b reaps its claimant. Tried with fresh names until that path is taken.
    let mut raced = 0;
    for i in 0..6 {
        let name = format!("dev-race-{i}");
        let mut h = connect(&a);
        assert_eq!(request(&mut h, &["AUTH", &name, &token(&name)]), "+OK");
        let t0 = Instant::now();
        while holders(&mut con, &name).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{name} never in Redis"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut claimant = connect(&b);
        let reply = request(&mut claimant, &["CLIENT", "SETNAME", &name]);
        if reply.starts_with("-ERR name held by identity") {
            continue; // b's view was refreshed in between
        }
        assert_eq!(reply, "+OK");
        let t_claim = Instant::now();
        assert!(
            closed_within(&mut claimant, Duration::from_secs(3)),
            "b never reaped its claimant of {name}"
        );
        println!(
            "race {i}: claimant reaped {:?} after +OK",
            t_claim.elapsed()
        );
        assert_eq!(
            request(&mut h, &["PING"]),
            "+PONG",
            "a's holder of {name} stays"
        );
        let held = holders(&mut con, &name).unwrap();
        assert!(
            held.contains(r#""a""#) && !held.contains(r#""b""#),
            "{held}"
        );
        raced += 1;
        if raced == 2 {
            break;
        }
    }
    assert!(raced >= 1, "the Redis-side check was never reached");
    let refused_line = b.log.wait_for(Duration::from_secs(2), |l| {
        l.contains("lost the name dev-race-")
            && l.contains("to node a: a session there holds it with another identity")
    });
    assert!(refused_line.is_some(), "{}", b.log.text());
    let reaps = b.log.count(|l| {
        l.contains("reap id=") && l.contains("name=dev-race-") && l.contains("reason=name-refused")
    });
    assert_eq!(reaps, raced, "{}", b.log.text());

    // 3. The same identity on c: against a live holder it loses (a keeps dev-1 under
    //    session.takeover = "stale", and c reaps its claimant `name-refused`, as a stolen
    //    token would be); once the holder is silent past takeover_after (2 s), it takes it.
    assert_eq!(request(&mut holder, &["PING"]), "+PONG");
    let mut thief = connect(&c);
    assert_eq!(
        request(&mut thief, &["AUTH", "dev-1", &token("dev-1")]),
        "+OK"
    );
    assert!(
        closed_within(&mut thief, Duration::from_secs(3)),
        "c's claimant of a live holder's name was not reaped"
    );
    let kept = a.log.wait_for(Duration::from_secs(2), |l| {
        l.contains("fleet: node c claimed the name dev-1: kept by its live holder")
    });
    assert!(kept.is_some(), "{}", a.log.text());
    assert!(
        c.log
            .wait_for(Duration::from_secs(2), |l| l
                .contains("reason=name-refused")
                && l.contains("name=dev-1 "))
            .is_some(),
        "{}",
        c.log.text()
    );
    assert_eq!(
        request(&mut holder, &["PING"]),
        "+PONG",
        "the live holder keeps dev-1"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let mut same = connect(&c);
    assert_eq!(
        request(&mut same, &["AUTH", "dev-1", &token("dev-1")]),
        "+OK"
    );
    assert!(
        closed_within(&mut holder, Duration::from_secs(3)),
        "a's silent holder was not replaced by the same identity on c"
    );
    util::wait_until(Duration::from_secs(5), "dev-1 held on c", || {
        holders(&mut con, "dev-1").is_some_and(|h| h.contains(r#""c""#) && !h.contains(r#""a""#))
    });

    // 4. A holder without an identity (on b) yields to an identified claimant (on a).
    let mut bare = connect(&b);
    assert_eq!(request(&mut bare, &["CLIENT", "SETNAME", "dev-2"]), "+OK");
    util::wait_until(Duration::from_secs(5), "dev-2 held on b", || {
        holders(&mut con, "dev-2").is_some_and(|h| h.contains(r#""b""#))
    });
    let mut proven = connect(&a);
    assert_eq!(
        request(&mut proven, &["AUTH", "dev-2", &token("dev-2")]),
        "+OK"
    );
    assert!(
        closed_within(&mut bare, Duration::from_secs(3)),
        "b's holder without an identity kept dev-2"
    );
    // Its `left` reaches Redis after the close; the parked claim is applied with it.
    util::wait_until(Duration::from_secs(5), "dev-2 held on a", || {
        holders(&mut con, "dev-2").is_some_and(|h| h.contains(r#""a""#) && !h.contains(r#""b""#))
    });

    // The stream never showed b naming an identified name, and every claim refused left
    // nothing behind but its `left`.
    let events = read_stream(&mut con, &pos);
    let b_named: Vec<_> = events
        .iter()
        .filter(|(_, e)| {
            e["event"] == "named"
                && e["node"] == "b"
                && e["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("dev-1") || n.starts_with("dev-race"))
        })
        .collect();
    assert!(b_named.is_empty(), "{b_named:?}");
    let claims: Vec<String> = redis::cmd("KEYS")
        .arg("{vigild}:claim:*")
        .query(&mut con)
        .unwrap();
    assert!(claims.is_empty(), "claims left behind: {claims:?}");
    drop((plain, proven, same));
}

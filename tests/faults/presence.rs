//! Presence under a real fault: a watcher subscribed on the admin listener (the `redis` crate's
//! pub/sub API) is told `left` with reason `keepalive-timeout` for a partitioned peer, within
//! the detection bound and with the same facts as the reap line. Only the client port is cut;
//! the admin listener's port stays reachable, as it would for a watcher on the same host.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::check::{self, by_id, expect_reap, Bound, Row};
use crate::util::client_id;

/// idle + interval × probes (2 + 1 × 3 s), with the matrix's tolerance.
const IDLE_BOUND: Bound = Bound::around(5_000, 500, 1_000);

pub fn partition_presence() -> Row {
    let d = check::start(&check::config(
        "auto",
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let url = format!("redis://{}/", d.ops_listener("admin"));
    let mut admin = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect to the admin listener");
    let mut ps = admin.as_pubsub();
    ps.subscribe("presence").expect("SUBSCRIBE presence");
    ps.set_read_timeout(Some(Duration::from_millis(IDLE_BOUND.hi() + 3_000)))
        .unwrap();
    let mut next = || -> Value {
        let msg = ps.get_message().expect("a presence event in time");
        serde_json::from_str(&msg.get_payload::<String>().unwrap()).expect("JSON")
    };

    let mut con = d.redis();
    let id = client_id(&mut con) as u64;
    let _: String = redis::cmd("PING").query(&mut con).expect("PING");
    let last = Instant::now();
    let joined = next();
    assert_eq!(
        (joined["event"].as_str(), joined["id"].as_u64()),
        (Some("joined"), Some(id))
    );
    check::wait_quiet(d.addr.port(), None);
    check::cut_port(d.addr.port());
    let left = next();
    let test_ms = last.elapsed().as_millis() as u64;
    assert_eq!(
        (left["event"].as_str(), left["id"].as_u64()),
        (Some("left"), Some(id)),
        "{left}"
    );
    assert_eq!(left["reason"], "keepalive-timeout", "{left}");
    assert_eq!(left["errno"], "ETIMEDOUT", "{left}");
    assert_eq!(left["tcpi_probes"], 3, "{left}");
    let silent_ms = left["silent_ms"].as_u64().expect("silent_ms");
    IDLE_BOUND.check("the event's silent_ms", silent_ms, &left.to_string());
    IDLE_BOUND.check("the event by the test's clock", test_ms, &left.to_string());
    let r = expect_reap(&d, &by_id(id as i64), "keepalive-timeout", last, IDLE_BOUND);
    assert_eq!(r.silent_ms, silent_ms, "the event and the reap line agree");
    Row {
        expected: "keepalive-timeout",
        got: left["reason"].as_str().unwrap_or_default().to_string(),
        test_ms,
        daemon_ms: Some(silent_ms),
        bound: IDLE_BOUND.to_string(),
        note: format!("presence `left` event seq={}, tcpi_probes=3", left["seq"]),
    }
}

//! `state=suspect` under a real fault: an idle session whose port is cut reads `ok` in the admin
//! listener's `CLIENT LIST` until the first keepalive probe goes unanswered, `suspect` from then
//! on, and is reaped at the bound; and if the partition heals before the last probe, the next
//! probe is acknowledged and the session reads `ok` again and stays. Keepalive 2/1/3: the first
//! probe leaves at 2 s, the kernel gives up at 5 s. Only the client port is cut; the admin
//! listener's port stays reachable.

use std::thread;
use std::time::{Duration, Instant};

use crate::check::{self, by_id, expect_reap, is_reap, Bound, Row};
use crate::util::{client_id, fields, netns, wait_until, Daemon};

/// idle + interval × probes (2 + 1 × 3 s), with the matrix's tolerance.
const IDLE_BOUND: Bound = Bound::around(5_000, 500, 1_000);
/// `suspect` shows once the first probe (at idle = 2 s) is out and unanswered.
const SUSPECT_BOUND: Bound = Bound::around(2_000, 100, 1_000);

fn daemon() -> Daemon {
    check::start(&check::config(
        "auto",
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    ))
}

/// The `state=` field of session `id` in the admin's CLIENT LIST, or `None` when it is gone.
fn state_of(admin: &mut redis::Connection, id: i64) -> Option<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(admin)
        .expect("CLIENT LIST on the admin listener");
    let key = format!("id={id}");
    list.lines()
        .find(|l| l.split(' ').next() == Some(key.as_str()))
        .map(|l| fields(l).get("state").cloned().unwrap_or_default())
}

/// Reads the session's state until `want` shows (returns when, since `from`) or `limit` has
/// passed since `from` (panics). Every state seen before must be `before`.
fn wait_state(
    admin: &mut redis::Connection,
    id: i64,
    want: &str,
    before: &str,
    from: Instant,
    limit: Duration,
) -> u64 {
    wait_until(
        limit.saturating_sub(from.elapsed()),
        &format!("session {id} to read state={want} within {limit:?}"),
        || {
            let state = state_of(admin, id);
            let at = from.elapsed();
            match state.as_deref() {
                Some(s) if s == want => Some(at.as_millis() as u64),
                Some(s) if s == before => None,
                other => panic!(
                    "session {id} read {other:?} after {at:?} while waiting for state={want} \
                     (only state={before} may come first)"
                ),
            }
        },
    )
}

/// A session that pinged, went quiet, reads `ok`, and whose port is then cut: returned once it
/// reads `suspect` (checked against [`SUSPECT_BOUND`]).
struct Partitioned {
    d: Daemon,
    admin: redis::Connection,
    con: redis::Connection,
    id: i64,
    /// When its last reply arrived.
    last: Instant,
    /// When it first read `suspect`, after `last`.
    suspect_ms: u64,
}

fn partitioned_until_suspect() -> Partitioned {
    let d = daemon();
    let mut admin = d.admin();
    let mut con = d.redis();
    let id = client_id(&mut con);
    let _: String = redis::cmd("PING").query(&mut con).expect("PING");
    let last = Instant::now();
    check::wait_quiet(d.addr.port(), None);
    assert_eq!(state_of(&mut admin, id).as_deref(), Some("ok"));
    check::cut_port(d.addr.port());
    let suspect_ms = wait_state(
        &mut admin,
        id,
        "suspect",
        "ok",
        last,
        Duration::from_millis(IDLE_BOUND.lo()),
    );
    SUSPECT_BOUND.check("first state=suspect", suspect_ms, "");
    Partitioned {
        d,
        admin,
        con,
        id,
        last,
        suspect_ms,
    }
}

/// Partitioned and never healed: ok → suspect after the first probe → reaped at the bound.
pub fn suspect_then_reaped() -> Row {
    let Partitioned {
        d,
        mut admin,
        con: _con,
        id,
        last,
        suspect_ms,
    } = partitioned_until_suspect();
    // Suspect from then until the reap: never ok again.
    let key = by_id(id);
    wait_until(
        Duration::from_millis(IDLE_BOUND.hi() + 1_000).saturating_sub(last.elapsed()),
        &format!("the reap of session {id} within the bound"),
        || {
            if d.log.count(|l| is_reap(l, &key)) > 0 {
                return true;
            }
            match state_of(&mut admin, id).as_deref() {
                Some("suspect") | None => false,
                other => {
                    panic!("session {id} read {other:?} between the first probe and the reap")
                }
            }
        },
    );
    let r = expect_reap(&d, &by_id(id), "keepalive-timeout", last, IDLE_BOUND);
    assert_eq!(
        state_of(&mut admin, id),
        None,
        "reaped: gone from CLIENT LIST"
    );
    r.row(
        "keepalive-timeout",
        IDLE_BOUND,
        format!("state=ok, then suspect from {suspect_ms} ms until the reap"),
    )
}

/// Partitioned, then healed after the first probe: suspect → ok at the next probe's ACK, and
/// the session lives on (no reap, PING answered).
pub fn suspect_then_heals() -> Row {
    let Partitioned {
        d,
        mut admin,
        mut con,
        id,
        last,
        suspect_ms,
    } = partitioned_until_suspect();
    netns::nft("delete table inet fault\n").unwrap_or_else(|e| panic!("heal: {e}"));
    let healed = Instant::now();
    // The next probe leaves at most one interval (1 s) later and is acknowledged.
    let ok_ms = wait_state(
        &mut admin,
        id,
        "ok",
        "suspect",
        healed,
        Duration::from_millis(1_500),
    );
    // Past the moment the kernel would have given up, the session is still there (the wait is
    // the test: nothing may happen in it).
    thread::sleep(Duration::from_millis(IDLE_BOUND.hi()).saturating_sub(last.elapsed()));
    assert_eq!(state_of(&mut admin, id).as_deref(), Some("ok"));
    let pong: String = redis::cmd("PING")
        .query(&mut con)
        .expect("PING after the heal");
    assert_eq!(pong, "PONG");
    assert!(
        !d.log.lines().iter().any(|l| is_reap(l, &by_id(id))),
        "a healed session must not be reaped:\n{}",
        d.log.text()
    );
    Row {
        expected: "no reap",
        got: "no reap".into(),
        test_ms: last.elapsed().as_millis() as u64,
        daemon_ms: None,
        bound: SUSPECT_BOUND.to_string(),
        note: format!(
            "suspect at {suspect_ms} ms, healed, ok again {ok_ms} ms after the heal; PING answered"
        ),
    }
}

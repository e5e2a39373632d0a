//! redis-py, the most used Redis client, against vigild: plain commands on the client port
//! (redis-py 8 opens with `HELLO 3`), and the presence watcher recipe from docs/presence.md
//! (subscribe, list, apply newer events) on the admin listener.
//!
//! `scripts/test` installs redis-py in a venv and sets `VIGILD_TEST_PYTHON`. Without it the
//! test skips loudly, except with `VIGILD_TESTS_NO_SKIP=1` (as in CI), where it fails.

mod util;

use std::process::Command;

use util::Daemon;

fn python() -> Option<String> {
    util::installed("VIGILD_TEST_PYTHON", "redis-py")
}

const SCRIPT: &str = r#"
import json, socket, sys, threading, time
import redis

client_port, admin_port = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(host="127.0.0.1", port=client_port, decode_responses=True)
assert r.ping() is True
assert r.client_getname() is None
assert r.client_setname("py-1") is True
assert r.client_getname() == "py-1"
assert r.echo("hé") == "hé"

admin = redis.Redis(host="127.0.0.1", port=admin_port, decode_responses=True)
pubsub = admin.pubsub()
pubsub.subscribe("presence")
while (m := pubsub.get_message(timeout=5)) is None or m["type"] != "subscribe":
    pass
live, seen = {}, 0
for c in admin.client_list():
    live[int(c["id"])] = c["name"] or None
    seen = int(c["presence-seq"])

def churn():
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", client_port))
        s.sendall(b"CLIENT SETNAME dev-%d\r\n" % i)
        s.recv(16)
        s.close()

threading.Thread(target=churn).start()
left = 0
deadline = time.time() + 10
while left < 5 and time.time() < deadline:
    m = pubsub.get_message(timeout=1)
    if m is None or m["type"] != "message":
        continue
    e = json.loads(m["data"])
    if e["seq"] <= seen:
        continue
    if e["event"] == "joined":
        live[e["id"]] = None
    elif e["event"] == "named":
        live[e["id"]] = e["name"]
    elif e["event"] == "left":
        live.pop(e["id"], None)
        left += 1
        print("left", e["name"], e["reason"])
names = sorted(n for n in live.values() if n)
print("live", names)
"#;

#[test]
fn redis_py_commands_and_the_presence_watcher_recipe() {
    let Some(python) = python() else { return };
    let d = Daemon::start("[admin]\nlisten = \"127.0.0.1:0\"\n");
    let admin = d.ops_listener("admin");
    let admin_port = admin.rsplit(':').next().unwrap().to_string();
    let out = Command::new(python)
        .args(["-c", SCRIPT, &d.addr.port().to_string(), &admin_port])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    for i in 0..5 {
        assert!(
            stdout.contains(&format!("left dev-{i} closed")),
            "dev-{i} left missing:\n{stdout}"
        );
    }
    // The watcher's view equals the daemon's: only redis-py's own named session is live.
    assert!(stdout.contains("live ['py-1']"), "{stdout}");
}

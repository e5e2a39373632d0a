"""One Python Redis client library against vigild, with its default options (plus a client
name, which the library re-sends on every new connection):

    python matrix.py MODULE PROTO CLIENT_PORT ADMIN_PORT

MODULE is ``redis`` (redis-py; with hiredis when the venv has it) or ``valkey`` (valkey-py);
PROTO is ``default``, ``2`` or ``3``. Prints one line per step ("ok STEP detail"); the first
failed step ends the script with exit code 1. Half-way it prints "restart-me" and waits for a
line on stdin: the test restarts vigild on the same port, and the client must reconnect by
itself and get its name back.
"""
import importlib
import json
import sys
import time

mod_name, proto, client_port, admin_port = sys.argv[1:5]
lib = importlib.import_module(mod_name)
name = f"compat-{mod_name}-{proto}"


def step(what, detail=""):
    print(f"ok {what} {detail}", flush=True)


def open_client(port, **extra):
    kw = dict(host="127.0.0.1", port=int(port), decode_responses=True, **extra)
    if proto != "default":
        kw["protocol"] = int(proto)
    return lib.Redis(**kw)


parser = "hiredis" if getattr(lib.utils, "HIREDIS_AVAILABLE", False) else "python"
r = open_client(client_port, client_name=name)
assert r.ping() is True
step("connect", f"{mod_name} {lib.__version__} parser={parser} proto={proto}")
step("ping")
assert r.echo("hé") == "hé"
step("echo")
assert r.client_getname() == name, r.client_getname()
step("getname", name)
assert r.client_setname(name + "-x") is True
assert r.client_getname() == name + "-x"
assert r.client_setname(name) is True
step("setname")
cid = r.client_id()
assert isinstance(cid, int) and cid > 0, cid
step("id", cid)
info = r.info()
assert "redis_version" in info and info.get("loading") == 0, info
step("info", info["redis_version"])
ci = r.client_info()
for field in ("id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub",
              "ssub", "multi", "qbuf", "qbuf-free", "argv-mem", "multi-mem", "rbs", "rbp", "obl",
              "oll", "omem", "tot-mem", "events", "cmd", "user", "redir", "resp", "lib-name",
              "lib-ver"):
    assert field in ci, (field, ci)
assert ci["id"] == cid and ci["name"] == name, ci
assert ci["lib-name"] in ("redis-py", "valkey-py"), ci
step("client-info")
hello = r.execute_command("HELLO")
if isinstance(hello, list):  # RESP2: a flat array of key, value
    hello = dict(zip(hello[::2], hello[1::2]))
want_proto = 2 if proto == "2" or (proto == "default" and mod_name == "valkey") else 3
assert hello["server"] == "vigild" and hello["mode"] == "standalone", hello
assert hello["proto"] == want_proto, (hello, want_proto)
step("hello", json.dumps(hello))
p = r.pipeline()  # transactional by default: MULTI ... EXEC
p.ping()
p.echo("x")
assert p.execute() == [True, "x"]
step("multi-exec")

admin = open_client(admin_port)
ps = admin.pubsub()
ps.subscribe("presence")
while (m := ps.get_message(timeout=5)) is None or m["type"] != "subscribe":
    pass
other = open_client(client_port, client_name=name + "-p")
oid = other.client_id()
other.close()
kinds, deadline = [], time.time() + 5
while "left" not in kinds and time.time() < deadline:
    m = ps.get_message(timeout=0.5)
    if m and m["type"] == "message":
        e = json.loads(m["data"])
        if e["id"] == oid:
            kinds.append(e["event"])
assert kinds == ["joined", "named", "left"], kinds
ps.close()
admin.close()
step("presence", ",".join(kinds))

print("restart-me", flush=True)
sys.stdin.readline()
deadline = time.time() + 10
while True:
    try:
        if r.ping():
            break
    except lib.exceptions.ConnectionError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
again = r.client_info()
assert again["addr"] != ci["addr"], "a new connection after the restart"
assert r.client_getname() == name
step("restart", f"{ci['addr']} -> {again['addr']}")
r.close()
print("done", flush=True)

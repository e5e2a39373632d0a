//! The Lua scripts the fleet runs in Redis, and the keys they touch (docs/fleet.md, "Data
//! model"). Each script is one atomic step: the stream entry and the live table change
//! together, so they never disagree, and a dead node's sessions are claimed by exactly one
//! script run, whichever survivor (or the node itself, restarted) runs it first.
//!
//! Keys, all under the stream's hash tag `T` (`{vigild}` by default), so that every script
//! touches one Redis Cluster slot:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `fleet.stream` | stream | every `joined`/`named`/`left` of every node, field `event` |
//! | `T:nodes` | hash | node → its epoch (the nodes the fleet knows) |
//! | `T:lease:<node>` | string, PX lease | the node's lease, its epoch as value |
//! | `T:live:<node>` | hash | session id → row JSON (`id`, `addr`, `laddr`, `name`, `at`, `epoch`, and `identity` once it has one) |
//! | `T:names` | hash | name → JSON list of holders `[node, id, addr, identity]` (`""`: none; older nodes wrote three) |
//! | `T:claim:<name>` | string | a claim waiting for a remote holder to let go (the claimant's `named`, `identity`) |
//! | `T:inbox:<node>` | list | for the node: takeover requests `{"name", "id", "by", "identity"}` (reap holder `id` if the rule agrees), and claims it lost, `{"name", "id", "by", "lost"}` (reap claimant `id`) |
//!
//! Every script gets `KEYS[1]` = the stream and `ARGV[1..4]` = tag, node, epoch, stream
//! maxlen (the tag names the other keys, all in the same slot as the stream).

/// Shared by every script: the common arguments and the two steps several scripts take
/// (a node lost, a name let go).
const PRELUDE: &str = r#"
local stream, tag, node, epoch, maxlen = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function xadd(ev)
  return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', ev)
end
local function holders(name)
  local h = redis.call('HGET', tag .. ':names', name)
  if h then return cjson.decode(h) end
  return {}
end
local function set_holders(name, list)
  if #list == 0 then redis.call('HDEL', tag .. ':names', name)
  else redis.call('HSET', tag .. ':names', name, cjson.encode(list)) end
end
local function text(v)
  if type(v) == 'string' then return v end
  return ''
end
local function add_holder(name, n, id, addr, ident)
  local list = holders(name)
  table.insert(list, {n, tonumber(id), addr, text(ident)})
  set_holders(name, list)
end
-- The identity rule across nodes (docs/fleet.md): a claimant with identity `ident` ('' =
-- none) may not take `name` from a holder on another node, or from a waiting claim of
-- another session, that proved a different identity. Returns that holder's node, or nil.
local function outranked(name, ident, id)
  for _, h in ipairs(holders(name)) do
    if h[1] ~= node and text(h[4]) ~= '' and h[4] ~= ident then return h[1] end
  end
  local c = redis.call('GET', tag .. ':claim:' .. name)
  if c then
    local cl = cjson.decode(c)
    if not (cl.node == node and cl.id == tonumber(id)) and text(cl.identity) ~= ''
        and cl.identity ~= ident then
      return cl.node
    end
  end
  return nil
end
-- A waiting claim on `name` is applied once no holder on another node than the claimant
-- is left: its `named` goes into the stream right after the `left` that freed the name.
local function apply_claim(name)
  local ck = tag .. ':claim:' .. name
  local c = redis.call('GET', ck)
  if not c then return end
  local cl = cjson.decode(c)
  for _, h in ipairs(holders(name)) do
    if h[1] ~= cl.node then return end
  end
  redis.call('DEL', ck)
  local lk = tag .. ':live:' .. cl.node
  local row = redis.call('HGET', lk, tostring(cl.id))
  if not row then return end
  local r = cjson.decode(row)
  r.name = name
  if text(cl.identity) ~= '' then r.identity = cl.identity end
  redis.call('HSET', lk, tostring(cl.id), cjson.encode(r))
  add_holder(name, cl.node, cl.id, r.addr, cl.identity)
  xadd(cl.event)
end
local function release(name, n, id)
  local out = {}
  for _, h in ipairs(holders(name)) do
    if not (h[1] == n and h[2] == tonumber(id)) then table.insert(out, h) end
  end
  set_holders(name, out)
  local ck = tag .. ':claim:' .. name
  local c = redis.call('GET', ck)
  if c then
    local cl = cjson.decode(c)
    if cl.node == n and cl.id == tonumber(id) then redis.call('DEL', ck) end
  end
  apply_claim(name)
end
-- Publishes `left` reason `node-lost` for every session `dead` held and forgets the node.
-- Returns the number of sessions.
local function node_lost(dead, by)
  local lk = tag .. ':live:' .. dead
  local rows = redis.call('HGETALL', lk)
  local n = 0
  for i = 1, #rows, 2 do
    local r = cjson.decode(rows[i + 1])
    local ev = {seq = cjson.null, event = 'left', id = r.id, addr = r.addr, name = r.name,
      reason = 'node-lost', errno = cjson.null, lifetime_ms = math.max(0, now - r.at),
      at = now, epoch = r.epoch, node = dead, by = by}
    xadd(cjson.encode(ev))
    n = n + 1
  end
  redis.call('DEL', lk)
  redis.call('HDEL', tag .. ':nodes', dead)
  redis.call('DEL', tag .. ':lease:' .. dead)
  for i = 1, #rows, 2 do
    local r = cjson.decode(rows[i + 1])
    if r.name ~= cjson.null then release(r.name, dead, r.id) end
  end
  return n
end
local function ours()
  return redis.call('HGET', tag .. ':nodes', node) == epoch
    and redis.call('EXISTS', tag .. ':lease:' .. node) == 1
end
"#;

/// A batch of the node's own events. `ARGV[5]` = unique names (`1`/`0`), then six arguments
/// per event: op (`j`, `n`, `l`), session id, name, previous name (`""` = none), the event's
/// JSON, and the row (joined) or the session's identity (named; `""` = none). Returns
/// `{status, refused}`: status `ok`, or `lost` when the node's lease had lapsed (its sessions
/// were published `node-lost`; nothing was written: the node resynchronises); `resync` when
/// an event found no row (an earlier one was dropped). `refused`, flat `[id, name, node]`:
/// renames the identity rule refused (a holder on `node` proved another identity); nothing of
/// theirs was written, and the node reaps those sessions `replaced`.
pub(super) const PUBLISH: &str = r#"
if not ours() then
  if redis.call('HGET', tag .. ':nodes', node) == epoch then node_lost(node, node) end
  return {'lost', {}}
end
local unique = ARGV[5] == '1'
local refused = {}
local lk = tag .. ':live:' .. node
local status = 'ok'
for i = 6, #ARGV, 6 do
  local op, id, name, prev, ev, row = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  if op == 'j' then
    redis.call('HSET', lk, id, row)
    xadd(ev)
  elseif op == 'l' then
    local had = redis.call('HGET', lk, id)
    if had then
      -- Only a session the table has: its `joined` was dropped otherwise (the resync that
      -- follows leaves it out too), so the stream never shows a `left` without a `joined`.
      redis.call('HDEL', lk, id)
      xadd(ev)
      local r = cjson.decode(had)
      if r.name ~= cjson.null then release(r.name, node, id) end
    else
      status = 'resync'
    end
    if name ~= '' then release(name, node, id) end
  else
    local had = redis.call('HGET', lk, id)
    local by = nil
    if had and name ~= '' and unique then by = outranked(name, row, id) end
    if not had then
      status = 'resync'
    elseif by then
      -- Refused whole: the row keeps its old name, as the stream does, until its `left`;
      -- a claim it was still waiting for is dropped.
      local old = cjson.decode(had).name
      if prev ~= '' and prev ~= old then release(prev, node, id) end
      table.insert(refused, id)
      table.insert(refused, name)
      table.insert(refused, by)
    else
      local r = cjson.decode(had)
      local old = r.name
      if old ~= cjson.null then release(old, node, id) end
      -- A name it was still waiting for (its claim is dropped).
      if prev ~= '' and prev ~= old then release(prev, node, id) end
      local waiting = false
      if name ~= '' and unique then
        for _, h in ipairs(holders(name)) do
          if h[1] ~= node then
            waiting = true
            redis.call('RPUSH', tag .. ':inbox:' .. h[1],
              cjson.encode({name = name, id = h[2], by = node, identity = row}))
          end
        end
      end
      if waiting then
        -- One claim per name, the newest: an older claimant on another session (which its
        -- node told `+OK`) loses, as its holder does: its node reaps it `replaced`.
        local ck = tag .. ':claim:' .. name
        local older = redis.call('GET', ck)
        if older then
          local oc = cjson.decode(older)
          if not (oc.node == node and oc.id == tonumber(id)) then
            redis.call('RPUSH', tag .. ':inbox:' .. oc.node,
              cjson.encode({name = name, id = oc.id, by = node, lost = 'superseded'}))
          end
        end
        -- The row keeps its name until the claim is applied, as the stream does.
        redis.call('SET', tag .. ':claim:' .. name,
          cjson.encode({node = node, id = tonumber(id), event = ev, identity = row}))
      else
        r.name = cjson.null
        if row ~= '' then r.identity = row end
        if name ~= '' then
          r.name = name
          add_holder(name, node, id, r.addr, row)
        end
        redis.call('HSET', lk, id, cjson.encode(r))
        xadd(ev)
      end
    end
  end
end
return {status, refused}
"#;

/// The node's whole live table, after a start, a reconnect, a dropped event or a lapsed
/// lease. `ARGV[5]` = lease in ms, `ARGV[6]` = unique names, then three arguments per live
/// session: id, row JSON, name (`""` = none). Cleans the node's previous epoch first
/// (`node-lost`, a restart after a crash), registers the node and its lease, then publishes
/// what differs between the table in Redis and the node's truth, each event marked
/// `"resync":true`. Returns the ids whose name another node took meanwhile (unique names:
/// the node reaps them `replaced`).
pub(super) const RESYNC: &str = r#"
local prev = redis.call('HGET', tag .. ':nodes', node)
if prev and prev ~= epoch then node_lost(node, node) end
redis.call('HSET', tag .. ':nodes', node, epoch)
redis.call('SET', tag .. ':lease:' .. node, epoch, 'PX', ARGV[5])
local unique = ARGV[6] == '1'
local lk = tag .. ':live:' .. node
local want = {}
for i = 7, #ARGV, 3 do want[ARGV[i]] = {ARGV[i+1], ARGV[i+2]} end
local have = redis.call('HGETALL', lk)
local conflicts = {}
for i = 1, #have, 2 do
  local id = have[i]
  if not want[id] then
    local r = cjson.decode(have[i + 1])
    redis.call('HDEL', lk, id)
    xadd(cjson.encode({seq = cjson.null, event = 'left', id = r.id, addr = r.addr,
      name = r.name, reason = 'gone', errno = cjson.null, at = now, epoch = r.epoch,
      node = node, resync = true}))
    if r.name ~= cjson.null then release(r.name, node, id) end
  end
end
for id, w in pairs(want) do
  local had = redis.call('HGET', lk, id)
  local r = cjson.decode(w[1])
  local name = w[2]
  if name ~= '' and unique then
    for _, h in ipairs(holders(name)) do
      if h[1] ~= node then table.insert(conflicts, tonumber(id)); name = '' ; break end
    end
  end
  r.name = cjson.null
  if name ~= '' then r.name = name end
  if not had then
    redis.call('HSET', lk, id, cjson.encode(r))
    xadd(cjson.encode({seq = cjson.null, event = 'joined', id = r.id, addr = r.addr,
      laddr = r.laddr, name = r.name, at = now, epoch = r.epoch, node = node, resync = true}))
    if name ~= '' then add_holder(name, node, id, r.addr, r.identity) end
  else
    local o = cjson.decode(had)
    if o.name ~= r.name then
      redis.call('HSET', lk, id, cjson.encode(r))
      if o.name ~= cjson.null then release(o.name, node, id) end
      xadd(cjson.encode({seq = cjson.null, event = 'named', id = r.id, name = r.name,
        previous = o.name, at = now, epoch = r.epoch, node = node, resync = true}))
      if name ~= '' then add_holder(name, node, id, r.addr, r.identity) end
    end
  end
end
return conflicts
"#;

/// Renews the lease (`ARGV[5]` = lease in ms). Returns 1, or 0 when the node's lease had
/// already lapsed: then its sessions are published `node-lost` (by this run, unless a survivor
/// was first) and the node must resynchronise.
pub(super) const RENEW: &str = r#"
if ours() then
  redis.call('PEXPIRE', tag .. ':lease:' .. node, ARGV[5])
  return 1
end
if redis.call('HGET', tag .. ':nodes', node) == epoch then node_lost(node, node) end
return 0
"#;

/// Claims every node whose lease is gone: its sessions are published `left` `node-lost` and
/// removed, in this one atomic run, so racing survivors publish each leave once. Returns
/// `{nodes, sessions}` handled by this run.
pub(super) const SWEEP: &str = r#"
local nodes, sessions = 0, 0
for _, n in ipairs(redis.call('HKEYS', tag .. ':nodes')) do
  if redis.call('EXISTS', tag .. ':lease:' .. n) == 0 then
    sessions = sessions + node_lost(n, node)
    nodes = nodes + 1
  end
end
return {nodes, sessions}
"#;

/// A clean shutdown, after the node's last `left` events: forgets the node and its lease.
pub(super) const BYE: &str = r#"
if redis.call('HGET', tag .. ':nodes', node) == epoch then
  redis.call('HDEL', tag .. ':nodes', node)
  redis.call('DEL', tag .. ':lease:' .. node)
  redis.call('DEL', tag .. ':live:' .. node)
end
return 1
"#;

/// A holder here kept its name against a claim from another node (`session.takeover =
/// "stale"` and the holder is live, docs/fleet.md). `ARGV[5]` = the name. The waiting claim
/// is dropped and its node told that it lost (`lost = 'live-holder'`: it reaps its claimant);
/// nothing goes into the stream, where the claim's `named` never went. Returns 1 when a claim
/// was dropped, 0 when none was waiting (a newer claim already lost, or the claimant left).
pub(super) const REFUSE: &str = r#"
local name = ARGV[5]
local ck = tag .. ':claim:' .. name
local c = redis.call('GET', ck)
if not c then return 0 end
local cl = cjson.decode(c)
redis.call('DEL', ck)
redis.call('RPUSH', tag .. ':inbox:' .. cl.node,
  cjson.encode({name = name, id = cl.id, by = node, lost = 'live-holder'}))
return 1
"#;

/// The fleet as `FLEET NODES` and `CLIENT LOOKUP` show it: `{nodes, names}`, nodes as flat
/// `[node, epoch, lease ms left, sessions]`, names the `T:names` hash unless it holds more
/// than `ARGV[5]` names (then `false`: lookups answer from the node alone).
pub(super) const VIEW: &str = r#"
local out = {}
for _, n in ipairs(redis.call('HKEYS', tag .. ':nodes')) do
  table.insert(out, n)
  table.insert(out, redis.call('HGET', tag .. ':nodes', n))
  table.insert(out, redis.call('PTTL', tag .. ':lease:' .. n))
  table.insert(out, redis.call('HLEN', tag .. ':live:' .. n))
end
local names = false
if redis.call('HLEN', tag .. ':names') <= tonumber(ARGV[5]) then
  names = redis.call('HGETALL', tag .. ':names')
end
return {out, names}
"#;

/// The scripts in the order [`super::worker`] loads them.
pub(super) const ALL: [&str; 7] = [PUBLISH, RESYNC, RENEW, SWEEP, BYE, VIEW, REFUSE];

/// A script's full text: the prelude, then its body.
pub(super) fn source(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

// One Node.js Redis client library against vigild, with its default options (plus a client
// name, which every library takes as an option and re-sends after a reconnect):
//   node matrix.js LIB PROTO CLIENT_PORT ADMIN_PORT
// LIB is a package name under NODE_PATH (the aliases scripts/test installs: ioredis5, ioredis6,
// redis4, redis5, redis6); PROTO is "default", "2" or "3". Prints one line per step ("ok
// STEP detail"); the first failed step ends the script with exit code 1. Half-way it prints
// "restart-me" and waits for a line on stdin: the test restarts vigild on the same port, and
// the client must reconnect by itself and get its name back.
'use strict';
const assert = require('node:assert/strict');
const readline = require('node:readline');

const [lib, proto, clientPort, adminPort] = process.argv.slice(2);
const isIoredis = lib.startsWith('ioredis');
const name = `compat-${lib}-${proto}`;
const step = (what, detail = '') => console.log(`ok ${what} ${detail}`);
const restarted = new Promise((resolve) => {
  readline.createInterface({ input: process.stdin }).once('line', resolve);
});
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms))]);

function open(port, extra = {}) {
  if (isIoredis) {
    const Redis = require(lib);
    const opts = { host: '127.0.0.1', port: Number(port), ...extra };
    if (proto !== 'default') opts.protocol = Number(proto);
    const c = new Redis(opts);
    c.on('error', () => {}); // reconnects are expected around the restart
    return { c, call: (...a) => c.call(...a), ready: new Promise((res) => c.once('ready', res)) };
  }
  const { createClient } = require(lib);
  const opts = { url: `redis://127.0.0.1:${port}`, ...extra };
  if (proto !== 'default') opts.RESP = Number(proto);
  const c = createClient(opts);
  c.on('error', () => {});
  return { c, call: (...a) => c.sendCommand(a.map(String)), ready: c.connect() };
}

async function presence(events) {
  // The admin listener speaks RESP too: the same library subscribes to presence.
  const seen = [];
  if (isIoredis) {
    const { c, ready } = open(adminPort);
    await ready;
    c.on('message', (_ch, msg) => seen.push(JSON.parse(msg)));
    await c.subscribe('presence');
    events.close = () => c.disconnect();
  } else {
    const { c, ready } = open(adminPort);
    await ready;
    await c.subscribe('presence', (msg) => seen.push(JSON.parse(msg)));
    events.close = () => c.disconnect();
  }
  events.seen = seen;
}

(async () => {
  const nameOpt = isIoredis ? { connectionName: name } : { name };
  const { c, call, ready } = open(clientPort, nameOpt);
  await withTimeout(ready, 5000, 'connect');
  step('connect', `${lib} proto=${proto}`);

  assert.equal(await c.ping(), 'PONG');
  step('ping');
  assert.equal(await call('ECHO', 'hé'), 'hé');
  step('echo');
  assert.equal(await call('CLIENT', 'GETNAME'), name, 'the name option was applied');
  step('getname', name);
  assert.equal(await call('CLIENT', 'SETNAME', `${name}-x`), 'OK');
  assert.equal(await call('CLIENT', 'GETNAME'), `${name}-x`);
  assert.equal(await call('CLIENT', 'SETNAME', name), 'OK');
  step('setname');
  const id = Number(await call('CLIENT', 'ID'));
  assert.ok(id > 0, `client id ${id}`);
  step('id', id);
  const info = String(await c.info());
  assert.match(info, /^# Server\r?$/m, info);
  assert.match(info, /^redis_version:\d+\.\d+\.\d+\r?$/m, info);
  assert.match(info, /^loading:0\r?$/m, info);
  step('info');
  const clientInfo = String(await call('CLIENT', 'INFO'));
  for (const field of ['id', 'addr', 'laddr', 'fd', 'name', 'age', 'idle', 'flags', 'db', 'sub', 'psub', 'ssub', 'multi',
    'qbuf', 'qbuf-free', 'argv-mem', 'multi-mem', 'rbs', 'rbp', 'obl', 'oll', 'omem', 'tot-mem', 'events', 'cmd', 'user',
    'redir', 'resp', 'lib-name', 'lib-ver']) {
    assert.match(clientInfo, new RegExp(`(^| )${field}=`), `${field} in ${clientInfo}`);
  }
  assert.match(clientInfo, new RegExp(` name=${name} `), clientInfo);
  if (!isIoredis && typeof c.clientInfo === 'function') {
    const parsed = await c.clientInfo();
    assert.equal(Number(parsed.id), id);
    assert.equal(parsed.name, name);
  }
  step('client-info');
  const hello = isIoredis ? await call('HELLO') : await c.hello();
  const h = Array.isArray(hello) ? Object.fromEntries(hello.reduce((a, v, i) => (i % 2 ? a[a.length - 1].push(v) : a.push([v]), a), [])) : hello;
  assert.equal(h.server, 'vigild', JSON.stringify(h));
  assert.equal(Number(h.proto), proto === '3' || (proto === 'default' && (lib === 'ioredis6' || lib === 'redis6')) ? 3 : 2, JSON.stringify(h));
  assert.equal(h.mode, 'standalone', JSON.stringify(h));
  step('hello', JSON.stringify(h));
  const tx = await c.multi().ping().echo('x').exec();
  assert.deepEqual(tx, isIoredis ? [[null, 'PONG'], [null, 'x']] : ['PONG', 'x']);
  step('multi-exec', JSON.stringify(tx));

  const events = {};
  await presence(events);
  const other = open(clientPort, isIoredis ? { connectionName: `${name}-p` } : { name: `${name}-p` });
  await other.ready;
  const otherId = Number(await other.call('CLIENT', 'ID'));
  if (isIoredis) other.c.disconnect(); else await other.c.quit();
  const deadline = Date.now() + 5000;
  const kinds = () => events.seen.filter((e) => e.id === otherId).map((e) => e.event);
  while (!kinds().includes('left') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(kinds(), ['joined', 'named', 'left'], JSON.stringify(events.seen));
  events.close();
  step('presence', kinds().join(','));

  console.log('restart-me');
  await restarted;
  const addrOf = (line) => / addr=(\S+) /.exec(String(line))[1];
  const before = addrOf(clientInfo);
  const again = await withTimeout((async () => {
    for (;;) {
      try {
        if (await c.ping() === 'PONG') return addrOf(await call('CLIENT', 'INFO'));
      } catch (e) { /* not reconnected yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
  })(), 10000, 'reconnect');
  assert.notEqual(again, before, 'a new connection after the restart');
  assert.equal(await call('CLIENT', 'GETNAME'), name, 'the name is re-sent after the reconnect');
  step('restart', `${before} -> ${again}`);
  if (isIoredis) c.disconnect(); else await c.quit();
  console.log('done');
  // Not waiting for the timers of withTimeout() or for stdin to close.
  process.exit(0);
})().catch((e) => {
  console.log(`failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});

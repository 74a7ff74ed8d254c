// hibiki.js against a real `hibiki serve` (the built binary on a free port) and against
// small stub servers that misbehave on purpose. Run by scripts/test-web.sh.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';

import { HibikiClient, HibikiError, backoffDelay, msgpack } from '../../web/hibiki.js';
import { freePort, proxy, record, sleep, startServer, token, waitFor } from './lib.mjs';

const clients = [];
function client(url, options = {}) {
  const c = new HibikiClient(url, { WebSocket, ...options });
  clients.push(c);
  return c;
}
function closeAll() {
  for (const c of clients.splice(0)) c.close();
}

/** A WebSocket server on a free port that greets like hibiki and hands every envelope to `onEnvelope`. */
async function stub(onEnvelope = () => {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (offered) => [...offered][0] ?? false });
  await new Promise((resolve) => wss.once('listening', resolve));
  const seen = [];
  const sockets = [];
  wss.on('connection', (ws) => {
    sockets.push(ws);
    const n = sockets.length;
    ws.send(JSON.stringify({ type: 'welcome', payload: { conn: `c${n}`, user: 'stub-user', name: null } }));
    ws.on('message', (data) => {
      const env = JSON.parse(String(data));
      seen.push({ conn: n, ...env });
      onEnvelope(env, ws, n);
    });
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    seen,
    sockets,
    close: () => new Promise((resolve) => {
      for (const ws of wss.clients) ws.terminate();
      wss.close(resolve);
    }),
  };
}

const ack = (ws, env, extra = {}) => ws.send(JSON.stringify({ type: 'ack', id: env.id, payload: { id: env.id, ok: true, ...extra } }));

describe('backoff', () => {
  test('delays stay between min and min(max, base * 2^attempt), full jitter in between', () => {
    const opts = { min: 100, base: 500, max: 8000 };
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(8000, 500 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, opts, () => 0), 100, `attempt ${attempt}: the floor`);
      assert.equal(backoffDelay(attempt, opts, () => 1), ceiling, `attempt ${attempt}: the ceiling`);
      const mid = backoffDelay(attempt, opts, () => 0.5);
      assert.equal(mid, Math.round(100 + 0.5 * (ceiling - 100)), `attempt ${attempt}: uniform in between`);
    }
    assert.equal(backoffDelay(1000, opts, () => 1), 8000, 'bounded however many attempts');
    assert.equal(backoffDelay(0, { min: 900, base: 500, max: 8000 }, () => 0.3), 500, 'a floor above the ceiling gives the ceiling');
  });

  test('a client that cannot connect retries with growing, bounded delays', async () => {
    const port = await freePort(); // nothing listens there
    const c = client(`ws://127.0.0.1:${port}/ws`, {
      backoff: { min: 5, base: 20, max: 80 },
      random: () => 1,
    });
    const rec = record(c, ['state']);
    await waitFor(() => rec.of('state').filter((s) => s.state === 'reconnecting').length >= 6, 10000, '6 reconnect attempts');
    c.close();
    const delays = rec.of('state').filter((s) => s.state === 'reconnecting').map((s) => s.delay);
    assert.deepEqual(delays.slice(0, 6), [20, 40, 80, 80, 80, 80]);
    assert.equal(rec.of('state').at(-1).state, 'closed');
  });
});

describe('msgpack', () => {
  test('round-trips every kind of value, in the smallest encoding', () => {
    const values = [
      null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER,
      -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, Number.MIN_SAFE_INTEGER,
      0.5, -1.25, 1e300, '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'y'.repeat(255), 'y'.repeat(256), 'z'.repeat(70000),
      '響き ✓ 🎮', [], [1, [2, [3]]], new Array(20).fill(7), {}, { a: 1, b: { c: [null, 'd'] } },
      Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])), 2n ** 63n, -(2n ** 63n),
    ];
    for (const v of values) assert.deepEqual(msgpack.decode(msgpack.encode(v)), v, JSON.stringify(String(v)).slice(0, 40));
    assert.deepEqual([...msgpack.encode({ a: 1 })], [0x81, 0xa1, 0x61, 0x01]);
    assert.deepEqual([...msgpack.encode(-1)], [0xff]);
    assert.deepEqual([...msgpack.encode(300)], [0xcd, 0x01, 0x2c]);
    assert.deepEqual([...msgpack.encode(1.5)], [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    const bin = msgpack.decode(msgpack.encode(new Uint8Array([1, 2, 3])));
    assert.deepEqual([...bin], [1, 2, 3]);
    assert.deepEqual(msgpack.decode(msgpack.encode({ a: undefined, b: 1 })), { b: 1 }, 'undefined fields are left out');
    assert.throws(() => msgpack.decode(new Uint8Array([0xc1])), /never used/);
    assert.throws(() => msgpack.decode(new Uint8Array([0xa5, 0x61])), /truncated/);
    assert.throws(() => msgpack.decode(new Uint8Array([0x01, 0x02])), /after the value/);
  });
});

describe('against hibiki serve', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--tick-room', 'game:*'] });
  });
  after(async () => {
    closeAll();
    await server.stop();
  });

  test('requests resolve on their ok ack and reject on a failed one with its code', async () => {
    const a = client(server.url);
    const b = client(server.url);
    const got = record(b, ['message', 'typing', 'read', 'user_joined']);
    await b.join('chat:acks');
    const joined = await a.join('chat:acks');
    assert.equal(joined.ok, true);
    const first = await a.publish('chat:acks', { text: 'one' });
    assert.equal(first.ok, true);
    assert.equal(first.seq, 1);
    assert.match(first.id, /^[0-9a-z]{6}-\d+$/, 'string ids: prefix-counter');
    assert.equal((await a.publish('chat:acks', { text: 'two' })).seq, 2);
    await a.typing('chat:acks');
    await a.read('chat:acks', 2);
    await waitFor(() => got.of('message').length === 2 && got.of('read').length === 1 && got.of('typing').length === 1, 5000, 'b sees it all');
    assert.deepEqual(got.of('message').map((m) => [m.seq, m.data.text, m.from]), [[1, 'one', a.user], [2, 'two', a.user]]);
    assert.deepEqual(got.of('read')[0], { room: 'chat:acks', user: a.user, seq: 2 });
    assert.equal(got.of('typing')[0].user, a.user);
    assert.equal(got.of('user_joined')[0].user, a.user);
    assert.equal(b.lastSeq('chat:acks'), 2);

    await assert.rejects(a.typing('chat:not-joined'), (e) => e instanceof HibikiError && e.code === 'not_joined');
    await assert.rejects(a.publish('hibiki:stats', { fake: true }), (e) => e.code === 'forbidden');
    await assert.rejects(a.request('teleport', {}), (e) => e.code === 'unknown_type');

    const direct = record(b, ['message']);
    const sent = await a.direct(b.user, { note: 'for b' });
    assert.ok(sent.seq >= 1);
    await waitFor(() => direct.of('message').find((m) => m.room === `user:${b.user}`), 5000, 'the direct message');
  });

  test('volatile, keyed and echo-less publishes; a tick room arrives in batches, unwrapped', async () => {
    const a = client(server.url);
    const b = client(server.url);
    const envelopes = record(b, ['envelope', 'message']);
    const mine = record(a, ['message']);
    await a.join('game:unwrap');
    await b.join('game:unwrap');
    const acks = await Promise.all(
      [1, 2, 3, 4, 5].map((n) => a.publish('game:unwrap', { n }, { echo: false, key: n === 5 ? 'state' : undefined })),
    );
    assert.deepEqual(acks.map((x) => x.seq), [1, 2, 3, 4, 5]);
    const v = await a.publish('game:unwrap', { n: 0 }, { volatile: true, echo: false });
    assert.equal(v.seq, 0, 'volatile: not numbered');
    await waitFor(() => envelopes.of('message').length === 6, 5000, 'six messages');
    assert.ok(envelopes.of('envelope').some((e) => e.type === 'batch'), 'they came in batch frames');
    assert.deepEqual(envelopes.of('message').map((m) => m.data.n).sort(), [0, 1, 2, 3, 4, 5]);
    await sleep(100);
    assert.equal(mine.of('message').length, 0, 'echo: false leaves the sender out');
  });

  test('MessagePack and JSON clients exchange the same values', async () => {
    const packed = client(server.url, { protocol: 'msgpack' });
    const plain = client(server.url);
    const atPlain = record(plain, ['message']);
    const atPacked = record(packed, ['message', 'envelope']);
    await packed.join('chat:mixed');
    await plain.join('chat:mixed');
    const data = { text: '響 ✓', n: -70000, big: 2 ** 40, f: 0.25, list: [true, null, 'x'], nested: { deep: [1, 2] } };
    await packed.publish('chat:mixed', data);
    await plain.publish('chat:mixed', { back: 'from json', n: 300 });
    await waitFor(() => atPlain.of('message').length === 2 && atPacked.of('message').length === 2, 5000, 'both messages on both sides');
    assert.deepEqual(atPlain.of('message')[0].data, data);
    assert.deepEqual(atPacked.of('message')[0].data, data);
    assert.deepEqual(atPacked.of('message')[1].data, { back: 'from json', n: 300 });
    assert.equal(atPacked.of('envelope')[0].type, 'welcome');
  });

  test('a dropped connection resumes every room from its last seq: nothing missed, nothing twice', async (t) => {
    const line = await proxy(server.port);
    t.after(() => line.close());
    const publisher = client(server.url);
    const reader = client(line.url, { backoff: { min: 20, base: 50, max: 200 } });
    const got = record(reader, ['message', 'presence', 'state', 'gap']);
    await publisher.join('chat:resume');
    await reader.join('chat:resume');
    let n = 0;
    let running = true;
    const pump = (async () => {
      while (running) {
        n += 1;
        await publisher.publish('chat:resume', { n });
        await sleep(3);
      }
    })();
    await waitFor(() => got.of('message').length >= 20, 5000, 'messages before the drop');
    line.cut();
    await waitFor(() => got.of('state').filter((s) => s.state === 'open').length === 2, 5000, 'reconnected');
    await waitFor(() => got.of('message').length >= 60, 5000, 'messages after the reconnect');
    running = false;
    await pump;
    await waitFor(() => got.of('message').length === n, 5000, `all ${n} messages`);
    const seqs = got.of('message').map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: n }, (_, i) => i + 1), 'every seq once, in order');
    assert.equal(got.of('gap').length, 0);
    // Presence comes again with the new connection (from its join, and from the resume on
    // servers whose resume announces too).
    assert.ok(got.of('presence').filter((p) => p.room === 'chat:resume').length >= 2, 'presence again after the reconnect');
  });

  test('acks of a server that answers nothing: retries under the same id, then a timeout', async (t) => {
    const silent = await stub();
    t.after(() => silent.close());
    const c = client(silent.url, { ackTimeout: 80, retries: 2 });
    await waitFor(() => c.state === 'open', 5000, 'open');
    await assert.rejects(c.publish('chat:x', { text: 'hello?' }), (e) => e.code === 'timeout' && /3 attempts/.test(e.message));
    const publishes = silent.seen.filter((e) => e.type === 'publish');
    assert.equal(publishes.length, 3, 'the first send and two retries');
    assert.equal(new Set(publishes.map((e) => e.id)).size, 1, 'all under one id');
    c.close();
  });

  test('a retry that gets its ack resolves the request', async (t) => {
    const late = await stub((env, ws) => {
      if (env.type === 'publish' && late.seen.filter((e) => e.id === env.id).length === 2) ack(ws, env, { seq: 9 });
    });
    t.after(() => late.close());
    const c = client(late.url, { ackTimeout: 80, retries: 3 });
    const answer = await c.publish('chat:x', 'again');
    assert.equal(answer.seq, 9);
    assert.equal(late.seen.filter((e) => e.type === 'publish').length, 2);
    c.close();
  });

  test('ids are unique across the connections of a client, and across clients', async (t) => {
    const acker = await stub((env, ws) => {
      ack(ws, env);
      if (env.payload?.data?.last) ws.close(1001, 'going away'); // after the ack went out
    });
    t.after(() => acker.close());
    const c = client(acker.url, { backoff: { min: 5, base: 10, max: 20 } });
    const other = client(acker.url);
    for (let round = 0; round < 3; round++) {
      await c.publish('r', { round });
      await c.publish('r', { round, last: true });
      await waitFor(() => c.state === 'open' && acker.sockets.length === round + 3, 5000, `connection ${round + 2}`);
    }
    await other.publish('r', 'other');
    const publishes = acker.seen.filter((e) => e.type === 'publish');
    const mine = publishes.filter((e) => e.payload.data !== 'other');
    assert.equal(mine.length, 6);
    assert.equal(new Set(mine.map((e) => e.conn)).size, 3, 'over three connections');
    assert.equal(new Set(mine.map((e) => e.id)).size, 6, `six ids: ${mine.map((e) => e.id)}`);
    const [prefix] = mine[0].id.split('-');
    assert.ok(mine.every((e) => e.id.startsWith(`${prefix}-`)), 'one prefix per client');
    const counters = mine.map((e) => Number(e.id.split('-')[1]));
    assert.deepEqual(counters, [...counters].sort((x, y) => x - y), 'the counter only grows');
    const theirs = publishes.find((e) => e.payload.data === 'other').id;
    assert.notEqual(theirs.split('-')[0], prefix, 'another client, another prefix');
    c.close();
    other.close();
  });

  test('a silent connection is noticed by the heartbeat and replaced', async (t) => {
    const mute = await stub(); // greets, then never sends another frame
    t.after(() => mute.close());
    const c = client(mute.url, { pingInterval: 60, pingTimeout: 120, backoff: { min: 5, base: 10, max: 20 } });
    const states = record(c, ['state']);
    await waitFor(() => states.of('state').some((s) => s.state === 'reconnecting' && s.reason === 'heartbeat timeout'), 5000, 'the heartbeat timeout');
    assert.ok(mute.seen.some((e) => e.type === 'ping' && e.id === undefined), 'pings went out');
    await waitFor(() => mute.sockets.length >= 2, 5000, 'a new connection');
    c.close();
  });
});

describe('history gaps (stub servers speaking the resume contract)', () => {
  after(closeAll);

  /**
   * A room whose history keeps seqs 3..5 of epoch e2. A resume into another epoch is answered
   * as the server does: presence (a resume is a join), a failed ack with `joined` and
   * `oldest`, then the replay from `oldest`; live message 6 comes before the replay.
   */
  function epochServer(gapError) {
    const msg = (seq) => ({ type: 'message', payload: { room: 'doc:1', seq, from: 'x', data: { seq }, ts: 1 } });
    return stub((env, ws) => {
      const send = (v) => ws.send(JSON.stringify(v));
      const presence = { room: 'doc:1', users: ['stub-user'], count: 1, seq: 5, epoch: 'e2' };
      if (env.type === 'join') {
        send({ type: 'presence', payload: presence });
        ack(ws, env);
      } else if (env.type === 'resume' && env.payload.after === 10) {
        send({ type: 'presence', payload: presence });
        send({ type: 'ack', id: env.id, payload: { id: env.id, ok: false, error: gapError, joined: true } });
        for (const seq of [6, 3, 4, 5]) send(msg(seq));
      } else if (env.type === 'resume') {
        send({ type: 'presence', payload: presence });
        ack(ws, env, { seq: 6, epoch: 'e2' });
        for (const seq of [3, 4, 5, 6]) send(msg(seq));
      }
    });
  }

  test('a resume into another epoch: gap, then everything the room keeps, once, in order', async (t) => {
    const server = await epochServer({ code: 'history_gap', message: 'another epoch', oldest: 3, seq: 5, epoch: 'e2' });
    t.after(() => server.close());
    const c = client(server.url, { positions: { 'doc:1': { seq: 10, epoch: 'e1' } } });
    const got = record(c, ['message', 'gap']);
    await c.join('doc:1');
    assert.deepEqual(got.of('gap'), [{ room: 'doc:1', after: 10, oldest: 3, seq: 5, epoch: 'e2', message: 'another epoch' }]);
    assert.deepEqual(got.of('message').map((m) => m.seq), [3, 4, 5, 6]);
    assert.deepEqual(c.positions()['doc:1'], { seq: 6, epoch: 'e2' });
    const resumes = server.seen.filter((e) => e.type === 'resume').map((e) => e.payload);
    assert.deepEqual(resumes, [{ room: 'doc:1', after: 10, epoch: 'e1' }], 'the server replays by itself: one resume');
    assert.equal(server.seen.filter((e) => e.type === 'join').length, 0, 'no join besides the resume: a resume is a join');
  });
});

describe('with --jwt-secret', () => {
  let server;
  before(async () => {
    server = await startServer({ args: ['--jwt-secret', 'web-secret'] });
  });
  after(async () => {
    closeAll();
    await server.stop();
  });

  test('the token goes on the URL; publishes after a reconnect get new seqs (no id reused)', async (t) => {
    const jwt = token('web-secret', { sub: 'ann', name: 'Ann', rooms: ['chat:*'] });
    const line = await proxy(server.port);
    t.after(() => line.close());
    const ann = client(line.url, { token: jwt, backoff: { min: 10, base: 20, max: 50 } });
    const watcher = client(server.url, { token: () => token('web-secret', { sub: 'bob', rooms: ['chat:*'] }) });
    const seen = record(watcher, ['message']);
    await watcher.join('chat:jwt');
    await ann.join('chat:jwt');
    assert.equal(ann.user, 'ann');
    assert.equal(ann.name, 'Ann');
    const seqs = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) seqs.push((await ann.publish('chat:jwt', { round, i })).seq);
      line.cut();
      await waitFor(() => ann.state === 'open', 5000, 'reconnected');
    }
    // The server deduplicates by (user, id) across connections: a reused id would come back
    // with the first seq and publish nothing.
    assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await waitFor(() => seen.of('message').length === 9, 5000, 'nine messages');
    await assert.rejects(ann.join('game:1'), (e) => e.code === 'forbidden');
  });

  test('a token limited to chat:* may still read the stats room', async () => {
    const c = client(server.url, { token: token('web-secret', { sub: 'viewer', rooms: ['chat:*'] }) });
    const got = record(c, ['message']);
    await c.join('hibiki:stats');
    const stats = await waitFor(() => got.of('message').find((m) => m.room === 'hibiki:stats'), 5000, 'a stats message');
    assert.equal(stats.seq, 0, 'volatile');
    assert.equal(stats.from, 'server');
    for (const key of ['connections', 'messages_in_per_sec', 'messages_out_per_sec', 'rooms', 'dropped_volatile', 'slow_consumer_closes', 'late_ticks']) {
      assert.equal(typeof stats.data[key], 'number', key);
    }
    assert.ok(stats.data.connections >= 1);
  });

  test('without a token the upgrade is refused and the client keeps retrying', async () => {
    const c = client(server.url, { backoff: { min: 5, base: 10, max: 20 } });
    const states = record(c, ['state']);
    await waitFor(() => states.of('state').filter((s) => s.state === 'reconnecting').length >= 2, 5000, 'two refusals');
    assert.ok(!states.of('state').some((s) => s.state === 'open'));
  });
});

describe('a server restart (kill, respawn on the same port)', () => {
  test('every room catches up with what was published since, and nothing shows twice', async (t) => {
    let server = await startServer({ args: ['--api-key', 'k'] });
    t.after(async () => {
      closeAll();
      await server.stop();
    });
    const { port } = server;
    const reader = client(server.url, { backoff: { min: 300, base: 400, max: 500 } });
    const writer = client(server.url, { backoff: { min: 10, base: 20, max: 40 } });
    const got = record(reader, ['message', 'gap', 'state', 'presence']);
    await reader.join('chat:restart');
    await writer.join('chat:restart');
    for (const text of ['a', 'b', 'c']) await writer.publish('chat:restart', { text });
    await waitFor(() => got.of('message').length === 3, 5000, 'three messages');
    assert.equal(reader.lastSeq('chat:restart'), 3);

    await server.kill();
    server = await startServer({ port, args: ['--api-key', 'k'] });
    // While the reader waits for its next attempt, the writer is back and publishes twice.
    await waitFor(() => writer.state === 'open', 5000, 'the writer back');
    await writer.join('chat:restart');
    for (const text of ['d', 'e']) await writer.publish('chat:restart', { text });
    await waitFor(() => got.of('state').filter((s) => s.state === 'open').length === 2, 5000, 'the reader back');
    await waitFor(() => got.of('message').length >= 5, 5000, 'the catch-up');
    await writer.publish('chat:restart', { text: 'f' });
    await waitFor(() => got.of('message').length >= 6, 5000, 'live again');
    await sleep(200);
    assert.deepEqual(got.of('message').map((m) => m.data.text), ['a', 'b', 'c', 'd', 'e', 'f']);
    assert.equal(got.of('gap').length, 1, 'the lost numbering is reported once');
    assert.equal(got.of('gap')[0].after, 3);
    assert.equal(reader.lastSeq('chat:restart'), 3, 'd, e, f are 1, 2, 3 of the new life');
    assert.ok(got.of('presence').length >= 2, 'presence again after the restart');
  });

  test('with epochs, a new life longer than the old position is caught up too', async (t) => {
    let server = await startServer();
    t.after(async () => {
      closeAll();
      await server.stop();
    });
    const { port } = server;
    const reader = client(server.url, { backoff: { min: 1000, base: 1200, max: 1200 } });
    const writer = client(server.url, { backoff: { min: 10, base: 20, max: 40 } });
    const got = record(reader, ['message', 'presence']);
    await reader.join('chat:epoch');
    await writer.join('chat:epoch');
    await writer.publish('chat:epoch', { text: 'old-1' });
    await waitFor(() => got.of('message').length === 1, 5000, 'one message');
    const epoch = got.of('presence')[0]?.epoch;
    assert.ok(typeof epoch === 'string' && epoch.length > 0, 'presence names the room\'s epoch');
    await server.kill();
    server = await startServer({ port });
    await waitFor(() => writer.state === 'open', 5000, 'the writer back');
    await writer.join('chat:epoch');
    // Three messages in the new life: its seq (3) passes the reader's old position (1).
    for (const text of ['new-1', 'new-2', 'new-3']) await writer.publish('chat:epoch', { text });
    await waitFor(() => reader.state === 'open', 5000, 'the reader back');
    await writer.publish('chat:epoch', { text: 'new-4' });
    await waitFor(() => got.of('message').some((m) => m.data.text === 'new-4'), 5000, 'the live message');
    await sleep(200);
    assert.deepEqual(got.of('message').map((m) => m.data.text), ['old-1', 'new-1', 'new-2', 'new-3', 'new-4']);
  });
});

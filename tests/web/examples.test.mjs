// The JavaScript examples (examples/js/) as a user runs them, against the built server, with
// Node's own WebSocket (--experimental-websocket on Node 20). Run by scripts/test-web.sh.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

import { ROOT, startServer } from './lib.mjs';

const exec = promisify(execFile);
const flags = globalThis.WebSocket ? [] : ['--experimental-websocket'];
let server;

before(async () => {
  server = await startServer({ args: ['--api-key', 'js-key'] });
});
after(() => server.stop());

async function example(name, ...args) {
  const { stdout } = await exec(process.execPath, [...flags, path.join(ROOT, 'examples/js', name), ...args], { timeout: 20000 });
  return stdout;
}

test('chat.mjs: two users see each other join, type, talk and read', async () => {
  const out = await example('chat.mjs', server.url, 'chat:js-example');
  assert.match(out, /ann: sees Bob typing/);
  assert.match(out, /ann: <- Bob: "Hello Ann! Is the release out\?" \(seq 1\)/);
  assert.match(out, /bob: <- Ann: "Yes, 0.1 shipped an hour ago." \(seq 2\)/);
  assert.match(out, /bob: Ann has read up to seq 1/);
  assert.match(out, /done: Ann saw 2 messages, Bob 2; typing seen: true; read up to 1/);
});

test('notifications.mjs: the publish API and direct reach the user', async () => {
  const out = await example('notifications.mjs', server.url, 'js-key');
  assert.match(out, /notification in user:anon-\w+ \(seq 1, from server\): Your order shipped/);
  assert.match(out, /notification in news \(seq 1, from server\): Maintenance at 02:00 UTC/);
  assert.match(out, /notification in user:anon-\w+ \(seq 2, from anon-\w+\): Payment received/);
  assert.match(out, /done: 3 notifications for anon-\w+ \(publish API: 200, 200\)/);
});

test('dashboard.mjs: a line per stats sample', async () => {
  const out = await example('dashboard.mjs', server.url, '2');
  const lines = out.trim().split('\n');
  assert.equal(lines.length, 2);
  for (const line of lines) assert.match(line, /^\d{4}-\d\d-\d\dT.* \d+ connections +[\d.]+ in\/s +[\d.]+ out\/s +\d+ rooms/);
});

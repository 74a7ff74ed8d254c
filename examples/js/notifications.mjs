// Per-user notifications with hibiki.js: a user connects (each connection is in its user's
// room `user:ID`) and follows a topic; a backend reaches it with POST /api/publish (to the
// user's room and to the topic) and with `direct`.
//
//   cargo run --release -- serve --api-key demo-key
//   node examples/js/notifications.mjs [ws://127.0.0.1:8080/ws] [demo-key]
//   (Node 20: node --experimental-websocket examples/js/notifications.mjs, or have `ws`)

import { pathToFileURL } from 'node:url';

import { HibikiClient } from '../../web/hibiki.js';

/** Sends three notifications to a new user; resolves with what it received. */
export async function run({ url = 'ws://127.0.0.1:8080/ws', apiKey = 'demo-key', WebSocket, log = console.log } = {}) {
  const http = url.replace(/^ws/, 'http').replace(/\/ws$/, '');
  const user = new HibikiClient(url, { WebSocket });
  const backend = new HibikiClient(url, { WebSocket });
  const received = [];
  const statuses = [];
  try {
    const arrived = new Promise((resolve) => {
      user.on('message', (m) => {
        received.push({ room: m.room, title: m.data?.title, from: m.from });
        log(`user: notification in ${m.room} (seq ${m.seq}, from ${m.from}): ${m.data?.title}`);
        if (received.length === 1 + statuses.filter((s) => s === 200).length && statuses.length === 2) resolve();
      });
    });
    await new Promise((resolve) => user.once('welcome', resolve));
    await user.join('news');
    log(`user: connected as ${user.user}, following news`);
    for (const [room, title] of [[`user:${user.user}`, 'Your order shipped'], ['news', 'Maintenance at 02:00 UTC']]) {
      const answer = await fetch(`${http}/api/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ room, data: { title } }),
      });
      statuses.push(answer.status);
      log(`backend: POST /api/publish to ${room}: ${answer.status} ${(await answer.text()).trim()}`);
    }
    const ack = await backend.direct(user.user, { title: 'Payment received' });
    log(`backend: direct to ${user.user} (seq ${ack.seq})`);
    await Promise.race([arrived, new Promise((resolve) => setTimeout(resolve, 5000))]);
    return { user: user.user, received, statuses };
  } finally {
    user.close();
    backend.close();
  }
}

async function webSocket() {
  if (globalThis.WebSocket) return globalThis.WebSocket;
  try {
    return (await import('ws')).default;
  } catch {
    console.error('this Node has no WebSocket: use Node 22+, `node --experimental-websocket` (Node 20), or install the ws package');
    process.exit(2);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [url, apiKey] = process.argv.slice(2);
  const result = await run({ url, apiKey: apiKey ?? process.env.HIBIKI_API_KEY, WebSocket: await webSocket() });
  console.log(`done: ${result.received.length} notifications for ${result.user} (publish API: ${result.statuses.join(', ')})`);
}

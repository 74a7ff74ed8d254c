// The server's own dashboard feed with hibiki.js: join `hibiki:stats`, where `hibiki serve`
// publishes its counters once a second, and print a line per sample.
//
//   cargo run --release -- serve
//   node examples/js/dashboard.mjs [ws://127.0.0.1:8080/ws] [samples, default 5]
//   (Node 20: node --experimental-websocket examples/js/dashboard.mjs, or have `ws`)

import { pathToFileURL } from 'node:url';

import { HibikiClient } from '../../web/hibiki.js';

/** Resolves with `samples` stats messages. */
export async function run({ url = 'ws://127.0.0.1:8080/ws', samples = 5, WebSocket, log = console.log } = {}) {
  const client = new HibikiClient(url, { WebSocket });
  const got = [];
  try {
    const done = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no stats within the time allowed')), samples * 1000 + 5000);
      client.on('message', (m) => {
        if (m.room !== 'hibiki:stats') return;
        const s = m.data;
        got.push(s);
        log(`${new Date(s.ts).toISOString()}  ${s.connections} connections  ${s.messages_in_per_sec} in/s  ${s.messages_out_per_sec} out/s  ${s.rooms} rooms  ${s.dropped_volatile} dropped  ${s.slow_consumer_closes} slow  ${s.late_ticks} late ticks`);
        if (got.length >= samples) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await client.join('hibiki:stats');
    await done;
    return got;
  } finally {
    client.close();
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
  const [url, samples] = process.argv.slice(2);
  await run({ url, samples: samples ? Number(samples) : 5, WebSocket: await webSocket() });
}

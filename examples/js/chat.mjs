// Chat in a room with hibiki.js: Ann and Bob join, see each other, type, talk and send read
// receipts. The messages use the page's format, so http://127.0.0.1:8080/ shows them too.
//
//   cargo run --release -- serve
//   node examples/js/chat.mjs [ws://127.0.0.1:8080/ws] [chat:lobby]
//   (Node 20: node --experimental-websocket examples/js/chat.mjs, or have the `ws` package)

import { pathToFileURL } from 'node:url';

import { HibikiClient } from '../../web/hibiki.js';

const once = (client, event, test = () => true) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within 5 s`)), 5000);
    const off = client.on(event, (value) => {
      if (!test(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });

/** Runs the conversation; resolves with what each side saw. */
export async function run({ url = 'ws://127.0.0.1:8080/ws', room = 'chat:lobby', WebSocket, log = console.log } = {}) {
  const ann = new HibikiClient(url, { WebSocket });
  const bob = new HibikiClient(url, { WebSocket });
  const seen = { ann: [], bob: [], typing: false, readUpTo: null };
  try {
    for (const [name, client] of [['ann', ann], ['bob', bob]]) {
      client.on('message', (m) => {
        if (m.room !== room || m.data?.kind !== 'chat') return;
        seen[name].push(m.data.text);
        log(`${name}: <- ${m.data.name}: ${JSON.stringify(m.data.text)} (seq ${m.seq})`);
      });
    }
    await ann.join(room);
    const bobArrives = once(ann, 'user_joined', (p) => p.room === room);
    await bob.join(room);
    log(`ann: sees ${(await bobArrives).user} join ${room}`);

    const typing = once(ann, 'typing', (p) => p.room === room);
    await bob.typing(room);
    seen.typing = (await typing).user === bob.user;
    log('ann: sees Bob typing');

    // Each message reaches both: the other side and the sender's own copy (the room echoes it),
    // which may come after the ack, so the example waits for both.
    const isHello = (m) => m.room === room && m.data?.text?.startsWith('Hello');
    const hello = Promise.all([once(ann, 'message', isHello), once(bob, 'message', isHello)]);
    const { seq } = await bob.publish(room, { kind: 'chat', text: 'Hello Ann! Is the release out?', name: 'Bob' });
    await hello;
    const receipt = once(bob, 'read', (p) => p.room === room);
    await ann.read(room, seq);
    seen.readUpTo = (await receipt).seq;
    log(`bob: Ann has read up to seq ${seen.readUpTo}`);

    const isReply = (m) => m.room === room && m.data?.text?.startsWith('Yes');
    const reply = Promise.all([once(bob, 'message', isReply), once(ann, 'message', isReply)]);
    await ann.publish(room, { kind: 'chat', text: 'Yes, 0.1 shipped an hour ago.', name: 'Ann' });
    await reply;
    return seen;
  } finally {
    ann.close();
    bob.close();
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
  const [url, room] = process.argv.slice(2);
  const seen = await run({ url, room, WebSocket: await webSocket() });
  console.log(`done: Ann saw ${seen.ann.length} messages, Bob ${seen.bob.length}; typing seen: ${seen.typing}; read up to ${seen.readUpTo}`);
}

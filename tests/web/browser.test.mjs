// The page at / in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// two users chat in one room (messages, typing, presence, read receipts), the server restarts
// on the same port and both pages catch up with no gap and no duplicate, and the dashboard's
// charts move. Screenshots of the chat and the dashboard go to $HIBIKI_SCREENSHOTS (default
// target/web-screenshots). Run by scripts/test-web.sh.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

import { HibikiClient } from '../../web/hibiki.js';
import { ROOT, sleep, startServer } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.resolve(ROOT, process.env.HIBIKI_SCREENSHOTS ?? path.join(process.env.CARGO_TARGET_DIR ?? 'target', 'web-screenshots'));
const ROOM = 'chat:lobby';

let server;
let browser;
const helpers = [];

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
    ],
  });
});

after(async () => {
  for (const c of helpers) c.close();
  await browser?.close();
  await server?.stop();
});

async function open(name) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${server.http}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(ROOM)}`);
  await page.waitForSelector(`#chat[data-joined="${ROOM}"]`, { timeout: 10000 });
  return { page, errors, name };
}

/** Every message the page shows: its text, room, seq and life (numbering of the room it came from). */
const shown = (page) =>
  page.$$eval('#messages .msg', (els) =>
    els.map((e) => ({ text: e.querySelector('.text').textContent, room: e.dataset.room, seq: Number(e.dataset.seq), life: Number(e.dataset.life) })),
  );

async function send(user, text) {
  await user.page.fill('#text', text);
  await user.page.press('#text', 'Enter');
}

const showsText = (user, text) =>
  user.page.waitForFunction((t) => [...document.querySelectorAll('#messages .msg .text')].some((e) => e.textContent === t), text, { timeout: 10000 });

function assertOnceEach(list, texts, who) {
  for (const text of texts) assert.equal(list.filter((m) => m.text === text).length, 1, `${who}: "${text}" exactly once`);
  const keys = list.map((m) => `${m.room}/${m.life}/${m.seq}`);
  assert.equal(new Set(keys).size, keys.length, `${who}: no (room, life, seq) shown twice: ${keys}`);
  assert.equal(new Set(list.map((m) => m.text)).size, list.length, `${who}: no text shown twice`);
}

async function chartPoints(page, key) {
  return page.$eval(`#chart-${key}`, (fig) => ({ points: fig.dataset.points ?? '', samples: Number(fig.dataset.samples), d: fig.querySelector('path.line').getAttribute('d') }));
}

async function chartsMove(page) {
  const first = await chartPoints(page, 'connections');
  const firstOut = await chartPoints(page, 'messages_out_per_sec');
  await page.waitForFunction((n) => Number(document.querySelector('#chart-connections').dataset.samples) >= n + 2, first.samples, { timeout: 10000 });
  const second = await chartPoints(page, 'connections');
  const secondOut = await chartPoints(page, 'messages_out_per_sec');
  assert.ok(second.samples >= first.samples + 2, 'new samples arrived');
  assert.notEqual(second.points, first.points, 'the connections chart moved');
  assert.notEqual(second.d, first.d, 'its path was redrawn');
  assert.notEqual(secondOut.points, firstOut.points, 'the messages-out chart moved');
}

/** Traffic for the dashboard until `stop()`: Node clients in a room and a tick room, publishing in waves. */
async function traffic() {
  const clients = Array.from({ length: 6 }, () => new HibikiClient(server.url, { WebSocket }));
  helpers.push(...clients);
  await Promise.all(clients.map((c, i) => c.join(i % 2 ? 'game:demo' : 'chat:load')));
  let running = true;
  const done = (async () => {
    for (let tick = 1; running; tick++) {
      const burst = 4 + Math.round(12 * (1 + Math.sin(tick / 8)));
      await Promise.all(Array.from({ length: burst }, (_, i) => clients[i % clients.length].publish(i % 2 ? 'game:demo' : 'chat:load', { tick, i }, { key: i % 2 ? `p${i % 4}` : undefined })));
      await sleep(100);
    }
  })();
  return async () => {
    running = false;
    await done;
    for (const c of clients) c.close();
  };
}

test('two users chat; a server restart loses and repeats nothing; the dashboard moves', async () => {
  const ann = await open('Ann');
  const bob = await open('Bob');

  // Presence: each page lists both users.
  for (const user of [ann, bob]) {
    await user.page.waitForFunction(() => document.querySelectorAll('#members li').length === 2, null, { timeout: 10000 });
  }
  await ann.page.waitForFunction(() => [...document.querySelectorAll('#members li')].some((li) => li.textContent.includes('Bob')), null, { timeout: 10000 });

  // A message from one appears in the other, with its room and seq in the DOM.
  await send(ann, 'Hi Bob! The deploy is done.');
  await showsText(bob, 'Hi Bob! The deploy is done.');
  const atBob = await shown(bob.page);
  assert.deepEqual(atBob.map((m) => [m.room, m.seq]), [[ROOM, 1]]);
  assert.match(await bob.page.$eval('#messages .msg time', (t) => t.textContent), /\d{1,2}:\d{2}:\d{2}/, 'with its time');

  // Read receipts: Bob's page read it, Ann's page says so.
  await ann.page.waitForFunction(() => document.querySelector('#messages .msg.mine .receipt')?.dataset.seen === '1', null, { timeout: 10000 });
  assert.match(await ann.page.$eval('#messages .msg.mine .receipt', (r) => r.textContent), /seen by Bob/);

  await send(bob, 'Great, thanks! Checking the dashboard now.');
  await showsText(ann, 'Great, thanks! Checking the dashboard now.');
  await send(ann, 'Messages out should jump in a second.');
  await showsText(bob, 'Messages out should jump in a second.');
  await send(bob, 'There it goes: a few hundred a second.');
  await showsText(ann, 'There it goes: a few hundred a second.');

  // Typing: Bob types, Ann sees it.
  await bob.page.type('#text', 'Looks good, ', { delay: 20 });
  await ann.page.waitForFunction(() => /Bob is typing/.test(document.querySelector('#typing').textContent), null, { timeout: 10000 });

  // The dashboard, fed by hibiki:stats: let some traffic flow, check the charts move.
  const stopTraffic = await traffic();
  await sleep(12000);
  await chartsMove(ann.page);

  mkdirSync(SHOTS, { recursive: true });
  await bob.page.type('#text', 'very', { delay: 20 });
  await ann.page.waitForFunction(() => /Bob is typing/.test(document.querySelector('#typing').textContent), null, { timeout: 10000 });
  await ann.page.locator('#chat').screenshot({ path: path.join(SHOTS, 'chat.png') });
  await ann.page.locator('#dashboard').screenshot({ path: path.join(SHOTS, 'dashboard.png') });
  await stopTraffic();
  await bob.page.fill('#text', '');

  // Restart on the same port. What is published before the pages are back is caught up.
  const { port } = server;
  await server.stop();
  server = await startServer({ port });
  const early = new HibikiClient(server.url, { WebSocket });
  helpers.push(early);
  await early.publish(ROOM, { kind: 'chat', text: 'Published while you were away', name: 'ops' });
  for (const user of [ann, bob]) {
    await user.page.waitForFunction(() => document.querySelector('#state').dataset.state === 'open', null, { timeout: 15000 });
    await showsText(user, 'Published while you were away');
  }
  await send(ann, 'Back after the restart?');
  await showsText(bob, 'Back after the restart?');
  await send(bob, 'Yes, nothing lost.');
  await showsText(ann, 'Yes, nothing lost.');
  await send(ann, 'And nothing twice.');
  await showsText(bob, 'And nothing twice.');
  await sleep(500);

  const texts = [
    'Hi Bob! The deploy is done.', 'Great, thanks! Checking the dashboard now.', 'Messages out should jump in a second.',
    'There it goes: a few hundred a second.', 'Published while you were away', 'Back after the restart?', 'Yes, nothing lost.', 'And nothing twice.',
  ];
  for (const user of [ann, bob]) {
    const list = await shown(user.page);
    assertOnceEach(list, texts, user.name);
    assert.deepEqual(list.map((m) => m.text), texts, `${user.name}: in order`);
    const after = list.slice(4);
    assert.deepEqual(after.map((m) => m.seq), [1, 2, 3, 4], `${user.name}: the new life numbered from 1, no gap`);
    assert.ok(after.every((m) => m.life > list[0].life), `${user.name}: after the restart, another life of the room`);
  }
  // Presence came back with the new connections, and the dashboard still moves.
  await ann.page.waitForFunction(() => document.querySelectorAll('#members li').length === 2, null, { timeout: 10000 });
  await chartsMove(bob.page);
  assert.deepEqual([...ann.errors, ...bob.errors], [], 'no page errors');
});

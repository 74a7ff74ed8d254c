// The page at `/`: a chat and a live dashboard, both on one HibikiClient.
//
// Without --jwt-secret every connection is a new anonymous user, so the chosen name travels
// in each message's data ({kind: 'chat', text, name, cid}) and in volatile profile messages
// ({kind: 'profile', name}) that map user ids to names. `?token=` in the page URL goes on to
// /ws; `?name=...&room=...` joins at once.

import { HibikiClient } from '/hibiki.js';

const STATS_ROOM = 'hibiki:stats';
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const cid = Math.random().toString(36).slice(2, 10); // this page, across reconnects

const client = new HibikiClient(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`, {
  token: params.get('token') || undefined,
});
window.hibikiClient = client;

// --- connection state ---------------------------------------------------------------------

let retryTimer = null;
client.on('state', ({ state, delay }) => {
  $('state').dataset.state = state;
  clearInterval(retryTimer);
  const text = { connecting: 'connecting…', open: 'connected', closed: 'offline', idle: 'offline' };
  if (state === 'reconnecting') {
    const at = Date.now() + delay;
    const show = () => { $('state-text').textContent = `reconnecting in ${Math.max(0, (at - Date.now()) / 1000).toFixed(1)} s`; };
    show();
    retryTimer = setInterval(show, 100);
    if (chat) chat.wasDown = true;
  } else {
    $('state-text').textContent = text[state] ?? state;
  }
});

// --- chat --------------------------------------------------------------------------------

const names = new Map(); // user id -> display name
let chat = null; // {room, name, life, lastRead, mine: Map(key -> {el, seen:Set}), ...}

function nameOf(user) {
  if (user === client.user && chat) return chat.name;
  return names.get(user) ?? (user ? user.replace(/^anon-/, 'guest ') : '?');
}

function timeOf(ts) {
  return new Date(ts || Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function system(text) {
  const li = document.createElement('li');
  li.className = 'sys';
  li.textContent = text;
  append(li);
}

function append(li) {
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderMessage(m) {
  const data = m.data ?? {};
  if (data.name && m.from) names.set(m.from, String(data.name));
  const mine = data.cid === cid || (m.from === client.user && !data.cid);
  const li = document.createElement('li');
  li.className = mine ? 'msg mine' : 'msg';
  li.dataset.room = m.room;
  li.dataset.seq = String(m.seq);
  li.dataset.life = String(chat.life);
  li.dataset.from = m.from ?? '';
  if (data.mid) li.dataset.mid = String(data.mid);
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = mine ? 'you' : String(data.name ?? nameOf(m.from));
  const time = document.createElement('time');
  time.dateTime = new Date(m.ts || Date.now()).toISOString();
  time.textContent = timeOf(m.ts);
  meta.append(author, time);
  const bubble = document.createElement('div');
  bubble.className = 'bubble text';
  bubble.textContent = typeof data === 'string' ? data : String(data.text ?? JSON.stringify(data));
  li.append(meta, bubble);
  if (mine) {
    const receipt = document.createElement('div');
    receipt.className = 'receipt';
    receipt.dataset.seen = '0';
    li.append(receipt);
    const entry = { el: li, seq: m.seq, seen: new Set() };
    chat.mine.set(`${chat.life}:${m.seq}`, entry);
    for (const [user, seq] of chat.reads) if (seq >= m.seq) entry.seen.add(user);
    showSeen(entry);
  }
  append(li);
}

function showSeen(entry) {
  const receipt = entry.el.querySelector('.receipt');
  const n = entry.seen.size;
  receipt.dataset.seen = String(n);
  receipt.textContent = n === 0 ? '' : `✓ seen by ${n === 1 ? nameOf([...entry.seen][0]) : `${n}`}`;
  receipt.title = [...entry.seen].map(nameOf).join(', ');
}

const PALETTE = ['#4f46e5', '#0891b2', '#059669', '#d97706', '#db2777', '#7c3aed', '#2563eb', '#dc2626'];
function colorOf(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function renderMembers(users) {
  chat.members = new Set(users);
  const ul = $('members');
  ul.replaceChildren();
  const sorted = [...chat.members].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
  for (const user of sorted) {
    const li = document.createElement('li');
    li.dataset.user = user;
    const name = nameOf(user);
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    avatar.textContent = name.slice(0, 1).toUpperCase();
    avatar.style.background = colorOf(name);
    li.append(avatar, name);
    if (user === client.user) {
      li.className = 'me';
      const you = document.createElement('span');
      you.className = 'muted';
      you.textContent = '(you)';
      li.append(you);
    }
    ul.append(li);
  }
  $('member-count').textContent = String(chat.members.size);
}

function renderTyping() {
  const now = Date.now();
  for (const [user, until] of chat.typing) if (until < now) chat.typing.delete(user);
  const who = [...chat.typing.keys()].map(nameOf);
  const el = $('typing');
  el.dataset.users = who.join(',');
  el.textContent = who.length === 0 ? '' : who.length === 1 ? `${who[0]} is typing…` : `${who.join(', ')} are typing…`;
}

let lastProfile = 0;
function announce(force = false) {
  // Volatile, not numbered, not kept: tells the others which name this user id goes by.
  if (!chat || (!force && Date.now() - lastProfile < 500)) return;
  lastProfile = Date.now();
  client.publish(chat.room, { kind: 'profile', name: chat.name, cid }, { volatile: true, echo: false }).catch(() => {});
}

let readTimer = null;
function markRead(seq) {
  if (!chat || seq <= chat.lastRead) return;
  chat.pendingRead = Math.max(chat.pendingRead ?? 0, seq);
  if (document.visibilityState !== 'visible') return;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const upTo = chat.pendingRead;
    if (!upTo || upTo <= chat.lastRead) return;
    chat.lastRead = upTo;
    client.read(chat.room, upTo).catch(() => {});
  }, 200);
}
document.addEventListener('visibilitychange', () => chat?.pendingRead && markRead(chat.pendingRead));

client.on('message', (m) => {
  if (m.room === STATS_ROOM) return dashboard(m.data);
  if (!chat || m.room !== chat.room) return undefined;
  const data = m.data ?? {};
  if (data.kind === 'profile') {
    if (m.from && data.name) names.set(m.from, String(data.name));
    if (chat.members.has(m.from)) renderMembers([...chat.members]);
    return undefined;
  }
  if (data.kind !== 'chat' && typeof data !== 'string') return undefined;
  renderMessage(m);
  chat.typing.delete(m.from);
  renderTyping();
  if (data.cid !== cid && m.seq > 0) markRead(m.seq);
  return undefined;
});

client.on('presence', (p) => {
  if (!chat || p.room !== chat.room) return;
  renderMembers(p.users ?? []);
  announce(true);
});
client.on('user_joined', (p) => {
  if (!chat || p.room !== chat.room) return;
  if (p.name) names.set(p.user, p.name);
  chat.members.add(p.user);
  renderMembers([...chat.members]);
  announce();
});
client.on('user_left', (p) => {
  if (!chat || p.room !== chat.room) return;
  chat.members.delete(p.user);
  chat.typing.delete(p.user);
  renderMembers([...chat.members]);
  renderTyping();
});
client.on('typing', (p) => {
  if (!chat || p.room !== chat.room || p.user === client.user) return;
  chat.typing.set(p.user, Date.now() + 3000);
  renderTyping();
});
client.on('read', (p) => {
  if (!chat || p.room !== chat.room) return;
  chat.reads.set(p.user, Math.max(chat.reads.get(p.user) ?? 0, p.seq));
  for (const entry of chat.mine.values()) {
    if (entry.el.dataset.life === String(chat.life) && entry.seq <= p.seq && !entry.seen.has(p.user)) {
      entry.seen.add(p.user);
      showSeen(entry);
    }
  }
});
client.on('gap', (g) => {
  if (!chat || g.room !== chat.room) return;
  // The room's numbering started over (the server restarted) or history moved on: what
  // follows is replayed from what the room still has.
  chat.life += 1;
  chat.reads.clear();
  chat.lastRead = 0;
  if (g.after > 0) system('the server lost or trimmed earlier history: catching up from what it keeps');
});
client.on('welcome', (w) => {
  if (!chat) return;
  $('me-user').textContent = `(${w.user})`;
  if (chat.wasDown) {
    chat.wasDown = false;
    system('reconnected: catching up');
  }
});
setInterval(() => chat && chat.typing.size && renderTyping(), 500);

async function joinRoom(name, room) {
  chat = { room, name, life: 0, lastRead: 0, mine: new Map(), members: new Set(), typing: new Map(), reads: new Map(), wasDown: false };
  sessionStorage.setItem('hibiki.name', name);
  $('join-form').hidden = true;
  $('room-view').hidden = false;
  $('room-title').textContent = room;
  $('me-name').textContent = name;
  $('me-user').textContent = client.user ? `(${client.user})` : '';
  $('messages').replaceChildren();
  document.title = `${room} · hibiki`;
  try {
    await client.join(room, { after: 0 }); // replays the history the room keeps
    $('chat').dataset.joined = room;
  } catch (e) {
    system(`could not join: ${e.message}`);
  }
}

$('name').value = params.get('name') || sessionStorage.getItem('hibiki.name') || `guest-${cid.slice(0, 4)}`;
if (params.get('room')) $('room').value = params.get('room');
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  const room = $('room').value.trim();
  if (name && room) joinRoom(name, room);
});
$('leave').addEventListener('click', () => {
  if (!chat) return;
  client.leave(chat.room).catch(() => {});
  chat = null;
  delete $('chat').dataset.joined;
  $('room-view').hidden = true;
  $('join-form').hidden = false;
});
let lastTyping = 0;
$('text').addEventListener('input', () => {
  if (!chat || Date.now() - lastTyping < 2000) return;
  lastTyping = Date.now();
  client.typing(chat.room).catch(() => {});
});
let sent = 0;
$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!chat || !text) return;
  $('text').value = '';
  lastTyping = 0;
  sent += 1;
  const mid = `${cid}-${sent}`;
  client.publish(chat.room, { kind: 'chat', text, name: chat.name, cid, mid }).catch((err) => system(`not sent: ${err.message}`));
});
if (params.get('name') && params.get('room')) joinRoom(params.get('name'), params.get('room'));

// --- dashboard ------------------------------------------------------------------------------

const POINTS = 60;
const SERIES = [
  { key: 'connections', label: 'Connections', color: '#4f46e5' },
  { key: 'messages_in_per_sec', label: 'Messages in', unit: '/s', color: '#0891b2' },
  { key: 'messages_out_per_sec', label: 'Messages out', unit: '/s', color: '#059669' },
  { key: 'rooms', label: 'Rooms', color: '#7c3aed' },
  { key: 'dropped_volatile', label: 'Dropped (volatile)', unit: '/s', delta: true, color: '#d97706' },
  { key: 'slow_consumer_closes', label: 'Slow-consumer closes', unit: '/s', delta: true, color: '#dc2626' },
  { key: 'late_ticks', label: 'Late ticks', unit: '/s', delta: true, color: '#db2777' },
  { key: 'bytes_out_per_sec', label: 'Bytes out', unit: 'B/s', color: '#2563eb' },
];
const TOTALS = [
  ['connections_total', 'connections opened'],
  ['messages_in', 'messages in'],
  ['messages_out', 'messages out'],
  ['published', 'published'],
  ['room_members', 'memberships'],
  ['history_messages', 'in history'],
  ['dropped_volatile', 'dropped'],
  ['slow_consumer_closes', 'slow consumers'],
  ['late_ticks', 'late ticks'],
];
const SVG = 'http://www.w3.org/2000/svg';
const charts = new Map();
let previous = null;

function compact(v) {
  if (!Number.isFinite(v)) return '–';
  const abs = Math.abs(v);
  if (abs >= 1e9) return `${(v / 1e9).toFixed(1)}G`;
  if (abs >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) || abs >= 100 ? String(Math.round(v)) : v.toFixed(1);
}

for (const s of SERIES) {
  const fig = document.createElement('figure');
  fig.className = 'chart';
  fig.id = `chart-${s.key}`;
  fig.dataset.key = s.key;
  fig.dataset.samples = '0';
  const cap = document.createElement('figcaption');
  const label = document.createElement('span');
  label.textContent = s.label;
  const value = document.createElement('span');
  const number = document.createElement('span');
  number.className = 'value';
  number.textContent = '–';
  const unit = document.createElement('span');
  unit.className = 'unit';
  unit.textContent = s.unit ?? '';
  value.append(number, unit);
  cap.append(label, value);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${POINTS - 1} 100`);
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const y of [50, 99]) {
    const grid = document.createElementNS(SVG, 'line');
    grid.setAttribute('class', 'grid');
    grid.setAttribute('x1', '0');
    grid.setAttribute('x2', String(POINTS - 1));
    grid.setAttribute('y1', String(y));
    grid.setAttribute('y2', String(y));
    svg.append(grid);
  }
  const area = document.createElementNS(SVG, 'path');
  area.setAttribute('class', 'area');
  area.setAttribute('fill', s.color);
  const line = document.createElementNS(SVG, 'path');
  line.setAttribute('class', 'line');
  line.setAttribute('stroke', s.color);
  svg.append(area, line);
  fig.append(cap, svg);
  $('charts').append(fig);
  charts.set(s.key, { s, fig, number, area, line, values: [] });
}
const totals = new Map();
for (const [key, label] of TOTALS) {
  const div = document.createElement('div');
  const dt = document.createElement('dt');
  dt.textContent = label;
  const dd = document.createElement('dd');
  dd.id = `total-${key}`;
  dd.textContent = '–';
  div.append(dt, dd);
  $('totals').append(div);
  totals.set(key, dd);
}

function draw(chart) {
  const v = chart.values;
  if (v.length === 0) return;
  const top = Math.max(1, ...v) * 1.15;
  // The last POINTS samples; until there are that many, the ones there are fill the width.
  const step = v.length > 1 ? (POINTS - 1) / (Math.max(v.length, 2) - 1) : 0;
  const pts = v.map((y, i) => `${(i * step).toFixed(2)},${(100 - (y / top) * 96).toFixed(2)}`);
  if (pts.length === 1) pts.push(`${POINTS - 1},${pts[0].split(',')[1]}`);
  const d = `M${pts.join(' L')}`;
  chart.line.setAttribute('d', d);
  chart.area.setAttribute('d', `${d} L${POINTS - 1},100 L0,100 Z`);
  chart.fig.dataset.points = v.join(',');
  chart.fig.dataset.samples = String(Number(chart.fig.dataset.samples) + 1);
}

function dashboard(data) {
  if (!data || typeof data !== 'object') return;
  for (const chart of charts.values()) {
    const { key, delta } = chart.s;
    let value = Number(data[key] ?? 0);
    if (delta) value = previous ? Math.max(0, value - Number(previous[key] ?? 0)) : 0;
    chart.values.push(value);
    if (chart.values.length > POINTS) chart.values.shift();
    chart.number.textContent = compact(value);
    draw(chart);
  }
  for (const [key, dd] of totals) dd.textContent = compact(Number(data[key] ?? 0));
  previous = data;
  $('dashboard').dataset.updated = String(data.ts ?? Date.now());
}

client.join(STATS_ROOM).catch((e) => {
  $('dashboard').dataset.error = e.code ?? 'error';
});

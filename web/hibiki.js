// hibiki.js: the browser and Node client of the hibiki app protocol (`/ws`).
//
// Plain modern JavaScript, no dependency, no build step: an ES module served by
// `hibiki serve` at /hibiki.js. In Node 20, pass a WebSocket constructor (the `ws` package);
// browsers and Node 22+ have one built in. The API, the events and the reconnect/resume
// semantics are described in docs/client-js.md.
//
//   import { HibikiClient } from '/hibiki.js';
//   const client = new HibikiClient('ws://127.0.0.1:8080/ws');
//   client.on('message', (m) => console.log(m.room, m.seq, m.data));
//   await client.join('chat:lobby');
//   await client.publish('chat:lobby', { text: 'hi' });

/** Subprotocols by encoding name. */
export const PROTOCOLS = { json: 'hibiki.v1.json', msgpack: 'hibiki.v1.msgpack' };

/** The options a client starts with; every one can be overridden in the constructor. */
export const DEFAULTS = Object.freeze({
  protocol: 'json', // 'json' (text frames) or 'msgpack' (binary frames)
  token: undefined, // a JWT string, or a function returning one, sent as ?token=
  WebSocket: undefined, // a WebSocket constructor; default: globalThis.WebSocket
  ackTimeout: 5000, // ms to wait for an ack before sending again under the same id
  retries: 2, // sends after the first before a request rejects with code 'timeout'
  backoff: Object.freeze({ min: 250, base: 1000, max: 30000 }), // reconnect delays, ms
  stableAfter: 5000, // ms a connection must stay open for the backoff to start over
  pingInterval: 25000, // ms of silence after which a {"type":"ping"} goes out
  pingTimeout: 10000, // ms after a ping within which some frame must arrive
  connectTimeout: 10000, // ms for a connection to open
  positions: undefined, // {room: {seq, epoch}} to resume from (e.g. stored by a page)
  autoConnect: true, // connect in the constructor
  random: Math.random, // randomness for ids and jitter (tests pass their own)
  idPrefix: undefined, // the per-client id prefix (default: random)
});

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a loss): exponential
 * backoff with full jitter, uniform between `min` and `min(max, base * 2^attempt)`.
 */
export function backoffDelay(attempt, { min = 250, base = 1000, max = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  const low = Math.min(min, ceiling);
  return Math.round(low + random() * (ceiling - low));
}

/** A failed ack, a timeout, or an error the server sent: `.code` says which. */
export class HibikiError extends Error {
  constructor(code, message, details = undefined) {
    super(message || code);
    this.name = 'HibikiError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

// ---------------------------------------------------------------------------------------
// MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md): what the protocol
// needs, both ways. Maps have string keys; integers beyond 2^53 decode as BigInt.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  u8(x) {
    this.reserve(1);
    this.buf[this.len++] = x;
  }

  head(tag, size, n) {
    this.reserve(1 + size);
    this.buf[this.len++] = tag;
    if (size === 1) this.view.setUint8(this.len, n);
    else if (size === 2) this.view.setUint16(this.len, n);
    else if (size === 4) this.view.setUint32(this.len, n);
    this.len += size;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  int(v) {
    if (v >= 0) {
      if (v < 0x80) this.u8(v);
      else if (v < 0x100) this.head(0xcc, 1, v);
      else if (v < 0x10000) this.head(0xcd, 2, v);
      else if (v < 0x100000000) this.head(0xce, 4, v);
      else this.big(0xcf, BigInt(v));
    } else if (v >= -32) this.u8(v & 0xff);
    else if (v >= -128) {
      this.reserve(2);
      this.buf[this.len++] = 0xd0;
      this.view.setInt8(this.len++, v);
    } else if (v >= -32768) {
      this.reserve(3);
      this.buf[this.len++] = 0xd1;
      this.view.setInt16(this.len, v);
      this.len += 2;
    } else if (v >= -2147483648) {
      this.reserve(5);
      this.buf[this.len++] = 0xd2;
      this.view.setInt32(this.len, v);
      this.len += 4;
    } else this.big(0xd3, BigInt(v));
  }

  big(tag, v) {
    this.reserve(9);
    this.buf[this.len++] = tag;
    if (tag === 0xcf) this.view.setBigUint64(this.len, v);
    else this.view.setBigInt64(this.len, v);
    this.len += 8;
  }

  sized(n, fix, fixMax, tags) {
    if (fix !== null && n <= fixMax) this.u8(fix | n);
    else if (tags[0] !== null && n < 0x100) this.head(tags[0], 1, n);
    else if (n < 0x10000) this.head(tags[1], 2, n);
    else this.head(tags[2], 4, n);
  }

  value(v, depth = 0) {
    if (depth > 512) throw new RangeError('msgpack: nested too deeply');
    if (v === null || v === undefined) return this.u8(0xc0);
    switch (typeof v) {
      case 'boolean':
        return this.u8(v ? 0xc3 : 0xc2);
      case 'number':
        if (Number.isSafeInteger(v)) return this.int(v);
        this.reserve(9);
        this.buf[this.len++] = 0xcb;
        this.view.setFloat64(this.len, v);
        this.len += 8;
        return;
      case 'bigint':
        if (v >= 0n) return this.big(0xcf, BigInt.asUintN(64, v));
        return this.big(0xd3, BigInt.asIntN(64, v));
      case 'string': {
        const bytes = utf8Encoder.encode(v);
        this.sized(bytes.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
        return this.raw(bytes);
      }
      default:
        break;
    }
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
      const bytes = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      this.sized(bytes.length, null, 0, [0xc4, 0xc5, 0xc6]);
      return this.raw(bytes);
    }
    if (Array.isArray(v)) {
      this.sized(v.length, 0x90, 15, [null, 0xdc, 0xdd]);
      for (const item of v) this.value(item, depth + 1);
      return;
    }
    if (typeof v.toJSON === 'function') return this.value(v.toJSON(), depth + 1);
    const entries = Object.entries(v).filter(([, x]) => x !== undefined && typeof x !== 'function');
    this.sized(entries.length, 0x80, 15, [null, 0xde, 0xdf]);
    for (const [key, x] of entries) {
      this.value(key, depth + 1);
      this.value(x, depth + 1);
    }
  }
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) throw new RangeError('msgpack: truncated input');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  uint(size) {
    const at = this.need(size);
    if (size === 1) return this.view.getUint8(at);
    if (size === 2) return this.view.getUint16(at);
    if (size === 4) return this.view.getUint32(at);
    const v = this.view.getBigUint64(at);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  int(size) {
    const at = this.need(size);
    if (size === 1) return this.view.getInt8(at);
    if (size === 2) return this.view.getInt16(at);
    if (size === 4) return this.view.getInt32(at);
    const v = this.view.getBigInt64(at);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  str(n) {
    const at = this.need(n);
    return utf8Decoder.decode(this.bytes.subarray(at, at + n));
  }

  bin(n) {
    const at = this.need(n);
    return this.bytes.slice(at, at + n);
  }

  array(n, depth) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  map(n, depth) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = String(this.value(depth + 1));
      const v = this.value(depth + 1);
      Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  ext(n) {
    const type = this.int(1);
    return { type, data: this.bin(n) };
  }

  value(depth = 0) {
    if (depth > 512) throw new RangeError('msgpack: nested too deeply');
    const b = this.uint(1);
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b <= 0x8f) return this.map(b & 0x0f, depth);
    if (b <= 0x9f) return this.array(b & 0x0f, depth);
    if (b <= 0xbf) return this.str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.uint(1));
      case 0xc5: return this.bin(this.uint(2));
      case 0xc6: return this.bin(this.uint(4));
      case 0xc7: return this.ext(this.uint(1));
      case 0xc8: return this.ext(this.uint(2));
      case 0xc9: return this.ext(this.uint(4));
      case 0xca: return this.view.getFloat32(this.need(4));
      case 0xcb: return this.view.getFloat64(this.need(8));
      case 0xcc: return this.uint(1);
      case 0xcd: return this.uint(2);
      case 0xce: return this.uint(4);
      case 0xcf: return this.uint(8);
      case 0xd0: return this.int(1);
      case 0xd1: return this.int(2);
      case 0xd2: return this.int(4);
      case 0xd3: return this.int(8);
      case 0xd4: return this.ext(1);
      case 0xd5: return this.ext(2);
      case 0xd6: return this.ext(4);
      case 0xd7: return this.ext(8);
      case 0xd8: return this.ext(16);
      case 0xd9: return this.str(this.uint(1));
      case 0xda: return this.str(this.uint(2));
      case 0xdb: return this.str(this.uint(4));
      case 0xdc: return this.array(this.uint(2), depth);
      case 0xdd: return this.array(this.uint(4), depth);
      case 0xde: return this.map(this.uint(2), depth);
      case 0xdf: return this.map(this.uint(4), depth);
      default: throw new RangeError(`msgpack: byte 0x${b.toString(16)} is never used`);
    }
  }
}

/** MessagePack: `encode(value) -> Uint8Array`, `decode(bytes) -> value`. */
export const msgpack = Object.freeze({
  encode(value) {
    const w = new Writer();
    w.value(value);
    return w.buf.slice(0, w.len);
  },
  decode(input) {
    const bytes = input instanceof ArrayBuffer ? new Uint8Array(input) : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    const r = new Reader(bytes);
    const v = r.value();
    if (r.pos !== bytes.length) throw new RangeError('msgpack: bytes after the value');
    return v;
  },
});

// ---------------------------------------------------------------------------------------
// The client.

function randomPrefix(random) {
  const bytes = new Uint8Array(6);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

/** The first seq a history_gap answer says the server replays from. */
function oldestFrom(error) {
  return Number.isInteger(error?.oldest) ? error.oldest : null;
}

/**
 * A client of `hibiki serve`'s `/ws`: requests that resolve on their ack, events, reconnect
 * with backoff, heartbeats, and resume of every joined room from its last seq.
 */
export class HibikiClient {
  /**
   * @param {string} url  `ws://host:port/ws` (or `wss://`)
   * @param {object} options  see DEFAULTS
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...(options.backoff ?? {}) } };
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new HibikiError('no_websocket', 'no WebSocket here: pass options.WebSocket (in Node 20, the `ws` package)');
    }
    if (!PROTOCOLS[this.options.protocol]) throw new HibikiError('bad_option', `unknown protocol ${this.options.protocol}`);
    this._WS = WS;
    this._msgpack = this.options.protocol === 'msgpack';
    this._prefix = this.options.idPrefix ?? randomPrefix(this.options.random);
    this._counter = 0;
    this._listeners = new Map();
    this._pending = new Map(); // id -> request
    this._rooms = new Map(); // room -> room state
    this._ws = null;
    this._gen = 0; // connections opened
    this._attempt = 0;
    this._timers = {};
    this._closed = false;
    this._lastFrame = 0;
    this._pingSentAt = 0;
    /** 'idle', 'connecting', 'open', 'reconnecting' or 'closed'. */
    this.state = 'idle';
    /** The user id, connection id and name the server's `welcome` gave (null before). */
    this.user = null;
    this.conn = null;
    this.name = null;
    for (const [room, p] of Object.entries(this.options.positions ?? {})) {
      const seq = typeof p === 'number' ? p : p?.seq;
      if (Number.isInteger(seq)) this._room(room, false).seq = seq;
      if (p?.epoch != null) this._room(room, false).epoch = String(p.epoch);
    }
    if (this.options.autoConnect) this.connect();
  }

  // --- events ---------------------------------------------------------------------------

  /** Calls `fn` on each `event`; returns a function that removes it. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  /** Removes a listener. */
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  /** Calls `fn` on the next `event` only. */
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  _emit(event, value) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
        else setTimeout(() => { throw e; });
      }
    }
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit('state', { state, ...detail });
  }

  // --- positions --------------------------------------------------------------------------

  /** The last seq seen in `room` (null when unknown). */
  lastSeq(room) {
    return this._rooms.get(room)?.seq ?? null;
  }

  /** `{room: {seq, epoch}}` for every room with a known position: store it, pass it back as `positions`. */
  positions() {
    const out = {};
    for (const [name, r] of this._rooms) if (r.seq != null) out[name] = { seq: r.seq, epoch: r.epoch };
    return out;
  }

  /** The rooms joined (or being joined). */
  rooms() {
    return [...this._rooms.values()].filter((r) => r.wanted).map((r) => r.name);
  }

  _room(name, wanted) {
    let r = this._rooms.get(name);
    if (!r) {
      r = { name, wanted, auto: false, seq: null, epoch: null, syncing: false, buffer: [], waiters: [], gaps: 0, synced: false, target: null };
      this._rooms.set(name, r);
    }
    if (wanted) r.wanted = true;
    return r;
  }

  // --- requests --------------------------------------------------------------------------

  /**
   * Joins `room`; resolves once joined (and, with a known position, caught up). With
   * `{after: N}` and no position known yet, the room is resumed from seq N: `after: 0`
   * replays the history the room still keeps.
   */
  join(room, { after } = {}) {
    if (this._closed) return Promise.reject(new HibikiError('closed', 'the client is closed'));
    const r = this._room(room, true);
    if (r.seq == null && Number.isInteger(after) && after >= 0) r.seq = after;
    if (r.synced && !r.syncing && this.state === 'open') return Promise.resolve({ ok: true, room, seq: r.seq });
    const done = new Promise((resolve, reject) => r.waiters.push({ resolve, reject }));
    if (this.state === 'open' && !r.syncing) this._subscribe(r);
    return done;
  }

  /** Leaves `room` and forgets its position. */
  leave(room) {
    const r = this._rooms.get(room);
    this._rooms.delete(room);
    r?.waiters.splice(0).forEach((w) => w.reject(new HibikiError('left', `left ${room}`)));
    if (this.state !== 'open') return Promise.resolve({ ok: true });
    return this.request('leave', { room });
  }

  /** Publishes `data` to `room`; resolves with the ack (`{id, ok, seq}`). */
  publish(room, data, { volatile, key, echo } = {}) {
    const payload = { room, data };
    if (volatile !== undefined) payload.volatile = !!volatile;
    if (key !== undefined) payload.key = String(key);
    if (echo !== undefined) payload.echo = !!echo;
    return this.request('publish', payload);
  }

  /** Sends `data` to every connection of `user` (room `user:USER`). */
  direct(user, data) {
    return this.request('direct', { user, data });
  }

  /** Tells the other members of `room` this user is typing. */
  typing(room) {
    return this.request('typing', { room });
  }

  /** Tells the other members of `room` this user has read up to `seq`. */
  read(room, seq) {
    return this.request('read', { room, seq });
  }

  /**
   * Sends `{type, id, payload}` and resolves with the ack's payload when ok; rejects with a
   * HibikiError (`.code` from the server, or 'timeout' after the retries, or 'closed').
   * A request made while disconnected goes out when the next connection opens.
   */
  request(type, payload = {}) {
    return this._request(type, payload, null);
  }

  _nextId() {
    this._counter += 1;
    return `${this._prefix}-${this._counter}`;
  }

  /** `room` set: an internal join/resume, bound to the connection it was sent on. */
  _request(type, payload, room) {
    if (this._closed) return Promise.reject(new HibikiError('closed', 'the client is closed'));
    return new Promise((resolve, reject) => {
      const req = { id: this._nextId(), type, payload, room, gen: this._gen, sends: 0, timer: null, resolve, reject };
      this._pending.set(req.id, req);
      if (this.state === 'open') this._transmit(req);
      this._arm(req);
    });
  }

  _transmit(req) {
    req.sends += 1;
    req.gen = this._gen;
    this._send({ type: req.type, id: req.id, payload: req.payload });
  }

  _arm(req) {
    clearTimeout(req.timer);
    req.timer = setTimeout(() => this._expired(req), this.options.ackTimeout);
  }

  _expired(req) {
    if (this._pending.get(req.id) !== req) return;
    if (req.sends <= this.options.retries) {
      // The same id again: the server answers a repeat without doing it twice.
      if (this.state === 'open') this._transmit(req);
      else req.sends += 1;
      this._arm(req);
      return;
    }
    this._pending.delete(req.id);
    const error = new HibikiError('timeout', `no ack for ${req.type} after ${req.sends} attempts`, { id: req.id });
    req.reject(error);
    if (req.room && this.state === 'open') {
      // The server does not answer this connection: start over on a new one.
      this._emit('error', error);
      this._drop('ack timeout');
    }
  }

  _settle(id, ack) {
    const req = this._pending.get(id);
    if (!req) return;
    this._pending.delete(id);
    clearTimeout(req.timer);
    if (ack.ok === true) req.resolve(ack);
    else {
      const e = ack.error ?? {};
      req.reject(new HibikiError(e.code ?? 'error', e.message ?? 'refused', ack));
    }
  }

  // --- rooms: join, resume, gaps -----------------------------------------------------------

  /** (Re)subscribes a room on the open connection. */
  _subscribe(r) {
    r.syncing = true;
    r.buffer = [];
    r.gaps = 0;
    r.target = null;
    clearTimeout(r.flushTimer);
    if (r.seq == null) {
      // No position: a plain join; presence gives the room's seq at the join.
      const gen = this._gen;
      this._request('join', { room: r.name }, r.name).then(
        () => gen === this._gen && this._synced(r, null),
        (e) => this._failed(r, e),
      );
      return;
    }
    // A resume is a join: presence comes, the others see the user.
    this._resume(r);
  }

  _resume(r) {
    const gen = this._gen;
    const payload = { room: r.name, after: r.seq };
    if (r.epoch != null) payload.epoch = r.epoch;
    this._request('resume', payload, r.name).then(
      (ack) => {
        if (this._rooms.get(r.name) !== r || gen !== this._gen) return;
        if (ack.epoch != null) r.epoch = String(ack.epoch);
        this._caughtUpAt(r, Number.isInteger(ack.seq) ? ack.seq : null);
      },
      (e) => {
        if (this._rooms.get(r.name) !== r || gen !== this._gen) return;
        if (e.code === 'history_gap') this._gap(r, e.details?.error ?? {}, e.details?.joined);
        else this._failed(r, e);
      },
    );
  }

  /**
   * The resume answered the room's seq: the room is caught up once every message up to it
   * came. A server may replay before its ack or after it, so messages stay held until one
   * with that seq is there (at once when nothing is owed), or until `ackTimeout` passed.
   */
  _caughtUpAt(r, seq) {
    r.target = seq;
    if (seq == null || seq <= (r.seq ?? 0) || r.buffer.some((m) => m.seq >= seq)) {
      this._synced(r, seq);
      return;
    }
    clearTimeout(r.flushTimer);
    r.flushTimer = setTimeout(() => r.syncing && this._rooms.get(r.name) === r && this._synced(r, null), this.options.ackTimeout);
  }

  _gap(r, error, joined) {
    const oldest = oldestFrom(error);
    const gap = {
      room: r.name,
      after: r.seq,
      oldest,
      seq: Number.isInteger(error.seq) ? error.seq : null,
      epoch: error.epoch ?? null,
      message: error.message ?? '',
    };
    this._emit('gap', gap);
    r.gaps += 1;
    // From now on, the room's current life from what it still keeps.
    r.seq = oldest != null ? Math.max(0, oldest - 1) : 0;
    r.epoch = error.epoch != null ? String(error.epoch) : null;
    if (joined === true && oldest != null) {
      // The server replays from `oldest` after this answer: wait for it.
      this._caughtUpAt(r, gap.seq);
      return;
    }
    if (r.gaps > 2) {
      // History keeps moving away: take what is buffered and continue live.
      r.seq = null;
      this._synced(r, null);
      return;
    }
    // A server that answers the gap without replaying: ask again from there.
    this._resume(r);
  }

  /** A gap told while in the room: a hole history could not fill, or a new epoch. */
  _liveGap(p) {
    const r = this._rooms.get(p.room);
    if (!r) return;
    this._emit('gap', {
      room: r.name,
      after: r.seq,
      oldest: Number.isInteger(p.oldest) ? p.oldest : null,
      seq: Number.isInteger(p.seq) ? p.seq : null,
      epoch: p.epoch ?? null,
      message: p.message ?? '',
    });
    if (Number.isInteger(p.oldest)) r.seq = Math.max(0, p.oldest - 1);
    if (p.epoch != null) r.epoch = String(p.epoch);
  }

  _synced(r, seq) {
    if (this._rooms.get(r.name) !== r) return;
    clearTimeout(r.flushTimer);
    const buffered = r.buffer.sort((a, b) => a.seq - b.seq);
    r.buffer = [];
    r.syncing = false;
    r.synced = true;
    for (const m of buffered) this._deliver(r, m);
    if (seq != null && (r.seq == null || seq > r.seq)) r.seq = seq;
    for (const w of r.waiters.splice(0)) w.resolve({ ok: true, room: r.name, seq: r.seq });
  }

  /** A join or resume failed: refused (the room is given up), or timed out. */
  _failed(r, error) {
    if (error.code === 'closed' || error.code === 'stale') return;
    if (error.code === 'unavailable') {
      // Room state out of reach for now; nothing took effect: try again in a while.
      const gen = this._gen;
      clearTimeout(r.retryTimer);
      r.retryTimer = setTimeout(() => {
        if (gen === this._gen && this.state === 'open' && this._rooms.get(r.name) === r) this._subscribe(r);
      }, backoffDelay(r.gaps, this.options.backoff, this.options.random));
      return;
    }
    // A timeout already replaced the connection: a room joined before is subscribed again
    // on the next one; a first join is given up, its join() rejected.
    if (error.code === 'timeout' && r.synced) return;
    if (this._rooms.get(r.name) !== r) return;
    this._rooms.delete(r.name);
    for (const w of r.waiters.splice(0)) w.reject(error);
    this._emit('error', error);
  }

  _deliver(r, m) {
    if (r.seq != null && m.seq <= r.seq) return; // seen already: never twice
    r.seq = m.seq;
    this._emit('message', m);
  }

  // --- incoming --------------------------------------------------------------------------

  _decode(data) {
    if (typeof data === 'string') return JSON.parse(data);
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    if (!this._msgpack) return JSON.parse(utf8Decoder.decode(bytes));
    return msgpack.decode(bytes);
  }

  _dispatch(env) {
    if (!env || typeof env !== 'object') return;
    const p = env.payload ?? {};
    this._emit('envelope', env);
    switch (env.type) {
      case 'welcome':
        return this._welcome(p);
      case 'ack':
        return this._settle(p.id ?? env.id, p);
      case 'batch':
        if (Array.isArray(p)) for (const item of p) this._dispatch(item);
        return;
      case 'message':
        return this._message(p);
      case 'presence': {
        const r = this._rooms.get(p.room);
        if (r && !r.syncing) {
          if (r.seq == null && Number.isInteger(p.seq)) r.seq = p.seq;
          if (r.epoch == null && p.epoch != null) r.epoch = String(p.epoch);
        } else if (r && r.seq == null && Number.isInteger(p.seq)) {
          r.seq = p.seq;
          if (p.epoch != null) r.epoch = String(p.epoch);
        }
        return this._emit('presence', p);
      }
      case 'user_joined':
      case 'user_left':
        return this._emit(env.type, p);
      case 'user_typing':
        return this._emit('typing', p);
      case 'messages_read':
        return this._emit('read', p);
      case 'error': {
        if (p.code === 'history_gap' && p.room) this._liveGap(p);
        const id = env.id ?? p.id;
        if (id != null && this._pending.has(id)) return this._settle(id, { ok: false, error: p });
        return this._emit('error', new HibikiError(p.code ?? 'error', p.message ?? 'error', p));
      }
      default:
        return undefined;
    }
  }

  _welcome(p) {
    const previous = this.user;
    this.user = p.user ?? null;
    this.conn = p.conn ?? null;
    this.name = p.name ?? null;
    if (previous && previous !== this.user) {
      const old = this._rooms.get(`user:${previous}`);
      if (old?.auto) this._rooms.delete(old.name);
    }
    if (this.user) {
      // The server puts every connection in its user's room; resume it too, so direct
      // messages sent while away arrive (when the user is the same, as with a token).
      const own = this._room(`user:${this.user}`, false);
      own.auto = true;
      own.wanted = false;
      if (own.seq != null && !own.syncing) this._subscribe(own);
    }
    this._emit('welcome', p);
  }

  _message(m) {
    const r = this._rooms.get(m.room);
    if (!r || !Number.isInteger(m.seq) || m.seq <= 0) return this._emit('message', m); // volatile: as it comes
    if (r.syncing && r.seq != null) {
      r.buffer.push(m);
      if (r.target != null && m.seq >= r.target) this._synced(r, r.target);
      return undefined;
    }
    return this._deliver(r, m);
  }

  // --- the connection --------------------------------------------------------------------

  /** Connects (again, after close()). */
  connect() {
    if (this._ws) return;
    this._closed = false;
    clearTimeout(this._timers.retry);
    this._open();
  }

  _url() {
    const token = typeof this.options.token === 'function' ? this.options.token() : this.options.token;
    if (!token) return this.url;
    return `${this.url}${this.url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
  }

  _open() {
    this._setState('connecting', { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WS(this._url(), [PROTOCOLS[this.options.protocol]]);
    } catch (e) {
      this._emit('error', e);
      this._down(null, 1006, String(e?.message ?? e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._timers.connect = setTimeout(() => this._drop('connect timeout'), this.options.connectTimeout);
    ws.onopen = () => this._opened(ws);
    ws.onmessage = (event) => this._frame(ws, event.data);
    ws.onclose = (event) => this._down(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close follows
  }

  _opened(ws) {
    if (ws !== this._ws) return;
    clearTimeout(this._timers.connect);
    this._gen += 1;
    this._lastFrame = Date.now();
    this._pingSentAt = 0;
    this._setState('open', { attempt: this._attempt });
    this._timers.stable = setTimeout(() => {
      this._attempt = 0;
    }, this.options.stableAfter);
    const tick = Math.max(20, Math.min(this.options.pingInterval, this.options.pingTimeout) / 4);
    this._timers.heartbeat = setInterval(() => this._heartbeat(), tick);
    for (const r of this._rooms.values()) if (r.wanted) this._subscribe(r);
    for (const req of this._pending.values()) if (!req.room) this._transmit(req);
  }

  _frame(ws, data) {
    if (ws !== this._ws) return;
    this._lastFrame = Date.now();
    let env;
    try {
      env = this._decode(data);
    } catch (e) {
      this._emit('error', new HibikiError('bad_frame', `undecodable frame: ${e.message}`));
      return;
    }
    this._dispatch(env);
  }

  _heartbeat() {
    const now = Date.now();
    const { pingInterval, pingTimeout } = this.options;
    if (this._pingSentAt && this._lastFrame < this._pingSentAt) {
      if (now - this._pingSentAt >= pingTimeout) this._drop('heartbeat timeout');
      return;
    }
    if (now - this._lastFrame >= pingInterval) {
      this._pingSentAt = now;
      this._send({ type: 'ping' });
    }
  }

  _send(env) {
    const ws = this._ws;
    if (!ws || this.state !== 'open') return false;
    try {
      ws.send(this._msgpack ? msgpack.encode(env) : JSON.stringify(env));
      return true;
    } catch (e) {
      this._emit('error', e);
      return false;
    }
  }

  /** Gives up on the current connection at once (without waiting for its close handshake). */
  _drop(reason) {
    const ws = this._ws;
    if (!ws) return;
    this._down(ws, 4000, reason);
    try {
      ws.close(4000, reason);
    } catch {
      // already closing
    }
  }

  _down(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    for (const name of ['connect', 'stable', 'heartbeat']) {
      clearTimeout(this._timers[name]);
      clearInterval(this._timers[name]);
    }
    for (const r of this._rooms.values()) {
      r.syncing = false;
      r.buffer = [];
      r.target = null;
      clearTimeout(r.flushTimer);
      clearTimeout(r.retryTimer);
    }
    const stale = new HibikiError('stale', 'the connection was lost');
    for (const req of [...this._pending.values()]) {
      // Joins and resumes belong to their connection: the next one subscribes again.
      if (req.room) {
        clearTimeout(req.timer);
        this._pending.delete(req.id);
        req.reject(stale);
      }
    }
    if (this._closed) {
      this._setState('closed', { code, reason });
      return;
    }
    const delay = backoffDelay(this._attempt, this.options.backoff, this.options.random);
    this._attempt += 1;
    this._setState('reconnecting', { delay, attempt: this._attempt, code, reason });
    this._timers.retry = setTimeout(() => this._open(), delay);
  }

  /** Closes for good (until connect()): pending requests reject with code 'closed'. */
  close() {
    this._closed = true;
    clearTimeout(this._timers.retry);
    const error = new HibikiError('closed', 'the client was closed');
    for (const req of this._pending.values()) {
      clearTimeout(req.timer);
      req.reject(error);
    }
    this._pending.clear();
    for (const r of this._rooms.values()) for (const w of r.waiters.splice(0)) w.reject(error);
    const ws = this._ws;
    if (ws) {
      this._down(ws, 1000, 'closed by the client');
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closing
      }
    } else if (this.state !== 'closed') {
      this._setState('closed', { code: 1000, reason: 'closed by the client' });
    }
  }
}

// A plain <script type="module" src="/hibiki.js"> also leaves the API on window.Hibiki.
if (typeof window !== 'undefined' && !window.Hibiki) {
  window.Hibiki = { HibikiClient, HibikiError, backoffDelay, msgpack, PROTOCOLS, DEFAULTS };
}

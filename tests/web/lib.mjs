// Helpers shared by the Node and browser tests: the `hibiki` binary on a free port, waiting
// for conditions, tokens.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The built `hibiki` binary: $HIBIKI_BIN, else $CARGO_TARGET_DIR/debug/hibiki, else target/debug/hibiki. */
export function hibikiBin() {
  const bin =
    process.env.HIBIKI_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'debug', 'hibiki');
  if (!existsSync(bin)) throw new Error(`no hibiki binary at ${bin}: run \`cargo build --bin hibiki\` first (or set HIBIKI_BIN)`);
  return bin;
}

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 20 ms until it returns something truthy; throws after `timeout` ms. */
export async function waitFor(check, timeout, what) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(20);
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Starts `hibiki serve --listen 127.0.0.1:PORT` (a free port unless given) and waits until it
 * accepts connections. `stop()` sends SIGTERM, `kill()` SIGKILL; both wait for the exit.
 */
export async function startServer({ port, args = [] } = {}) {
  port ??= await freePort();
  const child = spawn(hibikiBin(), ['serve', '--listen', `127.0.0.1:${port}`, '--threads', '2', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let gone = false;
  exited.then(() => {
    gone = true;
  });
  await waitFor(async () => {
    if (gone) throw new Error(`hibiki serve exited at start: ${stderr}`);
    return canConnect(port);
  }, 10000, `hibiki serve on port ${port}`);
  const end = async (signal) => {
    if (!gone) child.kill(signal);
    return exited;
  };
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    http: `http://127.0.0.1:${port}`,
    child,
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    stderr: () => stderr,
  };
}

/** An HS256 JWT for `--jwt-secret secret`. */
export function token(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** Records a client's events of the given names, in order. */
export function record(client, names) {
  const events = [];
  for (const name of names) client.on(name, (value) => events.push({ name, value }));
  return {
    events,
    of: (name) => events.filter((e) => e.name === name).map((e) => e.value),
  };
}

/**
 * A TCP proxy on a free port in front of `port`: `cut()` drops every connection through it at
 * once (no close frame), as a lost network would.
 */
export async function proxy(port) {
  const sockets = new Set();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(port, '127.0.0.1');
    for (const [a, b] of [[inbound, outbound], [outbound, inbound]]) {
      sockets.add(a);
      a.on('data', (d) => b.write(d));
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
      a.on('error', () => b.destroy());
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const listen = server.address().port;
  return {
    url: `ws://127.0.0.1:${listen}/ws`,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(resolve);
    }),
  };
}

//! Reading on a worker: plain and TLS connections, the read budget per turn, the plaintext
//! a TLS connection decrypts into the worker's buffer, and the end of a read burst.

use std::io;

use super::Handler;
use super::conn::{Conn, Input, Phase};
use super::stats::{Rejection, WorkerStats};
use super::sys;
use super::tls::Fed;
use super::worker::{READ_SIZE, Worker};

/// Bytes read from one connection per loop turn before the others get their turn (and the
/// queues are flushed); the rest is read next turn.
const READ_BUDGET: u32 = 512 * 1024;
/// First read of a request head on a plain connection.
const HEAD_READ: usize = 1024;
/// The answer to a plain HTTP request on a TLS port.
const PLAIN_HTTP_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 45\r\nConnection: close\r\n\r\nthis port speaks TLS: use https:// or wss://\n";

/// What one `recv` on a connection gave, for the read loops of plain and TLS connections.
enum Recv {
    /// Bytes, accounted; `more`: read again this turn (the read filled the buffer, or the
    /// caller drains).
    Bytes { more: bool },
    /// End of stream.
    Eof,
    /// Nothing more to read now.
    Blocked,
    /// Interrupted: read again.
    Again,
    /// The socket failed.
    Failed,
}

impl Recv {
    /// Sorts `result`; bytes count on `conn` (read budget, last sign of life) and in `stats`.
    fn took(
        result: io::Result<(usize, bool)>,
        drain: bool,
        conn: &mut Conn,
        tick: u64,
        stats: WorkerStats<'_>,
    ) -> Self {
        match result {
            Ok((0, _)) => Self::Eof,
            Ok((n, full)) => {
                conn.note_read(n, tick);
                stats.bytes_in(n);
                Self::Bytes { more: full || drain }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Self::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Self::Again,
            Err(_) => Self::Failed,
        }
    }
}

impl Conn {
    /// Starts the read budget afresh in a new loop turn; whether this turn's is spent.
    fn budget_spent(&mut self, turn: u32) -> bool {
        if self.read_turn != turn {
            self.read_turn = turn;
            self.read_used = 0;
        }
        self.read_used >= READ_BUDGET
    }
}

impl<H: Handler> Worker<H> {
    /// Reads and handles what a connection sent. `drain` reads until the socket would block;
    /// otherwise a short read ends the burst (the receive queue was empty, and edge-triggered
    /// readiness fires again for anything that arrives later), which saves a `recv` that
    /// would only say `EAGAIN`. End of stream always comes with `drain` (read-closed events).
    pub(super) fn on_readable(&mut self, key: usize, drain: bool) {
        if self.core.conns.get(key).is_some_and(|c| c.tls.is_some()) {
            self.on_tls_readable(key, drain);
            return;
        }
        let turn = self.turn;
        let mut more = true;
        while more {
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            if conn.budget_spent(turn) {
                // Edge-triggered: no new event will come for these bytes; come back next turn.
                self.more_to_read.push(key);
                break;
            }
            let own_buffer = !conn.input.is_empty() || !matches!(conn.phase, Phase::Open(_));
            let want = match &conn.phase {
                Phase::Open(ws) => ws.bytes_needed(&conn.input).unwrap_or(0).clamp(4096, READ_SIZE * 16),
                // A request head is a few hundred bytes: a small first buffer keeps a connect
                // storm from scattering 4 KiB buffers through the heap (a longer head grows it).
                _ => HEAD_READ,
            };
            let result = if own_buffer {
                sys::read_buf(&conn.stream, &mut conn.input, want)
            } else {
                sys::read_buf(&conn.stream, &mut self.rbuf, READ_SIZE)
            };
            match Recv::took(result, drain, conn, self.core.tick, self.core.stats.worker(self.core.index)) {
                Recv::Bytes { more: m } => more = m,
                Recv::Blocked => break,
                Recv::Again => continue,
                Recv::Eof => {
                    self.on_eof(key);
                    return;
                }
                Recv::Failed => {
                    self.drop_abnormal(key);
                    return;
                }
            }
            if conn.life.is_lingering() {
                // Lingering: the answer is out, what the peer still sends is discarded.
                conn.input = Input::default();
                self.rbuf.clear();
                continue;
            }
            match conn.phase {
                Phase::Handshake { .. } => self.on_request_bytes(key),
                Phase::Open(_) => {
                    if own_buffer {
                        let mut input = self.core.conns[key].input.take();
                        self.on_frames(key, &mut input);
                        if let Some(conn) = self.core.conns.get_mut(key) {
                            conn.input = input.into();
                        }
                    } else {
                        let mut input = std::mem::take(&mut self.rbuf);
                        self.on_frames(key, &mut input);
                        if !input.is_empty() {
                            if let Some(conn) = self.core.conns.get_mut(key) {
                                // Keep the unfinished frame with its connection.
                                conn.input.extend_from_slice(&input);
                            }
                            input.clear();
                        }
                        self.rbuf = input;
                    }
                }
                Phase::Http | Phase::Stream | Phase::Deferred { .. } => conn.input = Input::default(),
            }
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            conn.input.release();
        }
        self.finish_read(key);
    }

    /// [`Worker::on_readable`] for a TLS connection: the ciphertext comes into the worker's
    /// read buffer, rustls decrypts it into the worker's plaintext buffer (or the connection's
    /// own, when it holds an unfinished request or frame), and the plaintext goes where a
    /// plain connection's bytes go.
    pub(super) fn on_tls_readable(&mut self, key: usize, drain: bool) {
        let turn = self.turn;
        let mut more = true;
        while more {
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            if conn.budget_spent(turn) {
                // Edge-triggered: no new event will come for these bytes; come back next turn.
                self.more_to_read.push(key);
                break;
            }
            let result = sys::read_buf(&conn.stream, &mut self.rbuf, READ_SIZE);
            match Recv::took(result, drain, conn, self.core.tick, self.core.stats.worker(self.core.index)) {
                Recv::Bytes { more: m } => more = m,
                Recv::Blocked => break,
                Recv::Again => continue,
                Recv::Eof => {
                    self.rbuf.clear();
                    if conn.tls.as_ref().is_some_and(|t| !t.fresh && t.session.is_handshaking()) {
                        // Gone mid-handshake (a client that refused the certificate, say).
                        self.core.stats().rejected(Rejection::Tls);
                    }
                    self.on_eof(key);
                    return;
                }
                Recv::Failed => {
                    self.drop_abnormal(key);
                    return;
                }
            }
            let Some(tls) = conn.tls.as_deref_mut().filter(|_| !conn.life.is_lingering()) else {
                // Lingering (or refused, with only the alert left to flush): discarded.
                self.rbuf.clear();
                continue;
            };
            // Past the handshake, plaintext goes to the worker's buffer, after the unfinished
            // frame the connection kept (if any). A long one (a large message coming in over
            // many reads) grows in its own buffer instead: copied in and out at every read, it
            // would cost the square of its length.
            let own_buffer = !matches!(conn.phase, Phase::Open(_)) || conn.input.len() > READ_SIZE;
            let mut plain = if own_buffer { conn.input.take() } else { std::mem::take(&mut self.tls_plain) };
            let prefix: &[u8] = if own_buffer { &[] } else { &conn.input };
            let fed = tls.feed(&self.rbuf, prefix, &mut plain);
            if !own_buffer && !plain.is_empty() {
                conn.input.clear();
            }
            self.rbuf.clear();
            if tls.session.wants_write() {
                // The handshake's flight, a key update, a ticket: out at the end of the turn.
                self.core.mark_dirty(key);
            }
            let closed = match fed {
                Fed::Ok => false,
                Fed::Closed => true,
                Fed::PlainHttp => {
                    self.refuse_tls(key, true);
                    return;
                }
                Fed::Failed(error) => {
                    tracing::debug!(conn = %self.core.id_of(key), %error, "TLS refused");
                    self.refuse_tls(key, false);
                    return;
                }
            };
            let conn = &mut self.core.conns[key];
            match conn.phase {
                Phase::Handshake { .. } => {
                    conn.input = plain.into();
                    if !conn.input.is_empty() {
                        self.on_request_bytes(key);
                    }
                }
                Phase::Open(_) if own_buffer => {
                    self.on_frames(key, &mut plain);
                    if let Some(conn) = self.core.conns.get_mut(key) {
                        conn.input = plain.into();
                    }
                }
                Phase::Open(_) => {
                    self.on_frames(key, &mut plain);
                    if !plain.is_empty() {
                        if let Some(conn) = self.core.conns.get_mut(key) {
                            // Keep the unfinished frame with its connection.
                            conn.input.extend_from_slice(&plain);
                        }
                        plain.clear();
                    }
                    self.tls_plain = plain;
                }
                Phase::Http | Phase::Stream | Phase::Deferred { .. } => {}
            }
            if closed {
                self.on_eof(key);
                return;
            }
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            conn.input.release();
        }
        self.finish_read(key);
    }

    /// Refuses a TLS connection that did not get through its handshake, counted: a plain
    /// HTTP request is answered 400 in plain text, anything else rustls refused gets its
    /// alert; then the connection lingers without its TLS state, discarding what comes.
    /// Past the handshake, a TLS failure just ends the connection.
    pub(super) fn refuse_tls(&mut self, key: usize, plain_http: bool) {
        let conn = &mut self.core.conns[key];
        let Some(mut tls) = conn.tls.take() else { return };
        if !matches!(conn.phase, Phase::Handshake { .. }) {
            let _ = tls.write_out(&mut conn.stream, &mut 0);
            self.drop_abnormal(key);
            return;
        }
        self.core.stats().rejected(Rejection::Tls);
        let answer = if plain_http { PLAIN_HTTP_TO_TLS.to_vec() } else { tls.take_pending() };
        drop(tls);
        self.core.respond_raw(key, &answer);
    }

    /// End of a read burst: write the corked replies, and the connection's own queue.
    pub(super) fn finish_read(&mut self, key: usize) {
        if let Err((owner, _)) = self.core.uncork().map_err(|e| (key, e)) {
            self.drop_abnormal(owner);
            return;
        }
        if self.core.conns.get(key).is_some_and(|c| c.life.is_lingering()) {
            self.core.mark_dirty(key);
        }
    }
}

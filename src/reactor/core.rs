//! The part of a worker that callbacks reach: its connections, sending, corking, admission
//! and closing.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use slab::Slab;

use super::conn::{Conn, Input, Life, NO_TIMER, Phase, stamp};
use super::handle::{ConnId, Handle};
use super::http::write_head;
use super::stats::{Rejection, Stats, WorkerStats};
use super::timers::{TICK, Wheel};
use super::{HttpResponse, ServerConfig};
use crate::proto::{CloseCode, MessageKind};

/// Frames up to this size are copied into the cork rather than queued as their own iovec.
const CORK_COPY_MAX: usize = 2048;

/// The part of a worker that callbacks reach through [`Ctx`] and [`WorkerCtx`].
pub(crate) struct Core<C> {
    pub(crate) index: usize,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) conns: Slab<Conn>,
    pub(crate) now: Instant,
    pub(crate) tick: u64,
    pub(crate) handle: Option<Handle<C>>,
    pub(crate) stats: Arc<Stats>,
    /// Replies to the connection being served, written at once at the end of its read.
    pub(crate) cork: BytesMut,
    pub(crate) cork_owner: Option<usize>,
    /// Connections with queued frames to flush, first marked first: a turn flushes a slice
    /// of them ([`flush_slice`](super::worker::flush_slice)), the next turn goes on.
    pub(crate) dirty: VecDeque<usize>,
    pub(crate) next_generation: u32,
    pub(crate) wheel: Wheel,
    /// How long the last app tick took, from its start until its frames were written.
    pub(crate) last_tick_work: Option<Duration>,
}

impl<C: Send + 'static> Core<C> {
    pub(crate) fn handle(&self) -> &Handle<C> {
        self.handle.as_ref().expect("the handle is set before the worker runs")
    }

    pub(crate) fn stats(&self) -> WorkerStats<'_> {
        self.stats.worker(self.index)
    }

    fn key(&self, id: ConnId) -> Option<usize> {
        if id.worker() != self.index {
            return None;
        }
        let key = id.slot();
        let conn = self.conns.get(key)?;
        (ConnId::new(self.index, key, conn.generation) == id).then_some(key)
    }

    pub(crate) fn id_of(&self, key: usize) -> ConnId {
        ConnId::new(self.index, key, self.conns[key].generation)
    }

    pub(crate) fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        self.key(id).map(|key| self.conns[key].peer.addr())
    }

    pub(crate) fn is_open(&self, id: ConnId) -> bool {
        self.key(id).is_some_and(|key| match &self.conns[key].phase {
            Phase::Open(ws) => ws.can_send() && !self.conns[key].life.is_lingering(),
            _ => false,
        })
    }

    pub(crate) fn buffered(&self, id: ConnId) -> usize {
        self.key(id).map_or(0, |key| {
            let corked = if self.cork_owner == Some(key) { self.cork.len() } else { 0 };
            self.conns[key].out.queued() + corked
        })
    }

    pub(crate) fn mark_dirty(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push_back(key);
        }
    }

    /// Whether a frame of `len` bytes may be queued to `key`; closes a slow consumer.
    fn admit(&mut self, key: usize, len: usize, volatile: bool) -> bool {
        let queued = self.conns[key].out.queued();
        if volatile && queued > self.config.soft_outbound_limit {
            self.stats().dropped_volatile();
            return false;
        }
        if queued + len > self.config.hard_outbound_limit {
            self.slow_consumer(key);
            return false;
        }
        true
    }

    fn slow_consumer(&mut self, key: usize) {
        self.stats().slow_consumer();
        let conn = &mut self.conns[key];
        conn.out.drop_unstarted();
        let mut close = BytesMut::new();
        if let Phase::Open(ws) = &mut conn.phase {
            let _ = ws.close(CloseCode::POLICY_VIOLATION, "slow consumer", &mut close);
        }
        conn.out.push_control(&close);
        conn.close_code.get_or_insert_with(|| Box::new((CloseCode::POLICY_VIOLATION, String::new())));
        conn.life = conn.life.linger(self.tick);
        self.mark_dirty(key);
        self.reschedule(key);
    }

    pub(crate) fn send(&mut self, id: ConnId, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(key) = self.key(id) else { return false };
        if self.cork_owner == Some(key) {
            let conn = &mut self.conns[key];
            let Phase::Open(ws) = &mut conn.phase else { return false };
            if ws.send(kind, payload, &mut self.cork).is_err() {
                return false;
            }
            self.stats().messages_out(1);
            return true;
        }
        if !self.admit(key, payload.len(), false) {
            return false;
        }
        let mut frame = BytesMut::new();
        let conn = &mut self.conns[key];
        let Phase::Open(ws) = &mut conn.phase else { return false };
        if ws.send(kind, payload, &mut frame).is_err() {
            return false;
        }
        conn.out.push(frame.freeze());
        self.stats().messages_out(1);
        self.mark_dirty(key);
        true
    }

    pub(crate) fn send_frame(&mut self, id: ConnId, frame: &Bytes, volatile: bool) -> bool {
        let Some(key) = self.key(id) else { return false };
        {
            let conn = &self.conns[key];
            let Phase::Open(ws) = &conn.phase else { return false };
            if !ws.can_send() || conn.life.is_lingering() {
                return false;
            }
        }
        if !self.admit(key, frame.len(), volatile) {
            return false;
        }
        self.stats().messages_out(1);
        if self.cork_owner == Some(key) {
            if frame.len() <= CORK_COPY_MAX {
                self.cork.extend_from_slice(frame);
                return true;
            }
            // Keep the order: what is corked goes first.
            let corked = self.cork.split().freeze();
            self.conns[key].out.push(corked);
        }
        self.conns[key].out.push(frame.clone());
        self.mark_dirty(key);
        true
    }

    /// Queues raw bytes to a stream (an SSE answer).
    pub(crate) fn send_raw(&mut self, id: ConnId, bytes: &Bytes) -> bool {
        let Some(key) = self.key(id) else { return false };
        if !matches!(self.conns[key].phase, Phase::Stream) || self.conns[key].life.is_lingering() {
            return false;
        }
        if !self.admit(key, bytes.len(), false) {
            return false;
        }
        self.conns[key].out.push(bytes.clone());
        self.mark_dirty(key);
        true
    }

    /// Whether a connection takes frames compressed once for many with a 15-bit window.
    pub(crate) fn is_compressed(&self, id: ConnId) -> bool {
        self.key(id).is_some_and(|key| match &self.conns[key].phase {
            Phase::Open(ws) => ws.shared_compression().is_some_and(|(_, bits)| bits == 15),
            _ => false,
        })
    }

    pub(crate) fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        let Some(key) = self.key(id) else { return false };
        self.close_key(key, code, reason)
    }

    /// Closes a connection as a slow consumer: frames not yet started are dropped, 1008 goes
    /// out next, counted in the stats.
    pub(crate) fn close_slow(&mut self, id: ConnId) -> bool {
        let Some(key) = self.key(id) else { return false };
        if !matches!(self.conns[key].phase, Phase::Open(_)) || self.conns[key].life != Life::Running {
            return false;
        }
        self.slow_consumer(key);
        true
    }

    pub(crate) fn close_key(&mut self, key: usize, code: CloseCode, reason: &str) -> bool {
        let corked = self.cork_owner == Some(key);
        let conn = &mut self.conns[key];
        let Phase::Open(ws) = &mut conn.phase else { return false };
        let out = if corked { &mut self.cork } else { &mut BytesMut::new() };
        let start = out.len();
        if ws.close(code, reason, out).is_err() {
            return false;
        }
        if !corked {
            let frame = out.split_off(start);
            conn.out.push(frame.freeze());
        }
        if conn.life == Life::Running {
            conn.life = Life::ClosingHandshake { since: stamp(self.tick) };
        }
        self.mark_dirty(key);
        self.reschedule(key);
        true
    }

    /// Puts a connection's timer at its next timeout ([`Conn::next_timeout`]). A connection
    /// keeps one entry in the wheel: when the one it has comes due no later than the new
    /// timeout, it stays (it fires, finds nothing due yet, and schedules again), so activity
    /// never leaves stale entries behind.
    pub(crate) fn reschedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let Some((due, _)) = conn.next_timeout(&self.config, self.tick) else { return };
        if conn.timer_tick != NO_TIMER {
            let ahead = i64::from(conn.timer_tick.wrapping_sub(stamp(self.tick)) as i32);
            if self.tick as i64 + ahead <= due as i64 {
                return;
            }
        }
        let when = self.wheel_time(due);
        let generation = conn.generation;
        let tick = self.wheel.schedule(key, generation, when);
        self.conns[key].timer_tick = stamp(tick);
    }

    fn wheel_time(&self, tick: u64) -> Instant {
        let ahead = tick.saturating_sub(self.tick);
        self.now + TICK * ahead.min(u64::from(u32::MAX)) as u32
    }

    /// Answers a request whose handler deferred ([`Decision::Defer`](super::Decision::Defer)):
    /// false if the connection is gone, on another worker, or not waiting for an answer
    /// (already answered, timed out, or never deferred). Counted as a refusal by its status
    /// when that is 400 or more.
    pub(crate) fn respond_deferred(&mut self, id: ConnId, response: &HttpResponse) -> bool {
        let Some(key) = self.key(id) else { return false };
        if !matches!(self.conns[key].phase, Phase::Deferred { .. }) {
            return false;
        }
        if let Some(why) = Rejection::for_status(response.status) {
            self.stats().rejected(why);
        }
        self.respond(key, response);
        true
    }

    /// Answers over plain HTTP and lingers until the answer is out.
    pub(crate) fn respond(&mut self, key: usize, response: &HttpResponse) {
        let mut out = Vec::with_capacity(128 + response.body.len());
        write_head(response, Some(response.body.len()), &mut out);
        out.extend_from_slice(&response.body);
        self.respond_raw(key, &out);
    }

    /// Queues a whole HTTP answer (head and body) and lingers until it is out.
    pub(crate) fn respond_raw(&mut self, key: usize, bytes: &[u8]) {
        let conn = &mut self.conns[key];
        conn.phase = Phase::Http;
        conn.input = Input::default();
        conn.out.push(Bytes::copy_from_slice(bytes));
        conn.life = Life::Lingering { since: stamp(self.tick), finalized: true };
        self.mark_dirty(key);
        self.reschedule(key);
    }

    /// Writes what is corked for the connection being served: one write in the common case.
    pub(crate) fn uncork(&mut self) -> io::Result<()> {
        let Some(key) = self.cork_owner.take() else { return Ok(()) };
        if self.cork.is_empty() {
            return Ok(());
        }
        let conn = &mut self.conns[key];
        if conn.tls.is_some() {
            return self.uncork_tls(key);
        }
        let mut written = 0;
        if conn.out.is_empty() && !conn.blocked {
            match conn.stream.write(&self.cork) {
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.cork.clear();
                    return Err(e);
                }
            }
        }
        self.stats().bytes_out(written);
        if written == self.cork.len() {
            self.cork.clear();
        } else {
            self.cork.advance(written);
            let rest = self.cork.split().freeze();
            let conn = &mut self.conns[key];
            conn.out.push(rest);
            self.mark_dirty(key);
        }
        Ok(())
    }

    /// [`Core::uncork`] through TLS: the cork is encrypted in one go (as far as rustls's
    /// buffer takes it) and the ciphertext leaves in one vectored write, after what rustls
    /// already held (the handshake's last flight, say). Kept out of line: the plain path
    /// stays as it was.
    #[inline(never)]
    fn uncork_tls(&mut self, key: usize) -> io::Result<()> {
        let conn = &mut self.conns[key];
        let Some(tls) = conn.tls.as_deref_mut() else { return Ok(()) };
        let mut taken = 0;
        if conn.out.is_empty() && !conn.blocked {
            taken = tls.encrypt(&[IoSlice::new(&self.cork)]);
        }
        let mut written = 0;
        let result = tls.write_out(&mut conn.stream, &mut written);
        self.stats().bytes_out(written);
        let all_out = match result {
            Ok(all_out) => all_out,
            Err(e) => {
                self.cork.clear();
                return Err(e);
            }
        };
        if taken == self.cork.len() {
            self.cork.clear();
        } else {
            self.cork.advance(taken);
            let rest = self.cork.split().freeze();
            self.conns[key].out.push(rest);
        }
        if !all_out || !self.conns[key].out.is_empty() {
            self.mark_dirty(key);
        }
        Ok(())
    }

    /// Makes `key` the cork owner, writing out the previous owner's replies.
    pub(crate) fn cork_for(&mut self, key: usize) -> Option<(usize, io::Error)> {
        if self.cork_owner == Some(key) {
            return None;
        }
        let previous = self.cork_owner;
        let result = self.uncork();
        self.cork_owner = Some(key);
        match (previous, result) {
            (Some(p), Err(e)) => Some((p, e)),
            _ => None,
        }
    }
}

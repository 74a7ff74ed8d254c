//! One worker thread: a mio poll, a listener, the connections it accepted, a timing wheel.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::conn::{Conn, Ending, Phase};
use super::ctx::{Ctx, WorkerCtx};
use super::handle::{Command, ConnId, Handle, Remote};
use super::ip::IpCounter;
use super::stats::{Rejection, Stats, WorkerStats};
use super::sys;
use super::timers::{Entry, Wheel};
use super::{Decision, Handler, HttpRequest, HttpResponse, Message, ServerConfig};
use crate::proto::handshake::request::parse_request;
use crate::proto::handshake::{EMPTY_HEADER, HandshakeError, MAX_HEADERS, Status, response};
use crate::proto::{CloseCode, Connection, Event, MessageKind};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Size of a worker's read buffer, and of one read.
const READ_SIZE: usize = 64 * 1024;
/// New connections accepted per loop turn, so accepting never starves reading.
const ACCEPT_BATCH: usize = 128;
/// Frames up to this size are copied into the cork rather than queued as their own iovec.
const CORK_COPY_MAX: usize = 2048;
/// Bytes read from one connection per loop turn before the others get their turn (and the
/// queues are flushed); the rest is read next turn.
const READ_BUDGET: usize = 512 * 1024;
/// Resolution of the timing wheel.
const TICK: Duration = Duration::from_millis(20);

/// The part of a worker that callbacks reach through [`Ctx`] and [`WorkerCtx`].
pub(crate) struct Core<C> {
    pub(crate) index: usize,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) conns: Slab<Conn>,
    pub(crate) now: Instant,
    pub(crate) tick: u64,
    handle: Option<Handle<C>>,
    stats: Arc<Stats>,
    /// Replies to the connection being served, written at once at the end of its read.
    cork: BytesMut,
    cork_owner: Option<usize>,
    /// Connections with queued frames to flush at the end of the turn.
    dirty: Vec<usize>,
    next_generation: u32,
    wheel: Wheel,
    /// How long the last app tick took, from its start until its frames were written.
    pub(crate) last_tick_work: Option<Duration>,
}

impl<C: Send + 'static> Core<C> {
    pub(crate) fn handle(&self) -> &Handle<C> {
        self.handle.as_ref().expect("the handle is set before the worker runs")
    }

    fn stats(&self) -> WorkerStats<'_> {
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
        self.key(id).map(|key| self.conns[key].peer)
    }

    pub(crate) fn is_open(&self, id: ConnId) -> bool {
        self.key(id).is_some_and(|key| match &self.conns[key].phase {
            Phase::Open(ws) => ws.can_send() && self.conns[key].ending == Ending::No,
            _ => false,
        })
    }

    pub(crate) fn buffered(&self, id: ConnId) -> usize {
        self.key(id).map_or(0, |key| {
            let corked = if self.cork_owner == Some(key) { self.cork.len() } else { 0 };
            self.conns[key].out.queued() + corked
        })
    }

    fn mark_dirty(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
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
        conn.close_code.get_or_insert((CloseCode::POLICY_VIOLATION, String::new()));
        conn.ending = Ending::Linger;
        conn.closing_since.get_or_insert(self.tick);
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
            if !ws.can_send() || conn.ending != Ending::No {
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
        if !matches!(self.conns[key].phase, Phase::Stream) || self.conns[key].ending != Ending::No {
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
        if !matches!(self.conns[key].phase, Phase::Open(_)) || self.conns[key].closing_since.is_some() {
            return false;
        }
        self.slow_consumer(key);
        true
    }

    fn close_key(&mut self, key: usize, code: CloseCode, reason: &str) -> bool {
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
        conn.closing_since = Some(self.tick);
        self.mark_dirty(key);
        self.reschedule(key);
        true
    }

    pub(crate) fn reschedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        let config = &self.config;
        let at = |tick: u64, d: Duration| tick + ticks(d);
        let due = if conn.ending != Ending::No || conn.closing_since.is_some() {
            at(conn.closing_since.unwrap_or(self.tick), config.close_timeout)
        } else {
            match &conn.phase {
                Phase::Open(_) => {
                    let mut due = u64::MAX;
                    if let Some(sent) = conn.ping_sent {
                        due = due.min(at(sent, config.ping_timeout));
                    } else if let Some(interval) = config.ping_interval {
                        due = due.min(at(conn.last_read, interval));
                    }
                    if let Some(idle) = config.idle_timeout {
                        due = due.min(at(conn.last_message, idle));
                    }
                    due
                }
                // A stream lives until a side closes; the application keeps it warm.
                Phase::Stream => u64::MAX,
                _ => at(conn.last_read, config.handshake_timeout),
            }
        };
        if due == u64::MAX {
            return;
        }
        let when = self.wheel_time(due);
        let generation = conn.generation;
        let tick = self.wheel.schedule(key, generation, when);
        self.conns[key].timer_tick = tick;
    }

    fn wheel_time(&self, tick: u64) -> Instant {
        let ahead = tick.saturating_sub(self.tick);
        self.now + TICK * ahead.min(u64::from(u32::MAX)) as u32
    }

    /// Writes what is corked for the connection being served: one write in the common case.
    fn uncork(&mut self) -> io::Result<()> {
        let Some(key) = self.cork_owner.take() else { return Ok(()) };
        if self.cork.is_empty() {
            return Ok(());
        }
        let conn = &mut self.conns[key];
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

    /// Makes `key` the cork owner, writing out the previous owner's replies.
    fn cork_for(&mut self, key: usize) -> Option<(usize, io::Error)> {
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

pub(crate) struct Worker<H: Handler> {
    core: Core<H::Command>,
    handler: Arc<H>,
    local: H::Local,
    sessions: Vec<Option<H::Session>>,
    poll: Poll,
    events: Option<Events>,
    listener: Option<TcpListener>,
    receiver: Receiver<Command<H::Command>>,
    ips: Arc<IpCounter>,
    due: Vec<Entry>,
    rbuf: BytesMut,
    accept_ready: bool,
    /// Connections that still had bytes to read when their budget ran out.
    more_to_read: Vec<usize>,
    /// Loop turns so far (read budgets are per turn).
    turn: u32,
    /// Handshake tokens left (refilled each tick up to one second's worth).
    tokens: f64,
    last_refill: Instant,
    next_app_tick: Option<Instant>,
    shutdown_deadline: Option<Instant>,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(
        index: usize,
        listener: StdListener,
        config: Arc<ServerConfig>,
        handler: Arc<H>,
        stats: Arc<Stats>,
        ips: Arc<IpCounter>,
    ) -> io::Result<(Self, Remote<H::Command>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = TcpListener::from_std(listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let (sender, receiver): (Sender<_>, _) = channel();
        let now = Instant::now();
        let local = handler.local(index);
        let next_app_tick = config.tick.map(|t| now + t);
        let tokens = f64::from(config.handshake_rate);
        let worker = Self {
            core: Core {
                index,
                config,
                conns: Slab::new(),
                now,
                tick: 0,
                handle: None,
                stats,
                cork: BytesMut::with_capacity(READ_SIZE),
                cork_owner: None,
                dirty: Vec::new(),
                next_generation: 0,
                wheel: Wheel::new(TICK, now),
                last_tick_work: None,
            },
            handler,
            local,
            sessions: Vec::new(),
            poll,
            events: Some(Events::with_capacity(1024)),
            listener: Some(listener),
            receiver,
            ips,
            due: Vec::new(),
            rbuf: BytesMut::with_capacity(READ_SIZE),
            accept_ready: true,
            more_to_read: Vec::new(),
            turn: 0,
            tokens,
            last_refill: now,
            next_app_tick,
            shutdown_deadline: None,
        };
        Ok((worker, Remote { sender, waker }))
    }

    pub(crate) fn index(&self) -> usize {
        self.core.index
    }

    pub(crate) fn set_handle(&mut self, handle: Handle<H::Command>) {
        self.core.handle = Some(handle);
    }

    pub(crate) fn run(mut self) {
        loop {
            let timeout = self.poll_timeout();
            let mut events = self.events.take().unwrap_or_else(|| Events::with_capacity(1024));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.core.index, error = %e, "poll failed");
                    return;
                }
            }
            self.core.now = Instant::now();
            self.core.tick = self.now_tick();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready = true,
                    WAKER => {}
                    Token(key) => {
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key, event.is_read_closed() || event.is_error());
                        }
                    }
                }
            }
            self.events = Some(events);
            for key in std::mem::take(&mut self.more_to_read) {
                self.on_readable(key, true);
            }
            self.turn = self.turn.wrapping_add(1);
            self.drain_commands();
            if self.accept_ready {
                self.accept();
            }
            self.run_timers();
            let ticked = self.run_app_tick();
            self.flush_dirty();
            if let Some(start) = ticked {
                self.core.last_tick_work = Some(start.elapsed());
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.core.conns.is_empty() || self.core.now >= deadline {
                    let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.remove(key, CloseCode::GOING_AWAY, true);
                    }
                    return;
                }
            }
        }
    }

    fn now_tick(&self) -> u64 {
        self.core.wheel.tick_at(self.core.now + Duration::from_nanos(1)).saturating_sub(1)
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next = self.core.wheel.next_deadline();
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        };
        consider(self.next_app_tick);
        consider(self.shutdown_deadline.map(|d| d.min(now + TICK)));
        if self.accept_ready && self.listener.is_some() {
            // More connections wait: come back at once if tokens are left, else at the refill.
            consider(Some(if self.tokens >= 1.0 { now } else { now + TICK }));
        }
        if !self.core.dirty.is_empty() || !self.more_to_read.is_empty() {
            consider(Some(now));
        }
        next.map(|at| at.saturating_duration_since(now))
    }

    // ---- accepting ----

    fn accept(&mut self) {
        let rate = f64::from(self.core.config.handshake_rate);
        let elapsed = self.core.now.saturating_duration_since(self.last_refill).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.last_refill = self.core.now;
        let mut budget = ACCEPT_BATCH;
        while budget > 0 && self.tokens >= 1.0 {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    budget -= 1;
                    self.tokens -= 1.0;
                    self.register(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: try again next turn rather than spin.
                    tracing::warn!(worker = self.core.index, error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn register(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        self.core.stats().accepted();
        let entry = self.core.conns.vacant_entry();
        let key = entry.key();
        if self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return;
        }
        self.core.next_generation = self.core.next_generation.wrapping_add(1);
        let mut conn = Conn::new(stream, peer, self.core.next_generation, self.core.tick);
        let config = &self.core.config;
        let total = self.ips.total.fetch_add(1, Ordering::Relaxed) + 1;
        if total > config.max_connections {
            conn.reject = Some(503);
        } else if self.ips.acquire(peer.ip()) {
            conn.counted_ip = true;
        } else {
            conn.reject = Some(429);
        }
        let due = self.core.now + config.handshake_timeout;
        conn.timer_tick = self.core.wheel.schedule(key, conn.generation, due);
        entry.insert(conn);
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, || None);
        }
    }

    // ---- reading ----

    /// Reads and handles what a connection sent. `drain` reads until the socket would block;
    /// otherwise a short read ends the burst (the receive queue was empty, and edge-triggered
    /// readiness fires again for anything that arrives later), which saves a `recv` that
    /// would only say `EAGAIN`. End of stream always comes with `drain` (read-closed events).
    fn on_readable(&mut self, key: usize, drain: bool) {
        let turn = self.turn;
        let mut more = true;
        while more {
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            if conn.read_turn != turn {
                conn.read_turn = turn;
                conn.read_used = 0;
            }
            if conn.read_used >= READ_BUDGET {
                // Edge-triggered: no new event will come for these bytes; come back next turn.
                self.more_to_read.push(key);
                break;
            }
            let own_buffer = !conn.input.is_empty() || !matches!(conn.phase, Phase::Open(_));
            let want = match &conn.phase {
                Phase::Open(ws) => ws.bytes_needed(&conn.input).unwrap_or(0).clamp(4096, READ_SIZE * 16),
                _ => 4096,
            };
            let result = if own_buffer {
                sys::read_buf(&conn.stream, &mut conn.input, want)
            } else {
                sys::read_buf(&conn.stream, &mut self.rbuf, READ_SIZE)
            };
            match result {
                Ok((0, _)) => {
                    self.on_eof(key);
                    return;
                }
                Ok((n, full)) => {
                    more = full || drain;
                    conn.read_used += n;
                    conn.last_read = self.core.tick;
                    conn.ping_sent = None;
                    self.core.stats.worker(self.core.index).bytes_in(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_abnormal(key);
                    return;
                }
            }
            if conn.ending != Ending::No {
                // Lingering: the answer is out, what the peer still sends is discarded.
                conn.input.clear();
                self.rbuf.clear();
                continue;
            }
            match conn.phase {
                Phase::Handshake => self.on_request_bytes(key),
                Phase::Open(_) => {
                    if own_buffer {
                        let mut input = std::mem::take(&mut self.core.conns[key].input);
                        self.on_frames(key, &mut input);
                        if let Some(conn) = self.core.conns.get_mut(key) {
                            conn.input = input;
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
                Phase::Http | Phase::Stream => conn.input.clear(),
            }
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            if conn.input.is_empty() && conn.input.capacity() > 0 {
                conn.input = BytesMut::new();
            }
        }
        self.finish_read(key);
    }

    /// End of a read burst: write the corked replies, and the connection's own queue.
    fn finish_read(&mut self, key: usize) {
        if let Err((owner, _)) = self.core.uncork().map_err(|e| (key, e)) {
            self.drop_abnormal(owner);
            return;
        }
        if self.core.conns.get(key).is_some_and(|c| c.ending == Ending::Linger) {
            self.core.mark_dirty(key);
        }
    }

    fn on_request_bytes(&mut self, key: usize) {
        let max = self.core.config.max_request_size;
        let input = std::mem::take(&mut self.core.conns[key].input);
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let outcome = match parse_request(&input, &mut headers, max) {
            Ok(Status::Partial) => None,
            Err(e) => Some(Err(e)),
            Ok(Status::Complete(request)) => match body_len(&request) {
                Err(()) => Some(Ok(Outcome::Respond(
                    HttpResponse::text(400, "bad Content-Length\n"),
                    Some(Rejection::BadRequest),
                ))),
                Ok(n) if n > self.core.config.max_body_size => Some(Ok(Outcome::Respond(
                    HttpResponse::text(413, "body too large\n"),
                    Some(Rejection::TooLarge),
                ))),
                Ok(n) if input.len() < request.len + n => None,
                Ok(n) => Some(Ok(self.decide(key, &request, &input[request.len..request.len + n]))),
            },
        };
        self.core.conns[key].input = input;
        match outcome {
            None => {}
            Some(Err(e)) => {
                let why = if e.status() == 431 { Rejection::TooLarge } else { Rejection::BadRequest };
                self.core.stats().rejected(why);
                let mut out = Vec::new();
                e.write_response(&mut out);
                self.respond_raw(key, &out);
            }
            Some(Ok(Outcome::Respond(response, why))) => {
                if let Some(why) = why {
                    self.core.stats().rejected(why);
                }
                self.respond(key, &response);
            }
            Some(Ok(Outcome::Reject(e, why))) => {
                self.core.stats().rejected(why);
                let mut out = Vec::new();
                e.write_response(&mut out);
                self.respond_raw(key, &out);
            }
            Some(Ok(Outcome::Upgrade { session, head_len, response, ws })) => {
                self.open(key, session, head_len, response, ws);
            }
            Some(Ok(Outcome::Stream { session, head })) => self.open_stream(key, session, &head),
        }
    }

    /// Looks at a complete request head and decides; touches nothing but counters.
    fn decide(
        &self,
        key: usize,
        request: &crate::proto::handshake::request::Request<'_, '_>,
        body: &[u8],
    ) -> Outcome<H::Session> {
        let conn = &self.core.conns[key];
        let config = &self.core.config;
        if let Some(status) = conn.reject {
            let why = if status == 429 { Rejection::PerIp } else { Rejection::Full };
            let body =
                if status == 429 { "too many connections from this address\n" } else { "server full\n" };
            return Outcome::Respond(HttpResponse::text(status, body), Some(why));
        }
        let upgrade = request.upgrade();
        if let Ok(up) = &upgrade {
            if !config.allowed_origins.is_empty() {
                let allowed = up.origin().is_some_and(|o| config.allowed_origins.iter().any(|a| a == o));
                if !allowed {
                    return Outcome::Respond(
                        HttpResponse::text(403, "origin not allowed\n"),
                        Some(Rejection::Origin),
                    );
                }
            }
        }
        let stats = &self.core.stats;
        let http = HttpRequest { head: request, upgrade: upgrade.is_ok(), body, peer: conn.peer, stats };
        match self.handler.on_request(&http) {
            Decision::Stream { session, head } => Outcome::Stream { session, head },
            Decision::Respond(response) => {
                let why = match response.status {
                    200..=399 => None,
                    400 | 404 | 405 | 426 => Some(Rejection::BadRequest),
                    _ => Some(Rejection::App),
                };
                Outcome::Respond(response, why)
            }
            Decision::Upgrade { session, protocol } => {
                let up = match upgrade {
                    Ok(up) => up,
                    Err(e) => return Outcome::Reject(e, Rejection::BadRequest),
                };
                let negotiated = config
                    .deflate
                    .as_ref()
                    .and_then(|d| d.negotiate_response(up.extensions()).map(|p| (p, d)));
                let params = negotiated.as_ref().map(|((p, _), d)| (*p, *d));
                let extension = negotiated.as_ref().map(|((_, header), _)| header.as_str());
                let mut response = Vec::with_capacity(256);
                response::write_accept(up.key(), protocol, extension, &mut response);
                let limits = config.limits.clone();
                let ws = match params {
                    Some((p, d)) => Connection::with_deflate(crate::proto::Role::Server, limits, p, d),
                    None => Connection::new(crate::proto::Role::Server, limits, None),
                };
                Outcome::Upgrade { session, head_len: request.len, response, ws: Box::new(ws) }
            }
        }
    }

    fn respond(&mut self, key: usize, response: &HttpResponse) {
        let mut out = Vec::with_capacity(128 + response.body.len());
        write_head(response, Some(response.body.len()), &mut out);
        out.extend_from_slice(&response.body);
        self.respond_raw(key, &out);
    }

    fn open_stream(&mut self, key: usize, session: H::Session, head: &HttpResponse) {
        let mut out = Vec::with_capacity(256);
        write_head(head, None, &mut out);
        out.extend_from_slice(&head.body);
        let conn = &mut self.core.conns[key];
        conn.phase = Phase::Stream;
        conn.input = BytesMut::new();
        conn.out.push(Bytes::from(out));
        self.sessions[key] = Some(session);
        self.core.stats().opened();
        self.core.mark_dirty(key);
        let id = self.core.id_of(key);
        self.with_ctx(key, id, |handler, ctx| handler.on_open(ctx));
    }

    fn respond_raw(&mut self, key: usize, bytes: &[u8]) {
        let conn = &mut self.core.conns[key];
        conn.phase = Phase::Http;
        conn.input = BytesMut::new();
        conn.out.push(Bytes::copy_from_slice(bytes));
        conn.ending = Ending::Linger;
        conn.closing_since = Some(self.core.tick);
        self.core.mark_dirty(key);
        self.core.reschedule(key);
    }

    fn open(
        &mut self,
        key: usize,
        session: H::Session,
        head_len: usize,
        response: Vec<u8>,
        ws: Box<Connection>,
    ) {
        if let Some((owner, _)) = self.core.cork_for(key) {
            self.drop_abnormal(owner);
        }
        self.core.cork.extend_from_slice(&response);
        let conn = &mut self.core.conns[key];
        conn.input.advance(head_len);
        conn.phase = Phase::Open(ws);
        conn.last_message = self.core.tick;
        self.sessions[key] = Some(session);
        self.core.stats().opened();
        self.core.reschedule(key);
        let id = self.core.id_of(key);
        self.with_ctx(key, id, |handler, ctx| handler.on_open(ctx));
        // The first frames may have come with the request.
        if self.core.conns.get(key).is_some_and(|c| !c.input.is_empty()) {
            let mut input = std::mem::take(&mut self.core.conns[key].input);
            self.on_frames(key, &mut input);
            if let Some(conn) = self.core.conns.get_mut(key) {
                conn.input = input;
            }
        }
    }

    fn with_ctx(&mut self, key: usize, id: ConnId, f: impl FnOnce(&H, &mut Ctx<'_, H>)) {
        let Some(session) = self.sessions.get_mut(key).and_then(Option::as_mut) else { return };
        let mut ctx = Ctx { worker: WorkerCtx { core: &mut self.core, local: &mut self.local }, session, id };
        f(&self.handler, &mut ctx);
    }

    fn on_frames(&mut self, key: usize, input: &mut BytesMut) {
        if let Some((owner, _)) = self.core.cork_for(key) {
            self.drop_abnormal(owner);
        }
        let id = self.core.id_of(key);
        loop {
            let Some(conn) = self.core.conns.get_mut(key) else { return };
            let Phase::Open(ws) = &mut conn.phase else { return };
            let Some(event) = ws.poll_event(input) else { break };
            let message = match event {
                Event::Text(data) => Message { kind: MessageKind::Text, data },
                Event::Binary(data) => Message { kind: MessageKind::Binary, data },
                Event::Ping(_) => {
                    // The pong goes out in order with the replies around it.
                    self.after_events(key);
                    continue;
                }
                Event::Pong(_) => continue,
                Event::Close { code, reason } => {
                    let reason = String::from_utf8_lossy(&reason).into_owned();
                    conn.close_code.get_or_insert((code, reason));
                    continue;
                }
                Event::Failed(error) => {
                    tracing::debug!(conn = %id, %error, "peer failed the connection");
                    conn.close_code.get_or_insert((CloseCode::from(&error), error.to_string()));
                    continue;
                }
            };
            if conn.ending != Ending::No {
                continue;
            }
            conn.last_message = self.core.tick;
            self.core.stats().message_in();
            self.with_ctx(key, id, |handler, ctx| handler.on_message(ctx, message));
        }
        self.after_events(key);
    }

    /// Moves the core's automatic replies out, and notices the end of the close handshake.
    fn after_events(&mut self, key: usize) {
        let corked = self.core.cork_owner == Some(key);
        let (mut dirty, mut closing) = (false, false);
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        let Phase::Open(ws) = &mut conn.phase else { return };
        if ws.has_pending() {
            if corked && conn.out.is_empty() {
                ws.poll_transmit(&mut self.core.cork);
            } else {
                let mut control = BytesMut::new();
                ws.poll_transmit(&mut control);
                conn.out.push_control(&control);
                dirty = true;
            }
        }
        if ws.is_closed() && conn.ending == Ending::No {
            // The server closes the TCP connection first (RFC 6455 §7.1.1) once the close
            // frames are exchanged; a failed connection is closed the same way.
            conn.ending = Ending::Linger;
            conn.closing_since.get_or_insert(self.core.tick);
            dirty = true;
            closing = true;
        }
        if dirty {
            self.core.mark_dirty(key);
        }
        if closing {
            self.finalize(key, CloseCode::ABNORMAL, false);
            self.core.reschedule(key);
        }
    }

    fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get(key) else { return };
        match (&conn.phase, &conn.close_code) {
            (Phase::Open(_), Some((code, _))) => {
                let code = *code;
                self.remove(key, code, false);
            }
            (Phase::Open(_), None) => self.drop_abnormal(key),
            (Phase::Stream, _) => self.remove(key, CloseCode::NORMAL, false),
            _ => self.remove(key, CloseCode::ABNORMAL, false),
        }
    }

    fn drop_abnormal(&mut self, key: usize) {
        self.remove(key, CloseCode::ABNORMAL, true);
    }

    /// Ends a WebSocket connection for the application: the one place where `on_close` runs
    /// and the counters settle. The socket may linger a little longer for the TCP teardown.
    fn finalize(&mut self, key: usize, code: CloseCode, abnormal: bool) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        if conn.finalized || !matches!(conn.phase, Phase::Open(_) | Phase::Stream) {
            return;
        }
        conn.finalized = true;
        let (code, reason) = match conn.close_code.take() {
            Some((c, r)) if !abnormal => (c, r),
            _ => (code, String::new()),
        };
        let generation = conn.generation;
        let abnormal = abnormal || code == CloseCode::ABNORMAL;
        self.core.stats().closed(code, abnormal);
        let Some(mut session) = self.sessions.get_mut(key).and_then(Option::take) else { return };
        let id = ConnId::new(self.core.index, key, generation);
        let mut ctx = Ctx {
            worker: WorkerCtx { core: &mut self.core, local: &mut self.local },
            session: &mut session,
            id,
        };
        self.handler.on_close(&mut ctx, code, &reason);
    }

    /// Drops a connection's socket, finalizing it first if it was still open.
    fn remove(&mut self, key: usize, code: CloseCode, abnormal: bool) {
        self.finalize(key, code, abnormal);
        let Some(mut conn) = self.core.conns.try_remove(key) else { return };
        if self.core.cork_owner == Some(key) {
            self.core.cork_owner = None;
            self.core.cork.clear();
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.ips.total.fetch_sub(1, Ordering::Relaxed);
        if conn.counted_ip {
            self.ips.release(conn.peer.ip());
        }
        if let Some(slot) = self.sessions.get_mut(key) {
            *slot = None;
        }
    }

    // ---- writing ----

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        conn.blocked = false;
        self.flush(key);
    }

    fn flush_dirty(&mut self) {
        while let Some(key) = self.core.dirty.pop() {
            let Some(conn) = self.core.conns.get_mut(key) else { continue };
            conn.dirty = false;
            if !conn.blocked {
                self.flush(key);
            }
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        let mut written = 0;
        let result = conn.out.flush(&mut conn.stream, &mut written);
        self.core.stats.worker(self.core.index).bytes_out(written);
        let soft = self.core.config.soft_outbound_limit;
        match result {
            Ok(true) => {
                let all_said =
                    matches!(conn.phase, Phase::Http) || conn.ws().is_some_and(|ws| ws.is_closed());
                if conn.ending == Ending::Linger && all_said {
                    // All said: half-close, then wait for the peer's EOF (or the timeout).
                    let _ = conn.stream.shutdown(Shutdown::Write);
                }
                if conn.backpressured {
                    conn.backpressured = false;
                    let id = self.core.id_of(key);
                    self.with_ctx(key, id, |handler, ctx| handler.on_drain(ctx));
                }
            }
            Ok(false) => {
                conn.blocked = true;
                if conn.out.queued() > soft {
                    conn.backpressured = true;
                }
            }
            Err(_) => self.drop_abnormal(key),
        }
    }

    // ---- commands from other threads ----

    fn drain_commands(&mut self) {
        loop {
            let command = match self.receiver.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            };
            match command {
                Command::Frame(id, frame) => {
                    self.core.send_frame(id, &frame, false);
                }
                Command::Send(id, kind, payload) => {
                    self.core.send(id, kind, &payload);
                }
                Command::Close(id, code, reason) => {
                    self.core.close(id, code, &reason);
                }
                Command::User(command) => {
                    let mut ctx = WorkerCtx { core: &mut self.core, local: &mut self.local };
                    self.handler.on_command(&mut ctx, command);
                }
                Command::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(self.core.now + self.core.config.close_timeout);
        let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let open = matches!(self.core.conns[key].phase, Phase::Open(_));
            if open {
                self.core.close_key(key, CloseCode::GOING_AWAY, "server shutting down");
            } else if self.core.conns[key].ending == Ending::No {
                self.remove(key, CloseCode::GOING_AWAY, false);
            }
        }
    }

    // ---- time ----

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.core.wheel.advance(self.core.now, &mut due);
        for entry in due.drain(..) {
            let Some(conn) = self.core.conns.get(entry.key) else { continue };
            if conn.generation != entry.generation || conn.timer_tick != entry.tick {
                continue;
            }
            self.on_timer(entry.key);
        }
        self.due = due;
    }

    fn on_timer(&mut self, key: usize) {
        let tick = self.core.tick;
        let config = Arc::clone(&self.core.config);
        let elapsed = |since: u64, d: Duration| tick >= since + ticks(d);
        let conn = &mut self.core.conns[key];
        if conn.ending != Ending::No || conn.closing_since.is_some() {
            if elapsed(conn.closing_since.unwrap_or(tick), config.close_timeout) {
                let code = conn.close_code.as_ref().map(|(c, _)| *c);
                match code {
                    Some(code) => self.remove(key, code, false),
                    None => self.drop_abnormal(key),
                }
                return;
            }
        } else {
            match &conn.phase {
                Phase::Open(_) => {
                    if let Some(sent) = conn.ping_sent {
                        if elapsed(sent, config.ping_timeout) {
                            self.core.stats().heartbeat_timeout();
                            self.drop_abnormal(key);
                            return;
                        }
                    } else if config.idle_timeout.is_some_and(|d| elapsed(conn.last_message, d)) {
                        self.core.close_key(key, CloseCode::GOING_AWAY, "idle timeout");
                    } else if config.ping_interval.is_some_and(|d| elapsed(conn.last_read, d)) {
                        let mut ping = BytesMut::new();
                        if let Phase::Open(ws) = &mut conn.phase {
                            if ws.ping(b"", &mut ping).is_ok() {
                                conn.out.push_control(&ping);
                                conn.ping_sent = Some(tick);
                                self.core.mark_dirty(key);
                            }
                        }
                    }
                }
                Phase::Stream => return,
                _ => {
                    if elapsed(conn.last_read.min(conn.last_message), config.handshake_timeout) {
                        self.core.stats().rejected(Rejection::Timeout);
                        self.remove(key, CloseCode::ABNORMAL, false);
                        return;
                    }
                }
            }
        }
        self.core.reschedule(key);
    }

    /// Runs the app tick if it is due; when it ran, the moment it started.
    fn run_app_tick(&mut self) -> Option<Instant> {
        let (Some(next), Some(period)) = (self.next_app_tick, self.core.config.tick) else { return None };
        if self.core.now < next {
            return None;
        }
        let start = Instant::now();
        // Late ticks are not replayed: the next one is one period from now at the earliest.
        let mut following = next + period;
        if following <= self.core.now {
            following = self.core.now + period;
        }
        self.next_app_tick = Some(following);
        let mut ctx = WorkerCtx { core: &mut self.core, local: &mut self.local };
        self.handler.on_tick(&mut ctx);
        Some(start)
    }
}

/// Writes a status line and headers; `Content-Length` when the length is known, else the
/// answer is a stream (closed by either side).
fn write_head(response: &HttpResponse, length: Option<usize>, out: &mut Vec<u8>) {
    let reason = response::reason_phrase(response.status);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", response.status, reason).as_bytes());
    for (name, value) in &response.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match length {
        Some(n) => {
            out.extend_from_slice(format!("Content-Length: {n}\r\nConnection: close\r\n\r\n").as_bytes())
        }
        None => out.extend_from_slice(b"Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n"),
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(TICK.as_nanos())) as u64
}

/// The declared body length of a request (0 without `Content-Length`).
fn body_len(request: &crate::proto::handshake::request::Request<'_, '_>) -> Result<usize, ()> {
    match request.header("content-length") {
        None => Ok(0),
        Some(value) => std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok()).ok_or(()),
    }
}

enum Outcome<S> {
    Stream { session: S, head: HttpResponse },
    Respond(HttpResponse, Option<Rejection>),
    Reject(HandshakeError, Rejection),
    Upgrade { session: S, head_len: usize, response: Vec<u8>, ws: Box<Connection> },
}

//! One worker thread: a mio poll, a listener, the connections it accepted, a timing wheel;
//! the loop that polls, accepts, reads (in `read.rs`), writes, runs commands and timers, and
//! shuts down.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::conn::{Conn, Life, NO_TIMER, Phase, Refusal, Timeout, stamp};
use super::core::Core;
use super::ctx::{Ctx, WorkerCtx};
use super::handle::{Command, ConnId, Handle, Remote};
use super::ip::IpCounter;
use super::stats::{Rejection, Stats};
use super::timers::{Entry, TICK, Wheel};
use super::tls::Tls;
use super::{Handler, HttpResponse, Message, ServerConfig};
use crate::proto::{CloseCode, Event, MessageKind};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Size of a worker's read buffer, and of one read.
pub(super) const READ_SIZE: usize = 64 * 1024;
/// New connections accepted per loop turn, so accepting never starves reading.
const ACCEPT_BATCH: usize = 128;
/// Connections a turn writes at least before it looks at the sockets again; see
/// [`flush_slice`].
const FLUSH_SLICE: usize = 256;

/// How many of `waiting` connections a turn writes: a quarter of them, at least
/// [`FLUSH_SLICE`]. A fan-out to thousands of members is written over four turns or so, and
/// between them the worker reads again: what arrived meanwhile (the next publishes, a ping, a
/// handshake) waits for a slice instead of the whole sweep, and a new message joins the
/// members not yet written in the same write as the messages before it. Members are written
/// in the order they were marked, once per sweep, so each write carries more messages (fewer
/// syscalls per delivery), and reading only four times per sweep keeps a fast publisher from
/// piling messages up faster than the sweep writes them.
pub(crate) fn flush_slice(waiting: usize) -> usize {
    FLUSH_SLICE.max(waiting / 4)
}

pub(crate) struct Worker<H: Handler> {
    pub(super) core: Core<H::Command>,
    pub(super) handler: Arc<H>,
    pub(super) local: H::Local,
    pub(super) sessions: Vec<Option<H::Session>>,
    pub(super) poll: Poll,
    pub(super) events: Option<Events>,
    pub(super) listener: Option<TcpListener>,
    pub(super) receiver: Receiver<Command<H::Command>>,
    pub(super) ips: Arc<IpCounter>,
    pub(super) due: Vec<Entry>,
    pub(super) rbuf: BytesMut,
    /// Plaintext decrypted from `rbuf`, for TLS connections (empty on a plain server).
    pub(super) tls_plain: BytesMut,
    pub(super) accept_ready: bool,
    /// Connections that still had bytes to read when their budget ran out.
    pub(super) more_to_read: Vec<usize>,
    /// Loop turns so far (read budgets are per turn).
    pub(super) turn: u32,
    /// When the app tick whose frames are still being written started.
    pub(super) tick_started: Option<Instant>,
    /// Handshake tokens left (refilled each tick up to one second's worth).
    pub(super) tokens: f64,
    pub(super) last_refill: Instant,
    pub(super) next_app_tick: Option<Instant>,
    pub(super) shutdown_deadline: Option<Instant>,
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
                dirty: VecDeque::new(),
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
            tls_plain: BytesMut::new(),
            accept_ready: true,
            more_to_read: Vec::new(),
            turn: 0,
            tick_started: None,
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
            if let Some(start) = self.run_app_tick() {
                self.tick_started = Some(start);
            }
            self.flush_dirty();
            if self.core.dirty.is_empty() {
                if let Some(start) = self.tick_started.take() {
                    // The tick's frames are all written (in one turn or over several).
                    self.core.last_tick_work = Some(start.elapsed());
                }
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
        if let Some(tls) = &config.tls {
            match Tls::new(tls.current()) {
                Ok(tls) => conn.tls = Some(Box::new(tls)),
                Err(e) => {
                    tracing::warn!(worker = self.core.index, error = %e, "TLS session not made");
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                    return;
                }
            }
        }
        let total = self.ips.total.fetch_add(1, Ordering::Relaxed) + 1;
        if total > config.max_connections {
            conn.life = Life::Refusing(Refusal::Full);
        } else if self.ips.acquire(peer.ip()) {
            conn.counted_ip = true;
        } else {
            conn.life = Life::Refusing(Refusal::PerIp);
        }
        entry.insert(conn);
        self.core.reschedule(key);
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, || None);
        }
    }

    pub(super) fn with_ctx(&mut self, key: usize, id: ConnId, f: impl FnOnce(&H, &mut Ctx<'_, H>)) {
        let Some(session) = self.sessions.get_mut(key).and_then(Option::as_mut) else { return };
        let mut ctx = Ctx { worker: WorkerCtx { core: &mut self.core, local: &mut self.local }, session, id };
        f(&self.handler, &mut ctx);
    }

    pub(super) fn on_frames(&mut self, key: usize, input: &mut BytesMut) {
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
                    conn.close_code.get_or_insert_with(|| Box::new((code, reason)));
                    continue;
                }
                Event::Failed(error) => {
                    tracing::debug!(conn = %id, %error, "peer failed the connection");
                    conn.close_code
                        .get_or_insert_with(|| Box::new((CloseCode::from(&error), error.to_string())));
                    continue;
                }
            };
            if conn.life.is_lingering() {
                continue;
            }
            conn.last_message = stamp(self.core.tick);
            self.core.stats().message_in();
            self.with_ctx(key, id, |handler, ctx| handler.on_message(ctx, message));
        }
        self.after_events(key);
    }

    /// Moves the core's automatic replies out, and notices the end of the close handshake.
    pub(super) fn after_events(&mut self, key: usize) {
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
        if ws.is_closed() && !conn.life.is_lingering() {
            // The server closes the TCP connection first (RFC 6455 §7.1.1) once the close
            // frames are exchanged; a failed connection is closed the same way.
            conn.life = conn.life.linger(self.core.tick);
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

    pub(super) fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get(key) else { return };
        match (&conn.phase, &conn.close_code) {
            (Phase::Open(_), Some(close)) => {
                let code = close.0;
                self.remove(key, code, false);
            }
            (Phase::Open(_), None) => self.drop_abnormal(key),
            (Phase::Stream, _) => self.remove(key, CloseCode::NORMAL, false),
            _ => self.remove(key, CloseCode::ABNORMAL, false),
        }
    }

    pub(super) fn drop_abnormal(&mut self, key: usize) {
        self.remove(key, CloseCode::ABNORMAL, true);
    }

    /// Ends a WebSocket connection for the application: the one place where `on_close` runs
    /// and the counters settle. The socket may linger a little longer for the TCP teardown.
    pub(super) fn finalize(&mut self, key: usize, code: CloseCode, abnormal: bool) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        if !matches!(conn.phase, Phase::Open(_) | Phase::Stream) {
            return;
        }
        match &mut conn.life {
            Life::Lingering { finalized: true, .. } => return,
            Life::Lingering { finalized, .. } => *finalized = true,
            // Not lingering: the connection is being removed right after.
            Life::Running | Life::Refusing(_) | Life::ClosingHandshake { .. } => {}
        }
        let (code, reason) = match conn.close_code.take() {
            Some(close) if !abnormal => *close,
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
    pub(super) fn remove(&mut self, key: usize, code: CloseCode, abnormal: bool) {
        self.finalize(key, code, abnormal);
        let Some(conn) = self.core.conns.try_remove(key) else { return };
        if self.core.cork_owner == Some(key) {
            self.core.cork_owner = None;
            self.core.cork.clear();
        }
        // No EPOLL_CTL_DEL: closing the socket (dropping `conn`, whose fd is never
        // duplicated) takes it out of the epoll set; a syscall less per connection.
        self.ips.total.fetch_sub(1, Ordering::Relaxed);
        if conn.counted_ip {
            self.ips.release(conn.peer.addr().ip());
        }
        if let Some(slot) = self.sessions.get_mut(key) {
            *slot = None;
        }
    }

    // ---- writing ----

    pub(super) fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        conn.blocked = false;
        self.flush(key);
    }

    /// Flushes a slice of the connections waiting ([`flush_slice`]), the first marked first;
    /// the rest wait for the next turn (which then polls without waiting).
    fn flush_dirty(&mut self) {
        for _ in 0..flush_slice(self.core.dirty.len()) {
            let Some(key) = self.core.dirty.pop_front() else { break };
            let Some(conn) = self.core.conns.get_mut(key) else { continue };
            conn.dirty = false;
            if !conn.blocked {
                self.flush(key);
            }
        }
    }

    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        let mut written = 0;
        let result = match conn.tls.as_deref_mut() {
            None => conn.out.flush(&mut conn.stream, &mut written),
            Some(tls) => conn.out.flush_tls(tls, &mut conn.stream, &mut written),
        };
        self.core.stats.worker(self.core.index).bytes_out(written);
        let soft = self.core.config.soft_outbound_limit;
        match result {
            Ok(true) => {
                conn.out.release();
                let all_said =
                    matches!(conn.phase, Phase::Http) || conn.ws().is_some_and(|ws| ws.is_closed());
                if conn.life.is_lingering() && all_said {
                    if let Some(tls) = conn.tls.as_deref_mut().filter(|t| !t.notified) {
                        // TLS says its end too (RFC 8446 §6.1) before the TCP half-close.
                        tls.notified = true;
                        tls.session.send_close_notify();
                        let mut written = 0;
                        let sent = tls.write_out(&mut conn.stream, &mut written);
                        self.core.stats.worker(self.core.index).bytes_out(written);
                        match sent {
                            Ok(true) => {}
                            Ok(false) => {
                                conn.blocked = true;
                                return;
                            }
                            Err(_) => {
                                self.drop_abnormal(key);
                                return;
                            }
                        }
                    }
                    // Both Close frames are through and nothing of the peer's is left unread:
                    // the peer sends nothing more (RFC 6455 5.5.1), so the server closes the
                    // TCP connection first, at once, as the RFC asks (7.1.1), without waiting
                    // for the peer's FIN. (Unread bytes would make close() a reset instead.)
                    if conn.input.is_empty() && conn.ws().is_some_and(|ws| ws.close_handshake_done()) {
                        let code = conn.close_code.as_ref().map_or(CloseCode::NORMAL, |close| close.0);
                        self.remove(key, code, false);
                        return;
                    }
                    // All said: half-close (once), then wait for the peer's EOF (or the timeout).
                    if !conn.write_shut {
                        conn.write_shut = true;
                        let _ = conn.stream.shutdown(Shutdown::Write);
                    }
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
                Command::Respond(id, response) => {
                    self.core.respond_deferred(id, &response);
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
            match self.core.conns[key].phase {
                Phase::Open(_) => {
                    self.core.close_key(key, CloseCode::GOING_AWAY, "server shutting down");
                }
                // Its answer will not come now: say so, and let it be flushed.
                Phase::Deferred { .. } => {
                    let answer = HttpResponse::text(503, "server shutting down\n");
                    self.core.respond(key, &answer);
                }
                _ if !self.core.conns[key].life.is_lingering() => {
                    self.remove(key, CloseCode::GOING_AWAY, false);
                }
                _ => {}
            }
        }
    }

    // ---- time ----

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.core.wheel.advance(self.core.now, &mut due);
        for entry in due.drain(..) {
            let Some(conn) = self.core.conns.get_mut(entry.key as usize) else { continue };
            if conn.generation != entry.generation || conn.timer_tick != entry.tick {
                continue;
            }
            conn.timer_tick = NO_TIMER;
            self.on_timer(entry.key as usize);
        }
        self.due = due;
    }

    /// A connection's timer came due: acts on its next timeout ([`Conn::next_timeout`]) if
    /// that is due now, and schedules the next one.
    fn on_timer(&mut self, key: usize) {
        let tick = self.core.tick;
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        let Some((due, timeout)) = conn.next_timeout(&self.core.config, self.core.tick) else { return };
        if due > tick {
            // Activity since it was scheduled moved it later.
            self.core.reschedule(key);
            return;
        }
        match timeout {
            Timeout::Close => {
                match conn.close_code.as_ref().map(|close| close.0) {
                    Some(code) => self.remove(key, code, false),
                    None => self.drop_abnormal(key),
                }
                return;
            }
            Timeout::Heartbeat => {
                self.core.stats().heartbeat_timeout();
                self.drop_abnormal(key);
                return;
            }
            Timeout::Handshake => {
                let tls = conn.tls.as_ref().is_some_and(|t| t.session.is_handshaking());
                self.core.stats().rejected(if tls { Rejection::Tls } else { Rejection::Timeout });
                self.remove(key, CloseCode::ABNORMAL, false);
                return;
            }
            Timeout::Deferred => {
                self.core.stats().rejected(Rejection::DeferTimeout);
                self.core.respond(key, &HttpResponse::text(504, "no answer in time\n"));
                return;
            }
            Timeout::Idle => {
                self.core.close_key(key, CloseCode::GOING_AWAY, "idle timeout");
            }
            Timeout::Ping => {
                let mut ping = BytesMut::new();
                if let Phase::Open(ws) = &mut conn.phase {
                    if ws.ping(b"", &mut ping).is_ok() {
                        conn.out.push_control(&ping);
                        conn.ping_sent = stamp(tick);
                        self.core.mark_dirty(key);
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

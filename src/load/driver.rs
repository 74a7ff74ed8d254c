//! The engine: one [`mio::Poll`] per thread driving many client connections.
//!
//! Per connection the driver keeps a socket, a client-role [`Connection`], an input buffer that
//! holds only an unfinished frame (empty when idle) and an output buffer. Reads go into one
//! zeroed buffer per thread and are parsed from one reusable `BytesMut`; whatever a turn sends
//! on a connection (the answers to what it read, timer-driven sends, pongs) is appended to its
//! output buffer and leaves in one `write` at the end of the turn. Nothing on the message path
//! allocates: payloads are stamped in place in a template and framed into reused buffers.
//!
//! The [`Workload`] decides what connections send; the driver owns their lifecycle: connect,
//! handshake, frames, the close handshake, timeouts, failures by cause, and the run's phases.
//!
//! Here is the event loop; the connection table is in `driver/conns.rs`, what the threads
//! share and count in `driver/shared.rs`, the workload trait in `driver/workload.rs`, the
//! connect and the failure causes of socket errors in `driver/sock.rs`. A `wss://` connection
//! has a rustls `ClientConnection` besides (see `driver/tls.rs`): its socket bytes go through
//! rustls on the way in and out, and the plaintext takes the same path
//! as a plain connection's bytes. A plain connection pays one branch for it.

use std::io::{self, Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use mio::event::Event as IoEvent;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::proto::deflate::{DeflateConfig, DeflateState};
use crate::proto::handshake::{
    ClientRequest, EMPTY_HEADER, HandshakeError, Status, generate_key, parse_response,
};
use crate::proto::{Config, Connection, Event, Role};

use super::procfs;
use super::report::FailureCause;
use super::scenarios::Tally;

mod conns;
mod shared;
mod sock;
mod tls;
mod workload;

pub(crate) use conns::Conns;
use conns::{Conn, State};
pub(crate) use shared::{DriverStats, Plan, Shared, Timeline};
pub(crate) use sock::classify;
use sock::connect;
pub(crate) use workload::Workload;

/// Bytes one `read` may bring.
const READ_SIZE: usize = 64 * 1024;
/// Largest upgrade response head accepted.
const MAX_RESPONSE: usize = 16 * 1024;
/// How often connect and close timeouts are checked while any can expire.
const SCAN_NS: u64 = 20_000_000;
/// How often the progress counters are published.
const REPORT_NS: u64 = 100_000_000;
/// Connect scenario: pause of a slot after a failed attempt, so a refusing server is not spun on.
const RETRY_NS: u64 = 10_000_000;
/// Longest wait for the coordinator's release after the drain.
const RELEASE_NS: u64 = 5_000_000_000;
/// How long a close handshake may take.
const CLOSE_NS: u64 = 2_000_000_000;
/// How long after the close handshake the server has to close the TCP connection.
const LINGER_NS: u64 = 100_000_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Opening this thread's connections.
    Setup,
    /// Waiting for the other threads.
    Ready,
    /// Warmup and measured window.
    Run,
    /// Window over: waiting for answers in flight.
    Drain,
    /// Waiting for the coordinator to sample the server.
    Release,
    /// Closing every connection.
    Closing,
    Done,
}

/// One thread's event loop.
#[derive(Debug)]
pub(crate) struct Driver<'a, W: Workload> {
    index: usize,
    shared: &'a Shared,
    plan: &'a Plan,
    poll: Poll,
    conns: Conns<W::Peer>,
    work: W,
    rbuf: Vec<u8>,
    /// `wss://`: what the sockets gave, before rustls decrypts it into `rbuf`.
    tls_in: Vec<u8>,
    scratch: BytesMut,
    request: Vec<u8>,
    stats: DriverStats,
    phase: Phase,
    timeline: Option<Timeline>,
    /// Next slot of this thread to open during setup.
    next_slot: usize,
    /// Connect scenario: slots waiting to try again, with when.
    retry: Vec<(u64, usize)>,
    expired: Vec<(usize, Option<FailureCause>)>,
    deadline: u64,
    work_wake: Option<u64>,
    next_scan: u64,
    next_report: u64,
    cpu_start: Option<u64>,
    wait_start: Option<u64>,
    reported: (u64, u64, u64),
}

impl<'a, W: Workload> Driver<'a, W> {
    pub(crate) fn new(index: usize, shared: &'a Shared, plan: &'a Plan, work: W) -> io::Result<Self> {
        Ok(Self {
            index,
            shared,
            plan,
            poll: Poll::new()?,
            conns: Conns { slab: Slab::new(), dirty: Vec::new(), pending: 0, closing: 0 },
            work,
            rbuf: vec![0; READ_SIZE],
            tls_in: if plan.tls.is_some() { vec![0; READ_SIZE] } else { Vec::new() },
            scratch: BytesMut::with_capacity(READ_SIZE),
            request: Vec::with_capacity(256),
            stats: DriverStats::new(),
            phase: Phase::Setup,
            timeline: None,
            next_slot: index,
            retry: Vec::new(),
            expired: Vec::new(),
            deadline: 0,
            work_wake: None,
            next_scan: 0,
            next_report: 0,
            cpu_start: None,
            wait_start: None,
            reported: (0, 0, 0),
        })
    }

    /// Runs every phase to the end; returns this thread's counts.
    pub(crate) fn run(mut self) -> (DriverStats, Tally) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = self.shared.clock.now();
            self.step(now);
            if self.phase == Phase::Done {
                break;
            }
            self.flush_dirty(now);
            let timeout = self.timeout(self.shared.clock.now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // The event loop itself failed: stop this thread cleanly.
                    self.shared.abort.store(true, Ordering::Release);
                    break;
                }
            }
            let now = self.shared.clock.now();
            for event in &events {
                self.on_event(event, now);
            }
            self.flush_dirty(now);
        }
        self.report_progress();
        let keys: Vec<usize> = self.conns.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns.remove(key, &self.poll);
        }
        (self.stats, self.work.finish())
    }

    fn step(&mut self, now: u64) {
        match self.phase {
            Phase::Setup => {
                if !self.plan.recycle {
                    self.open_more(now);
                }
                if self.plan.recycle
                    || (self.next_slot >= self.plan.slots
                        && self.conns.pending == 0
                        && self.work.settled(now))
                {
                    self.become_ready(now);
                }
            }
            Phase::Ready => {
                if self.shared.aborted() {
                    self.begin_closing(now);
                } else if let Some(timeline) = self.shared.timeline() {
                    self.begin_run(timeline, now);
                }
            }
            Phase::Run => {
                let Some(tl) = self.timeline else { return };
                if self.cpu_start.is_none() && now >= tl.measure {
                    self.cpu_start = Some(procfs::thread_cpu_ticks().unwrap_or(0));
                    self.wait_start = procfs::thread_cpu_wait_ns();
                }
                if now >= tl.end {
                    self.end_run(now);
                } else {
                    if self.plan.recycle {
                        self.retry_due(now);
                    }
                    self.work_wake = self.work.on_tick(&mut self.conns, now);
                }
            }
            Phase::Drain => {
                if self.work.drained() || now >= self.deadline {
                    self.phase = Phase::Release;
                    self.deadline = now + RELEASE_NS;
                }
            }
            Phase::Release => {
                if self.shared.released.load(Ordering::Acquire) || now >= self.deadline {
                    self.begin_closing(now);
                }
            }
            Phase::Closing => {
                if self.conns.slab.is_empty() || now >= self.deadline {
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
        if (self.conns.pending > 0 || self.conns.closing > 0) && now >= self.next_scan {
            self.scan_timeouts(now);
            self.next_scan = now + SCAN_NS;
        }
        if now >= self.next_report {
            self.report_progress();
            self.next_report = now + REPORT_NS;
        }
    }

    /// How long the poll may sleep.
    fn timeout(&self, now: u64) -> Duration {
        let mut next = self.next_report;
        let mut consider = |at: u64| next = next.min(at);
        match self.phase {
            Phase::Ready | Phase::Release | Phase::Drain => consider(now + 1_000_000),
            Phase::Run => {
                if let Some(tl) = self.timeline {
                    consider(tl.end);
                    if self.cpu_start.is_none() {
                        consider(tl.measure);
                    }
                }
                if let Some(at) = self.work_wake {
                    if self.work.precise() {
                        // The poll rounds its timeout up to a millisecond: wake up to a
                        // millisecond early, then poll without sleeping until it is time.
                        consider(if at < now + 1_000_000 { now } else { at - 1_000_000 });
                    } else {
                        consider(at);
                    }
                }
                if let Some(at) = self.retry.iter().map(|r| r.0).min() {
                    consider(at);
                }
            }
            Phase::Closing => consider(self.deadline),
            Phase::Setup | Phase::Done => {}
        }
        if self.conns.pending > 0 || self.conns.closing > 0 {
            consider(self.next_scan);
        }
        Duration::from_nanos(next.saturating_sub(now))
    }

    fn running(&self, now: u64) -> bool {
        self.phase == Phase::Run && self.timeline.is_some_and(|tl| now < tl.end)
    }

    // ---- phases ----

    fn become_ready(&mut self, now: u64) {
        self.phase = Phase::Ready;
        self.report_progress();
        let ready = self.shared.ready.fetch_add(1, Ordering::AcqRel) + 1;
        if ready == self.shared.threads {
            // The last thread ready fires the start for all; with no connection open anywhere
            // there is nothing to run.
            if !self.plan.recycle && self.shared.opened.load(Ordering::Acquire) == 0 {
                self.shared.abort.store(true, Ordering::Release);
            } else {
                self.shared.t0.store(now, Ordering::Release);
            }
        }
    }

    fn begin_run(&mut self, timeline: Timeline, now: u64) {
        self.timeline = Some(timeline);
        self.phase = Phase::Run;
        self.stats.members = self.conns.slab.iter().filter(|(_, c)| c.state == State::Open).count() as u64;
        self.work.start(&mut self.conns, timeline, now);
        if self.plan.recycle {
            let mut slot = self.index;
            while slot < self.plan.slots {
                self.open(slot, now);
                slot += self.shared.threads;
            }
        }
    }

    fn end_run(&mut self, now: u64) {
        let end = procfs::thread_cpu_ticks().unwrap_or(0);
        self.stats.cpu_ticks = end.saturating_sub(self.cpu_start.unwrap_or(end));
        if let (Some(start), Some(end)) = (self.wait_start, procfs::thread_cpu_wait_ns()) {
            self.stats.cpu_wait = Some(end.saturating_sub(start));
        }
        self.work.stop(now);
        self.work_wake = None;
        self.retry.clear();
        self.phase = Phase::Drain;
        self.deadline = now + self.plan.drain;
    }

    fn begin_closing(&mut self, now: u64) {
        self.stats.open_at_end =
            self.conns.slab.iter().filter(|(_, c)| c.state == State::Open).count() as u64;
        let keys: Vec<(usize, State)> = self.conns.slab.iter().map(|(k, c)| (k, c.state)).collect();
        for (key, state) in keys {
            match state {
                State::Open => self.conns.close(key, now),
                State::Connecting | State::Handshaking => drop(self.conns.remove(key, &self.poll)),
                State::Closing => {}
            }
        }
        self.phase = Phase::Closing;
        self.deadline = now + CLOSE_NS;
    }

    fn report_progress(&mut self) {
        let now = (self.stats.opened, self.stats.failed(), self.work.received());
        let add = |counter: &AtomicU64, new: u64, old: u64| {
            if new > old {
                counter.fetch_add(new - old, Ordering::AcqRel);
            }
        };
        add(&self.shared.opened, now.0, self.reported.0);
        add(&self.shared.failed, now.1, self.reported.1);
        add(&self.shared.received, now.2, self.reported.2);
        self.reported = now;
    }

    // ---- opening ----

    fn open_more(&mut self, now: u64) {
        while self.conns.pending < self.plan.max_pending && self.next_slot < self.plan.slots {
            let slot = self.next_slot;
            self.next_slot += self.shared.threads;
            self.open(slot, now);
        }
    }

    fn retry_due(&mut self, now: u64) {
        let mut i = 0;
        while i < self.retry.len() {
            if self.retry[i].0 <= now {
                let (_, slot) = self.retry.swap_remove(i);
                self.open(slot, now);
            } else {
                i += 1;
            }
        }
    }

    fn open(&mut self, slot: usize, now: u64) {
        self.stats.attempts += 1;
        let tls = match self.tls_session(slot) {
            Ok(tls) => tls,
            Err(cause) => return self.count_failure(cause, slot, now),
        };
        let mut stream = match self.connect(slot) {
            Ok(stream) => stream,
            Err(e) => return self.count_failure(classify(&e), slot, now),
        };
        let entry = self.conns.slab.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            return self.count_failure(classify(&e), slot, now);
        }
        entry.insert(Conn {
            stream,
            tls,
            state: State::Connecting,
            ws: Connection::new(Role::Client, Config::default(), None),
            input: BytesMut::new(),
            out: BytesMut::new(),
            key: [0; 24],
            started: now,
            since: now,
            slot,
            dirty: false,
            blocked: false,
            peer: self.work.peer(slot),
        });
        self.conns.pending += 1;
    }

    /// A non-blocking connect, bound first to the slot's source address if it has one.
    fn connect(&self, slot: usize) -> io::Result<TcpStream> {
        let target = self.plan.route.target(slot);
        connect(target.addr, target.source(slot))
    }

    fn on_connected(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.slab.get_mut(key) else { return };
        conn.state = State::Handshaking;
        conn.key = generate_key(&mut rand::rng());
        self.request.clear();
        let target = self.plan.route.target(conn.slot);
        let offer = self.plan.deflate.as_ref().map(DeflateConfig::client_offer);
        ClientRequest {
            extensions: offer.as_deref(),
            ..ClientRequest::new(&target.host, &target.path, conn.key)
        }
        .write(&mut self.request);
        conn.out.extend_from_slice(&self.request);
        self.flush(key, now);
    }

    fn on_response(&mut self, key: usize, n: usize, now: u64) {
        let Some(conn) = self.conns.slab.get_mut(key) else { return };
        conn.input.extend_from_slice(&self.rbuf[..n]);
        let mut headers = [EMPTY_HEADER; 32];
        let outcome = match parse_response(&conn.input, &mut headers, MAX_RESPONSE) {
            Ok(Status::Partial) => return,
            Ok(Status::Complete(response)) => match response.validate(&conn.key, &[]) {
                Ok(accepted) => match &self.plan.deflate {
                    Some(config) => match config.accept_response(accepted.extensions()) {
                        Ok(Some(params)) => {
                            conn.ws = Connection::new(
                                Role::Client,
                                Config::default(),
                                Some(DeflateState::new(Role::Client, params, config)),
                            );
                            self.stats.deflated += 1;
                            Ok(response.len)
                        }
                        Ok(None) => Ok(response.len),
                        Err(e) => Err(FailureCause::BadHandshake(e.to_string())),
                    },
                    None if accepted.extensions().any(|v| !v.trim_ascii().is_empty()) => {
                        Err(FailureCause::BadHandshake("an extension that was not offered".into()))
                    }
                    None => Ok(response.len),
                },
                Err(HandshakeError::UnexpectedStatus(code)) => Err(FailureCause::HttpStatus(code)),
                Err(e) => Err(FailureCause::BadHandshake(e.to_string())),
            },
            Err(e) => Err(FailureCause::BadHandshake(e.to_string())),
        };
        let len = match outcome {
            Ok(len) => len,
            Err(cause) => return self.fail(key, cause, now),
        };
        conn.input.advance(len);
        conn.state = State::Open;
        self.conns.pending -= 1;
        self.stats.opened += 1;
        let measured = self.timeline.is_some_and(|tl| tl.measuring(now));
        if measured {
            self.stats.handshakes_measured += 1;
        }
        if measured || !self.plan.recycle {
            self.stats.handshake.saturating_record(now.saturating_sub(conn.started) / 1000);
        }
        let leftover = !conn.input.is_empty();
        if !leftover {
            conn.input = BytesMut::new();
        }
        self.work.on_open(&mut self.conns, key, now);
        if leftover {
            // Frames that came with the 101.
            let Some(conn) = self.conns.slab.get_mut(key) else { return };
            let mut input = std::mem::take(&mut conn.input);
            self.frames(key, &mut input, now);
            if let Some(conn) = self.conns.slab.get_mut(key) {
                conn.input = input;
            }
        }
    }

    // ---- events ----

    fn on_event(&mut self, event: &IoEvent, now: u64) {
        let key = event.token().0;
        let Some(conn) = self.conns.slab.get_mut(key) else { return };
        if conn.state == State::Connecting {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(key, classify(&e), now),
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => self.on_connected(key, now),
                // Not yet: a spurious wakeup; the connect timeout bounds the wait.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(key, classify(&e), now),
            }
        }
        if event.is_writable() {
            if let Some(conn) = self.conns.slab.get_mut(key) {
                conn.blocked = false;
            }
            self.flush(key, now);
        }
        let closed = event.is_read_closed() || event.is_error();
        if event.is_readable() || closed {
            if self.conns.slab.get(key).is_some_and(|c| c.tls.is_some()) {
                self.read_tls(key, closed);
            } else {
                self.read(key, closed);
            }
        }
    }

    /// Reads until the socket is drained. A read shorter than the buffer drains it: epoll
    /// (edge-triggered) reports bytes that arrive later as a new event, so the `WouldBlock`
    /// read that would confirm it is saved, unless the event also said the peer closed.
    fn read(&mut self, key: usize, closed: bool) {
        loop {
            let Some(conn) = self.conns.slab.get_mut(key) else { return };
            let n = match conn.stream.read(&mut self.rbuf) {
                Ok(0) => return self.on_eof(key),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.on_read_error(key, &e),
            };
            let now = self.shared.clock.now();
            match conn.state {
                State::Handshaking => self.on_response(key, n, now),
                State::Open | State::Closing => self.on_bytes(key, n, now),
                State::Connecting => {}
            }
            if n < self.rbuf.len() && !(closed || cfg!(not(target_os = "linux"))) {
                return;
            }
        }
    }

    /// Parses frames from what was read: from the thread's scratch buffer when the connection
    /// holds no unfinished frame (the common case: no copy kept, no allocation), else from the
    /// connection's own buffer.
    fn on_bytes(&mut self, key: usize, n: usize, now: u64) {
        let Some(conn) = self.conns.slab.get_mut(key) else { return };
        if conn.input.is_empty() {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            buf.extend_from_slice(&self.rbuf[..n]);
            self.frames(key, &mut buf, now);
            if !buf.is_empty() {
                // An unfinished frame stays with its connection.
                if let Some(conn) = self.conns.slab.get_mut(key) {
                    conn.input.extend_from_slice(&buf);
                }
                buf.clear();
            }
            self.scratch = buf;
        } else {
            let mut buf = std::mem::take(&mut conn.input);
            buf.extend_from_slice(&self.rbuf[..n]);
            self.frames(key, &mut buf, now);
            if let Some(conn) = self.conns.slab.get_mut(key) {
                conn.input = if self.plan.lean && buf.is_empty() { BytesMut::new() } else { buf };
            }
        }
    }

    fn frames(&mut self, key: usize, buf: &mut BytesMut, now: u64) {
        loop {
            let Some(conn) = self.conns.slab.get_mut(key) else { return };
            let Some(event) = conn.ws.poll_event(buf) else { break };
            let open = conn.state == State::Open;
            match event {
                Event::Binary(payload) | Event::Text(payload) if open => {
                    self.work.on_message(&mut self.conns, key, &payload, now);
                }
                Event::Close { code, .. } if open => {
                    return self.fail(key, FailureCause::ClosedByServer(code.0), now);
                }
                Event::Failed(e) if open => {
                    return self.fail(key, FailureCause::Protocol(e.to_string()), now);
                }
                // Closing: the server answered our Close; it closes the TCP connection next.
                _ => {}
            }
        }
        if let Some(conn) = self.conns.slab.get_mut(key) {
            if conn.ws.poll_transmit(&mut conn.out) {
                self.conns.mark(key);
            }
        }
    }

    fn on_eof(&mut self, key: usize) {
        let now = self.shared.clock.now();
        match self.conns.slab.get(key).map(|c| c.state) {
            Some(State::Closing) => self.finish(key, now),
            Some(_) => self.fail(key, FailureCause::Eof, now),
            None => {}
        }
    }

    fn on_read_error(&mut self, key: usize, e: &io::Error) {
        let now = self.shared.clock.now();
        match self.conns.slab.get(key).map(|c| c.state) {
            Some(State::Closing) => self.finish(key, now),
            Some(_) => self.fail(key, classify(e), now),
            None => {}
        }
    }

    // ---- writing ----

    fn flush_dirty(&mut self, now: u64) {
        while let Some(key) = self.conns.dirty.pop() {
            if let Some(conn) = self.conns.slab.get_mut(key) {
                conn.dirty = false;
                self.flush(key, now);
            }
        }
    }

    /// One write of everything the connection has (more only if the kernel took part).
    fn flush(&mut self, key: usize, now: u64) {
        loop {
            let Some(conn) = self.conns.slab.get_mut(key) else { return };
            if conn.tls.is_some() {
                return self.flush_tls(key, now);
            }
            if conn.blocked || conn.out.is_empty() || conn.state == State::Connecting {
                return;
            }
            match conn.stream.write(&conn.out) {
                Ok(n) if n == conn.out.len() => {
                    if self.plan.lean {
                        conn.out = BytesMut::new();
                    } else {
                        conn.out.clear();
                    }
                    return;
                }
                Ok(0) => return self.fail(key, FailureCause::Reset, now),
                Ok(n) => conn.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return if conn.state == State::Closing {
                        self.finish(key, now)
                    } else {
                        self.fail(key, classify(&e), now)
                    };
                }
            }
        }
    }

    // ---- endings ----

    /// A connection failed: counted by cause; a connect slot tries again shortly.
    fn fail(&mut self, key: usize, cause: FailureCause, now: u64) {
        let Some(conn) = self.conns.remove(key, &self.poll) else { return };
        if conn.state == State::Open {
            self.stats.failed_after_open += 1;
            self.work.on_lost(key, &conn.peer);
        }
        self.count_failure(cause, conn.slot, now);
    }

    fn count_failure(&mut self, cause: FailureCause, slot: usize, now: u64) {
        *self.stats.failures.entry(cause).or_default() += 1;
        if self.plan.recycle && self.running(now) {
            self.retry.push((now + RETRY_NS, slot));
        }
    }

    /// A connection ended after the close handshake (or its timeout): a connect slot starts
    /// the next one.
    fn finish(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.remove(key, &self.poll) else { return };
        if self.plan.recycle && self.running(now) {
            self.open(conn.slot, now);
        }
    }

    fn scan_timeouts(&mut self, now: u64) {
        let connect = self.plan.connect_timeout;
        let mut expired = std::mem::take(&mut self.expired);
        for (key, conn) in &self.conns.slab {
            match conn.state {
                State::Connecting if now - conn.started > connect => {
                    expired.push((key, Some(FailureCause::ConnectTimeout)));
                }
                State::Handshaking if now - conn.started > connect => {
                    expired.push((key, Some(FailureCause::HandshakeTimeout)));
                }
                // Both Close frames exchanged: the server should close the TCP connection
                // now; one that waits for the client to do it gets a short grace.
                State::Closing
                    if now - conn.since > CLOSE_NS
                        || (conn.ws.is_closed() && now - conn.since > LINGER_NS) =>
                {
                    expired.push((key, None));
                }
                _ => {}
            }
        }
        for (key, cause) in expired.drain(..) {
            match cause {
                Some(cause) => self.fail(key, cause, now),
                None => self.finish(key, now),
            }
        }
        self.expired = expired;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timeline_and_shared_start_unset() {
        let timeline = Timeline { start: 10, measure: 20, end: 30 };
        assert!(!timeline.measuring(19) && timeline.measuring(20) && !timeline.measuring(30));
        let shared = Shared::new(2, Duration::from_nanos(10), Duration::from_nanos(10));
        assert!(shared.timeline().is_none());
    }
}

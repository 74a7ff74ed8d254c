//! What a [`Handler`](super::Handler) callback can do: send, close, reach its worker's state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::core::Core;
use super::handle::{ConnId, Handle};
use super::{Handler, HttpResponse};
use crate::proto::{CloseCode, MessageKind};

/// The worker a callback runs on: its connections, its state, its handle.
pub struct WorkerCtx<'a, H: Handler> {
    pub(crate) core: &'a mut Core<H::Command>,
    pub(crate) local: &'a mut H::Local,
}

impl<H: Handler> std::fmt::Debug for WorkerCtx<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCtx").field("worker", &self.core.index).finish()
    }
}

impl<'a, H: Handler> WorkerCtx<'a, H> {
    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.core.index
    }

    /// This worker's state.
    pub fn local(&mut self) -> &mut H::Local {
        self.local
    }

    /// This worker's state and its sending side at once, for fan-out loops over the state.
    pub fn split(&mut self) -> (&mut H::Local, Outbox<'_, H::Command>) {
        (self.local, Outbox { core: self.core })
    }

    /// A handle to every worker.
    pub fn handle(&self) -> &Handle<H::Command> {
        self.core.handle()
    }

    /// The time of this loop turn (read once per turn).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// How long the previous [`Handler::on_tick`] took on this worker, from the start of its
    /// turn until the frames it queued were handed to the kernel: what a tick costs, for
    /// bounding the next one. `None` before the first tick.
    pub fn last_tick_work(&self) -> Option<Duration> {
        self.core.last_tick_work
    }

    /// Sends a message to a connection of this worker (framed and, if negotiated, compressed
    /// for it). Returns false if it is gone, closing, or on another worker.
    pub fn send_to(&mut self, to: ConnId, kind: MessageKind, payload: &[u8]) -> bool {
        self.core.send(to, kind, payload)
    }

    /// Queues a frame encoded once for many (see [`crate::proto::frame::encode_frame_bytes`]):
    /// no copy per recipient. Returns false if the connection is gone or closing.
    pub fn send_frame_to(&mut self, to: ConnId, frame: &Bytes) -> bool {
        self.core.send_frame(to, frame, false)
    }

    /// As [`send_frame_to`](Self::send_frame_to), but dropped (and counted) when the
    /// connection is past its soft outbound budget.
    pub fn send_volatile_to(&mut self, to: ConnId, frame: &Bytes) -> bool {
        self.core.send_frame(to, frame, true)
    }

    /// Queues raw bytes to a stream opened with [`Decision::Stream`](super::Decision::Stream).
    pub fn send_raw_to(&mut self, to: ConnId, bytes: &Bytes) -> bool {
        self.core.send_raw(to, bytes)
    }

    /// Whether a connection of this worker negotiated permessage-deflate such that it can take
    /// frames compressed once for many (a fresh context per message, 15-bit window).
    pub fn is_compressed(&self, id: ConnId) -> bool {
        self.core.is_compressed(id)
    }

    /// Starts the closing handshake with a connection of this worker.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        self.core.close(id, code, reason)
    }

    /// Answers a request of this worker whose handler returned
    /// [`Decision::Defer`](super::Decision::Defer). Returns false, and sends nothing, if the
    /// connection is gone (the peer closed), was answered already (or timed out with 504),
    /// never deferred, or is on another worker.
    pub fn respond(&mut self, id: ConnId, response: HttpResponse) -> bool {
        self.core.respond_deferred(id, &response)
    }

    /// Whether a connection of this worker is open for sending.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.core.is_open(id)
    }

    /// Outbound bytes queued for a connection of this worker.
    pub fn buffered(&self, id: ConnId) -> usize {
        self.core.buffered(id)
    }
}

/// A callback's view of one connection, plus its worker (through `Deref`).
pub struct Ctx<'a, H: Handler> {
    pub(crate) worker: WorkerCtx<'a, H>,
    pub(crate) session: &'a mut H::Session,
    pub(crate) id: ConnId,
}

impl<H: Handler> std::fmt::Debug for Ctx<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("id", &self.id).finish()
    }
}

impl<'a, H: Handler> std::ops::Deref for Ctx<'a, H> {
    type Target = WorkerCtx<'a, H>;
    fn deref(&self) -> &Self::Target {
        &self.worker
    }
}

impl<H: Handler> std::ops::DerefMut for Ctx<'_, H> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.worker
    }
}

impl<H: Handler> Ctx<'_, H> {
    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// This connection's state.
    pub fn session(&mut self) -> &mut H::Session {
        self.session
    }

    /// This connection's state and its worker's state, at once.
    pub fn parts(&mut self) -> (&mut H::Session, &mut H::Local) {
        (self.session, self.worker.local)
    }

    /// This connection's state, its worker's state and the worker's sending side, at once.
    pub fn split_session(&mut self) -> (&mut H::Session, &mut H::Local, Outbox<'_, H::Command>) {
        (self.session, self.worker.local, Outbox { core: self.worker.core })
    }

    /// The peer's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.worker.core.peer(self.id)
    }

    /// Sends a message to this connection. Replies to the connection being served are
    /// corked: all of them leave in one write at the end of the read.
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> bool {
        let id = self.id;
        self.worker.core.send(id, kind, payload)
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> bool {
        self.send(MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> bool {
        self.send(MessageKind::Binary, data)
    }

    /// Queues a frame encoded once for many.
    pub fn send_frame(&mut self, frame: &Bytes) -> bool {
        let id = self.id;
        self.worker.core.send_frame(id, frame, false)
    }

    /// Starts the closing handshake.
    pub fn close_self(&mut self, code: CloseCode, reason: &str) -> bool {
        let id = self.id;
        self.worker.core.close(id, code, reason)
    }

    /// Outbound bytes queued for this connection.
    pub fn buffered_self(&self) -> usize {
        self.worker.core.buffered(self.id)
    }

    /// Whether this connection is past its soft outbound budget.
    pub fn is_backpressured(&self) -> bool {
        self.worker.core.buffered(self.id) > self.worker.core.config.soft_outbound_limit
    }
}

/// The sending side of a worker, borrowed apart from its state (see [`WorkerCtx::split`]).
pub struct Outbox<'a, C> {
    core: &'a mut Core<C>,
}

impl<C> std::fmt::Debug for Outbox<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("worker", &self.core.index).finish()
    }
}

impl<C: Send + 'static> Outbox<'_, C> {
    /// As [`WorkerCtx::send_frame_to`].
    pub fn send_frame_to(&mut self, to: ConnId, frame: &Bytes) -> bool {
        self.core.send_frame(to, frame, false)
    }

    /// As [`WorkerCtx::send_volatile_to`].
    pub fn send_volatile_to(&mut self, to: ConnId, frame: &Bytes) -> bool {
        self.core.send_frame(to, frame, true)
    }

    /// As [`WorkerCtx::send_to`].
    pub fn send_to(&mut self, to: ConnId, kind: MessageKind, payload: &[u8]) -> bool {
        self.core.send(to, kind, payload)
    }

    /// As [`WorkerCtx::send_raw_to`].
    pub fn send_raw_to(&mut self, to: ConnId, bytes: &Bytes) -> bool {
        self.core.send_raw(to, bytes)
    }

    /// As [`WorkerCtx::buffered`].
    pub fn buffered(&self, id: ConnId) -> usize {
        self.core.buffered(id)
    }

    /// As [`WorkerCtx::is_compressed`].
    pub fn is_compressed(&self, id: ConnId) -> bool {
        self.core.is_compressed(id)
    }

    /// As [`WorkerCtx::close`].
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        self.core.close(id, code, reason)
    }

    /// As [`WorkerCtx::respond`].
    pub fn respond(&mut self, id: ConnId, response: HttpResponse) -> bool {
        self.core.respond_deferred(id, &response)
    }

    /// Closes a connection that cannot keep up, as the engine does past the hard outbound
    /// cap: what is queued and not started is dropped, close 1008 goes out next, and it is
    /// counted as a slow-consumer close. False if it is gone or already closing.
    pub fn close_slow_consumer(&mut self, id: ConnId) -> bool {
        self.core.close_slow(id)
    }

    /// The soft outbound budget: past it a connection is backpressured.
    pub fn soft_limit(&self) -> usize {
        self.core.config.soft_outbound_limit
    }
}

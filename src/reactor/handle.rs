//! Reaching workers from any thread: a channel per worker plus its `mio::Waker`.

use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use bytes::Bytes;

use super::HttpResponse;
use super::stats::Stats;
use crate::proto::CloseCode;

/// Identifies a connection across the server: its worker, its slot and the slot's generation
/// (so an id of a closed connection never reaches the next one in the same slot).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    pub(crate) fn new(worker: usize, slot: usize, generation: u32) -> Self {
        Self(((worker as u64) << 56) | (u64::from(generation & 0x00ff_ffff) << 32) | slot as u64)
    }

    /// The worker thread that owns the connection.
    pub fn worker(self) -> usize {
        (self.0 >> 56) as usize
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The id as a number (unique while the server runs, for logs and maps).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{}:{})", self.worker(), (self.0 >> 32) & 0x00ff_ffff, self.slot())
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// What a worker can be told from another thread.
#[derive(Debug)]
pub(crate) enum Command<C> {
    /// Queue a pre-encoded frame to a connection.
    Frame(ConnId, Bytes),
    /// Send a message (framed, maybe compressed, by the connection).
    Send(ConnId, crate::proto::MessageKind, Bytes),
    /// Start the closing handshake.
    Close(ConnId, CloseCode, String),
    /// Answer a deferred request (boxed: the channel's slots stay the size of a frame).
    Respond(ConnId, Box<HttpResponse>),
    /// The application's command.
    User(C),
    /// Close everything with 1001 and stop.
    Shutdown,
}

pub(crate) struct Remote<C> {
    pub(crate) sender: Sender<Command<C>>,
    pub(crate) waker: Arc<mio::Waker>,
}

/// A `Send + Clone` handle to a running server: send to any connection, post commands to
/// workers, read stats, shut down. Each call costs a channel send and, when the worker
/// sleeps, one wake-up.
pub struct Handle<C> {
    remotes: Arc<[Remote<C>]>,
    stats: Arc<Stats>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Self { remotes: Arc::clone(&self.remotes), stats: Arc::clone(&self.stats) }
    }
}

impl<C> fmt::Debug for Handle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("workers", &self.remotes.len()).finish()
    }
}

impl<C: Send + 'static> Handle<C> {
    pub(crate) fn new(remotes: Vec<Remote<C>>, stats: Arc<Stats>) -> Self {
        Self { remotes: remotes.into(), stats }
    }

    fn deliver(&self, worker: usize, command: Command<C>) -> bool {
        let Some(remote) = self.remotes.get(worker) else { return false };
        if remote.sender.send(command).is_err() {
            return false;
        }
        remote.waker.wake().is_ok()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.remotes.len()
    }

    /// Sends a message to a connection. Returns false when its worker has stopped (a closed
    /// connection is skipped silently by the worker).
    pub fn send(&self, to: ConnId, kind: crate::proto::MessageKind, payload: Bytes) -> bool {
        self.deliver(to.worker(), Command::Send(to, kind, payload))
    }

    /// Queues a frame encoded once (see [`crate::proto::frame::encode_frame_bytes`]) to a
    /// connection.
    pub fn send_frame(&self, to: ConnId, frame: Bytes) -> bool {
        self.deliver(to.worker(), Command::Frame(to, frame))
    }

    /// Starts closing a connection.
    pub fn close(&self, to: ConnId, code: CloseCode, reason: &str) -> bool {
        self.deliver(to.worker(), Command::Close(to, code, reason.to_owned()))
    }

    /// Answers a request whose handler returned [`Decision::Defer`](super::Decision::Defer)
    /// (`id` is [`HttpRequest::id`](super::HttpRequest::id)), from any thread: the answer is
    /// posted to the connection's worker, which writes it unless the connection is gone or
    /// was answered already (then it is dropped). Returns false only when the worker has
    /// stopped; [`WorkerCtx::respond`](super::WorkerCtx::respond) tells more on the worker.
    pub fn respond(&self, id: ConnId, response: HttpResponse) -> bool {
        self.deliver(id.worker(), Command::Respond(id, Box::new(response)))
    }

    /// Posts a command to one worker; it runs in [`Handler::on_command`](super::Handler::on_command).
    pub fn post(&self, worker: usize, command: C) -> bool {
        self.deliver(worker, Command::User(command))
    }

    /// Posts a copy of a command to every worker but `except` (use `usize::MAX` for all).
    pub fn post_others(&self, except: usize, command: &C) -> bool
    where
        C: Clone,
    {
        let mut ok = true;
        for worker in 0..self.remotes.len() {
            if worker != except {
                ok &= self.deliver(worker, Command::User(command.clone()));
            }
        }
        ok
    }

    /// Counters of the whole server.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Asks every worker to close its connections with 1001, flush, and stop.
    pub fn shutdown(&self) {
        for worker in 0..self.remotes.len() {
            self.deliver(worker, Command::Shutdown);
        }
    }
}

//! The seam between the hub and where room state lives: a [`Broker`] that numbers, stores
//! and fans out each room's messages as one operation, and a [`PresenceStore`] that knows who
//! is in a room. The hub talks only to these traits. The in-memory versions
//! ([`MemoryBroker`], [`MemoryPresence`]) are the embedded default; a cluster plugs in
//! versions backed by a shared service (Redis) without touching the hub.
//!
//! # Answers now or later
//!
//! Every call that has an answer returns a [`Reply`]: [`Reply::Now`] with the answer (the
//! in-memory stores, at no extra cost), or [`Reply::Later`] when the answer needs a round
//! trip. A later answer is handed to the [`Sink`] given at [`Broker::start`] as
//! [`ToWorker::Done`], addressed to the [`Ticket`] of the call, and reaches the worker that
//! asked through its channel and waker: no event-loop thread ever waits on the network.
//! Calls can fail ([`StoreError`]); the hub answers a failed `ack`, never an `ok`.
//!
//! # The contract that keeps delivery exact
//!
//! For each room, a broker numbers messages 1, 2, 3, ... without gaps within an [`Epoch`],
//! stores each numbered message in the room's history *before* delivering it, and delivers a
//! room's messages to each worker in seq order. A member that subscribed at position `p`
//! (the [`Replay::position`] its subscription answered) is owed every message after `p`
//! exactly once; the hub skips anything at or below it, buffers live messages while a
//! subscription is pending, and fetches a hole from history if a live message ever skips
//! ahead (a remote broker's pub/sub may drop one). A new epoch means the room's numbering
//! started over (its state was lost): positions of the old epoch are a `history_gap`.

mod memory;
#[doc(hidden)]
pub mod testing;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::broadcast::Broadcast;
use super::envelope::MessageId;
use crate::reactor::ConnId;
pub use memory::{MemoryBroker, MemoryPresence};

/// A room's numbering era: a new epoch starts when the room's numbering starts over.
/// Opaque, short, compared for equality only.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A new random epoch (eight base-36 characters).
    pub fn random() -> Self {
        Self::from(random_id(8).as_str())
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Epoch {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// `n` random characters of `[0-9a-z]`.
pub(crate) fn random_id(n: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..n).map(|_| DIGITS[rand::random_range(0..DIGITS.len())] as char).collect()
}

/// A place in a room's stream: everything up to `seq` of `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The last seq (0: nothing yet).
    pub seq: u64,
    /// The numbering era it belongs to.
    pub epoch: Epoch,
}

/// Which `hibiki serve` process a connection is on.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A new random node id.
    pub fn random() -> Self {
        Self::from(random_id(10).as_str())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// A connection anywhere: its node and its id there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The node.
    pub node: NodeId,
    /// [`ConnId::as_u64`] on that node.
    pub conn: u64,
}

/// What a publication is, as its envelope `type` says.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A room message (`message {room, seq, from, data, ts}`).
    Message,
    /// `user_joined {room, user, name}`: `data` holds the name (or null).
    UserJoined,
    /// `user_left {room, user}`.
    UserLeft,
    /// `user_typing {room, user}`.
    UserTyping,
    /// `messages_read {room, user, seq}`: `data` holds the seq read.
    MessagesRead,
}

impl Kind {
    /// The envelope type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::UserJoined => "user_joined",
            Self::UserLeft => "user_left",
            Self::UserTyping => "user_typing",
            Self::MessagesRead => "messages_read",
        }
    }
}

/// A message or room event as it crosses the seam, and process boundaries: plain data, no
/// encode caches, nothing that names a connection of this process only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// The room.
    pub room: Arc<str>,
    /// Its number in the room (0 for unnumbered ones: volatile messages and events).
    pub seq: u64,
    /// The room's epoch for a numbered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
    /// What it is.
    pub kind: Kind,
    /// The user it is from (or about, for presence events).
    pub from: Arc<str>,
    /// The message's data (see [`Kind`] for events).
    pub data: Value,
    /// When it was published (ms since the epoch).
    pub ts: u64,
    /// Latest-state key: a newer message with the same key replaces this one if unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Arc<str>>,
    /// May be dropped for a slow consumer; never numbered nor kept.
    #[serde(default)]
    pub volatile: bool,
    /// A connection left out (the sender, for `echo: false`, typing and presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Origin>,
}

impl Publication {
    /// A publication of `kind` in `room` from `from`, unnumbered, with nothing left out.
    pub fn new(room: Arc<str>, kind: Kind, from: Arc<str>, data: Value, ts: u64) -> Self {
        Self { room, seq: 0, epoch: None, kind, from, data, ts, key: None, volatile: false, exclude: None }
    }
}

/// What a pending call waits for on its worker.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// An operation the worker's hub keeps (a join, a publish's ack, a hole to fill).
    Op(u64),
    /// A deferred HTTP answer to this connection (`POST /api/publish`).
    Http(ConnId),
}

/// Where a later answer goes: the worker that asked, and what waits for it there.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The worker.
    pub worker: usize,
    /// What waits.
    pub waiter: Waiter,
}

/// An answer now, or a promise of one through the [`Sink`].
#[derive(Debug, PartialEq)]
#[must_use]
pub enum Reply<T> {
    /// The answer.
    Now(T),
    /// The answer comes later, as [`ToWorker::Done`] for the call's ticket.
    Later,
}

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached (or is degraded), with the reason.
    Unavailable(String),
    /// The store did not answer in time.
    Timeout,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "room state unavailable: {why}"),
            Self::Timeout => f.write_str("room state did not answer in time"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a publish failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The same `(user, id)` published another message before, which got this seq.
    IdReused {
        /// The first message's seq.
        seq: u64,
    },
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The idempotency key of a publish: a repeat of the same message under the same key returns
/// the first seq without publishing again; another message under it is [`PublishError::IdReused`].
#[derive(Clone, Copy, Debug)]
pub struct Dedup<'a> {
    /// The publishing user.
    pub user: &'a str,
    /// The client's id.
    pub id: &'a MessageId,
    /// A fingerprint of the message ([`super::envelope::fingerprint`]).
    pub fingerprint: u64,
}

/// Where a subscription starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// At the room's current position (a join).
    Now,
    /// After `seq` of `epoch` (a resume): the answer replays what came after it.
    After {
        /// The last seq the client saw.
        seq: u64,
        /// Its epoch, when the client knows it (`None`: whatever the current one is).
        epoch: Option<Epoch>,
    },
}

/// A room's position and, for a resume or a history fetch, what came after the asked-for
/// seq.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The room's position when this was read: the subscriber is owed everything after it.
    pub position: Position,
    /// Numbered messages after the asked-for seq, in order, up to `position`.
    pub messages: Vec<Arc<Broadcast>>,
    /// History could not serve everything after the asked-for seq (trimmed, or another
    /// epoch): `messages` are what it still has of the current epoch.
    pub gap: bool,
}

/// A connection in a room's presence: owned by its node and connection, so a node's entries
/// can be removed when the node dies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The node the connection is on.
    pub node: NodeId,
    /// The connection ([`ConnId::as_u64`]).
    pub conn: u64,
    /// Its user.
    pub user: Arc<str>,
    /// The user's display name.
    pub name: Option<Arc<str>>,
}

/// What adding a connection to a room's presence answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The user's first connection in the room (announce them).
    pub newcomer: bool,
    /// Users present now.
    pub count: usize,
    /// The users present, sorted, when there are at most the asked-for limit of them.
    pub users: Option<Vec<Arc<str>>>,
}

/// What removing a connection from a room's presence answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// It was the user's last connection in the room (announce the leave).
    pub gone: bool,
    /// Users present now.
    pub count: usize,
}

/// A later answer, by call.
#[derive(Debug, Clone)]
pub enum Done {
    /// [`Broker::subscribe`].
    Subscribed(Result<Replay, StoreError>),
    /// [`Broker::publish`].
    Published(Result<Position, PublishError>),
    /// [`Broker::history`].
    History(Result<Replay, StoreError>),
    /// [`PresenceStore::add`].
    Joined(Result<Joined, StoreError>),
    /// [`PresenceStore::remove`].
    Left(Result<Left, StoreError>),
}

/// What a store hands to a worker.
#[derive(Debug, Clone)]
pub enum ToWorker {
    /// A publication for the worker's members of its room.
    Deliver(Arc<Broadcast>),
    /// A later answer.
    Done(Waiter, Done),
}

/// How stores reach the workers of this process: `(worker, what)`.
pub type Sink = Arc<dyn Fn(usize, ToWorker) + Send + Sync>;

/// Numbering, history and fan-out of rooms' messages, as one operation per publish.
pub trait Broker: Send + Sync + 'static {
    /// Sets this node's id, the worker count and how publications and later answers reach
    /// workers (once, at server start, before any other call).
    fn start(&self, node: &NodeId, workers: usize, sink: Sink);

    /// Counts a member of `room` on `worker` (the room's publications now reach that
    /// worker) and answers the room's position, with a replay after `since` for a resume.
    fn subscribe(
        &self,
        room: &Arc<str>,
        worker: usize,
        since: Since,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>>;

    /// Uncounts a member of `room` on `worker`.
    fn unsubscribe(&self, room: &Arc<str>, worker: usize);

    /// Numbers a publication (unless volatile), stores it and delivers it to every worker of
    /// every node with members, in one order per room. Answers its position (seq 0 for a
    /// volatile one), or the first publish's position for a repeat of `dedup`.
    fn publish(
        &self,
        publication: Publication,
        dedup: Option<Dedup<'_>>,
        ticket: Ticket,
    ) -> Reply<Result<Position, PublishError>>;

    /// The numbered messages of `room` after `after` (of `epoch`, when given).
    fn history(
        &self,
        room: &Arc<str>,
        after: u64,
        epoch: Option<&Epoch>,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>>;

    /// Delivers an unnumbered event (presence, typing, read receipts) to the room's
    /// members, best effort.
    fn emit(&self, publication: Publication);

    /// `Err(reason)` while the broker cannot do its work (for `/healthz`).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Messages kept in history by this process, when it keeps them (for `/metrics`).
    fn kept(&self) -> Option<u64> {
        None
    }
}

/// Who is in each room: entries per connection, counted per user (two tabs are one member).
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds a connection; lists the users when at most `list_limit`.
    fn add(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        list_limit: usize,
        ticket: Ticket,
    ) -> Reply<Result<Joined, StoreError>>;

    /// Removes a connection.
    fn remove(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        ticket: Ticket,
    ) -> Reply<Result<Left, StoreError>>;

    /// Removes every entry of `node` (a node that died). Stores whose entries expire by
    /// themselves unless refreshed need not do anything here.
    fn forget_node(&self, node: &NodeId) {
        let _ = node;
    }
}

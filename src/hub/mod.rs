//! The hub: rooms, acks, presence, history and resume, and 60 Hz batching.
//!
//! A room's shared state lives behind the two traits of [`store`]: the [`Broker`] numbers a
//! room's messages, keeps its history and posts each message to the workers that have
//! members, as one operation; the [`PresenceStore`] knows who is there. The in-memory
//! versions are the default; [`Hub::with_stores`] takes others, which may answer later (a
//! remote engine): the hub then waits for the answer without blocking its worker, buffering
//! a joining member's live messages until its position is known. Membership itself lives in
//! each worker ([`HubLocal`]), so fan-out touches no lock: each worker queues the frame —
//! encoded once per variant for the whole node — to its members.
//!
//! The hub writes through [`Out`], implemented by the reactor's
//! [`Outbox`](crate::reactor::Outbox) and, in tests, by a recorder.
//!
//! # The life of a publish
//!
//! 1. A client sends `{"type":"publish","id":"k-1","payload":{"room":"chat:lobby","data":…}}`.
//!    The worker that owns the connection reads it (one `recv` for everything that arrived),
//!    the protocol core unmasks it in place, and the hub decodes the envelope once.
//! 2. [`Hub::on_message`] checks the room against the token, fingerprints the message (for
//!    idempotent retries) and hands a [`store::Publication`] to [`Broker::publish`].
//! 3. The broker numbers it (seq and epoch), appends it to the room's history, and posts one
//!    `Arc<Broadcast>` to every worker with members of the room — all under the room's lock,
//!    so each worker sees the room's messages in seq order. A remote broker does the same in
//!    one script and publishes it to the other nodes, whose bridge posts it to their workers.
//! 4. The publisher's ack (with the seq) goes out when the broker answers: at once in memory,
//!    later through the worker's channel for a remote broker.
//! 5. Each worker, in [`Hub::deliver`], queues the frame to each member that is owed it (seq
//!    past its position; not the sender with `echo: false`). The frame is encoded on first
//!    use per variant — JSON or MessagePack, compressed or not, SSE — and shared by every
//!    member on every worker: one encode per variant per node, whatever the room's size.
//! 6. At the end of the loop turn each connection's queue leaves in one vectored write.
//!
//! The wire protocol is described in `docs/protocol.md`.

pub mod broadcast;
mod command;
mod commands;
pub mod envelope;
mod identity;
mod out;
mod pending;
mod rooms;
mod sse;
pub mod store;
#[cfg(test)]
mod tests;
mod tick;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::reactor::ConnId;
pub use commands::{ErrorCode, HubError, Session};
use envelope::{MessageId, now_ms};
pub use identity::{Identity, STATS_ROOM, pattern_matches};
pub use out::{Out, Recorder};
pub use rooms::HubLocal;
pub use store::{Broker, PresenceStore, Reply, Sink, StoreError, Ticket, ToWorker, Waiter};
use store::{Dedup, Kind, MemoryBroker, MemoryPresence, NodeId, Origin, Position, Publication, PublishError};

/// Hub settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubConfig {
    /// Messages kept per room for resume. Default 1000.
    pub history_size: usize,
    /// Age past which history is dropped. Default none.
    pub history_ttl: Option<Duration>,
    /// Rooms batched per tick. Default `game:*`.
    pub tick_patterns: Vec<String>,
    /// Ticks per second. Default 60.
    pub tick_rate: u32,
    /// Share of a tick period that one tick's work (batches written) may take; members past
    /// it are served first next tick, holding the latest state per key. It bounds the time
    /// from a tick to its last delivery and leaves the rest of the period for reading and
    /// publishing. Default 0.5.
    pub tick_share: f64,
    /// Rooms one connection may join, besides its own `user:ID` room. Default 256.
    pub max_rooms_per_connection: usize,
    /// Past this many users in a room, joins and leaves are no longer announced to every
    /// member and `presence` carries the count without the list: announcing each of N joins
    /// to everyone costs O(N²). Default 1000.
    pub presence_limit: usize,
    /// This node's id, as other nodes see it (random by default).
    pub node: NodeId,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_ttl: None,
            tick_patterns: vec!["game:*".into()],
            tick_rate: 60,
            tick_share: 0.5,
            max_rooms_per_connection: 256,
            presence_limit: 1000,
            node: NodeId::random(),
        }
    }
}

/// Counters of the hub, for `/metrics`: node-local, never a scan of the stores.
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Messages published.
    pub published: AtomicU64,
    /// Ticks that came later than one and a half periods after the previous one.
    pub late_ticks: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Batch frames sent.
    pub batches: AtomicU64,
    /// Tick-room messages replaced by a newer one with the same key before being sent.
    pub replaced: AtomicU64,
    /// Members whose batch waited for a later tick because the tick's budget was spent.
    pub deferred: AtomicU64,
    /// Rooms with members on this node (one per worker that has some).
    pub rooms: AtomicU64,
    /// Room memberships on this node.
    pub members: AtomicU64,
    /// Store calls that failed (each answered with a failed ack or a gap notice).
    pub store_errors: AtomicU64,
    /// Holes in a room's live stream filled from history.
    pub holes_filled: AtomicU64,
    /// Gaps members were told of (history could not fill them, or the epoch changed).
    pub gaps: AtomicU64,
}

/// Where the hub keeps room state: the seam a cluster plugs into.
#[derive(Clone)]
pub struct Stores {
    /// Numbering, history and fan-out.
    pub broker: Arc<dyn Broker>,
    /// Who is in each room.
    pub presence: Arc<dyn PresenceStore>,
}

impl Stores {
    /// The in-memory stores (one process), sized by `config`.
    pub fn memory(config: &HubConfig) -> Self {
        Self {
            broker: Arc::new(MemoryBroker::new(config.history_size, config.history_ttl)),
            presence: Arc::new(MemoryPresence::default()),
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// The shared part of the hub.
pub struct Hub {
    config: HubConfig,
    stores: Stores,
    /// Counters.
    pub counters: HubCounters,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("config", &self.config).finish()
    }
}

/// A message to publish, as [`Hub::publish`] takes it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Publish<'a> {
    /// The room.
    pub room: &'a str,
    /// What every member receives as `data`.
    pub data: Value,
    /// The publisher's user id (`from`).
    pub from: &'a Arc<str>,
    /// The publishing connection, if any: left out when `echo` is false.
    pub sender: Option<ConnId>,
    /// Whether the sending connection receives its own message. Default true.
    pub echo: bool,
    /// Unnumbered, not kept, droppable for a slow consumer. Default false.
    pub volatile: bool,
    /// Tick rooms: a newer message with the same key replaces an unsent older one.
    pub key: Option<Arc<str>>,
    /// The client's id and the message's fingerprint: a repeat is not published twice.
    pub id: Option<(&'a MessageId, u64)>,
}

impl<'a> Publish<'a> {
    /// A numbered message from `from` to `room`, echoed to its sender, without an id.
    pub fn new(room: &'a str, from: &'a Arc<str>, data: Value) -> Self {
        Self { room, data, from, sender: None, echo: true, volatile: false, key: None, id: None }
    }
}

impl Hub {
    /// A hub with the in-memory stores.
    pub fn new(config: HubConfig) -> Self {
        let stores = Stores::memory(&config);
        Self::with_stores(config, stores)
    }

    /// A hub that keeps room state in `stores`.
    pub fn with_stores(config: HubConfig, stores: Stores) -> Self {
        Self { config, stores, counters: HubCounters::default() }
    }

    /// Sets the worker count and how the stores reach a worker (once, at server start).
    pub fn start(&self, workers: usize, sink: Sink) {
        self.stores.broker.start(&self.config.node, workers, sink);
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// `Err(reason)` while the stores are degraded (what the broker reports).
    pub fn health(&self) -> Result<(), String> {
        self.stores.broker.health()
    }

    /// Whether `room` is a tick room.
    pub fn is_tick_room(&self, room: &str) -> bool {
        self.config.tick_patterns.iter().any(|p| pattern_matches(p, room))
    }

    /// Publishes a message; `ticket` says where a later answer goes. Answers its position
    /// (seq 0 for volatile messages, which are neither numbered nor kept).
    ///
    /// # Errors
    ///
    /// `id_reused` when the same `(user, id)` was published before with another message (a
    /// repeat of the same message answers the first position without publishing again);
    /// `unavailable` when the broker fails.
    pub fn publish(&self, publish: Publish<'_>, ticket: Ticket) -> Reply<Result<Position, HubError>> {
        let Publish { room, data, from, sender, echo, volatile, key, id } = publish;
        let exclude = match (echo, sender) {
            (false, Some(conn)) => Some(Origin { node: self.config.node.clone(), conn: conn.as_u64() }),
            _ => None,
        };
        let publication = Publication {
            key,
            volatile,
            exclude,
            ..Publication::new(Arc::from(room), Kind::Message, Arc::clone(from), data, now_ms())
        };
        let dedup = id.map(|(id, fingerprint)| Dedup { user: from, id, fingerprint });
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        match self.stores.broker.publish(publication, dedup, ticket) {
            Reply::Now(result) => Reply::Now(self.published(result)),
            Reply::Later => Reply::Later,
        }
    }

    /// A broker's answer to a publish, as the client sees it.
    fn published(&self, result: Result<Position, PublishError>) -> Result<Position, HubError> {
        result.map_err(|e| match e {
            PublishError::IdReused { seq } => HubError {
                seq: Some(seq),
                ..HubError::new(ErrorCode::IdReused, "this id was used for another message")
            },
            PublishError::Store(e) => self.store_error(e),
        })
    }

    /// A store error, counted, as the client sees it.
    fn store_error(&self, e: StoreError) -> HubError {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        HubError::new(ErrorCode::Unavailable, e.to_string())
    }

    /// Sends an event outside the numbered stream (presence, typing, read receipts).
    fn emit(
        &self,
        room: &str,
        kind: Kind,
        from: &Arc<str>,
        data: Value,
        exclude: Option<ConnId>,
        volatile: bool,
    ) {
        let exclude = exclude.map(|conn| Origin { node: self.config.node.clone(), conn: conn.as_u64() });
        let publication = Publication {
            volatile,
            exclude,
            ..Publication::new(Arc::from(room), kind, Arc::clone(from), data, now_ms())
        };
        self.stores.broker.emit(publication);
    }

    /// What a worker was handed by the stores: a publication to deliver or a later answer.
    /// The answer to a deferred HTTP publish is returned, for the caller to respond with.
    pub fn on_store(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        what: ToWorker,
    ) -> Option<(ConnId, Result<Position, HubError>)> {
        match what {
            ToWorker::Deliver(message) => self.deliver(local, out, &message),
            ToWorker::Done(Waiter::Op(key), done) => self.on_done(local, out, key, done),
            ToWorker::Done(Waiter::Http(conn), store::Done::Published(result)) => {
                return Some((conn, self.published(result)));
            }
            ToWorker::Done(Waiter::Http(_), _) => {}
        }
        None
    }
}

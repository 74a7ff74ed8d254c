//! The hub: rooms, acks, presence, history and resume, and 60 Hz batching.
//!
//! A room's shared state lives behind the three traits of [`store`]: the [`Broker`] numbers
//! messages and posts each to the workers that have members, the [`HistoryStore`] keeps the
//! last messages for resume, the [`PresenceStore`] knows who is there. The in-memory versions
//! are the default; [`Hub::with_stores`] takes others. Membership itself lives in each worker
//! ([`HubLocal`]), so fan-out touches no lock: each worker queues the frame — encoded once per
//! variant for the whole server — to its members.
//!
//! The wire protocol is described in `docs/protocol.md`.

pub mod broadcast;
mod commands;
pub mod envelope;
mod identity;
mod rooms;
mod sse;
pub mod store;
mod tick;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::reactor::ConnId;
use broadcast::Broadcast;
pub use commands::{ErrorCode, HubError, Session};
use envelope::MessageId;
use envelope::now_ms;
pub use identity::{Identity, pattern_matches};
pub use rooms::HubLocal;
pub use store::{Broker, HistoryStore, PresenceStore, Resume};
use store::{MemoryBroker, MemoryHistory, MemoryPresence, PublishOptions};

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
        }
    }
}

/// Counters of the hub, for `/metrics`.
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
}

/// Where the hub keeps room state: the seam a cluster plugs into.
#[derive(Clone)]
pub struct Stores {
    /// Fan-out and seq assignment.
    pub broker: Arc<dyn Broker>,
    /// Bounded history per room.
    pub history: Arc<dyn HistoryStore>,
    /// Who is in each room.
    pub presence: Arc<dyn PresenceStore>,
}

impl Stores {
    /// The in-memory stores (one process), sized by `config`.
    pub fn memory(config: &HubConfig) -> Self {
        Self {
            broker: Arc::new(MemoryBroker::default()),
            history: Arc::new(MemoryHistory::new(config.history_size, config.history_ttl)),
            presence: Arc::new(MemoryPresence::default()),
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
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

    /// Sets the worker count and how a broadcast reaches a worker (once, at server start).
    pub fn set_poster(&self, workers: usize, post: impl Fn(usize, Arc<Broadcast>) + Send + Sync + 'static) {
        self.stores.broker.start(workers, Box::new(post));
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Whether `room` is a tick room.
    pub fn is_tick_room(&self, room: &str) -> bool {
        self.config.tick_patterns.iter().any(|p| pattern_matches(p, room))
    }

    /// Numbers, stores and fans out a message. Returns its seq (0 for volatile messages,
    /// which are neither numbered nor kept).
    ///
    /// # Errors
    ///
    /// `id_reused` when the same `(user, id)` was published before with another message;
    /// a repeat of the same message returns the first seq without publishing again.
    pub fn publish(&self, publish: Publish<'_>) -> Result<u64, HubError> {
        let Publish { room, data, from, sender, echo, volatile, key, id } = publish;
        let room: Arc<str> = Arc::from(room);
        let options = PublishOptions { volatile, dedup: id.map(|(id, print)| (from, id, print)) };
        let (mut data, mut key) = (Some(data), key);
        let mut make = |seq: u64| {
            let ts = now_ms();
            let data = data.take().unwrap_or(Value::Null);
            let payload = json!({"room": &*room, "seq": seq, "from": &**from, "data": data, "ts": ts});
            let mut message = Broadcast::new(Arc::clone(&room), seq, "message", payload, ts);
            message.exclude = if echo { None } else { sender };
            message.volatile = volatile;
            message.key = key.take();
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            message
        };
        self.stores.broker.publish(&room, options, &mut make, &*self.stores.history).map_err(|reused| {
            HubError {
                seq: Some(reused.seq),
                ..HubError::new(ErrorCode::IdReused, "this id was used for another message")
            }
        })
    }

    /// Sends an event outside the numbered stream (presence, typing, read receipts).
    fn emit(&self, room: &str, kind: &'static str, payload: Value, exclude: Option<ConnId>, volatile: bool) {
        let mut event = Broadcast::new(Arc::from(room), 0, kind, payload, now_ms());
        event.exclude = exclude;
        event.volatile = volatile;
        self.stores.broker.emit(room, Arc::new(event));
    }
}

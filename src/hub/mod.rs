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
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::auth::Identity;
use crate::app::envelope::{self, Encoding, MessageId, Outgoing, decode, now_ms};
use crate::reactor::{ConnId, Message, Outbox};
use broadcast::{Broadcast, Variant, batch_body, ws_frame};
pub use store::{Broker, HistoryStore, PresenceStore, Resume};
use store::{MemoryBroker, MemoryHistory, MemoryPresence, PublishOptions};

/// Cached acks per connection, for idempotent retries.
const ACK_CACHE: usize = 128;
/// Messages a lagging member of a tick room may hold before it is closed as a slow consumer.
const TICK_BACKLOG: usize = 4096;

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
    /// Rooms one connection may join. Default 256.
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

/// A client's mistake, answered with an `error` (or a failed `ack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubError {
    /// A stable code: `bad_request`, `forbidden`, `unknown_type`, `history_gap`, `too_many_rooms`, `not_joined`.
    pub code: &'static str,
    /// A human explanation.
    pub message: String,
}

impl HubError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A connection's state in the hub.
#[derive(Debug)]
pub struct Session {
    /// Who this is.
    pub identity: Identity,
    /// How envelopes are encoded.
    pub encoding: Encoding,
    deflate: bool,
    joined: Vec<Arc<str>>,
    acks: VecDeque<(MessageId, Bytes)>,
}

impl Session {
    /// A session for an authenticated connection.
    pub fn new(identity: Identity, encoding: Encoding) -> Self {
        Self { identity, encoding, deflate: false, joined: Vec::new(), acks: VecDeque::new() }
    }

    /// Rooms joined.
    pub fn rooms(&self) -> &[Arc<str>] {
        &self.joined
    }
}

#[derive(Debug)]
struct Member {
    conn: ConnId,
    /// `None` for an SSE stream.
    ws: Option<(Encoding, bool)>,
    /// The last seq delivered (or the room's seq at join): older ones are skipped.
    since: u64,
    /// Tick rooms: the position in the room's log of the first message not yet sent to this
    /// member (messages before it were sent, or were older than its join).
    next: u64,
}

impl Member {
    fn variant(&self) -> Variant {
        match self.ws {
            Some((encoding, deflate)) => Variant::Ws(encoding, deflate),
            None => Variant::Sse,
        }
    }
}

#[derive(Debug, Default)]
struct LocalRoom {
    tick: bool,
    members: Vec<Member>,
    /// Tick rooms: the member to serve first next tick.
    cursor: usize,
    /// Tick rooms: messages not yet sent to every member, in arrival order; `log[0]` is at
    /// position `log_start`. A member behind (or past a tick's budget) costs nothing per tick:
    /// it just keeps its position.
    log: VecDeque<Arc<Broadcast>>,
    log_start: u64,
}

impl LocalRoom {
    /// The position after the last logged message (where a new member starts).
    fn log_end(&self) -> u64 {
        self.log_start + self.log.len() as u64
    }
}

/// A worker's part of the hub: the members of each room on this worker.
#[derive(Debug)]
pub struct HubLocal {
    worker: usize,
    rooms: HashMap<Arc<str>, LocalRoom>,
    last_tick: Option<Instant>,
    streams: Vec<ConnId>,
    last_keepalive: Option<Instant>,
    /// Members a tick may serve (batches written), adapted to what the last tick cost.
    tick_budget: usize,
    /// Members the last tick served.
    last_served: usize,
    tick_count: usize,
}

/// The fewest members a tick serves, however long the last one took.
const MIN_TICK_BUDGET: usize = 64;

impl HubLocal {
    /// Worker `worker`'s part.
    pub fn new(worker: usize) -> Self {
        Self {
            worker,
            rooms: HashMap::new(),
            last_tick: None,
            streams: Vec::new(),
            last_keepalive: None,
            tick_budget: usize::MAX,
            last_served: 0,
            tick_count: 0,
        }
    }

    /// Members the next tick may serve: cut at once to what fits in `target` at the pace the
    /// last tick wrote when it took longer, raised by a quarter of the headroom when the
    /// budget bound and the tick took less.
    fn adapt_budget(&mut self, last_work: Option<Duration>, target: Duration) {
        let Some(work) = last_work else { return };
        if self.last_served == 0 || work.is_zero() {
            return;
        }
        let fit = (self.last_served as f64 * target.as_secs_f64() / work.as_secs_f64()) as usize;
        let fit = fit.max(MIN_TICK_BUDGET);
        if work > target {
            self.tick_budget = fit.min(self.tick_budget);
        } else if self.last_served >= self.tick_budget && fit > self.tick_budget {
            self.tick_budget += (fit - self.tick_budget) / 4;
        }
        // Otherwise the budget did not bind: it stays (unbounded until a tick is slow).
    }

    /// Members the next tick may serve.
    pub fn tick_budget(&self) -> usize {
        self.tick_budget
    }

    /// Members of rooms on this worker.
    pub fn member_count(&self) -> usize {
        self.rooms.values().map(|r| r.members.len()).sum()
    }
}

/// A tick's batch for a member, or for every member served from the same log position.
struct TickBatch<'a> {
    /// Where in the log it starts.
    from: usize,
    /// The messages, in log order, the newest of each `key` only.
    items: Vec<&'a Arc<Broadcast>>,
    /// The highest seq among them (0: none numbered).
    newest: u64,
    /// Keyed messages left out for a newer one with the same key.
    replaced: u64,
    /// The frame per variant, encoded on first use.
    frames: [Option<Bytes>; 4],
}

impl<'a> TickBatch<'a> {
    /// The messages of `log` from `from` on; with `(since, conn)`, only those that member is
    /// owed (newer than `since`, not its own when it asked for no echo).
    fn new(log: &'a VecDeque<Arc<Broadcast>>, from: usize, member: Option<(u64, ConnId)>) -> Self {
        let mut keys: Vec<&Arc<str>> = Vec::new();
        let mut items: Vec<&Arc<Broadcast>> = Vec::new();
        let (mut newest, mut replaced) = (0, 0);
        for item in log.range(from..).rev() {
            if let Some((since, conn)) = member {
                if (item.seq != 0 && item.seq <= since) || item.exclude == Some(conn) {
                    continue;
                }
            }
            if let Some(key) = &item.key {
                if keys.contains(&key) {
                    replaced += 1;
                    continue;
                }
                keys.push(key);
            }
            newest = newest.max(item.seq);
            items.push(item);
        }
        items.reverse();
        Self { from, items, newest, replaced, frames: Default::default() }
    }

    /// The batch frame for a variant, encoded once.
    fn frame(&mut self, encoding: Encoding, deflate: bool, ts: u64) -> &Bytes {
        let items = &self.items;
        self.frames[encoding.index() * 2 + usize::from(deflate)].get_or_insert_with(|| {
            let bodies: Vec<&Bytes> = items.iter().map(|b| b.body(encoding)).collect();
            ws_frame(encoding, &batch_body(encoding, &bodies, ts), deflate)
        })
    }
}

fn envelope_frame<P: Serialize>(encoding: Encoding, kind: &str, id: Option<&MessageId>, payload: P) -> Bytes {
    let body = envelope::encode(encoding, &Outgoing { kind, id, payload, ts: now_ms() });
    ws_frame(encoding, &body, false)
}

fn str_field<'a>(payload: &'a Value, name: &str) -> Result<&'a str, HubError> {
    payload
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| HubError::new("bad_request", format!("payload.{name} must be a non-empty string")))
}

fn seq_field(payload: &Value, name: &str) -> Result<u64, HubError> {
    payload
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| HubError::new("bad_request", format!("payload.{name} must be a number")))
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
    /// which are neither numbered nor kept). A repeated `(user, id)` returns the first seq
    /// without publishing again.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        room: &str,
        data: Value,
        from: &Arc<str>,
        sender: Option<ConnId>,
        echo: bool,
        volatile: bool,
        key: Option<Arc<str>>,
        id: Option<&MessageId>,
    ) -> u64 {
        let room: Arc<str> = Arc::from(room);
        let options = PublishOptions { volatile, dedup: id.map(|id| (from, id)) };
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
        self.stores.broker.publish(&room, options, &mut make, &*self.stores.history)
    }

    /// Sends an event outside the numbered stream (presence, typing, read receipts).
    fn emit(&self, room: &str, kind: &'static str, payload: Value, exclude: Option<ConnId>, volatile: bool) {
        let mut event = Broadcast::new(Arc::from(room), 0, kind, payload, now_ms());
        event.exclude = exclude;
        event.volatile = volatile;
        self.stores.broker.emit(room, Arc::new(event));
    }

    /// A connection opened: `welcome`, and its `user:ID` room for direct messages.
    pub fn on_open(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
    ) {
        s.deflate = out_is_compressed(out, conn);
        let welcome = json!({"conn": conn.to_string(), "user": &*s.identity.user, "name": s.identity.name});
        out.send_frame_to(conn, &envelope_frame(s.encoding, "welcome", None, welcome));
        let own = format!("user:{}", s.identity.user);
        let _ = self.join(local, out, conn, s, &own, false);
    }

    /// A connection closed: it leaves every room.
    pub fn on_close(&self, local: &mut HubLocal, conn: ConnId, s: &mut Session) {
        for room in std::mem::take(&mut s.joined) {
            self.leave_room(local, conn, s, &room);
        }
    }

    /// Handles one client message; every message with an `id` gets exactly one `ack`.
    pub fn on_message(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        message: &Message,
    ) {
        let incoming = match decode(s.encoding, message.kind, &message.data) {
            Ok(incoming) => incoming,
            Err(e) => {
                let error = HubError::new("bad_request", e.0);
                out.send_frame_to(conn, &envelope_frame(s.encoding, "error", None, &error));
                return;
            }
        };
        if let Some(id) = &incoming.id {
            if let Some((_, ack)) = s.acks.iter().find(|(i, _)| i == id) {
                // A retry of something already done: the same answer, no second effect.
                let ack = ack.clone();
                out.send_frame_to(conn, &ack);
                return;
            }
        }
        let p = &incoming.payload;
        let result = match incoming.kind.as_str() {
            "join" => str_field(p, "room").and_then(|room| self.join(local, out, conn, s, room, true)),
            "leave" => str_field(p, "room").and_then(|room| self.leave(local, conn, s, room)),
            "publish" => self.client_publish(conn, s, p, incoming.id.as_ref()),
            "direct" => self.direct(s, p, incoming.id.as_ref()),
            "typing" => self.typing(conn, s, p),
            "read" => self.read(conn, s, p),
            "resume" => self.resume(local, out, conn, s, p),
            "ping" => {
                out.send_frame_to(conn, &envelope_frame(s.encoding, "pong", incoming.id.as_ref(), json!({})));
                Ok(None)
            }
            other => Err(HubError::new("unknown_type", format!("unknown message type {other:?}"))),
        };
        match (incoming.id, result) {
            (Some(id), result) => {
                let payload = match &result {
                    Ok(Some(seq)) => json!({"id": &id, "ok": true, "seq": seq}),
                    Ok(None) => json!({"id": &id, "ok": true}),
                    Err(e) => json!({"id": &id, "ok": false, "error": e}),
                };
                let ack = envelope_frame(s.encoding, "ack", Some(&id), payload);
                out.send_frame_to(conn, &ack);
                if s.acks.len() == ACK_CACHE {
                    s.acks.pop_front();
                }
                s.acks.push_back((id, ack));
            }
            (None, Err(e)) => {
                out.send_frame_to(conn, &envelope_frame(s.encoding, "error", None, &e));
            }
            (None, Ok(_)) => {}
        }
    }

    fn join(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        name: &str,
        announce: bool,
    ) -> Result<Option<u64>, HubError> {
        if !s.identity.may_join(name) {
            return Err(HubError::new("forbidden", format!("not allowed to join {name:?}")));
        }
        if s.joined.iter().any(|r| &**r == name) {
            return Ok(None);
        }
        if s.joined.len() >= self.config.max_rooms_per_connection {
            return Err(HubError::new("too_many_rooms", "too many rooms for one connection"));
        }
        let name: Arc<str> = match local.rooms.get_key_value(name) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(name),
        };
        let limit = self.config.presence_limit;
        let since = self.stores.broker.subscribe(&name, local.worker);
        let joined = self.stores.presence.add(&name, &s.identity.user, limit);
        let (count, newcomer) = (joined.count, joined.newcomer);
        let ws = Some((s.encoding, s.deflate));
        let tick = self.is_tick_room(&name);
        let entry = local
            .rooms
            .entry(Arc::clone(&name))
            .or_insert_with(|| LocalRoom { tick, ..LocalRoom::default() });
        let next = entry.log_end();
        entry.members.push(Member { conn, ws, since, next });
        s.joined.push(Arc::clone(&name));
        let name = &*name;
        if announce {
            let users: Option<Vec<&str>> = joined.users.as_ref().map(|u| u.iter().map(|u| &**u).collect());
            let presence = json!({"room": name, "users": users, "count": count, "seq": since});
            out.send_frame_to(conn, &envelope_frame(s.encoding, "presence", None, presence));
            if newcomer && count <= limit {
                let event = json!({"room": name, "user": &*s.identity.user, "name": s.identity.name});
                self.emit(name, "user_joined", event, Some(conn), false);
            }
        }
        Ok(None)
    }

    fn leave(
        &self,
        local: &mut HubLocal,
        conn: ConnId,
        s: &mut Session,
        name: &str,
    ) -> Result<Option<u64>, HubError> {
        let Some(i) = s.joined.iter().position(|r| &**r == name) else {
            return Err(HubError::new("not_joined", format!("not in room {name:?}")));
        };
        let room = s.joined.swap_remove(i);
        self.leave_room(local, conn, s, &room);
        Ok(None)
    }

    fn leave_room(&self, local: &mut HubLocal, conn: ConnId, s: &Session, name: &Arc<str>) {
        if let Some(entry) = local.rooms.get_mut(name) {
            entry.members.retain(|m| m.conn != conn);
            if entry.members.is_empty() {
                local.rooms.remove(name);
            }
        }
        self.stores.broker.unsubscribe(name, local.worker, &*self.stores.history);
        // Announced only while the room is small enough to announce joins.
        let gone = self
            .stores
            .presence
            .remove(name, &s.identity.user)
            .is_some_and(|left| left < self.config.presence_limit);
        if gone && !name.starts_with("user:") {
            self.emit(
                name,
                "user_left",
                json!({"room": &**name, "user": &*s.identity.user}),
                Some(conn),
                false,
            );
        }
    }

    fn client_publish(
        &self,
        conn: ConnId,
        s: &Session,
        p: &Value,
        id: Option<&MessageId>,
    ) -> Result<Option<u64>, HubError> {
        let room = str_field(p, "room")?;
        if !s.identity.may_publish(room) {
            return Err(HubError::new("forbidden", format!("not allowed to publish to {room:?}")));
        }
        let data = p.get("data").cloned().unwrap_or(Value::Null);
        let volatile = p.get("volatile").and_then(Value::as_bool).unwrap_or(false);
        let echo = p.get("echo").and_then(Value::as_bool).unwrap_or(true);
        let key = p.get("key").and_then(Value::as_str).map(Arc::from);
        let seq = self.publish(room, data, &s.identity.user, Some(conn), echo, volatile, key, id);
        Ok(Some(seq))
    }

    fn direct(&self, s: &Session, p: &Value, id: Option<&MessageId>) -> Result<Option<u64>, HubError> {
        let user = str_field(p, "user")?;
        let data = p.get("data").cloned().unwrap_or(Value::Null);
        let seq = self.publish(&format!("user:{user}"), data, &s.identity.user, None, true, false, None, id);
        Ok(Some(seq))
    }

    fn joined<'a>(s: &Session, p: &'a Value) -> Result<&'a str, HubError> {
        let room = str_field(p, "room")?;
        if !s.joined.iter().any(|r| &**r == room) {
            return Err(HubError::new("not_joined", format!("not in room {room:?}")));
        }
        Ok(room)
    }

    fn typing(&self, conn: ConnId, s: &Session, p: &Value) -> Result<Option<u64>, HubError> {
        let room = Self::joined(s, p)?;
        self.emit(room, "user_typing", json!({"room": room, "user": &*s.identity.user}), Some(conn), true);
        Ok(None)
    }

    fn read(&self, conn: ConnId, s: &Session, p: &Value) -> Result<Option<u64>, HubError> {
        let room = Self::joined(s, p)?;
        let seq = seq_field(p, "seq")?;
        let event = json!({"room": room, "user": &*s.identity.user, "seq": seq});
        self.emit(room, "messages_read", event, Some(conn), false);
        Ok(None)
    }

    fn resume(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        p: &Value,
    ) -> Result<Option<u64>, HubError> {
        let room = str_field(p, "room")?;
        let after = seq_field(p, "after")?;
        if !s.identity.may_join(room) {
            return Err(HubError::new("forbidden", format!("not allowed to join {room:?}")));
        }
        self.join(local, out, conn, s, room, false)?;
        match self.stores.history.since(room, after) {
            Resume::Gap { oldest } => Err(HubError::new(
                "history_gap",
                format!(
                    "history of {room:?} starts at seq {oldest}: messages after {after} can no longer all be replayed"
                ),
            )),
            Resume::Replay(missed, seq) => {
                // Deliver what was missed, in order, then let live delivery continue after it.
                let variant = Variant::Ws(s.encoding, s.deflate);
                for message in &missed {
                    out.send_frame_to(conn, message.frame(variant));
                }
                if let Some(entry) = local.rooms.get_mut(room) {
                    if let Some(member) = entry.members.iter_mut().find(|m| m.conn == conn) {
                        member.since = member.since.max(seq);
                    }
                }
                Ok(Some(seq))
            }
        }
    }

    /// Fans a broadcast out to this worker's members of its room.
    pub fn deliver(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        message: &Arc<Broadcast>,
    ) {
        let Some(room) = local.rooms.get_mut(&message.room) else { return };
        if room.tick {
            room.log.push_back(Arc::clone(message));
            return;
        }
        for member in &mut room.members {
            if message.seq > 0 {
                if message.seq <= member.since {
                    continue;
                }
                member.since = message.seq;
            }
            if message.exclude == Some(member.conn) {
                continue;
            }
            let frame = message.frame(member.variant());
            match (member.ws, message.volatile) {
                (None, _) => out.send_raw_to(member.conn, frame),
                (Some(_), true) => out.send_volatile_to(member.conn, frame),
                (Some(_), false) => out.send_frame_to(member.conn, frame),
            };
        }
    }

    /// One tick: every tick room on this worker sends what it gathered as one `batch` frame
    /// per member, encoded once per variant when members are in step.
    ///
    /// A tick's work is bounded so the tick rate holds under load: `last_work` (how long the
    /// previous tick took, writes included) sets how many members this tick serves, aiming at
    /// [`HubConfig::tick_share`] of a period. Members past the budget keep their messages (latest state per key) and
    /// are served first next tick, so every member gets its turn.
    pub fn on_tick(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        now: Instant,
        last_work: Option<Duration>,
    ) {
        let period = Duration::from_secs(1) / self.config.tick_rate.max(1);
        if let Some(last) = local.last_tick {
            if now.duration_since(last) > period + period / 2 {
                self.counters.late_ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
        local.last_tick = Some(now);
        self.counters.ticks.fetch_add(1, Ordering::Relaxed);
        local.adapt_budget(last_work, period.mul_f64(self.config.tick_share.clamp(0.05, 1.0)));
        let ts = now_ms();
        let soft = out.soft_limit();
        let budget = local.tick_budget;
        let mut served = 0usize;
        let mut rooms: Vec<&mut LocalRoom> = local.rooms.values_mut().filter(|r| r.tick).collect();
        if !rooms.is_empty() {
            // Rooms take turns at being first, as members do within a room.
            let first = local.tick_count % rooms.len();
            rooms.rotate_left(first);
        }
        local.tick_count = local.tick_count.wrapping_add(1);
        for room in rooms {
            let end = room.log_end();
            if room.members.iter().all(|m| m.next >= end) {
                room.log.clear();
                room.log_start = end;
                continue;
            }
            let (log, log_start, members) = (&room.log, room.log_start, &mut room.members);
            // Members served from the same position with nothing left out for them get the
            // same batch: worked out and encoded once, however many members share it.
            let mut shared: Vec<TickBatch<'_>> = Vec::new();
            let (mut batches, mut deferred) = (0, 0);
            let n = members.len();
            let mut resume_at = None;
            for k in 0..n {
                let i = (room.cursor + k) % n;
                let member = &mut members[i];
                if member.next >= end {
                    continue;
                }
                if served >= budget {
                    deferred += 1;
                    resume_at.get_or_insert(i);
                    continue;
                }
                if member.ws.is_some() && out.buffered(member.conn) > soft {
                    // Behind: it keeps its position and gets the latest state when it drains.
                    continue;
                }
                let from = (member.next - log_start) as usize;
                let (since, conn) = (member.since, member.conn);
                member.next = end;
                let owed_all =
                    log.range(from..).all(|b| (b.seq == 0 || b.seq > since) && b.exclude != Some(conn));
                let mut own;
                let batch = if owed_all {
                    let at = shared.iter().position(|b| b.from == from).unwrap_or_else(|| {
                        shared.push(TickBatch::new(log, from, None));
                        shared.len() - 1
                    });
                    &mut shared[at]
                } else {
                    own = TickBatch::new(log, from, Some((since, conn)));
                    &mut own
                };
                if batch.replaced > 0 {
                    self.counters.replaced.fetch_add(batch.replaced, Ordering::Relaxed);
                }
                member.since = member.since.max(batch.newest);
                if batch.items.is_empty() {
                    continue;
                }
                served += 1;
                match member.ws {
                    Some((encoding, deflate)) => {
                        out.send_frame_to(conn, batch.frame(encoding, deflate, ts));
                        batches += 1;
                    }
                    None => {
                        for item in &batch.items {
                            out.send_raw_to(conn, item.frame(Variant::Sse));
                        }
                    }
                }
            }
            // Next tick starts with the first member this one could not serve.
            if let Some(i) = resume_at {
                room.cursor = i;
            }
            self.counters.batches.fetch_add(batches, Ordering::Relaxed);
            self.counters.deferred.fetch_add(deferred, Ordering::Relaxed);
            let mut oldest = end;
            for member in members.iter_mut() {
                if end - member.next > TICK_BACKLOG as u64 {
                    // Messages are never dropped silently: a member this far behind is closed
                    // as a slow consumer (its reconnect can resume from history).
                    member.next = end;
                    out.close_slow_consumer(member.conn);
                }
                oldest = oldest.min(member.next);
            }
            // Forget what every member has been sent.
            room.log.drain(..(oldest - room.log_start) as usize);
            room.log_start = oldest;
        }
        local.last_served = served;
        self.keepalive(local, out, now);
    }

    /// Opens an SSE stream on `room`, replaying history after `last_event_id`.
    pub fn sse_open(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        room: &str,
        last_event_id: Option<u64>,
    ) {
        let name: Arc<str> = Arc::from(room);
        let mut since = self.stores.broker.subscribe(&name, local.worker);
        let missed = match last_event_id.map(|after| self.stores.history.since(room, after)) {
            Some(Resume::Replay(missed, last)) => {
                // Replayed up to `last`: live delivery continues after it, never twice.
                since = since.max(last);
                missed
            }
            _ => Vec::new(),
        };
        out.send_raw_to(conn, &Bytes::from_static(b"retry: 2000\n\n"));
        for message in &missed {
            out.send_raw_to(conn, message.frame(Variant::Sse));
        }
        let tick = self.is_tick_room(room);
        let entry = local.rooms.entry(name).or_insert_with(|| LocalRoom { tick, ..LocalRoom::default() });
        let next = entry.log_end();
        entry.members.push(Member { conn, ws: None, since, next });
        local.streams.push(conn);
    }

    /// Closes an SSE stream.
    pub fn sse_close(&self, local: &mut HubLocal, conn: ConnId, room: &str) {
        local.streams.retain(|&c| c != conn);
        if let Some(entry) = local.rooms.get_mut(room) {
            entry.members.retain(|m| m.conn != conn);
            if entry.members.is_empty() {
                local.rooms.remove(room);
            }
        }
        self.stores.broker.unsubscribe(room, local.worker, &*self.stores.history);
    }

    /// Heartbeat comments on SSE streams, every 15 s, so proxies keep them open.
    fn keepalive(&self, local: &mut HubLocal, out: &mut Outbox<'_, impl Send + 'static>, now: Instant) {
        let due = local.last_keepalive.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(15));
        if !due {
            return;
        }
        local.last_keepalive = Some(now);
        let comment = Bytes::from_static(b": keepalive\n\n");
        for &conn in &local.streams {
            out.send_raw_to(conn, &comment);
        }
    }
}

/// Whether `name` matches `pattern`: exact, or a prefix when the pattern ends with `*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn out_is_compressed(out: &Outbox<'_, impl Send + 'static>, conn: ConnId) -> bool {
    out.is_compressed(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("game:*", "game:1"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("user:42", "user:42"));
        assert!(!pattern_matches("user:42", "user:421"));
        assert!(!pattern_matches("chat:*", "game:1"));
    }

    #[test]
    fn a_slow_tick_cuts_the_next_ticks_budget_and_fast_ones_raise_it_slowly() {
        let mut local = HubLocal::new(0);
        assert_eq!(local.tick_budget(), usize::MAX, "unbounded until a tick is measured");
        local.last_served = 1000;
        local.adapt_budget(Some(Duration::from_millis(20)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), 400, "1000 batches took 20 ms: 400 fit in 8 ms");
        local.last_served = 400;
        local.adapt_budget(Some(Duration::from_millis(4)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), 500, "a quarter of the way to the 800 that would fit");
        local.last_served = 10;
        local.adapt_budget(Some(Duration::from_millis(1)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), 500, "a budget that did not bind stays");
        local.last_served = 500;
        local.adapt_budget(Some(Duration::from_secs(1)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), MIN_TICK_BUDGET, "never below the floor");
        local.adapt_budget(None, Duration::from_millis(8));
        assert_eq!(local.tick_budget(), MIN_TICK_BUDGET);
    }

    #[test]
    fn a_member_gets_the_newest_state_per_key_in_log_order() {
        let make = |seq: u64, key: Option<&str>, exclude: Option<ConnId>| {
            let mut b = Broadcast::new("game:1".into(), seq, "message", json!({"seq": seq}), 0);
            b.key = key.map(Arc::from);
            b.exclude = exclude;
            Arc::new(b)
        };
        let me = ConnId::new(0, 1, 7);
        let log: VecDeque<Arc<Broadcast>> = [
            make(1, Some("pos"), None),
            make(2, Some("hp"), None),
            make(3, None, None),
            make(4, Some("pos"), None),
            make(5, None, Some(me)),
        ]
        .into();
        let seqs = |batch: &TickBatch<'_>| batch.items.iter().map(|b| b.seq).collect::<Vec<_>>();
        let all = TickBatch::new(&log, 0, None);
        assert_eq!(
            (seqs(&all), all.newest, all.replaced),
            (vec![2, 3, 4, 5], 5, 1),
            "pos@1 replaced by pos@4"
        );
        let mine = TickBatch::new(&log, 0, Some((2, me)));
        assert_eq!((seqs(&mine), mine.newest), (vec![3, 4], 4), "seq <= since and its own message left out");
        let later = TickBatch::new(&log, 3, None);
        assert_eq!((seqs(&later), later.replaced), (vec![4, 5], 0), "from a later position");
    }
}

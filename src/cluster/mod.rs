//! Scale-out over Redis: several `hibiki serve` nodes act as one server.
//!
//! [`stores`] gives the hub a [`Broker`](crate::hub::Broker) and a
//! [`PresenceStore`](crate::hub::PresenceStore) kept in Redis, in the model of centrifuge's
//! Redis engine: numbering, history and fan-out are one Lua script call per room for the
//! numbered publishes pending at a flush (up to 128 messages, each with its
//! idempotency check, its seq and its stream entry, and one `PUBLISH` carrying them all);
//! a node subscribes to a room's channel only while it has members there; presence entries
//! are owned by a node life and removed by the survivors when its heartbeat stops.
//!
//! # Numbered publishes in batches
//!
//! The fixed cost of a script call (and of a `PUBLISH` to the subscribed nodes) is paid once
//! per group, not once per message. The command thread writes a flush at once when Redis is
//! idle; while two flushes with publishes wait for their answers it holds new publishes, so
//! what comes meanwhile goes out as the next groups: no added wait at low load, larger
//! groups as Redis gets busy. Order within a room is the order of the publishes (a group
//! numbers them consecutively, groups of a room go out in order on one connection); each
//! publish gets its own answer (`published`, a repeat's first answer, or an id reused). At
//! most 16,384 publishes wait per Redis server: past that a publish fails at once
//! (`unavailable`, "overloaded") instead of waiting for a deadline it would likely miss. The
//! pub/sub side splits a batch into its messages; a lost batch is a hole fetched from the
//! room's stream like a lost message.
//!
//! # Threads and connections
//!
//! No event-loop thread ever waits on Redis: every seam call queues its work for the
//! bridge's threads and answers [`Reply::Later`](crate::hub::Reply::Later) (a volatile
//! publish and an event answer at once: they are fire-and-forget). Per Redis server (shard)
//! there are two connections, whatever the load:
//!
//! ```text
//!  workers ──calls──▶ command thread ──one pipeline per write──▶ ┐
//!        ◀──answers── command reader ◀───replies, in order───── │ command connection
//!        ◀─messages── pub/sub reader ◀──room channels, probe─── │ pub/sub connection
//!                     pub/sub thread ──(UN)SUBSCRIBE, batched──▶ ┘
//!                     keeper: deadlines, probe, heartbeat, dead-node sweep
//! ```
//!
//! Answers and messages reach a worker through the hub's [`Sink`]; a
//! message is wrapped once per node (`Arc<Broadcast>`) and posted to the workers that have
//! members of its room, so it is encoded once per node.
//!
//! # Keys (prefix `hibiki:` by default; the room as a hash tag)
//!
//! | key | what |
//! |---|---|
//! | `P{room}` | the room's pub/sub channel: `SEQ:EPOCH:PAYLOAD`, `*COUNT:FIRST:EPOCH:` then `LEN:PAYLOAD` each, or `0:NODE:PAYLOAD` |
//! | `P{room}.m` | hash: `e` epoch, `s` last seq |
//! | `P{room}.x` | stream of the history, entry ids `0-SEQ`, field `d` the publication |
//! | `P{room}.i.USER:ID` | a publish id's first answer, for the idempotency window |
//! | `P{room}.u` | hash: user → connections, across nodes |
//! | `P{room}.e.NODE` | hash: connection → user, of one node life |
//! | `Pnodes`, `Phb.NODE`, `Prooms.NODE` | node lives, their heartbeats (TTL), their rooms |
//! | `Pprobe.NODE` | the channel a node probes its own pub/sub connection on |
//!
//! # Faults
//!
//! Every call has a deadline ([`ClusterConfig::timeout`]); a call made while Redis is
//! unreachable fails at once; connections come back with backoff and jitter, resubscribe
//! in batches and catch every room up from the last seq this node delivered. A hole in a
//! room's live stream (pub/sub is at-most-once) is fetched from its stream before delivery
//! goes on; a pub/sub connection that silently stopped receiving is found by the probe and
//! replaced. A room whose state Redis lost starts a new epoch: members are told of the gap.

mod batch;
mod broker;
mod command;
mod conn;
mod keeper;
mod keys;
mod presence;
mod pubsub;
mod routes;
mod scripts;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use broker::RedisBroker;
use command::{Call, Commands, Fail, Job};
use conn::Target;
use keys::{Keys, shard_of};
pub use presence::RedisPresence;
use pubsub::PubSub;
use routes::Routes;
use scripts::Script;

use crate::hub::store::{Broadcast, Epoch, NodeId, Position, Publication, Replay, Sink, StoreError};
use crate::hub::{HubConfig, Stores};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a publish id is remembered: a retry within it (on any node) answers the first
/// seq. At least two minutes, as a client's retries after a failover may take that long.
const ID_WINDOW: Duration = Duration::from_secs(150);

/// Settings of the Redis engine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Redis servers (`redis://host:port/db`); rooms are spread over them by a stable hash
    /// of their name. Every node must list the same servers in the same order.
    pub urls: Vec<String>,
    /// Prefix of every key and channel. Default `hibiki:`; nodes that share it are one
    /// server.
    pub prefix: String,
    /// Longest wait for any Redis call before it fails (`unavailable`) and for connecting.
    /// Default 1 s.
    pub timeout: Duration,
}

impl ClusterConfig {
    /// The engine on these Redis servers, with the default prefix and timeout.
    ///
    /// # Errors
    ///
    /// No URL, or one that is not `redis://`.
    pub fn new<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err("no Redis URL".into());
        }
        for url in &urls {
            Target::parse(url)?;
        }
        Ok(Self { urls, prefix: "hibiki:".into(), timeout: Duration::from_secs(1) })
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Sets the call timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Whether `id` can name a node: 1 to 64 of `[A-Za-z0-9_.-]` (it appears in keys and in
/// message heads).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The hub's stores, kept in Redis: sized by `hub` (history, presence limit).
pub fn stores(config: &ClusterConfig, hub: &HubConfig) -> Stores {
    let cluster = Arc::new(Cluster::new(config, hub));
    Stores {
        broker: Arc::new(RedisBroker::new(Arc::clone(&cluster))),
        presence: Arc::new(RedisPresence::new(cluster)),
    }
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) history_size: usize,
    pub(crate) history_ttl_ms: u64,
    pub(crate) timeout: Duration,
    pub(crate) presence_limit: usize,
}

/// This node life's presence: room -> conn -> user.
pub(crate) type Mirror = HashMap<Arc<str>, HashMap<u64, Arc<str>>>;

/// A presence entry: room, conn, user.
pub(crate) type Entry = (Arc<str>, u64, Arc<str>);

/// One Redis server: its two connections and this node's routes of its rooms.
pub(crate) struct Shard {
    pub(crate) target: Target,
    pub(crate) commands: Commands,
    pub(crate) pubsub: PubSub,
    pub(crate) routes: Mutex<Routes>,
}

/// The engine of one node.
pub(crate) struct Cluster {
    pub(crate) keys: Keys,
    pub(crate) settings: Settings,
    pub(crate) shards: Vec<Shard>,
    pub(crate) node: OnceLock<NodeId>,
    /// This node life: the node id and a random suffix (a restarted node is another life).
    owner: OnceLock<String>,
    sink: OnceLock<Sink>,
    stopped: AtomicBool,
    /// This node life's presence entries: room -> conn -> user (re-added when Redis lost them).
    pub(crate) mirror: Mutex<Mirror>,
    /// Dead node lives being swept.
    pub(crate) sweeping: Mutex<HashSet<String>>,
    /// Presence removals that failed `(room, conn, user)`, retried when Redis is back.
    pub(crate) retry: Mutex<Vec<Entry>>,
}

impl Cluster {
    fn new(config: &ClusterConfig, hub: &HubConfig) -> Self {
        let shards = config
            .urls
            .iter()
            .filter_map(|url| Target::parse(url).ok())
            .map(|target| Shard {
                target,
                commands: Commands::new(),
                pubsub: PubSub::new(),
                routes: Mutex::new(Routes::default()),
            })
            .collect();
        Self {
            keys: Keys::new(&config.prefix),
            settings: Settings {
                history_size: hub.history_size,
                history_ttl_ms: hub.history_ttl.map_or(0, |t| t.as_millis().max(1) as u64),
                timeout: config.timeout,
                presence_limit: hub.presence_limit,
            },
            shards,
            node: OnceLock::new(),
            owner: OnceLock::new(),
            sink: OnceLock::new(),
            stopped: AtomicBool::new(false),
            mirror: Mutex::new(HashMap::new()),
            sweeping: Mutex::new(HashSet::new()),
            retry: Mutex::new(Vec::new()),
        }
    }

    /// Starts the bridge's threads (once).
    fn start(self: &Arc<Self>, node: &NodeId, sink: Sink) {
        if self.node.set(node.clone()).is_err() {
            return;
        }
        let _ = self.owner.set(format!("{}.{}", node.as_str(), Epoch::random().as_str()));
        let _ = self.sink.set(sink);
        for index in 0..self.shards.len() {
            let spawn = |what: &str, run: fn(Arc<Self>, usize)| {
                let cluster = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("hibiki-redis-{index}-{what}"))
                    .spawn(move || run(cluster, index))
                    .expect("a thread for the Redis bridge");
            };
            spawn("c", command::run);
            spawn("p", pubsub::run);
        }
        let cluster = Arc::clone(self);
        std::thread::Builder::new()
            .name("hibiki-redis-keeper".into())
            .spawn(move || keeper::run(&cluster))
            .expect("a thread for the Redis bridge");
    }

    pub(crate) fn owner(&self) -> &str {
        self.owner.get().map_or("", String::as_str)
    }

    pub(crate) fn sink(&self) -> &Sink {
        static NOWHERE: OnceLock<Sink> = OnceLock::new();
        self.sink.get().unwrap_or_else(|| NOWHERE.get_or_init(|| Arc::new(|_, _| {})))
    }

    pub(crate) fn shard_index(&self, room: &str) -> usize {
        shard_of(room, self.shards.len())
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops the threads and closes the connections.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for shard in &self.shards {
            shard.commands.close();
            shard.pubsub.close();
            shard.pubsub.wake();
        }
    }

    /// `Err(reason)` while some shard cannot do its work.
    pub(crate) fn health(&self) -> Result<(), String> {
        for shard in &self.shards {
            let addr = shard.target.addr();
            shard.commands.health().map_err(|e| format!("redis {addr}: {e}"))?;
            shard.pubsub.health().map_err(|e| format!("redis {addr}: {e}"))?;
        }
        Ok(())
    }

    /// Why calls to shard `index` fail now, if they do.
    pub(crate) fn unavailable(&self, index: usize) -> Option<StoreError> {
        let commands = &self.shards[index].commands;
        (!commands.is_up() || self.is_stopped()).then(|| {
            StoreError::Unavailable(format!(
                "redis {}: {}",
                self.shards[index].target.addr(),
                commands.reason()
            ))
        })
    }

    /// A call to shard `index`, answered through `done`.
    pub(crate) fn call(
        &self,
        index: usize,
        call: Call,
        done: impl FnOnce(Result<redis::Value, Fail>) + Send + 'static,
    ) {
        self.shards[index].commands.send(Job::new(call, self.settings.timeout, Box::new(done)));
    }

    /// A position read of `room`, with the messages after `after` (of its epoch, when
    /// known) for a resume or a history fetch; `known` is what this node delivered of the
    /// room (a numbering gone back behind it is a lost state: a new epoch).
    pub(crate) fn read_job(
        self: &Arc<Self>,
        index: usize,
        room: &Arc<str>,
        after: Option<(u64, Option<Epoch>)>,
        known: Option<(Epoch, u64)>,
        done: impl FnOnce(Result<Replay, StoreError>) + Send + 'static,
    ) -> Job {
        let (known_epoch, known_seq) = match &known {
            Some((e, s)) => (e.as_str().as_bytes().to_vec(), s.to_string().into_bytes()),
            None => (Vec::new(), b"0".to_vec()),
        };
        let (after_arg, epoch_arg) = match &after {
            None => (Vec::new(), Vec::new()),
            Some((seq, epoch)) => (
                seq.to_string().into_bytes(),
                epoch.as_ref().map_or(Vec::new(), |e| e.as_str().as_bytes().to_vec()),
            ),
        };
        let call = Call::Script {
            script: Script::Read,
            keys: vec![self.keys.meta(room), self.keys.stream(room)],
            args: vec![
                Epoch::random().as_str().as_bytes().to_vec(),
                after_arg,
                epoch_arg,
                known_epoch,
                known_seq,
            ],
        };
        let cluster = Arc::clone(self);
        let room = Arc::clone(room);
        Job::new(
            call,
            self.settings.timeout,
            Box::new(move |reply| {
                let result = reply
                    .map_err(StoreError::from)
                    .and_then(|v| cluster.replay(&v, after.as_ref()).map_err(StoreError::Unavailable));
                if let Ok(replay) = &result {
                    if let Some(route) = lock(&cluster.shards[index].routes).rooms.get_mut(&room) {
                        route.positioned(&replay.position.epoch, replay.position.seq);
                    }
                }
                done(result);
            }),
        )
    }

    /// A read script's answer as a replay after `after`.
    fn replay(&self, value: &redis::Value, after: Option<&(u64, Option<Epoch>)>) -> Result<Replay, String> {
        let items = wire::array(value, 2)?;
        let epoch = wire::epoch(&items[0])?;
        let seq = wire::uint(&items[1])?;
        let messages: Vec<Arc<Broadcast>> = match items.get(2) {
            Some(entries) => wire::entries(entries, &epoch)?
                .into_iter()
                .map(|p| Arc::new(Broadcast::new(p, self.node.get())))
                .collect(),
            None => Vec::new(),
        };
        let gap = match after {
            None => false,
            Some((after, want)) => {
                let foreign = want.as_ref().is_some_and(|w| *w != epoch) || *after > seq;
                foreign || messages.first().map_or(*after < seq, |m| m.seq > after + 1)
            }
        };
        Ok(Replay { position: Position { seq, epoch }, messages, gap })
    }

    /// Fetches a hole (or a catch-up) of a route after `after` and delivers it in order.
    pub(crate) fn fetch(self: &Arc<Self>, index: usize, room: &Arc<str>, after: u64, epoch: Option<Epoch>) {
        let cluster = Arc::clone(self);
        let name = Arc::clone(room);
        let known = epoch.clone().map(|e| (e, after));
        let job = self.read_job(index, room, Some((after, epoch)), known, move |result| {
            let shard = &cluster.shards[index];
            let mut routes = lock(&shard.routes);
            match result {
                Ok(replay) => {
                    if let Some(route) = routes.rooms.get_mut(&name) {
                        route.filling_since = None;
                        route.filled(cluster.sink(), replay.messages);
                    }
                }
                Err(e) => {
                    tracing::debug!(room = &*name, "fetching a hole failed: {e}");
                    // Nothing more may arrive to show the hole: what is held stays held and
                    // the keeper fetches again (until it gives up and lets the members see
                    // the hole, which they report).
                    routes.refetch(cluster.sink(), &name, Instant::now());
                }
            }
        });
        self.shards[index].commands.send(job);
    }

    /// Delivers an unnumbered publication to this node's members and sends it to the
    /// other nodes (best effort).
    pub(crate) fn unnumbered(self: &Arc<Self>, publication: Publication) {
        let index = self.shard_index(&publication.room);
        let channel = self.keys.channel(&publication.room);
        let payload = wire::encode(&publication);
        let message = Arc::new(Broadcast::new(publication, self.node.get()));
        if let Some(route) = lock(&self.shards[index].routes).rooms.get(&message.room) {
            route.post(self.sink(), &message);
        }
        if self.unavailable(index).is_none() {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel).arg(wire::unnumbered(self.owner(), &payload));
            self.call(index, Call::Cmd(cmd), |_| {});
        }
    }

    /// The command connection of shard `index` (re)connected: this node life beats at once
    /// (the survivors know it from now on) and its presence goes back in (a no-op for
    /// entries still there; Redis may have lost them).
    pub(crate) fn on_commands_up(self: &Arc<Self>, index: usize) {
        keeper::heartbeat(self, index);
        presence::restore(self, index);
    }
}

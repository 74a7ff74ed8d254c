//! The pub/sub connection of a shard: one thread keeps it (connects with backoff and
//! jitter, sends `SUBSCRIBE` / `UNSUBSCRIBE` for the rooms whose interest changed, up to
//! [`CHANNELS_PER_COMMAND`] rooms per command), another reads it: subscription
//! confirmations release the position reads that waited for them, room messages (one
//! publication, or a batch of them numbered in one script call) go to the routes (in order,
//! holes fetched), the probe tells that the connection still receives.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redis::Value;

use super::conn::{self, Reader};
use super::wire::{self, Head};
use super::{Cluster, lock};
use crate::client::Backoff;
use crate::hub::store::{Broadcast, Epoch, Publication};

/// Rooms in one `SUBSCRIBE` or `UNSUBSCRIBE`: 10,000 rooms resubscribe in 10 commands.
pub(crate) const CHANNELS_PER_COMMAND: usize = 1000;

/// A shard's pub/sub side, as the other threads see it.
pub(crate) struct PubSub {
    link: Mutex<Option<TcpStream>>,
    up: AtomicBool,
    reason: Mutex<String>,
    wake: (Mutex<bool>, Condvar),
    /// The probe channel's subscription is confirmed.
    pub(crate) probing: AtomicBool,
    /// Probes sent.
    pub(crate) probe_sent: AtomicU64,
    probe: Mutex<Probe>,
}

/// Probes Redis acknowledged and probes that arrived.
#[derive(Debug, Default)]
struct Probe {
    acked: u64,
    seen: u64,
    /// Since when an acknowledged probe has been missing.
    missing_since: Option<Instant>,
}

impl PubSub {
    pub(crate) fn new() -> Self {
        Self {
            link: Mutex::new(None),
            up: AtomicBool::new(false),
            reason: Mutex::new("not connected yet".into()),
            wake: (Mutex::new(false), Condvar::new()),
            probing: AtomicBool::new(false),
            probe_sent: AtomicU64::new(0),
            probe: Mutex::new(Probe::default()),
        }
    }

    /// Redis acknowledged probe `n` (it was published).
    pub(crate) fn probe_acked(&self, n: u64, now: Instant) {
        let mut probe = lock(&self.probe);
        probe.acked = probe.acked.max(n);
        if probe.acked > probe.seen && probe.missing_since.is_none() {
            probe.missing_since = Some(now);
        }
    }

    /// Probe `n` arrived on this connection.
    fn probe_seen(&self, n: u64) {
        let mut probe = lock(&self.probe);
        probe.seen = probe.seen.max(n);
        probe.missing_since = (probe.acked > probe.seen).then(Instant::now);
    }

    /// Whether an acknowledged probe has been missing for longer than `late`.
    pub(crate) fn probe_missing(&self, now: Instant, late: Duration) -> bool {
        lock(&self.probe).missing_since.is_some_and(|t| now.duration_since(t) > late)
    }

    fn probe_reset(&self) {
        *lock(&self.probe) = Probe::default();
        self.probe_sent.store(0, Ordering::SeqCst);
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    pub(crate) fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// Wakes the thread: interest changed.
    pub(crate) fn wake(&self) {
        let (flag, condvar) = &self.wake;
        *lock(flag) = true;
        condvar.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let (flag, condvar) = &self.wake;
        let guard = lock(flag);
        let (mut guard, _) =
            condvar.wait_timeout_while(guard, timeout, |woken| !*woken).unwrap_or_else(|e| e.into_inner());
        *guard = false;
    }

    /// Closes the connection (it is reconnected unless stopped).
    pub(crate) fn close(&self) {
        if let Some(stream) = lock(&self.link).as_ref() {
            conn::close(stream);
        }
    }

    /// `Err(reason)` while this connection is down or has stopped receiving.
    pub(crate) fn health(&self) -> Result<(), String> {
        if !self.is_up() {
            return Err(format!("pub/sub: {}", self.reason()));
        }
        if !self.probing.load(Ordering::SeqCst) {
            return Err("pub/sub: subscribing".into());
        }
        if self.probe_missing(Instant::now(), Duration::from_secs(1)) {
            return Err("pub/sub connection stopped receiving".into());
        }
        Ok(())
    }
}

/// `SUBSCRIBE`/`UNSUBSCRIBE` of `rooms` in chunks.
fn pack(cluster: &Cluster, verb: &str, rooms: &[Arc<str>], out: &mut Vec<u8>) {
    for chunk in rooms.chunks(CHANNELS_PER_COMMAND) {
        let mut cmd = redis::cmd(verb);
        for room in chunk {
            cmd.arg(cluster.keys.channel(room));
        }
        cmd.write_packed_command(out);
    }
}

/// The pub/sub thread of shard `index`.
pub(crate) fn run(cluster: Arc<Cluster>, index: usize) {
    let shard = &cluster.shards[index];
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).max_attempts(None);
    let mut next_try = Instant::now();
    let mut writer: Option<TcpStream> = None;
    let mut buf = Vec::new();
    while !cluster.is_stopped() {
        if writer.is_some() && !shard.pubsub.is_up() {
            writer = None;
        }
        if writer.is_none() && Instant::now() >= next_try {
            match open(&cluster, index) {
                Ok(stream) => {
                    backoff.reset();
                    writer = Some(stream);
                }
                Err(why) => {
                    tracing::debug!(shard = index, "redis pub/sub connect failed: {why}");
                    *lock(&shard.pubsub.reason) = why;
                    next_try = Instant::now()
                        + backoff.next(rand::random::<f64>()).unwrap_or(Duration::from_secs(2));
                }
            }
        }
        if let Some(stream) = &mut writer {
            let (on, off) = lock(&shard.routes).changes();
            buf.clear();
            pack(&cluster, "SUBSCRIBE", &on, &mut buf);
            pack(&cluster, "UNSUBSCRIBE", &off, &mut buf);
            if !buf.is_empty() {
                if let Err(e) = stream.write_all(&buf) {
                    tracing::warn!(shard = index, "redis pub/sub write failed: {e}");
                    conn::close(stream);
                }
            }
        }
        shard.pubsub.wait(Duration::from_millis(50));
    }
    shard.pubsub.close();
}

/// Connects, subscribes to the probe channel and every wanted room, starts the reader.
fn open(cluster: &Arc<Cluster>, index: usize) -> Result<TcpStream, String> {
    let shard = &cluster.shards[index];
    let name = format!("hibiki:{}:sub", cluster.owner());
    let (mut stream, reader) = conn::connect(&shard.target, &name, cluster.settings.timeout)?;
    let closer = stream.try_clone().map_err(|e| e.to_string())?;
    shard.pubsub.probing.store(false, Ordering::SeqCst);
    shard.pubsub.probe_reset();
    *lock(&shard.pubsub.link) = Some(closer);
    shard.pubsub.up.store(true, Ordering::SeqCst);
    let c = Arc::clone(cluster);
    std::thread::Builder::new()
        .name(format!("hibiki-redis-{index}-s"))
        .spawn(move || read(&c, index, reader))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    redis::cmd("SUBSCRIBE").arg(cluster.keys.probe(cluster.owner())).write_packed_command(&mut buf);
    let rooms = lock(&shard.routes).resubscribe();
    pack(cluster, "SUBSCRIBE", &rooms, &mut buf);
    if let Err(e) = stream.write_all(&buf) {
        conn::close(&stream);
        return Err(format!("{}: {e}", shard.target.addr()));
    }
    if !rooms.is_empty() {
        tracing::info!(shard = index, rooms = rooms.len(), "redis pub/sub connected: resubscribing");
    }
    Ok(stream)
}

/// The reader of one pub/sub connection.
fn read(cluster: &Arc<Cluster>, index: usize, mut reader: Reader) {
    let shard = &cluster.shards[index];
    let probe = cluster.keys.probe(cluster.owner());
    let why = loop {
        let value = match reader.next() {
            Ok(value) => value,
            Err(e) => break format!("{}: {e}", shard.target.addr()),
        };
        let (kind, channel, body) = match &value {
            Value::Array(items) | Value::Push { data: items, .. } if items.len() >= 3 => {
                match (wire::bytes(&items[0]), wire::bytes(&items[1])) {
                    (Ok(kind), Ok(channel)) => (kind, channel, &items[2]),
                    _ => {
                        tracing::warn!("redis pub/sub: {}", wire::unexpected(&value));
                        continue;
                    }
                }
            }
            Value::ServerError(e) => {
                tracing::warn!("redis pub/sub error: {e}");
                continue;
            }
            other => {
                tracing::warn!("redis pub/sub: {}", wire::unexpected(other));
                continue;
            }
        };
        if channel == probe.as_bytes() {
            match kind {
                b"message" => {
                    shard.pubsub.probe_seen(wire::uint(body).unwrap_or(0));
                }
                b"subscribe" => shard.pubsub.probing.store(true, Ordering::SeqCst),
                _ => {}
            }
            continue;
        }
        let Some(room) = cluster.keys.room_of(channel) else { continue };
        match kind {
            b"message" => match wire::bytes(body) {
                Ok(message) => on_message(cluster, index, room, message),
                Err(e) => tracing::warn!("redis pub/sub message: {e}"),
            },
            b"subscribe" | b"unsubscribe" => {
                let (jobs, catch_up) = lock(&shard.routes).confirmed(room);
                for job in jobs {
                    shard.commands.send(job);
                }
                if let Some((room, after, epoch)) = catch_up {
                    cluster.fetch(index, &room, after, epoch);
                }
            }
            _ => {}
        }
    };
    // This connection is over: nothing is subscribed any more (before the thread may
    // reconnect and resubscribe).
    let failed = lock(&shard.routes).disconnected();
    if !cluster.is_stopped() {
        tracing::warn!(shard = index, "redis pub/sub connection lost: {why}");
        *lock(&shard.pubsub.reason) = why.clone();
    }
    *lock(&shard.pubsub.link) = None;
    shard.pubsub.up.store(false, Ordering::SeqCst);
    for job in failed {
        job.finish(Err(super::command::Fail::Down(why.clone())));
    }
    shard.pubsub.wake();
}

/// The publications of a message on a room's channel (none for this node's own unnumbered
/// ones: they were delivered here when sent).
fn publications(cluster: &Cluster, message: &[u8]) -> Result<Vec<Publication>, String> {
    let (head, payload) = wire::split(message)?;
    Ok(match head {
        Head::Numbered { seq, epoch } => vec![wire::decode(payload, seq, Some(epoch.into()))?],
        Head::Batch { first, count, epoch } => {
            let epoch = Epoch::from(epoch);
            let parts = wire::parts(payload, count)?;
            let mut out = Vec::with_capacity(parts.len());
            for (seq, part) in (first..).zip(parts) {
                out.push(wire::decode(part, seq, Some(epoch.clone()))?);
            }
            out
        }
        Head::From(owner) if owner == cluster.owner() => Vec::new(),
        Head::From(_) => vec![wire::decode(payload, 0, None)?],
    })
}

/// A message on a room's channel: its publications go to the route in order (a hole before
/// any of them is fetched, what follows held).
fn on_message(cluster: &Arc<Cluster>, index: usize, room: &str, message: &[u8]) {
    let publications = match publications(cluster, message) {
        Ok(p) if p.is_empty() => return,
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(room, "redis pub/sub: {e}");
            return;
        }
    };
    let shard = &cluster.shards[index];
    let mut hole = None;
    {
        let mut routes = lock(&shard.routes);
        let Some(route) = routes.rooms.get_mut(room) else { return };
        for publication in publications {
            let message = Arc::new(Broadcast::new(publication, cluster.node.get()));
            if let Some(after) = route.offer(cluster.sink(), message) {
                hole = Some((after, route.epoch.clone()));
            }
        }
    }
    if let Some((after, epoch)) = hole {
        cluster.fetch(index, &wire::room(room), after, epoch);
    }
}

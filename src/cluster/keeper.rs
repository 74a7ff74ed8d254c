//! The keeper thread: deadlines of calls, the probe of each pub/sub connection, this node
//! life's heartbeat, the sweep of dead node lives, catch-ups that must be retried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::command::{Call, Fail};
use super::{Cluster, lock, presence, wire};

/// How often the keeper looks (deadlines are enforced to this precision).
const TICK: Duration = Duration::from_millis(25);
/// A probe through Redis to this node's own pub/sub connection.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A probe Redis acknowledged that did not arrive within this: the pub/sub connection
/// stopped receiving (found within `PROBE_EVERY + PROBE_LATE`, well under 3 s).
const PROBE_LATE: Duration = Duration::from_secs(1);
/// Heartbeat period and TTL: survivors remove a life's presence once its key expired.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL: Duration = Duration::from_secs(4);
/// A command connection that answered nothing for this long while calls wait is replaced.
const STALL: Duration = Duration::from_secs(5);

/// Runs until the cluster stops.
pub(crate) fn run(cluster: &Arc<Cluster>) {
    let start = Instant::now();
    let (mut probe_at, mut beat_at) = (start, start);
    while !cluster.is_stopped() {
        std::thread::sleep(TICK);
        let now = Instant::now();
        for (index, shard) in cluster.shards.iter().enumerate() {
            shard.commands.expire(now, STALL);
            expire_waiting(cluster, index, now);
            catch_up(cluster, index);
        }
        if now >= probe_at {
            probe_at = now + PROBE_EVERY;
            for index in 0..cluster.shards.len() {
                probe(cluster, index, now);
            }
        }
        if now >= beat_at {
            beat_at = now + HEARTBEAT_EVERY;
            for index in 0..cluster.shards.len() {
                heartbeat(cluster, index);
                sweep(cluster, index);
            }
        }
    }
}

/// Position reads that waited for a subscription past their deadline.
fn expire_waiting(cluster: &Cluster, index: usize, now: Instant) {
    let shard = &cluster.shards[index];
    let expired = {
        let mut routes = lock(&shard.routes);
        if routes.waiting.is_empty() {
            return;
        }
        let mut expired = Vec::new();
        let rooms: Vec<Arc<str>> = routes.waiting.iter().cloned().collect();
        for room in rooms {
            let Some(route) = routes.rooms.get_mut(&room) else {
                routes.waiting.remove(&room);
                continue;
            };
            let (late, keep): (Vec<_>, Vec<_>) =
                route.waiting.drain(..).partition(|job| job.deadline() <= now);
            route.waiting = keep;
            expired.extend(late);
            if route.waiting.is_empty() {
                routes.waiting.remove(&room);
                routes.dirty.insert(room);
            }
        }
        expired
    };
    for job in expired {
        job.finish(Err(Fail::Timeout));
    }
}

/// Catch-ups that failed (or could not start) are tried again.
fn catch_up(cluster: &Arc<Cluster>, index: usize) {
    let shard = &cluster.shards[index];
    if !shard.commands.is_up() {
        return;
    }
    let due = {
        let mut routes = lock(&shard.routes);
        if routes.stale.is_empty() {
            return;
        }
        let rooms: Vec<Arc<str>> = routes.stale.iter().cloned().collect();
        rooms.into_iter().filter_map(|room| routes.catch_up(&room)).collect::<Vec<_>>()
    };
    for (room, after, epoch) in due {
        cluster.fetch(index, &room, after, epoch);
    }
}

/// Publishes a probe to this node's probe channel; a probe Redis acknowledged long ago
/// that never arrived means the pub/sub connection stopped receiving: it is replaced (and
/// every room caught up).
fn probe(cluster: &Arc<Cluster>, index: usize, now: Instant) {
    let shard = &cluster.shards[index];
    let pubsub = &shard.pubsub;
    if !shard.commands.is_up() || !pubsub.is_up() || !pubsub.probing.load(Ordering::SeqCst) {
        return;
    }
    if pubsub.probe_missing(now, PROBE_LATE) {
        tracing::warn!(shard = index, "redis pub/sub connection stopped receiving: reconnecting");
        pubsub.close();
        return;
    }
    let n = pubsub.probe_sent.fetch_add(1, Ordering::SeqCst) + 1;
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(cluster.keys.probe(cluster.owner())).arg(n);
    let c = Arc::clone(cluster);
    cluster.call(index, Call::Cmd(cmd), move |reply| {
        let Ok(value) = reply else { return };
        let pubsub = &c.shards[index].pubsub;
        pubsub.probe_acked(n, Instant::now());
        if wire::int(&value).unwrap_or(0) == 0 && pubsub.probing.load(Ordering::SeqCst) {
            tracing::warn!(shard = index, "redis lost this node's pub/sub subscription: reconnecting");
            pubsub.close();
        }
    });
}

/// This node life's heartbeat; a heartbeat that had expired means the survivors may have
/// removed this life's presence: it goes back in.
pub(crate) fn heartbeat(cluster: &Arc<Cluster>, index: usize) {
    if !cluster.shards[index].commands.is_up() {
        return;
    }
    let owner = cluster.owner();
    let mut cmd = redis::cmd("SET");
    cmd.arg(cluster.keys.heartbeat(owner))
        .arg(crate::hub::envelope::now_ms())
        .arg("PX")
        .arg(HEARTBEAT_TTL.as_millis() as u64)
        .arg("GET");
    let c = Arc::clone(cluster);
    cluster.call(index, Call::Cmd(cmd), move |reply| {
        if matches!(reply, Ok(redis::Value::Nil)) && !lock(&c.mirror).is_empty() {
            presence::restore(&c, index);
        }
    });
    let mut cmd = redis::cmd("SADD");
    cmd.arg(cluster.keys.nodes()).arg(owner);
    cluster.call(index, Call::Cmd(cmd), |_| {});
}

/// Looks for node lives whose heartbeat expired and removes their presence.
fn sweep(cluster: &Arc<Cluster>, index: usize) {
    if !cluster.shards[index].commands.is_up() {
        return;
    }
    let mut cmd = redis::cmd("SMEMBERS");
    cmd.arg(cluster.keys.nodes());
    let c = Arc::clone(cluster);
    cluster.call(index, Call::Cmd(cmd), move |reply| {
        let Ok(value) = reply else { return };
        let Ok(items) = wire::array(&value, 0) else { return };
        let owners: Vec<String> = items
            .iter()
            .filter_map(|o| wire::text(o).ok())
            .filter(|o| *o != c.owner())
            .map(str::to_owned)
            .collect();
        for owner in owners {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(c.keys.heartbeat(&owner));
            let c2 = Arc::clone(&c);
            c.call(index, Call::Cmd(cmd), move |reply| {
                if matches!(reply, Ok(redis::Value::Int(0))) {
                    presence::sweep(&c2, index, owner);
                }
            });
        }
    });
}

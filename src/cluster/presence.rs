//! [`RedisPresence`]: who is in each room, across nodes. A connection's entry is owned by
//! its node life (`NODE.LIFE`) and a user with tabs on two nodes is one user. Nothing is
//! refreshed per connection: each node life keeps one heartbeat key per Redis server, and
//! the survivors remove the entries of a life whose heartbeat expired (announcing
//! `user_left` for users gone with it). This node's own entries are mirrored here and put
//! back whenever Redis may have lost them; removals that failed are retried.

use std::sync::Arc;

use serde_json::Value;

use super::command::Call;
use super::scripts::Script;
use super::{Cluster, lock, wire};
use crate::hub::envelope::now_ms;
use crate::hub::store::{
    Done, Joined, Kind, Left, PresenceEntry, PresenceStore, Publication, Reply, StoreError, Ticket, ToWorker,
};

/// Presence kept in Redis (shares its connections with the [`RedisBroker`](super::RedisBroker)
/// made with it).
pub struct RedisPresence {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").finish_non_exhaustive()
    }
}

impl RedisPresence {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

/// The presence add script for a connection.
fn add_call(cluster: &Cluster, room: &str, conn: u64, user: &str, limit: usize) -> Call {
    Call::Script {
        script: Script::PresenceAdd,
        keys: vec![cluster.keys.entries(room, cluster.owner()), cluster.keys.users(room)],
        args: vec![conn.to_string().into_bytes(), user.as_bytes().to_vec(), limit.to_string().into_bytes()],
    }
}

fn remove_call(cluster: &Cluster, room: &str, conn: u64, user: &str) -> Call {
    Call::Script {
        script: Script::PresenceRemove,
        keys: vec![cluster.keys.entries(room, cluster.owner()), cluster.keys.users(room)],
        args: vec![conn.to_string().into_bytes(), user.as_bytes().to_vec()],
    }
}

fn note_room(cluster: &Cluster, index: usize, room: &str) {
    let mut cmd = redis::cmd("SADD");
    cmd.arg(cluster.keys.owner_rooms(cluster.owner())).arg(room);
    cluster.call(index, Call::Cmd(cmd), |_| {});
}

fn joined(value: &redis::Value) -> Result<Joined, String> {
    let items = wire::array(value, 2)?;
    let newcomer = wire::int(&items[0])? == 1;
    let count = wire::uint(&items[1])? as usize;
    let users = match items.get(2) {
        Some(list) => {
            let mut users = wire::array(list, 0)?
                .iter()
                .map(|u| wire::text(u).map(Arc::from))
                .collect::<Result<Vec<Arc<str>>, _>>()?;
            users.sort();
            Some(users)
        }
        None => None,
    };
    Ok(Joined { newcomer, count, users })
}

fn left(value: &redis::Value) -> Result<Left, String> {
    let items = wire::array(value, 2)?;
    Ok(Left { gone: wire::int(&items[0])? == 1, count: wire::uint(&items[1])? as usize })
}

impl PresenceStore for RedisPresence {
    fn add(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        list_limit: usize,
        ticket: Ticket,
    ) -> Reply<Result<Joined, StoreError>> {
        let cluster = &self.cluster;
        let index = cluster.shard_index(room);
        if let Some(e) = cluster.unavailable(index) {
            return Reply::Now(Err(e));
        }
        lock(&cluster.mirror)
            .entry(Arc::clone(room))
            .or_default()
            .insert(entry.conn, Arc::clone(&entry.user));
        // The room is noted first: a node that dies between the two leaves no entry unfound.
        note_room(cluster, index, room);
        let me = Arc::clone(cluster);
        let call = add_call(cluster, room, entry.conn, &entry.user, list_limit);
        cluster.call(index, call, move |reply| {
            let result =
                reply.map_err(StoreError::from).and_then(|v| joined(&v).map_err(StoreError::Unavailable));
            (me.sink())(ticket.worker, ToWorker::Done(ticket.waiter, Done::Joined(result)));
        });
        Reply::Later
    }

    fn remove(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        ticket: Ticket,
    ) -> Reply<Result<Left, StoreError>> {
        let cluster = &self.cluster;
        let index = cluster.shard_index(room);
        {
            let mut mirror = lock(&cluster.mirror);
            if let Some(conns) = mirror.get_mut(room) {
                conns.remove(&entry.conn);
                if conns.is_empty() {
                    mirror.remove(room);
                }
            }
        }
        let failed = (Arc::clone(room), entry.conn, Arc::clone(&entry.user));
        if let Some(e) = cluster.unavailable(index) {
            lock(&cluster.retry).push(failed);
            return Reply::Now(Err(e));
        }
        let me = Arc::clone(cluster);
        let call = remove_call(cluster, room, entry.conn, &entry.user);
        cluster.call(index, call, move |reply| {
            let result =
                reply.map_err(StoreError::from).and_then(|v| left(&v).map_err(StoreError::Unavailable));
            if result.is_err() {
                lock(&me.retry).push(failed);
            }
            (me.sink())(ticket.worker, ToWorker::Done(ticket.waiter, Done::Left(result)));
        });
        Reply::Later
    }
}

/// Puts this node life's entries of shard `index` back (a no-op where they are still
/// there) and retries the removals that failed.
pub(crate) fn restore(cluster: &Arc<Cluster>, index: usize) {
    let entries: Vec<(Arc<str>, u64, Arc<str>)> = lock(&cluster.mirror)
        .iter()
        .filter(|(room, _)| cluster.shard_index(room) == index)
        .flat_map(|(room, conns)| conns.iter().map(move |(c, u)| (Arc::clone(room), *c, Arc::clone(u))))
        .collect();
    let mut rooms: Vec<&Arc<str>> = entries.iter().map(|(r, _, _)| r).collect();
    rooms.dedup();
    for room in rooms {
        note_room(cluster, index, room);
    }
    for (room, conn, user) in &entries {
        cluster.call(index, add_call(cluster, room, *conn, user, 0), |_| {});
    }
    let failed: Vec<_> = {
        let mut retry = lock(&cluster.retry);
        let (ours, others): (Vec<_>, Vec<_>) =
            retry.drain(..).partition(|(room, _, _)| cluster.shard_index(room) == index);
        *retry = others;
        ours
    };
    for (room, conn, user) in failed {
        let again = Arc::clone(cluster);
        let item = (Arc::clone(&room), conn, Arc::clone(&user));
        cluster.call(index, remove_call(cluster, &room, conn, &user), move |reply| {
            if reply.is_err() {
                lock(&again.retry).push(item);
            }
        });
    }
}

/// Removes the entries of a dead node life `owner` from the rooms of shard `index`,
/// announcing `user_left` for each user gone with it.
pub(crate) fn sweep(cluster: &Arc<Cluster>, index: usize, owner: String) {
    if !lock(&cluster.sweeping).insert(owner.clone()) {
        return;
    }
    tracing::info!(owner, "a node stopped its heartbeat: removing its presence");
    let me = Arc::clone(cluster);
    let mut cmd = redis::cmd("SMEMBERS");
    cmd.arg(cluster.keys.owner_rooms(&owner));
    cluster.call(index, Call::Cmd(cmd), move |reply| {
        let rooms: Vec<String> = match reply
            .as_ref()
            .map_err(|e| format!("{e:?}"))
            .and_then(|v| wire::array(v, 0).map(<[_]>::to_vec))
        {
            Ok(items) => items.iter().filter_map(|r| wire::text(r).ok().map(str::to_owned)).collect(),
            Err(e) => {
                tracing::debug!("sweep of {owner}: {e}");
                lock(&me.sweeping).remove(&owner);
                return;
            }
        };
        for room in rooms {
            let call = Call::Script {
                script: Script::PresenceForget,
                keys: vec![me.keys.entries(&room, &owner), me.keys.users(&room)],
                args: Vec::new(),
            };
            let c = Arc::clone(&me);
            me.call(index, call, move |reply| {
                let Ok(value) = reply else { return };
                let Ok(items) = wire::array(&value, 2) else { return };
                let count = wire::uint(&items[0]).unwrap_or(0) as usize;
                let gone = wire::array(&items[1], 0).unwrap_or(&[]);
                if count >= c.settings.presence_limit || room.starts_with("user:") {
                    return;
                }
                for user in gone.iter().filter_map(|u| wire::text(u).ok()) {
                    let p = Publication::new(
                        Arc::from(room.as_str()),
                        Kind::UserLeft,
                        Arc::from(user),
                        Value::Null,
                        now_ms(),
                    );
                    c.unnumbered(p);
                }
            });
        }
        let mut srem = redis::cmd("SREM");
        srem.arg(me.keys.nodes()).arg(&owner);
        me.call(index, Call::Cmd(srem), |_| {});
        let mut del = redis::cmd("DEL");
        del.arg(me.keys.owner_rooms(&owner)).arg(me.keys.heartbeat(&owner));
        let c = Arc::clone(&me);
        me.call(index, Call::Cmd(del), move |_| {
            lock(&c.sweeping).remove(&owner);
        });
    });
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    #[test]
    fn presence_answers_and_answers_of_the_wrong_shape() {
        let users =
            Value::Array(vec![Value::BulkString(b"bob".to_vec()), Value::BulkString(b"ann".to_vec())]);
        let got = joined(&Value::Array(vec![Value::Int(1), Value::Int(2), users])).unwrap();
        assert_eq!(got, Joined { newcomer: true, count: 2, users: Some(vec!["ann".into(), "bob".into()]) });
        let got = joined(&Value::Array(vec![Value::Int(0), Value::Int(2000)])).unwrap();
        assert_eq!((got.newcomer, got.users), (false, None));
        assert!(joined(&Value::Nil).is_err());
        assert!(joined(&Value::Array(vec![Value::Int(1), Value::Int(-2)])).is_err());
        assert_eq!(
            left(&Value::Array(vec![Value::Int(1), Value::Int(0)])),
            Ok(Left { gone: true, count: 0 })
        );
        assert!(left(&Value::Okay).is_err());
    }
}

//! [`RedisBroker`]: the [`Broker`] of the seam, kept in Redis.

use std::sync::Arc;

use super::batch::Publish;
use super::command::{Call, MAX_WAITING};
use super::{Cluster, lock, wire};
use crate::hub::store::{
    Broker, Dedup, Done, Epoch, NodeId, Position, Publication, PublishError, Replay, Reply, Since, Sink,
    StoreError, Ticket, ToWorker,
};

/// Numbering, history and fan-out of rooms in Redis: one script call per room for the
/// numbered publishes pending at a flush, a room's channel subscribed while this node has
/// members there. Dropping it stops the
/// bridge's threads.
pub struct RedisBroker {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<String> = self.cluster.shards.iter().map(|s| s.target.addr()).collect();
        f.debug_struct("RedisBroker").field("servers", &servers).finish()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.cluster.stop();
    }
}

impl RedisBroker {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

/// The publish script's answer for one message.
fn published(value: &redis::Value) -> Result<Result<Position, PublishError>, String> {
    let items = wire::array(value, 3)?;
    let (code, seq, epoch) = (wire::int(&items[0])?, wire::uint(&items[1])?, wire::epoch(&items[2])?);
    Ok(match code {
        0 | 2 => Ok(Position { seq, epoch }),
        1 => Err(PublishError::IdReused { seq }),
        _ => return Err(wire::unexpected(value)),
    })
}

impl Broker for RedisBroker {
    fn start(&self, node: &NodeId, _workers: usize, sink: Sink) {
        self.cluster.start(node, sink);
    }

    fn subscribe(
        &self,
        room: &Arc<str>,
        worker: usize,
        since: Since,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        let cluster = &self.cluster;
        let index = cluster.shard_index(room);
        let shard = &cluster.shards[index];
        let mut routes = lock(&shard.routes);
        let route = routes.add(room, worker);
        let down = cluster.unavailable(index).or_else(|| {
            (!shard.pubsub.is_up()).then(|| {
                StoreError::Unavailable(format!(
                    "redis {} pub/sub: {}",
                    shard.target.addr(),
                    shard.pubsub.reason()
                ))
            })
        });
        if let Some(e) = down {
            // Counted all the same: the hub uncounts a failed join.
            drop(routes);
            shard.pubsub.wake();
            return Reply::Now(Err(e));
        }
        let after = match since {
            Since::Now => None,
            Since::After { seq, epoch } => Some((seq, epoch)),
        };
        let known = route.epoch.clone().zip(route.last);
        let me = Arc::clone(cluster);
        let job = cluster.read_job(index, room, after, known, move |result| {
            (me.sink())(ticket.worker, ToWorker::Done(ticket.waiter, Done::Subscribed(result)));
        });
        if route.active {
            drop(routes);
            shard.commands.send(job);
        } else {
            // The position is read once the subscription is active: nothing falls between.
            route.waiting.push(job);
            routes.waiting.insert(Arc::clone(room));
            routes.dirty.insert(Arc::clone(room));
            drop(routes);
            shard.pubsub.wake();
        }
        Reply::Later
    }

    fn unsubscribe(&self, room: &Arc<str>, worker: usize) {
        let shard = &self.cluster.shards[self.cluster.shard_index(room)];
        lock(&shard.routes).remove(room, worker);
        shard.pubsub.wake();
    }

    fn publish(
        &self,
        publication: Publication,
        dedup: Option<Dedup<'_>>,
        ticket: Ticket,
    ) -> Reply<Result<Position, PublishError>> {
        let cluster = &self.cluster;
        let index = cluster.shard_index(&publication.room);
        if publication.volatile {
            let epoch = lock(&cluster.shards[index].routes)
                .rooms
                .get(&publication.room)
                .and_then(|r| r.epoch.clone())
                .unwrap_or_else(|| Epoch::from(""));
            cluster.unnumbered(publication);
            return Reply::Now(Ok(Position { seq: 0, epoch }));
        }
        if let Some(e) = cluster.unavailable(index) {
            return Reply::Now(Err(e.into()));
        }
        let shard = &cluster.shards[index];
        let Some(waiting) = shard.commands.admit() else {
            return Reply::Now(Err(StoreError::Unavailable(format!(
                "redis {}: overloaded ({MAX_WAITING} publishes waiting)",
                shard.target.addr()
            ))
            .into()));
        };
        let room = &publication.room;
        let (id_key, fingerprint) = match dedup {
            Some(d) => {
                let id = serde_json::to_string(d.id).unwrap_or_default();
                (Some(cluster.keys.publish_id(room, d.user, &id)), d.fingerprint.to_string().into_bytes())
            }
            None => (None, Vec::new()),
        };
        let call = Call::Publish(Box::new(Publish {
            room: Arc::clone(room),
            id_key,
            fingerprint,
            payload: wire::encode(&publication),
        }));
        let me = Arc::clone(cluster);
        cluster.call(index, call, move |reply| {
            drop(waiting);
            let result = match reply {
                Ok(value) => published(&value).unwrap_or_else(|e| Err(StoreError::Unavailable(e).into())),
                Err(fail) => Err(StoreError::from(fail).into()),
            };
            (me.sink())(ticket.worker, ToWorker::Done(ticket.waiter, Done::Published(result)));
        });
        Reply::Later
    }

    fn history(
        &self,
        room: &Arc<str>,
        after: u64,
        epoch: Option<&Epoch>,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        let cluster = &self.cluster;
        let index = cluster.shard_index(room);
        if let Some(e) = cluster.unavailable(index) {
            return Reply::Now(Err(e));
        }
        let known =
            lock(&cluster.shards[index].routes).rooms.get(room).and_then(|r| r.epoch.clone().zip(r.last));
        let me = Arc::clone(cluster);
        let job = cluster.read_job(index, room, Some((after, epoch.cloned())), known, move |result| {
            (me.sink())(ticket.worker, ToWorker::Done(ticket.waiter, Done::History(result)));
        });
        cluster.shards[index].commands.send(job);
        Reply::Later
    }

    fn emit(&self, publication: Publication) {
        self.cluster.unnumbered(publication);
    }

    fn health(&self) -> Result<(), String> {
        self.cluster.health()
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    #[test]
    fn the_publish_answer_of_each_kind_and_of_the_wrong_shape() {
        let answer = |code: i64| {
            Value::Array(vec![Value::Int(code), Value::Int(5), Value::BulkString(b"e1".to_vec())])
        };
        assert_eq!(published(&answer(2)), Ok(Ok(Position { seq: 5, epoch: Epoch::from("e1") })));
        assert_eq!(published(&answer(0)).unwrap().unwrap().seq, 5, "a repeat answers the first seq");
        assert_eq!(published(&answer(1)), Ok(Err(PublishError::IdReused { seq: 5 })));
        assert!(published(&answer(7)).is_err());
        assert!(published(&Value::Okay).is_err());
        assert!(published(&Value::Array(vec![Value::Int(2)])).is_err());
    }
}

//! The in-memory stores: one process, every answer [`Reply::Now`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{
    Broadcast, Broker, Dedup, Epoch, Joined, Left, NodeId, Position, PresenceEntry, PresenceStore,
    Publication, PublishError, Replay, Reply, Since, Sink, StoreError, Ticket, ToWorker,
};
use crate::hub::envelope::MessageId;

/// How many publish ids a room remembers for idempotent retries.
const RECENT_IDS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Room {
    epoch: Epoch,
    /// The last assigned seq.
    seq: u64,
    /// Members per worker: a message is posted only to workers that have some.
    workers: Vec<u32>,
    /// `(user, client id) -> (fingerprint, seq)` of recent publishes, oldest first.
    recent: VecDeque<((Arc<str>, MessageId), u64, u64)>,
    /// The last messages, oldest first, with when they were kept.
    history: VecDeque<(Instant, Arc<Broadcast>)>,
}

impl Room {
    fn position(&self) -> Position {
        Position { seq: self.seq, epoch: self.epoch.clone() }
    }

    fn is_idle(&self) -> bool {
        self.workers.iter().all(|&n| n == 0) && self.history.is_empty()
    }
}

/// The in-memory broker: rooms with their numbering, epoch, history and members per worker.
/// One mutex per room is held while a message is numbered, stored and posted, so every
/// worker receives a room's messages in seq order. A room is forgotten when its last member
/// has left and its history is empty; when it comes back it starts a new epoch at seq 1.
pub struct MemoryBroker {
    size: usize,
    ttl: Option<Duration>,
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<Room>>>>,
    sink: OnceLock<Sink>,
    node: OnceLock<NodeId>,
    workers: OnceLock<usize>,
    kept: AtomicU64,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").field("rooms", &lock(&self.rooms).len()).finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(1000, None)
    }
}

impl MemoryBroker {
    /// Keeps up to `size` messages per room, none older than `ttl`.
    pub fn new(size: usize, ttl: Option<Duration>) -> Self {
        Self {
            size,
            ttl,
            rooms: Mutex::new(HashMap::new()),
            sink: OnceLock::new(),
            node: OnceLock::new(),
            workers: OnceLock::new(),
            kept: AtomicU64::new(0),
        }
    }

    /// Rooms known (with members or history).
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    fn room(&self, name: &Arc<str>) -> Arc<Mutex<Room>> {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get(name) {
            return Arc::clone(room);
        }
        let workers = self.workers.get().copied().unwrap_or(1);
        let room = Arc::new(Mutex::new(Room {
            epoch: Epoch::random(),
            seq: 0,
            workers: vec![0; workers],
            recent: VecDeque::new(),
            history: VecDeque::new(),
        }));
        rooms.insert(Arc::clone(name), Arc::clone(&room));
        room
    }

    fn trim(&self, room: &mut Room, now: Instant) {
        let before = room.history.len();
        while room.history.len() > self.size {
            room.history.pop_front();
        }
        if let Some(ttl) = self.ttl {
            while room.history.front().is_some_and(|(at, _)| now.duration_since(*at) > ttl) {
                room.history.pop_front();
            }
        }
        self.kept.fetch_sub((before - room.history.len()) as u64, Ordering::Relaxed);
    }

    fn replay(&self, room: &mut Room, after: u64, epoch: Option<&Epoch>) -> Replay {
        self.trim(room, Instant::now());
        let position = room.position();
        let oldest = room.history.front().map_or(room.seq + 1, |(_, m)| m.seq);
        // Another epoch, or past the last seq (a position from an earlier life of the room).
        let foreign = epoch.is_some_and(|e| *e != room.epoch) || after > room.seq;
        let gap = foreign || after + 1 < oldest;
        let from = if foreign { 0 } else { after };
        let messages =
            room.history.iter().filter(|(_, m)| m.seq > from).map(|(_, m)| Arc::clone(m)).collect();
        Replay { position, messages, gap }
    }

    fn post(&self, workers: &[u32], message: &Arc<Broadcast>) {
        let Some(sink) = self.sink.get() else { return };
        for (worker, &members) in workers.iter().enumerate() {
            if members > 0 {
                sink(worker, ToWorker::Deliver(Arc::clone(message)));
            }
        }
    }

    fn wrap(&self, publication: Publication) -> Arc<Broadcast> {
        Arc::new(Broadcast::new(publication, self.node.get()))
    }
}

impl Broker for MemoryBroker {
    fn start(&self, node: &NodeId, workers: usize, sink: Sink) {
        let _ = self.node.set(node.clone());
        let _ = self.workers.set(workers.max(1));
        let _ = self.sink.set(sink);
    }

    fn subscribe(
        &self,
        room: &Arc<str>,
        worker: usize,
        since: Since,
        _ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        let shared = self.room(room);
        let mut state = lock(&shared);
        if state.workers.len() <= worker {
            state.workers.resize(worker + 1, 0);
        }
        state.workers[worker] += 1;
        let replay = match since {
            Since::Now => Replay { position: state.position(), messages: Vec::new(), gap: false },
            Since::After { seq, epoch } => self.replay(&mut state, seq, epoch.as_ref()),
        };
        Reply::Now(Ok(replay))
    }

    fn unsubscribe(&self, room: &Arc<str>, worker: usize) {
        let mut rooms = lock(&self.rooms);
        let Some(shared) = rooms.get(room) else { return };
        let idle = {
            let mut state = lock(shared);
            if let Some(n) = state.workers.get_mut(worker) {
                *n = n.saturating_sub(1);
            }
            self.trim(&mut state, Instant::now());
            state.is_idle()
        };
        if idle {
            rooms.remove(room);
        }
    }

    fn publish(
        &self,
        mut publication: Publication,
        dedup: Option<Dedup<'_>>,
        _ticket: Ticket,
    ) -> Reply<Result<Position, PublishError>> {
        let shared = self.room(&publication.room);
        let mut state = lock(&shared);
        if let Some(d) = dedup {
            let earlier = state.recent.iter().rev().find(|((u, i), _, _)| &**u == d.user && i == d.id);
            if let Some(&(_, first, seq)) = earlier {
                let answer = if first == d.fingerprint {
                    Ok(Position { seq, epoch: state.epoch.clone() })
                } else {
                    Err(PublishError::IdReused { seq })
                };
                return Reply::Now(answer);
            }
        }
        if publication.volatile {
            let message = self.wrap(publication);
            self.post(&state.workers, &message);
            return Reply::Now(Ok(Position { seq: 0, epoch: state.epoch.clone() }));
        }
        state.seq += 1;
        publication.seq = state.seq;
        publication.epoch = Some(state.epoch.clone());
        let message = self.wrap(publication);
        let now = Instant::now();
        state.history.push_back((now, Arc::clone(&message)));
        self.kept.fetch_add(1, Ordering::Relaxed);
        self.trim(&mut state, now);
        if let Some(d) = dedup {
            if state.recent.len() == RECENT_IDS {
                state.recent.pop_front();
            }
            let seq = state.seq;
            state.recent.push_back(((Arc::from(d.user), d.id.clone()), d.fingerprint, seq));
        }
        self.post(&state.workers, &message);
        Reply::Now(Ok(state.position()))
    }

    fn history(
        &self,
        room: &Arc<str>,
        after: u64,
        epoch: Option<&Epoch>,
        _ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        let Some(shared) = lock(&self.rooms).get(room).cloned() else {
            // A room nobody is in and nothing is kept of: a fresh start.
            let position = Position { seq: 0, epoch: Epoch::random() };
            return Reply::Now(Ok(Replay {
                position,
                messages: Vec::new(),
                gap: after > 0 || epoch.is_some(),
            }));
        };
        let mut state = lock(&shared);
        Reply::Now(Ok(self.replay(&mut state, after, epoch)))
    }

    fn emit(&self, publication: Publication) {
        let Some(shared) = lock(&self.rooms).get(&publication.room).cloned() else { return };
        let state = lock(&shared);
        let message = self.wrap(publication);
        self.post(&state.workers, &message);
    }

    fn kept(&self) -> Option<u64> {
        Some(self.kept.load(Ordering::Relaxed))
    }
}

/// Connections per user in one room.
type Users = HashMap<Arc<str>, u32>;

/// The in-memory presence: per room, each user's number of connections. Entries never
/// expire: they live in the process that owns the connections.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    rooms: Mutex<HashMap<Arc<str>, Users>>,
}

impl PresenceStore for MemoryPresence {
    fn add(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        list_limit: usize,
        _ticket: Ticket,
    ) -> Reply<Result<Joined, StoreError>> {
        let mut rooms = lock(&self.rooms);
        let users = rooms.entry(Arc::clone(room)).or_default();
        let tabs = users.entry(Arc::clone(&entry.user)).or_insert(0);
        *tabs += 1;
        let newcomer = *tabs == 1;
        let count = users.len();
        let list = (count <= list_limit).then(|| {
            let mut list: Vec<Arc<str>> = users.keys().cloned().collect();
            list.sort();
            list
        });
        Reply::Now(Ok(Joined { newcomer, count, users: list }))
    }

    fn remove(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        _ticket: Ticket,
    ) -> Reply<Result<Left, StoreError>> {
        let mut rooms = lock(&self.rooms);
        let Some(users) = rooms.get_mut(room) else { return Reply::Now(Ok(Left { gone: false, count: 0 })) };
        let gone = match users.get_mut(&entry.user) {
            Some(tabs) if *tabs > 1 => {
                *tabs -= 1;
                false
            }
            Some(_) => {
                users.remove(&entry.user);
                true
            }
            None => false,
        };
        let count = users.len();
        if count == 0 {
            rooms.remove(room);
        }
        Reply::Now(Ok(Left { gone, count }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Kind, Waiter};
    use super::*;

    const T: Ticket = Ticket { worker: 0, waiter: Waiter::Op(0) };

    fn now<T: std::fmt::Debug>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(t) => t,
            Reply::Later => panic!("the memory stores answer at once"),
        }
    }

    fn message(room: &Arc<str>, n: u64) -> Publication {
        Publication::new(Arc::clone(room), Kind::Message, "ann".into(), json!({"n": n}), 0)
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        replay.messages.iter().map(|m| m.seq).collect()
    }

    /// `(worker, seq)` of every delivery.
    type Deliveries = Arc<Mutex<Vec<(usize, u64)>>>;

    fn started(size: usize, ttl: Option<Duration>) -> (MemoryBroker, Deliveries) {
        let broker = MemoryBroker::new(size, ttl);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        broker.start(
            &NodeId::from("n1"),
            2,
            Arc::new(move |worker, what| {
                if let ToWorker::Deliver(m) = what {
                    sink.lock().unwrap().push((worker, m.seq));
                }
            }),
        );
        (broker, got)
    }

    #[test]
    fn history_replays_what_was_missed_or_reports_the_gap() {
        let room: Arc<str> = "chat:1".into();
        let (broker, _) = started(3, None);
        for n in 1..=5 {
            now(broker.publish(message(&room, n), None, T)).unwrap();
        }
        let epoch = now(broker.history(&room, 0, None, T)).unwrap().position.epoch;
        let at = |after: u64, epoch: Option<&Epoch>| now(broker.history(&room, after, epoch, T)).unwrap();
        assert_eq!((seqs(&at(2, None)), at(2, None).gap), (vec![3, 4, 5], false));
        assert_eq!(seqs(&at(4, Some(&epoch))), vec![5]);
        assert_eq!((seqs(&at(5, None)), at(5, None).gap), (vec![], false));
        assert_eq!((seqs(&at(1, None)), at(1, None).gap), (vec![3, 4, 5], true), "2 was pushed out");
        assert_eq!(
            (seqs(&at(9, None)), at(9, None).gap),
            (vec![3, 4, 5], true),
            "a seq this room never reached"
        );
        let other = Epoch::from("other");
        assert_eq!(
            (seqs(&at(4, Some(&other))), at(4, Some(&other)).gap),
            (vec![3, 4, 5], true),
            "another epoch"
        );
        assert_eq!(at(4, None).position.seq, 5);
        assert_eq!(broker.kept(), Some(3));
    }

    #[test]
    fn history_drops_messages_past_their_ttl() {
        let room: Arc<str> = "chat:1".into();
        let (broker, _) = started(100, Some(Duration::from_millis(30)));
        now(broker.publish(message(&room, 1), None, T)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let replay = now(broker.history(&room, 0, None, T)).unwrap();
        assert_eq!((replay.messages.len(), replay.position.seq), (0, 1));
        assert_eq!(broker.kept(), Some(0));
    }

    #[test]
    fn broker_numbers_stores_delivers_and_deduplicates() {
        let room: Arc<str> = "chat:1".into();
        let (broker, got) = started(10, None);
        let first = now(broker.subscribe(&room, 1, Since::Now, T)).unwrap();
        assert_eq!(first.position.seq, 0);
        let id = MessageId::from("m1");
        let dedup = Dedup { user: "ann", id: &id, fingerprint: 7 };
        let published = now(broker.publish(message(&room, 1), Some(dedup), T)).unwrap();
        assert_eq!(published, Position { seq: 1, epoch: first.position.epoch.clone() });
        assert_eq!(now(broker.publish(message(&room, 1), Some(dedup), T)).unwrap().seq, 1, "a retry");
        let other = Dedup { fingerprint: 8, ..dedup };
        let reused = now(broker.publish(message(&room, 2), Some(other), T));
        assert_eq!(reused, Err(PublishError::IdReused { seq: 1 }), "the same id with another message");
        let volatile = Publication { volatile: true, ..message(&room, 3) };
        assert_eq!(now(broker.publish(volatile, None, T)).unwrap().seq, 0);
        assert_eq!(*got.lock().unwrap(), vec![(1, 1), (1, 0)], "only worker 1 has members");
        assert_eq!(broker.kept(), Some(1), "volatile messages are not kept");
        assert_eq!(now(broker.subscribe(&room, 0, Since::Now, T)).unwrap().position.seq, 1);
    }

    #[test]
    fn an_idle_room_is_forgotten_and_comes_back_in_a_new_epoch() {
        let room: Arc<str> = "chat:1".into();
        let (broker, _) = started(10, Some(Duration::from_millis(30)));
        let joined = now(broker.subscribe(&room, 0, Since::Now, T)).unwrap();
        now(broker.publish(message(&room, 1), None, T)).unwrap();
        broker.unsubscribe(&room, 0);
        assert_eq!(broker.room_count(), 1, "kept: its history is not empty");
        assert_eq!(now(broker.publish(message(&room, 2), None, T)).unwrap().seq, 2, "numbering goes on");
        std::thread::sleep(Duration::from_millis(60));
        now(broker.subscribe(&room, 0, Since::Now, T)).unwrap();
        broker.unsubscribe(&room, 0);
        assert_eq!(broker.room_count(), 0, "no members and no history: forgotten");
        let back = now(broker.subscribe(
            &room,
            0,
            Since::After { seq: 2, epoch: Some(joined.position.epoch.clone()) },
            T,
        ))
        .unwrap();
        assert_eq!(back.position.seq, 0);
        assert_ne!(back.position.epoch, joined.position.epoch, "a new life, a new epoch");
        assert!(back.gap, "a position from the earlier life is a gap");
    }

    #[test]
    fn presence_counts_users_not_tabs() {
        let presence = MemoryPresence::default();
        let room: Arc<str> = "r".into();
        let entry =
            |user: &str, conn| PresenceEntry { node: NodeId::from("n"), conn, user: user.into(), name: None };
        let (ann, ann2, bob) = (entry("ann", 1), entry("ann", 2), entry("bob", 3));
        let first = now(presence.add(&room, &ann, 10, T)).unwrap();
        assert_eq!(first, Joined { newcomer: true, count: 1, users: Some(vec!["ann".into()]) });
        assert!(!now(presence.add(&room, &ann2, 10, T)).unwrap().newcomer, "a second tab");
        let joined = now(presence.add(&room, &bob, 1, T)).unwrap();
        assert_eq!((joined.count, joined.users), (2, None), "past the list limit: the count only");
        assert_eq!(
            now(presence.remove(&room, &ann, T)).unwrap(),
            Left { gone: false, count: 2 },
            "one tab left"
        );
        assert_eq!(now(presence.remove(&room, &ann2, T)).unwrap(), Left { gone: true, count: 1 });
        assert_eq!(now(presence.remove(&room, &bob, T)).unwrap(), Left { gone: true, count: 0 });
        assert_eq!(now(presence.remove(&room, &bob, T)).unwrap(), Left { gone: false, count: 0 });
    }
}

//! The seam between the hub and where room state lives: a [`Broker`] (fan-out and `seq`
//! assignment), a [`HistoryStore`] and a [`PresenceStore`]. The hub's logic talks only to these
//! traits; the in-memory versions here are the embedded default, and a cluster plugs in
//! versions backed by a shared service without touching the hub.
//!
//! The contract that keeps resume exact: for each room, a broker numbers messages without
//! gaps, appends each numbered message to the history store *before* delivering it, and
//! delivers a room's messages to each worker in `seq` order. A member that joined at seq `n`
//! (the value [`Broker::subscribe`] returned) or resumed up to `n` then needs every message
//! after `n` exactly once, which the hub ensures by skipping anything at or below `n`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::broadcast::Broadcast;
use super::envelope::MessageId;

/// How a broker hands a message to a worker of this process: `(worker, message)`.
pub type Deliver = Box<dyn Fn(usize, Arc<Broadcast>) + Send + Sync>;

/// What a publish asks of the broker besides the message itself.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions<'a> {
    /// Unnumbered and not kept in history (seq 0).
    pub volatile: bool,
    /// `(user, client message id, fingerprint of the message)`: a repeat of a publish already
    /// done returns its seq without publishing again (idempotent retries, also across
    /// reconnects); the same id with another fingerprint is refused with [`IdReused`].
    pub dedup: Option<(&'a Arc<str>, &'a MessageId, u64)>,
}

/// A publish under a `(user, id)` that an earlier, different message used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdReused {
    /// The seq the first message got.
    pub seq: u64,
}

/// Fan-out and numbering of a room's messages.
pub trait Broker: Send + Sync + 'static {
    /// Sets how messages reach this process's workers (once, at server start, before any
    /// other call).
    fn start(&self, workers: usize, deliver: Deliver);

    /// Counts a member of `room` on `worker` (messages of the room now reach that worker);
    /// returns the room's current seq, after which the member is owed every message.
    fn subscribe(&self, room: &Arc<str>, worker: usize) -> u64;

    /// Uncounts a member of `room` on `worker`.
    fn unsubscribe(&self, room: &str, worker: usize, history: &dyn HistoryStore);

    /// Numbers a message (unless volatile), appends it to `history`, and delivers it to every
    /// worker with members, in one order per room. `make` builds the message for its seq.
    /// Returns the seq (0 for volatile), or the first publish's seq for a repeat.
    ///
    /// # Errors
    ///
    /// [`IdReused`] when the dedup key came with another message before.
    fn publish(
        &self,
        room: &Arc<str>,
        options: PublishOptions<'_>,
        make: &mut dyn FnMut(u64) -> Broadcast,
        history: &dyn HistoryStore,
    ) -> Result<u64, IdReused>;

    /// Delivers an unnumbered event (presence, typing, read receipts) to the room's workers.
    fn emit(&self, room: &str, event: Arc<Broadcast>);

    /// Rooms known with at least one member.
    fn room_count(&self) -> usize;
}

/// The answer to a resume request.
#[derive(Debug)]
pub enum Resume {
    /// The messages after the given seq, in order, and the room's seq at that moment.
    Replay(Vec<Arc<Broadcast>>, u64),
    /// History no longer reaches back that far (or the seq is from an earlier life of the
    /// room): the oldest seq it has.
    Gap {
        /// The oldest seq still kept (the room's next seq when history is empty).
        oldest: u64,
    },
}

/// The bounded history of each room, for resume and `Last-Event-ID`.
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends a numbered message (called by the broker, in seq order per room).
    fn append(&self, room: &Arc<str>, message: Arc<Broadcast>);

    /// What a client that saw everything up to `after` missed, and the room's last seq.
    fn since(&self, room: &str, after: u64) -> Resume;

    /// The last seq appended to `room` (0: none).
    fn last_seq(&self, room: &str) -> u64;

    /// Whether `room` keeps nothing (then its numbering may start over).
    fn is_empty(&self, room: &str) -> bool;

    /// Messages kept over all rooms.
    fn kept(&self) -> usize;
}

/// What adding a connection to a room's presence answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The user's first connection in the room (announce them).
    pub newcomer: bool,
    /// Users present now.
    pub count: usize,
    /// The users present, sorted, when there are at most `list_limit` of them.
    pub users: Option<Vec<Arc<str>>>,
}

/// Who is in each room: users, each with a count of connections (two tabs are one member).
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds one connection of `user`; lists the users when at most `list_limit`.
    fn add(&self, room: &str, user: &Arc<str>, list_limit: usize) -> Joined;

    /// Removes one connection of `user`; returns the users left when that was their last
    /// connection, `None` otherwise.
    fn remove(&self, room: &str, user: &Arc<str>) -> Option<usize>;

    /// Connections present over all rooms.
    fn connections(&self) -> u64;
}

/// How many publish ids a room remembers for idempotent retries.
const RECENT_IDS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct BrokerRoom {
    /// The last assigned seq.
    seq: u64,
    /// Members per worker: a message is posted only to workers that have some.
    workers: Vec<u32>,
    /// `(user, client id) -> (fingerprint, seq)` of recent publishes, oldest first.
    recent: VecDeque<((Arc<str>, MessageId), u64, u64)>,
}

/// The in-memory broker: one mutex per room, held while a message is numbered, stored and
/// posted, so every worker receives a room's messages in seq order. A room is forgotten when
/// its last member leaves and its history is empty.
#[derive(Default)]
pub struct MemoryBroker {
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<BrokerRoom>>>>,
    deliver: OnceLock<Deliver>,
    workers: OnceLock<usize>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").field("rooms", &self.room_count()).finish()
    }
}

impl MemoryBroker {
    fn room(&self, name: &Arc<str>, history: Option<&dyn HistoryStore>) -> Arc<Mutex<BrokerRoom>> {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get(name) {
            return Arc::clone(room);
        }
        let workers = self.workers.get().copied().unwrap_or(1);
        // A room coming back while its history is still kept continues its numbering.
        let seq = history.map_or(0, |h| h.last_seq(name));
        let room = Arc::new(Mutex::new(BrokerRoom { seq, workers: vec![0; workers], ..Default::default() }));
        rooms.insert(Arc::clone(name), Arc::clone(&room));
        room
    }

    fn post(&self, workers: &[u32], message: &Arc<Broadcast>) {
        let Some(deliver) = self.deliver.get() else { return };
        for (worker, &members) in workers.iter().enumerate() {
            if members > 0 {
                deliver(worker, Arc::clone(message));
            }
        }
    }
}

impl Broker for MemoryBroker {
    fn start(&self, workers: usize, deliver: Deliver) {
        let _ = self.workers.set(workers.max(1));
        let _ = self.deliver.set(deliver);
    }

    fn subscribe(&self, room: &Arc<str>, worker: usize) -> u64 {
        let room = self.room(room, None);
        let mut state = lock(&room);
        if state.workers.len() <= worker {
            state.workers.resize(worker + 1, 0);
        }
        state.workers[worker] += 1;
        state.seq
    }

    fn unsubscribe(&self, room: &str, worker: usize, history: &dyn HistoryStore) {
        let mut rooms = lock(&self.rooms);
        let Some(shared) = rooms.get(room) else { return };
        let idle = {
            let mut state = lock(shared);
            if let Some(n) = state.workers.get_mut(worker) {
                *n = n.saturating_sub(1);
            }
            state.workers.iter().all(|&n| n == 0) && history.is_empty(room)
        };
        if idle {
            rooms.remove(room);
        }
    }

    fn publish(
        &self,
        room: &Arc<str>,
        options: PublishOptions<'_>,
        make: &mut dyn FnMut(u64) -> Broadcast,
        history: &dyn HistoryStore,
    ) -> Result<u64, IdReused> {
        let shared = self.room(room, Some(history));
        let mut state = lock(&shared);
        if let Some((user, id, print)) = options.dedup {
            let earlier = state.recent.iter().rev().find(|((u, i), _, _)| u == user && i == id);
            if let Some(&(_, first, seq)) = earlier {
                return if first == print { Ok(seq) } else { Err(IdReused { seq }) };
            }
        }
        let seq = if options.volatile {
            0
        } else {
            state.seq += 1;
            state.seq
        };
        let message = Arc::new(make(seq));
        if !options.volatile {
            history.append(room, Arc::clone(&message));
            if let Some((user, id, print)) = options.dedup {
                if state.recent.len() == RECENT_IDS {
                    state.recent.pop_front();
                }
                state.recent.push_back(((Arc::clone(user), id.clone()), print, seq));
            }
        }
        self.post(&state.workers, &message);
        Ok(seq)
    }

    fn emit(&self, room: &str, event: Arc<Broadcast>) {
        let Some(shared) = lock(&self.rooms).get(room).cloned() else { return };
        let state = lock(&shared);
        self.post(&state.workers, &event);
    }

    fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }
}

#[derive(Debug, Default)]
struct Kept {
    last: u64,
    messages: VecDeque<(Instant, Arc<Broadcast>)>,
}

/// The in-memory history: the last `size` messages of each room, none older than `ttl`.
#[derive(Debug)]
pub struct MemoryHistory {
    size: usize,
    ttl: Option<Duration>,
    rooms: Mutex<HashMap<Arc<str>, Kept>>,
}

impl MemoryHistory {
    /// Keeps up to `size` messages per room, dropping those older than `ttl`.
    pub fn new(size: usize, ttl: Option<Duration>) -> Self {
        Self { size, ttl, rooms: Mutex::new(HashMap::new()) }
    }

    fn trim(&self, kept: &mut Kept, now: Instant) {
        while kept.messages.len() > self.size {
            kept.messages.pop_front();
        }
        if let Some(ttl) = self.ttl {
            while kept.messages.front().is_some_and(|(at, _)| now.duration_since(*at) > ttl) {
                kept.messages.pop_front();
            }
        }
    }
}

impl HistoryStore for MemoryHistory {
    fn append(&self, room: &Arc<str>, message: Arc<Broadcast>) {
        let now = Instant::now();
        let mut rooms = lock(&self.rooms);
        let kept = rooms.entry(Arc::clone(room)).or_default();
        kept.last = kept.last.max(message.seq);
        kept.messages.push_back((now, message));
        self.trim(kept, now);
    }

    fn since(&self, room: &str, after: u64) -> Resume {
        let mut rooms = lock(&self.rooms);
        let Some(kept) = rooms.get_mut(room) else {
            return if after == 0 { Resume::Replay(Vec::new(), 0) } else { Resume::Gap { oldest: 1 } };
        };
        self.trim(kept, Instant::now());
        let last = kept.last;
        let oldest = kept.messages.front().map_or(last + 1, |(_, b)| b.seq);
        // Past the last seq: a position from an earlier life of the room, not this one.
        if after > last || (after + 1 < oldest && after < last) {
            return Resume::Gap { oldest };
        }
        let missed =
            kept.messages.iter().filter(|(_, b)| b.seq > after).map(|(_, b)| Arc::clone(b)).collect();
        Resume::Replay(missed, last)
    }

    fn last_seq(&self, room: &str) -> u64 {
        lock(&self.rooms).get(room).map_or(0, |k| k.last)
    }

    fn is_empty(&self, room: &str) -> bool {
        let mut rooms = lock(&self.rooms);
        let now = Instant::now();
        let Some(kept) = rooms.get_mut(room) else { return true };
        self.trim(kept, now);
        if kept.messages.is_empty() {
            rooms.remove(room);
            return true;
        }
        false
    }

    fn kept(&self) -> usize {
        lock(&self.rooms).values().map(|k| k.messages.len()).sum()
    }
}

/// Connections per user in one room.
type Users = HashMap<Arc<str>, u32>;

/// The in-memory presence: per room, each user's number of connections.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    rooms: Mutex<HashMap<Arc<str>, Users>>,
}

impl PresenceStore for MemoryPresence {
    fn add(&self, room: &str, user: &Arc<str>, list_limit: usize) -> Joined {
        let mut rooms = lock(&self.rooms);
        let users = match rooms.get_mut(room) {
            Some(users) => users,
            None => rooms.entry(Arc::from(room)).or_default(),
        };
        let tabs = users.entry(Arc::clone(user)).or_insert(0);
        *tabs += 1;
        let newcomer = *tabs == 1;
        let count = users.len();
        let list = (count <= list_limit).then(|| {
            let mut list: Vec<Arc<str>> = users.keys().cloned().collect();
            list.sort();
            list
        });
        Joined { newcomer, count, users: list }
    }

    fn remove(&self, room: &str, user: &Arc<str>) -> Option<usize> {
        let mut rooms = lock(&self.rooms);
        let users = rooms.get_mut(room)?;
        let tabs = users.get_mut(user)?;
        if *tabs > 1 {
            *tabs -= 1;
            return None;
        }
        users.remove(user);
        let left = users.len();
        if left == 0 {
            rooms.remove(room);
        }
        Some(left)
    }

    fn connections(&self) -> u64 {
        lock(&self.rooms).values().flat_map(|u| u.values()).map(|&n| u64::from(n)).sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(room: &Arc<str>, seq: u64) -> Broadcast {
        Broadcast::new(Arc::clone(room), seq, "message", json!({"seq": seq}), 0)
    }

    fn seqs(resume: Resume) -> Result<Vec<u64>, u64> {
        match resume {
            Resume::Replay(list, _) => Ok(list.iter().map(|b| b.seq).collect()),
            Resume::Gap { oldest } => Err(oldest),
        }
    }

    #[test]
    fn history_replays_what_was_missed_or_reports_the_gap() {
        let room: Arc<str> = "chat:1".into();
        let history = MemoryHistory::new(3, None);
        for seq in 1..=5 {
            history.append(&room, Arc::new(message(&room, seq)));
        }
        assert_eq!(seqs(history.since("chat:1", 2)), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(history.since("chat:1", 4)), Ok(vec![5]));
        assert_eq!(seqs(history.since("chat:1", 5)), Ok(vec![]));
        assert_eq!(seqs(history.since("chat:1", 1)), Err(3), "2 was pushed out");
        assert_eq!(seqs(history.since("chat:1", 9)), Err(3), "a seq this room never reached");
        assert_eq!(seqs(history.since("chat:2", 0)), Ok(vec![]));
        assert_eq!(seqs(history.since("chat:2", 7)), Err(1));
        assert_eq!(history.kept(), 3);
    }

    #[test]
    fn history_drops_messages_past_their_ttl() {
        let room: Arc<str> = "chat:1".into();
        let history = MemoryHistory::new(100, Some(Duration::from_millis(30)));
        history.append(&room, Arc::new(message(&room, 1)));
        assert!(!history.is_empty("chat:1"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(history.is_empty("chat:1"));
        assert_eq!(history.kept(), 0);
    }

    #[test]
    fn broker_numbers_stores_delivers_and_deduplicates() {
        let room: Arc<str> = "chat:1".into();
        let broker = MemoryBroker::default();
        let history = MemoryHistory::new(10, None);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        broker.start(2, Box::new(move |worker, m| sink.lock().unwrap().push((worker, m.seq))));
        assert_eq!(broker.subscribe(&room, 1), 0);
        let user: Arc<str> = "ann".into();
        let id = MessageId::Text("m1".into());
        let options = PublishOptions { volatile: false, dedup: Some((&user, &id, 7)) };
        assert_eq!(broker.publish(&room, options, &mut |seq| message(&room, seq), &history), Ok(1));
        assert_eq!(
            broker.publish(&room, options, &mut |seq| message(&room, seq), &history),
            Ok(1),
            "a retry"
        );
        let other = PublishOptions { volatile: false, dedup: Some((&user, &id, 8)) };
        let reused = broker.publish(&room, other, &mut |seq| message(&room, seq), &history);
        assert_eq!(reused, Err(IdReused { seq: 1 }), "the same id with another message");
        let volatile = PublishOptions { volatile: true, dedup: None };
        assert_eq!(broker.publish(&room, volatile, &mut |seq| message(&room, seq), &history), Ok(0));
        assert_eq!(*got.lock().unwrap(), vec![(1, 1), (1, 0)], "only worker 1 has members");
        assert_eq!(history.kept(), 1, "volatile messages are not kept");
        assert_eq!(broker.subscribe(&room, 0), 1, "a new member starts after seq 1");
    }

    #[test]
    fn broker_forgets_an_idle_room_but_continues_numbering_while_history_lasts() {
        let room: Arc<str> = "chat:1".into();
        let broker = MemoryBroker::default();
        let history = MemoryHistory::new(10, None);
        broker.start(1, Box::new(|_, _| {}));
        let plain = PublishOptions { volatile: false, dedup: None };
        broker.subscribe(&room, 0);
        assert_eq!(broker.publish(&room, plain, &mut |seq| message(&room, seq), &history), Ok(1));
        broker.unsubscribe("chat:1", 0, &history);
        assert_eq!(broker.room_count(), 1, "kept: its history is not empty");
        let other: Arc<str> = "user:9".into();
        broker.subscribe(&other, 0);
        broker.unsubscribe("user:9", 0, &history);
        assert_eq!(broker.room_count(), 1, "a room with no members and no history is forgotten");
        let fresh = MemoryBroker::default();
        fresh.start(1, Box::new(|_, _| {}));
        assert_eq!(fresh.publish(&room, plain, &mut |seq| message(&room, seq), &history), Ok(2));
    }

    #[test]
    fn presence_counts_users_not_tabs() {
        let presence = MemoryPresence::default();
        let (ann, bob): (Arc<str>, Arc<str>) = ("ann".into(), "bob".into());
        let first = presence.add("r", &ann, 10);
        assert_eq!(first, Joined { newcomer: true, count: 1, users: Some(vec![ann.clone()]) });
        assert!(!presence.add("r", &ann, 10).newcomer, "a second tab");
        let joined = presence.add("r", &bob, 1);
        assert_eq!((joined.count, joined.users), (2, None), "past the list limit: the count only");
        assert_eq!(presence.connections(), 3);
        assert_eq!(presence.remove("r", &ann), None, "one tab left");
        assert_eq!(presence.remove("r", &ann), Some(1));
        assert_eq!(presence.remove("r", &bob), Some(0));
        assert_eq!(presence.remove("r", &bob), None);
        assert_eq!(presence.connections(), 0);
    }
}

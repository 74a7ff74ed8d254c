//! Rooms as the whole server sees them: sequence numbers, bounded history, presence, and
//! which workers have members. One mutex per room; publishing holds it while it numbers the
//! message and posts it to the workers, so every worker receives a room's messages in `seq`
//! order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::broadcast::Broadcast;
use crate::app::envelope::MessageId;

/// How many publish ids a room remembers for idempotent retries.
const RECENT_IDS: usize = 1024;

/// A room's shared state.
#[derive(Debug)]
pub struct Room {
    /// The room's name.
    pub name: Arc<str>,
    /// Whether messages are batched per tick.
    pub tick: bool,
    state: Mutex<RoomState>,
}

/// What the room's mutex guards.
#[derive(Debug, Default)]
pub struct RoomState {
    /// The last assigned sequence number (0: none yet).
    pub seq: u64,
    /// The last messages, oldest first, with the time each was stored.
    pub history: VecDeque<(Instant, Arc<Broadcast>)>,
    /// Connections per user in the room (a user with two tabs is one member).
    pub presence: HashMap<Arc<str>, u32>,
    /// Members per worker, so a message is posted only to workers that need it.
    pub workers: Vec<u32>,
    /// `(user, client id) -> seq` of recent publishes, oldest first.
    recent: VecDeque<((Arc<str>, MessageId), u64)>,
}

/// The answer to a resume request.
#[derive(Debug)]
pub enum Resume {
    /// The messages after the given seq, in order, and the room's seq at that moment.
    Replay(Vec<Arc<Broadcast>>, u64),
    /// History no longer reaches back that far: the oldest seq it has.
    Gap {
        /// The oldest seq still kept (the room's next seq when history is empty).
        oldest: u64,
    },
}

impl Room {
    fn new(name: Arc<str>, tick: bool, workers: usize) -> Self {
        Self {
            name,
            tick,
            state: Mutex::new(RoomState { workers: vec![0; workers], ..RoomState::default() }),
        }
    }

    /// Locks the room.
    pub fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RoomState {
    /// Drops history past `size` entries or older than `ttl`.
    pub fn trim(&mut self, size: usize, ttl: Option<Duration>, now: Instant) {
        while self.history.len() > size {
            self.history.pop_front();
        }
        if let Some(ttl) = ttl {
            while self.history.front().is_some_and(|(at, _)| now.duration_since(*at) > ttl) {
                self.history.pop_front();
            }
        }
    }

    /// The seq of an earlier publish with this client id by this user.
    pub fn duplicate(&self, user: &Arc<str>, id: &MessageId) -> Option<u64> {
        self.recent.iter().rev().find(|((u, i), _)| u == user && i == id).map(|(_, seq)| *seq)
    }

    /// Remembers a publish id.
    pub fn remember(&mut self, user: Arc<str>, id: MessageId, seq: u64) {
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(((user, id), seq));
    }

    /// What a client that saw everything up to `after` missed.
    pub fn resume(&self, after: u64) -> Resume {
        let oldest = self.history.front().map_or(self.seq + 1, |(_, b)| b.seq);
        if after + 1 < oldest && after < self.seq {
            return Resume::Gap { oldest };
        }
        let missed = self.history.iter().filter(|(_, b)| b.seq > after).map(|(_, b)| Arc::clone(b)).collect();
        Resume::Replay(missed, self.seq)
    }

    /// Users present, sorted.
    pub fn users(&self) -> Vec<Arc<str>> {
        let mut users: Vec<_> = self.presence.keys().cloned().collect();
        users.sort();
        users
    }

    /// Counts a member on `worker`.
    pub fn add_member(&mut self, worker: usize) {
        if self.workers.len() <= worker {
            self.workers.resize(worker + 1, 0);
        }
        self.workers[worker] += 1;
    }

    /// Uncounts a member on `worker`.
    pub fn remove_member(&mut self, worker: usize) {
        if let Some(n) = self.workers.get_mut(worker) {
            *n = n.saturating_sub(1);
        }
    }

    /// Whether nobody is in the room and it keeps no history worth keeping.
    pub fn is_idle(&self) -> bool {
        self.workers.iter().all(|&n| n == 0) && self.history.is_empty()
    }
}

/// Every room of the server.
#[derive(Debug)]
pub struct Registry {
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    tick_patterns: Vec<String>,
    workers: std::sync::atomic::AtomicUsize,
}

impl Registry {
    /// An empty registry; rooms matching `tick_patterns` are tick rooms.
    pub fn new(tick_patterns: Vec<String>, workers: usize) -> Self {
        Self { rooms: Mutex::new(HashMap::new()), tick_patterns, workers: workers.into() }
    }

    /// Sets the number of workers (at server start).
    pub fn set_workers(&self, workers: usize) {
        self.workers.store(workers.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The room, created on first use.
    pub fn room(&self, name: &str) -> Arc<Room> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(room) = rooms.get(name) {
            return Arc::clone(room);
        }
        let name: Arc<str> = Arc::from(name);
        let tick = self.tick_patterns.iter().any(|p| pattern_matches(p, &name));
        let workers = self.workers.load(std::sync::atomic::Ordering::Relaxed);
        let room = Arc::new(Room::new(Arc::clone(&name), tick, workers));
        rooms.insert(name, Arc::clone(&room));
        room
    }

    /// The room if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Every room (for metrics).
    pub fn all(&self) -> Vec<Arc<Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

/// Whether `name` matches `pattern`: exact, or a prefix when the pattern ends with `*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
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
}

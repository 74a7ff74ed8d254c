//! Interest routing and order on this node, per room of a shard: how many members each
//! worker has (publications are posted only to those workers: one `Arc<Broadcast>` per
//! publication per node), the state of the room's pub/sub subscription, and the last seq
//! delivered — a numbered message past `last + 1` is held while the hole is fetched from
//! the room's stream, then everything goes out in seq order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::Job;
use crate::hub::store::{Broadcast, Epoch, Sink, ToWorker};

/// How long a failing fetch of a room's hole is tried again before what is held goes out.
const REFETCH_PATIENCE: Duration = Duration::from_secs(10);

/// One room on this node.
#[derive(Default)]
pub(crate) struct Route {
    /// Members per worker (joins waiting for their answer included).
    workers: Vec<u32>,
    members: u32,
    /// The last subscription change sent: `SUBSCRIBE` (true) or `UNSUBSCRIBE`.
    pub(crate) subscribed: bool,
    /// Changes sent and not yet confirmed.
    pub(crate) unconfirmed: u32,
    /// Subscribed, confirmed, nothing pending: a position read now misses nothing.
    pub(crate) active: bool,
    /// The epoch of `last`.
    pub(crate) epoch: Option<Epoch>,
    /// The last seq delivered to this node's workers (or the first position read).
    pub(crate) last: Option<u64>,
    /// Messages held while a hole (or a catch-up) is fetched.
    pub(crate) held: Option<Vec<Arc<Broadcast>>>,
    /// Position reads waiting for the subscription to be active.
    pub(crate) waiting: Vec<Job>,
    /// Needs a catch-up from `last` (the pub/sub connection was lost, or a fetch failed).
    pub(crate) stale: bool,
    /// Fetches of this room's hole have failed since then.
    pub(crate) filling_since: Option<Instant>,
}

impl Route {
    /// Whether this node wants the room's channel.
    pub(crate) fn wanted(&self) -> bool {
        self.members > 0 || !self.waiting.is_empty()
    }

    /// Whether nothing is left to remember.
    fn idle(&self) -> bool {
        !self.wanted() && !self.subscribed && self.unconfirmed == 0 && self.held.is_none()
    }

    /// Posts a message to every worker with members.
    pub(crate) fn post(&self, sink: &Sink, message: &Arc<Broadcast>) {
        for (worker, &members) in self.workers.iter().enumerate() {
            if members > 0 {
                sink(worker, ToWorker::Deliver(Arc::clone(message)));
            }
        }
    }

    /// A message from the room's channel. A numbered one past `last + 1` is held and the seq
    /// to fetch after is returned.
    pub(crate) fn offer(&mut self, sink: &Sink, message: Arc<Broadcast>) -> Option<u64> {
        if let Some(held) = &mut self.held {
            held.push(message);
            return None;
        }
        if message.seq > 0 {
            if self.epoch != message.epoch {
                // A new epoch (or the first message): its numbering is followed from here.
                self.epoch.clone_from(&message.epoch);
                self.last = None;
            }
            if let Some(last) = self.last {
                if message.seq <= last {
                    return None;
                }
                if message.seq > last + 1 {
                    self.held = Some(vec![message]);
                    return Some(last);
                }
            }
            self.last = Some(message.seq);
        }
        self.post(sink, &message);
        None
    }

    /// History answered a hole or a catch-up: what it had, then what was held, in order,
    /// each once (what it could not fill the hub finds and reports per member).
    pub(crate) fn filled(&mut self, sink: &Sink, messages: Vec<Arc<Broadcast>>) {
        let held = self.held.take().unwrap_or_default();
        for message in messages.into_iter().chain(held) {
            if message.seq > 0 {
                if self.epoch != message.epoch {
                    self.epoch.clone_from(&message.epoch);
                    self.last = None;
                }
                if self.last.is_some_and(|last| message.seq <= last) {
                    continue;
                }
                self.last = Some(message.seq);
            }
            self.post(sink, &message);
        }
    }

    /// A position read answered: the first one after the subscription started is where
    /// this node's delivery starts (reads are answered in order, so it is the lowest).
    pub(crate) fn positioned(&mut self, epoch: &Epoch, seq: u64) {
        if self.last.is_none() && self.epoch.as_ref().is_none_or(|e| e == epoch) {
            self.epoch = Some(epoch.clone());
            self.last = Some(seq);
        }
    }
}

/// A catch-up to fetch: the room, the seq after which, its epoch.
pub(crate) type CatchUp = (Arc<str>, u64, Option<Epoch>);

/// The rooms of a shard on this node.
#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) rooms: HashMap<Arc<str>, Route>,
    /// Rooms whose wanted subscription may differ from the last one sent.
    pub(crate) dirty: HashSet<Arc<str>>,
    /// Rooms with position reads waiting.
    pub(crate) waiting: HashSet<Arc<str>>,
    /// Rooms to catch up.
    pub(crate) stale: HashSet<Arc<str>>,
}

impl Routes {
    /// Counts a member of `room` on `worker`.
    pub(crate) fn add(&mut self, room: &Arc<str>, worker: usize) -> &mut Route {
        let route = self.rooms.entry(Arc::clone(room)).or_default();
        if route.workers.len() <= worker {
            route.workers.resize(worker + 1, 0);
        }
        route.workers[worker] += 1;
        route.members += 1;
        if route.members == 1 {
            self.dirty.insert(Arc::clone(room));
        }
        route
    }

    /// Uncounts a member of `room` on `worker`.
    pub(crate) fn remove(&mut self, room: &Arc<str>, worker: usize) {
        let Some(route) = self.rooms.get_mut(room) else { return };
        if let Some(n) = route.workers.get_mut(worker).filter(|n| **n > 0) {
            *n -= 1;
            route.members -= 1;
        }
        if route.members == 0 {
            self.dirty.insert(Arc::clone(room));
        }
    }

    /// The subscription changes to send now: `(subscribe, unsubscribe)`.
    pub(crate) fn changes(&mut self) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for room in self.dirty.drain() {
            let Some(route) = self.rooms.get_mut(&room) else { continue };
            let wanted = route.wanted();
            if wanted != route.subscribed {
                route.subscribed = wanted;
                route.unconfirmed += 1;
                route.active = false;
                if wanted { on.push(room) } else { off.push(room) }
            } else if route.idle() {
                self.rooms.remove(&room);
            }
        }
        (on, off)
    }

    /// Redis confirmed a subscription change of `room`; the position reads (and the
    /// catch-up) that waited for it, once nothing else is pending.
    pub(crate) fn confirmed(&mut self, room: &str) -> (Vec<Job>, Option<CatchUp>) {
        let Some((name, _)) = self.rooms.get_key_value(room) else { return (Vec::new(), None) };
        let name = Arc::clone(name);
        let Some(route) = self.rooms.get_mut(&name) else { return (Vec::new(), None) };
        route.unconfirmed = route.unconfirmed.saturating_sub(1);
        if route.unconfirmed > 0 {
            return (Vec::new(), None);
        }
        route.active = route.subscribed;
        let jobs = std::mem::take(&mut route.waiting);
        self.waiting.remove(&name);
        let catch_up = self.catch_up(&name);
        if let Some(route) = self.rooms.get(&name) {
            if route.idle() {
                self.rooms.remove(&name);
            } else if route.wanted() != route.subscribed {
                self.dirty.insert(name);
            }
        }
        (jobs, catch_up)
    }

    /// Starts a catch-up of a stale, active room (holding what arrives meanwhile):
    /// `(room, after, epoch)`.
    pub(crate) fn catch_up(&mut self, room: &Arc<str>) -> Option<CatchUp> {
        let route = self.rooms.get_mut(room)?;
        if !route.stale || !route.active {
            return None;
        }
        route.stale = false;
        self.stale.remove(room);
        let last = route.last?;
        route.held.get_or_insert_with(Vec::new);
        Some((Arc::clone(room), last, route.epoch.clone()))
    }

    /// A fetch of `room`'s hole failed: held messages stay held and it is fetched again,
    /// for `REFETCH_PATIENCE`; then what is held goes out as it is (the hub's members see
    /// the hole before them and fetch it themselves, or report it).
    pub(crate) fn refetch(&mut self, sink: &Sink, room: &Arc<str>, now: Instant) {
        let Some(route) = self.rooms.get_mut(room) else { return };
        let since = *route.filling_since.get_or_insert(now);
        if now.duration_since(since) < REFETCH_PATIENCE {
            route.stale = true;
            self.stale.insert(Arc::clone(room));
        } else {
            route.filling_since = None;
            route.filled(sink, Vec::new());
        }
    }

    /// The pub/sub connection was lost: nothing is subscribed, every room that delivered
    /// something needs a catch-up, and the reads waiting fail.
    pub(crate) fn disconnected(&mut self) -> Vec<Job> {
        let mut failed = Vec::new();
        self.rooms.retain(|name, route| {
            route.subscribed = false;
            route.unconfirmed = 0;
            route.active = false;
            failed.append(&mut route.waiting);
            if route.last.is_some() {
                route.stale = true;
                self.stale.insert(Arc::clone(name));
            }
            route.members > 0 || route.held.is_some()
        });
        self.waiting.clear();
        self.dirty.clear();
        self.stale.retain(|room| self.rooms.contains_key(room));
        failed
    }

    /// After a reconnect: the rooms to subscribe, marked as sent.
    pub(crate) fn resubscribe(&mut self) -> Vec<Arc<str>> {
        self.dirty.clear();
        let mut on = Vec::new();
        for (name, route) in &mut self.rooms {
            if route.wanted() {
                route.subscribed = true;
                route.unconfirmed = 1;
                route.active = false;
                on.push(Arc::clone(name));
            }
        }
        on
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::hub::store::{Kind, Publication};

    type Got = Arc<Mutex<Vec<(usize, u64)>>>;

    fn sink() -> (Sink, Got) {
        let got: Got = Arc::default();
        let g = Arc::clone(&got);
        let sink: Sink = Arc::new(move |worker, what| {
            if let ToWorker::Deliver(m) = what {
                g.lock().unwrap().push((worker, m.seq));
            }
        });
        (sink, got)
    }

    fn message(seq: u64, epoch: &str) -> Arc<Broadcast> {
        let p = Publication {
            seq,
            epoch: Some(Epoch::from(epoch)),
            ..Publication::new("r".into(), Kind::Message, "a".into(), json!(seq), 0)
        };
        Arc::new(Broadcast::new(p, None))
    }

    #[test]
    fn messages_go_in_order_once_to_workers_with_members_and_holes_are_held() {
        let (sink, got) = sink();
        let mut routes = Routes::default();
        let room: Arc<str> = "r".into();
        routes.add(&room, 1);
        let route = routes.rooms.get_mut(&room).unwrap();
        route.positioned(&Epoch::from("e"), 2);
        assert_eq!(route.offer(&sink, message(2, "e")), None, "at the position: skipped");
        assert_eq!(route.offer(&sink, message(3, "e")), None);
        assert_eq!(route.offer(&sink, message(5, "e")), Some(3), "4 is missing");
        assert_eq!(route.offer(&sink, message(6, "e")), None, "held behind the hole");
        route.filled(&sink, vec![message(4, "e"), message(5, "e")]);
        assert_eq!(route.offer(&sink, message(6, "e")), None, "a repeat");
        assert_eq!(*got.lock().unwrap(), [(1, 3), (1, 4), (1, 5), (1, 6)]);
        assert_eq!(route.offer(&sink, message(1, "f")), None, "a new epoch starts over");
        assert_eq!(got.lock().unwrap().last(), Some(&(1, 1)));
    }

    #[test]
    fn a_failed_fetch_keeps_what_is_held_and_fetches_again_until_it_gives_up() {
        let (sink, got) = sink();
        let mut routes = Routes::default();
        let room: Arc<str> = "r".into();
        routes.add(&room, 0);
        let route = routes.rooms.get_mut(&room).unwrap();
        route.positioned(&Epoch::from("e"), 1);
        route.active = true;
        assert_eq!(route.offer(&sink, message(3, "e")), Some(1), "2 is missing");
        let t0 = Instant::now();
        routes.refetch(&sink, &room, t0);
        assert!(got.lock().unwrap().is_empty(), "3 still waits for 2");
        assert_eq!(
            routes.catch_up(&room),
            Some((Arc::clone(&room), 1, Some(Epoch::from("e")))),
            "fetched again"
        );
        routes.refetch(&sink, &room, t0 + REFETCH_PATIENCE);
        assert_eq!(*got.lock().unwrap(), [(0, 3)], "given up: what is held goes out, the hub sees the hole");
    }

    #[test]
    fn subscriptions_follow_interest_and_reads_wait_for_the_confirmation() {
        let mut routes = Routes::default();
        let room: Arc<str> = "r".into();
        routes.add(&room, 0);
        assert_eq!(routes.changes(), (vec![Arc::clone(&room)], vec![]));
        routes.remove(&room, 0);
        routes.add(&room, 0);
        assert_eq!(routes.changes(), (vec![], vec![]), "wanted again before anything was sent");
        routes.remove(&room, 0);
        assert_eq!(routes.changes(), (vec![], vec![Arc::clone(&room)]));
        routes.add(&room, 0);
        assert_eq!(routes.changes(), (vec![Arc::clone(&room)], vec![]));
        for _ in 0..2 {
            assert!(routes.confirmed("r").1.is_none());
            assert!(!routes.rooms[&room].active, "a change is still unconfirmed");
        }
        routes.confirmed("r");
        assert!(routes.rooms[&room].active);
        routes.remove(&room, 0);
        routes.changes();
        routes.confirmed("r");
        assert!(routes.rooms.is_empty(), "forgotten once unsubscribed");
    }

    #[test]
    fn a_lost_connection_makes_rooms_stale_and_they_catch_up_once_active() {
        let (sink, _) = sink();
        let mut routes = Routes::default();
        let room: Arc<str> = "r".into();
        routes.add(&room, 0);
        routes.changes();
        routes.confirmed("r");
        routes.rooms.get_mut(&room).unwrap().offer(&sink, message(7, "e"));
        assert!(routes.disconnected().is_empty());
        assert_eq!(routes.resubscribe(), vec![Arc::clone(&room)]);
        let (_, catch_up) = routes.confirmed("r");
        assert_eq!(catch_up, Some((Arc::clone(&room), 7, Some(Epoch::from("e")))));
        assert!(routes.rooms[&room].held.is_some(), "live messages wait for the catch-up");
    }
}

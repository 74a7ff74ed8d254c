//! The rooms of one worker: who is a member here, and delivery to them in seq order, exactly
//! once — holding a member's live messages while its position is not known yet, and
//! fetching a hole from history when a live message skips ahead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;
use slab::Slab;

use super::broadcast::{Broadcast, Variant};
use super::commands::{ErrorCode, Session, envelope_frame};
use super::envelope::Encoding;
use super::pending::{Pending, Refill};
use super::store::{Epoch, Reply, Ticket, Waiter};
use super::{Hub, Out};
use crate::reactor::ConnId;

/// Why a member's live messages are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Its join or resume (pending operation `key`) waits for the room's position.
    Joining(usize),
    /// A hole after its `since` is being fetched from history.
    Filling,
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) conn: ConnId,
    /// `None` for an SSE stream.
    pub(super) ws: Option<(Encoding, bool)>,
    /// The last seq delivered (or the room's seq at join): older ones are skipped.
    pub(super) since: u64,
    /// Tick rooms: the position in the room's log of the first message not yet sent to this
    /// member (messages before it were sent, or were older than its join).
    pub(super) next: u64,
    /// Live messages held back, in arrival order, and why (`None`: live).
    pub(super) held: Option<Box<(Hold, Vec<Arc<Broadcast>>)>>,
}

impl Member {
    pub(super) fn new(conn: ConnId, ws: Option<(Encoding, bool)>, next: u64, join: usize) -> Self {
        Self { conn, ws, since: 0, next, held: Some(Box::new((Hold::Joining(join), Vec::new()))) }
    }

    pub(super) fn variant(&self) -> Variant {
        match self.ws {
            Some((encoding, deflate)) => Variant::Ws(encoding, deflate),
            None => Variant::Sse,
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.held.is_none()
    }

    /// Sends `message` if it is owed: numbered ones past `since` in order. A numbered one
    /// past `since + 1` opens a hole: it is held, and the answer is `Err(since)`, the seq to
    /// fetch history after.
    pub(super) fn offer(&mut self, out: &mut impl Out, message: &Arc<Broadcast>) -> Result<(), u64> {
        if let Some(held) = &mut self.held {
            held.1.push(Arc::clone(message));
            return Ok(());
        }
        if message.seq > 0 {
            if message.seq <= self.since {
                return Ok(());
            }
            if message.seq > self.since + 1 {
                self.held = Some(Box::new((Hold::Filling, vec![Arc::clone(message)])));
                return Err(self.since);
            }
            self.since = message.seq;
        }
        if message.excludes(self.conn) {
            return Ok(());
        }
        let frame = message.frame(self.variant());
        match (self.ws, message.volatile) {
            (None, _) => out.send_raw(self.conn, frame),
            (Some(_), true) => out.send_volatile(self.conn, frame),
            (Some(_), false) => out.send_frame(self.conn, frame),
        };
        Ok(())
    }

    /// Makes the member live after `since`, offering what was held. A hole among the held
    /// messages holds it again (`Err(since)`).
    pub(super) fn release(&mut self, out: &mut impl Out, since: u64) -> Result<(), u64> {
        self.since = self.since.max(since);
        let Some(held) = self.held.take() else { return Ok(()) };
        let mut messages = held.1.into_iter();
        for message in messages.by_ref() {
            if let Err(after) = self.offer(out, &message) {
                if let Some(held) = &mut self.held {
                    held.1.extend(messages);
                }
                return Err(after);
            }
        }
        Ok(())
    }

    /// Tells the member that messages after `seq` (the last it had) and before `oldest` (the
    /// next it gets) are lost to it; `epoch` is the room's epoch from now on.
    pub(super) fn tell_gap(
        &self,
        out: &mut impl Out,
        room: &str,
        oldest: u64,
        seq: u64,
        epoch: Option<&Epoch>,
    ) {
        let Some((encoding, _)) = self.ws else { return };
        let message = format!("messages of {room:?} after seq {seq} and before {oldest} cannot be delivered");
        let payload = json!({
            "code": ErrorCode::HistoryGap, "message": message, "room": room, "oldest": oldest, "seq": seq,
            "epoch": epoch.map(Epoch::as_str),
        });
        out.send_frame(self.conn, &envelope_frame(encoding, "error", None, payload));
    }
}

#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    pub(super) tick: bool,
    pub(super) members: Vec<Member>,
    /// The epoch the members' positions belong to (known once a position arrived).
    pub(super) epoch: Option<Epoch>,
    /// Holes being fetched from history, by the seq they start after.
    pub(super) filling: Vec<u64>,
    /// Tick rooms: the member to serve first next tick.
    pub(super) cursor: usize,
    /// Tick rooms: messages not yet sent to every member, in arrival order; `log[0]` is at
    /// position `log_start`. A member behind (or past a tick's budget) costs nothing per tick:
    /// it just keeps its position.
    pub(super) log: VecDeque<Arc<Broadcast>>,
    pub(super) log_start: u64,
    /// Tick rooms: the highest seq logged (0: none yet).
    pub(super) logged: u64,
    /// Tick rooms: numbered messages held while a hole in the room's stream is fetched.
    pub(super) held: Option<Vec<Arc<Broadcast>>>,
}

impl LocalRoom {
    /// The position after the last logged message (where a new member starts).
    pub(super) fn log_end(&self) -> u64 {
        self.log_start + self.log.len() as u64
    }
}

/// A worker's part of the hub: the sessions of its connections, the members of each room
/// on this worker, and the store calls it waits for.
#[derive(Debug)]
pub struct HubLocal {
    pub(super) worker: usize,
    pub(super) sessions: HashMap<ConnId, Session>,
    pub(super) rooms: HashMap<Arc<str>, LocalRoom>,
    pub(super) pending: Slab<Pending>,
    /// Holes whose fill failed, to try again.
    pub(super) refills: Vec<Refill>,
    pub(super) last_tick: Option<Instant>,
    pub(super) streams: Vec<ConnId>,
    pub(super) last_keepalive: Option<Instant>,
    /// Members a tick may serve (batches written), adapted to what the last tick cost.
    pub(super) tick_budget: usize,
    /// Members the last tick served.
    pub(super) last_served: usize,
    pub(super) tick_count: usize,
}

impl HubLocal {
    /// Worker `worker`'s part.
    pub fn new(worker: usize) -> Self {
        Self {
            worker,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            pending: Slab::new(),
            refills: Vec::new(),
            last_tick: None,
            streams: Vec::new(),
            last_keepalive: None,
            tick_budget: usize::MAX,
            last_served: 0,
            tick_count: 0,
        }
    }

    /// Members the next tick may serve.
    pub fn tick_budget(&self) -> usize {
        self.tick_budget
    }

    /// Members of rooms on this worker.
    pub fn member_count(&self) -> usize {
        self.rooms.values().map(|r| r.members.len()).sum()
    }

    /// Store calls this worker waits for.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The ticket for the next pending operation (its key once inserted).
    pub(super) fn next_ticket(&self) -> Ticket {
        Ticket { worker: self.worker, waiter: Waiter::Op(self.pending.vacant_key() as u64) }
    }
}

impl Hub {
    /// Fans a publication out to this worker's members of its room.
    pub fn deliver(&self, local: &mut HubLocal, out: &mut impl Out, message: &Arc<Broadcast>) {
        if !local.refills.is_empty() {
            self.retry_fills(local, out, Some(&message.room), Instant::now());
        }
        let Some(room) = local.rooms.get_mut(&message.room) else { return };
        if message.seq > 0 {
            self.check_epoch(room, out, message);
        }
        if room.tick {
            if let Some(after) = Self::log(room, message) {
                self.fill(local, out, &message.room, after);
            }
            return;
        }
        let mut holes: Vec<u64> = Vec::new();
        for member in &mut room.members {
            if let Err(after) = member.offer(out, message) {
                if !holes.contains(&after) {
                    holes.push(after);
                }
            }
        }
        for after in holes {
            self.fill(local, out, &message.room, after);
        }
    }

    /// A numbered message of another epoch: the room's numbering started over (its state was
    /// lost). Live members are told of the gap and follow the new epoch from its start.
    fn check_epoch(&self, room: &mut LocalRoom, out: &mut impl Out, message: &Broadcast) {
        let (Some(current), Some(epoch)) = (&room.epoch, &message.epoch) else {
            if room.epoch.is_none() {
                room.epoch.clone_from(&message.epoch);
            }
            return;
        };
        if current == epoch {
            return;
        }
        self.restart_epoch(room, out, &message.room, epoch.clone());
    }

    /// Moves a room's members to a new epoch, telling the live ones of the gap.
    pub(super) fn restart_epoch(&self, room: &mut LocalRoom, out: &mut impl Out, name: &str, epoch: Epoch) {
        for member in room.members.iter_mut().filter(|m| m.is_live()) {
            self.counters.gaps.fetch_add(1, Ordering::Relaxed);
            member.tell_gap(out, name, 1, member.since, Some(&epoch));
            member.since = 0;
        }
        room.logged = 0;
        room.epoch = Some(epoch);
    }

    /// Tick rooms: appends to the room's log in seq order; a numbered message past the last
    /// logged one + 1 is held and the seq to fetch history after is returned.
    fn log(room: &mut LocalRoom, message: &Arc<Broadcast>) -> Option<u64> {
        if message.seq > 0 {
            if let Some(held) = &mut room.held {
                held.push(Arc::clone(message));
                return None;
            }
            if room.logged > 0 && message.seq <= room.logged {
                return None;
            }
            if room.logged > 0 && message.seq > room.logged + 1 {
                room.held = Some(vec![Arc::clone(message)]);
                return Some(room.logged);
            }
            room.logged = message.seq;
        }
        room.log.push_back(Arc::clone(message));
        None
    }

    /// Fetches the messages of `room` after `after` from history, once per hole.
    pub(super) fn fill(&self, local: &mut HubLocal, out: &mut impl Out, name: &Arc<str>, after: u64) {
        let Some(room) = local.rooms.get_mut(name) else { return };
        if room.filling.contains(&after) {
            return;
        }
        room.filling.push(after);
        let epoch = room.epoch.clone();
        let ticket = local.next_ticket();
        let key = local.pending.insert(Pending::Fill { room: Arc::clone(name), after });
        debug_assert_eq!(ticket.waiter, Waiter::Op(key as u64));
        if let Reply::Now(result) = self.stores.broker.history(name, after, epoch.as_ref(), ticket) {
            local.pending.remove(key);
            self.filled(local, out, name, after, result);
        }
    }

    /// Forgets the member that join `key` added (a join the stores refused); whether it was
    /// still there.
    pub(super) fn remove_joining(
        &self,
        local: &mut HubLocal,
        conn: ConnId,
        name: &Arc<str>,
        key: usize,
    ) -> bool {
        let Some(room) = local.rooms.get_mut(name) else { return false };
        let joining = Some(Hold::Joining(key));
        let Some(i) =
            room.members.iter().position(|m| m.conn == conn && m.held.as_ref().map(|h| h.0) == joining)
        else {
            return false;
        };
        room.members.swap_remove(i);
        self.counters.members.fetch_sub(1, Ordering::Relaxed);
        if room.members.is_empty() {
            local.rooms.remove(name);
            self.counters.rooms.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Forgets `conn`'s membership of `room` on this worker (the room too when it empties);
    /// whether it was a member.
    pub(super) fn remove_member(&self, local: &mut HubLocal, conn: ConnId, name: &Arc<str>) -> bool {
        let Some(room) = local.rooms.get_mut(name) else { return false };
        let before = room.members.len();
        room.members.retain(|m| m.conn != conn);
        let removed = room.members.len() < before;
        if removed {
            self.counters.members.fetch_sub(1, Ordering::Relaxed);
        }
        if room.members.is_empty() {
            local.rooms.remove(name);
            self.counters.rooms.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Adds a member (holding its messages until its position is known) to `name` on this
    /// worker, creating the room here if needed; the join that waits for its position must
    /// be the next pending operation inserted. Returns the room's name as the worker keeps it.
    pub(super) fn add_member(
        &self,
        local: &mut HubLocal,
        name: &str,
        conn: ConnId,
        ws: Option<(Encoding, bool)>,
    ) -> Arc<str> {
        let name: Arc<str> = match local.rooms.get_key_value(name) {
            Some((key, _)) => Arc::clone(key),
            None => {
                self.counters.rooms.fetch_add(1, Ordering::Relaxed);
                let tick = self.is_tick_room(name);
                let name: Arc<str> = Arc::from(name);
                local.rooms.insert(Arc::clone(&name), LocalRoom { tick, ..LocalRoom::default() });
                name
            }
        };
        // The member waits for the join that the next pending operation will be.
        let join = local.pending.vacant_key();
        let room = local.rooms.get_mut(&name).expect("just made");
        let next = room.log_end();
        room.members.push(Member::new(conn, ws, next, join));
        self.counters.members.fetch_add(1, Ordering::Relaxed);
        name
    }
}

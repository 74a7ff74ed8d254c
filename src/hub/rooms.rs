//! The rooms of one worker: who is a member here, and delivery to them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::Hub;
use super::broadcast::{Broadcast, Variant};
use super::envelope::Encoding;
use crate::reactor::{ConnId, Outbox};

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
}

impl Member {
    pub(super) fn variant(&self) -> Variant {
        match self.ws {
            Some((encoding, deflate)) => Variant::Ws(encoding, deflate),
            None => Variant::Sse,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    pub(super) tick: bool,
    pub(super) members: Vec<Member>,
    /// Tick rooms: the member to serve first next tick.
    pub(super) cursor: usize,
    /// Tick rooms: messages not yet sent to every member, in arrival order; `log[0]` is at
    /// position `log_start`. A member behind (or past a tick's budget) costs nothing per tick:
    /// it just keeps its position.
    pub(super) log: VecDeque<Arc<Broadcast>>,
    pub(super) log_start: u64,
}

impl LocalRoom {
    /// The position after the last logged message (where a new member starts).
    pub(super) fn log_end(&self) -> u64 {
        self.log_start + self.log.len() as u64
    }
}

/// A worker's part of the hub: the members of each room on this worker.
#[derive(Debug)]
pub struct HubLocal {
    pub(super) worker: usize,
    pub(super) rooms: HashMap<Arc<str>, LocalRoom>,
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
            rooms: HashMap::new(),
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
}
impl Hub {
    /// Fans a broadcast out to this worker's members of its room.
    pub fn deliver(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        message: &Arc<Broadcast>,
    ) {
        let Some(room) = local.rooms.get_mut(&message.room) else { return };
        if room.tick {
            room.log.push_back(Arc::clone(message));
            return;
        }
        for member in &mut room.members {
            if message.seq > 0 {
                if message.seq <= member.since {
                    continue;
                }
                member.since = message.seq;
            }
            if message.exclude == Some(member.conn) {
                continue;
            }
            let frame = message.frame(member.variant());
            match (member.ws, message.volatile) {
                (None, _) => out.send_raw_to(member.conn, frame),
                (Some(_), true) => out.send_volatile_to(member.conn, frame),
                (Some(_), false) => out.send_frame_to(member.conn, frame),
            };
        }
    }
}

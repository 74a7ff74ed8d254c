//! Broadcast and game: publishers send stamped messages on a schedule; every member (the
//! subscribers and the publishers themselves, which the server fans out to as well) measures
//! the end-to-end latency of each delivery. The game scenario is one publisher at the tick
//! rate, and its clients also measure how far each tick's inter-arrival time is from the tick
//! period.
//!
//! Sequence numbers carry the publisher: `publisher << 40 | count`.

use std::sync::atomic::Ordering;

use super::super::driver::{Conns, Shared, Timeline, Workload};
use super::{Tally, read_stamp, stamp, template};

const PUBLISHER_SHIFT: u32 = 40;
/// Most catch-up sends of one publisher in one turn, if the loop fell behind its schedule.
const MAX_BURST: u32 = 1000;

/// Per-connection state.
#[derive(Debug)]
pub(crate) struct Member {
    /// The publisher id of a publishing connection.
    publisher: Option<u64>,
    /// Game: when the previous tick arrived.
    last_arrival: u64,
}

#[derive(Debug)]
struct Publisher {
    key: usize,
    id: u64,
    sent: u64,
    /// Offset of this publisher's schedule, spreading the publishers over one period.
    offset: f64,
    alive: bool,
}

/// The broadcast (or game) workload of one thread.
#[derive(Debug)]
pub(crate) struct Broadcast<'a> {
    shared: &'a Shared,
    publishers: usize,
    /// Nanoseconds between two messages of one publisher.
    period: f64,
    game: bool,
    payload: Vec<u8>,
    pubs: Vec<Publisher>,
    timeline: Option<Timeline>,
    sending: bool,
    /// Open connections of this thread.
    members: u64,
    published: u64,
    tally: Tally,
}

impl<'a> Broadcast<'a> {
    /// `publishers` in all, each sending `rate` messages per second; `game` measures tick jitter.
    pub(crate) fn new(shared: &'a Shared, publishers: usize, rate: f64, payload: usize, game: bool) -> Self {
        Self {
            shared,
            publishers,
            period: 1e9 / rate,
            game,
            payload: template(payload),
            pubs: Vec::new(),
            timeline: None,
            sending: false,
            members: 0,
            published: 0,
            tally: Tally::new(),
        }
    }

    fn due(&self, publisher: &Publisher, start: u64) -> u64 {
        start + (publisher.offset + publisher.sent as f64 * self.period) as u64
    }
}

impl Workload for Broadcast<'_> {
    type Peer = Member;

    fn peer(&mut self, slot: usize) -> Member {
        Member { publisher: (slot < self.publishers).then_some(slot as u64), last_arrival: 0 }
    }

    fn on_open(&mut self, conns: &mut Conns<Member>, key: usize, _now: u64) {
        self.members += 1;
        if let Some(id) = conns.peer_mut(key).and_then(|m| m.publisher) {
            let offset = id as f64 * self.period / self.publishers as f64;
            self.pubs.push(Publisher { key, id, sent: 0, offset, alive: true });
        }
    }

    fn start(&mut self, _conns: &mut Conns<Member>, timeline: Timeline, _now: u64) {
        self.timeline = Some(timeline);
        self.sending = true;
    }

    fn on_message(&mut self, conns: &mut Conns<Member>, key: usize, payload: &[u8], now: u64) {
        let Some(member) = conns.peer_mut(key) else { return };
        let Some((sent_at, seq)) = read_stamp(payload) else {
            self.tally.errors += 1;
            return;
        };
        let from = seq >> PUBLISHER_SHIFT;
        if payload.len() != self.payload.len() || from >= self.publishers as u64 {
            // Not one of ours (another client on the same broadcast?).
            self.tally.errors += 1;
            return;
        }
        self.tally.received_total += 1;
        let Some(timeline) = self.timeline else { return };
        let measuring = timeline.measuring(now);
        if self.game {
            if measuring && member.last_arrival != 0 {
                let gap = now - member.last_arrival;
                let jitter = (gap as f64 - self.period).abs();
                self.tally.jitter.saturating_record((jitter / 1000.0) as u64);
            }
            member.last_arrival = now;
        }
        if measuring {
            self.tally.received += 1;
            if member.publisher == Some(from) {
                self.tally.self_received += 1;
            }
            self.tally.latency.saturating_record(now.saturating_sub(sent_at) / 1000);
        }
    }

    fn on_lost(&mut self, key: usize, _peer: &Member) {
        self.members -= 1;
        for publisher in &mut self.pubs {
            if publisher.key == key {
                publisher.alive = false;
            }
        }
    }

    fn on_tick(&mut self, conns: &mut Conns<Member>, now: u64) -> Option<u64> {
        let timeline = self.timeline?;
        if !self.sending {
            return None;
        }
        let mut next = u64::MAX;
        let mut pubs = std::mem::take(&mut self.pubs);
        for publisher in pubs.iter_mut().filter(|p| p.alive) {
            let mut burst = 0;
            while self.due(publisher, timeline.start) <= now && burst < MAX_BURST {
                let seq = publisher.id << PUBLISHER_SHIFT | publisher.sent;
                stamp(&mut self.payload, now, seq);
                if !conns.send(publisher.key, &self.payload) {
                    publisher.alive = false;
                    break;
                }
                publisher.sent += 1;
                self.published += 1;
                burst += 1;
            }
            if publisher.alive {
                next = next.min(self.due(publisher, timeline.start));
            }
        }
        self.pubs = pubs;
        (next != u64::MAX).then_some(next)
    }

    fn stop(&mut self, _now: u64) {
        self.sending = false;
        self.shared.published.fetch_add(self.published, Ordering::AcqRel);
        self.shared.publish_done.fetch_add(1, Ordering::AcqRel);
    }

    fn drained(&self) -> bool {
        self.shared.publish_done.load(Ordering::Acquire) == self.shared.threads
            && self.tally.received_total >= self.shared.published.load(Ordering::Acquire) * self.members
    }

    fn precise(&self) -> bool {
        self.game
    }

    fn received(&self) -> u64 {
        self.tally.received
    }

    fn finish(mut self) -> Tally {
        self.tally.sent = self.published;
        self.tally
    }
}

//! Broadcast and game: publishers send stamped messages on a schedule; every member (the
//! subscribers and the publishers themselves, which the server fans out to as well) measures
//! the end-to-end latency of each delivery. The game scenario is one publisher at the tick
//! rate, and its clients also measure how far each tick's inter-arrival time is from the tick
//! period.
//!
//! Sequence numbers carry the publisher: `publisher << 40 | count`.

use std::sync::atomic::Ordering;

use super::super::driver::{Conns, Shared, Timeline, Workload};
use super::pacer::{PUBLISHER_SHIFT, Pacer};
use super::{Tally, read_stamp, stamp, template};

/// Per-connection state.
#[derive(Debug)]
pub(crate) struct Member {
    /// The publisher id of a publishing connection.
    publisher: Option<u64>,
    /// Game: when the previous tick arrived.
    last_arrival: u64,
}

/// The broadcast (or game) workload of one thread.
#[derive(Debug)]
pub(crate) struct Broadcast<'a> {
    shared: &'a Shared,
    publishers: usize,
    game: bool,
    payload: Vec<u8>,
    pacer: Pacer,
    timeline: Option<Timeline>,
    sending: bool,
    /// Open connections of this thread.
    members: u64,
    published: u64,
    tally: Tally,
}

impl<'a> Broadcast<'a> {
    /// `publishers` in all, each sending `rate` messages per second, or with `window`
    /// (broadcast) keeping that many of its messages on their way back to itself; `game`
    /// measures tick jitter.
    pub(crate) fn new(
        shared: &'a Shared,
        publishers: usize,
        rate: f64,
        window: Option<u32>,
        payload: usize,
        game: bool,
    ) -> Self {
        Self {
            shared,
            publishers,
            game,
            payload: template(payload),
            pacer: match window {
                Some(window) => Pacer::closed_loop(publishers, window),
                None => Pacer::new(publishers, rate),
            },
            timeline: None,
            sending: false,
            members: 0,
            published: 0,
            tally: Tally::new(),
        }
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
            self.pacer.add(key, id);
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
        if member.publisher == Some(from) {
            // Its own message is back: the next goes at this loop's turn (on_tick).
            self.pacer.confirm(key);
        }
        let Some(timeline) = self.timeline else { return };
        let measuring = timeline.measuring(now);
        if self.game {
            if measuring && member.last_arrival != 0 {
                let gap = now - member.last_arrival;
                let jitter = (gap as f64 - self.pacer.period()).abs();
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
        self.pacer.lost(key);
    }

    fn on_tick(&mut self, conns: &mut Conns<Member>, now: u64) -> Option<u64> {
        let timeline = self.timeline?;
        if !self.sending {
            return None;
        }
        let payload = &mut self.payload;
        let (sent, next) = self.pacer.run(timeline.start, now, |key, seq| {
            stamp(payload, now, seq);
            conns.send(key, payload)
        });
        self.published += sent;
        next
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

//! Echo: every connection keeps `in_flight` messages outstanding and measures round trips.
//! With a rate, sends are paced over the thread's connections instead of answering each echo
//! at once (still at most `in_flight` per connection).

use super::super::driver::{Conns, Timeline, Workload};
use super::{Tally, read_stamp, stamp, template};

/// Per-connection state.
#[derive(Debug, Default)]
pub(crate) struct EchoPeer {
    in_flight: u32,
    next_seq: u64,
    expect_seq: u64,
}

/// The echo workload of one thread.
#[derive(Debug)]
pub(crate) struct Echo {
    in_flight: u32,
    /// Messages per second for this thread, if paced.
    rate: Option<f64>,
    payload: Vec<u8>,
    timeline: Option<Timeline>,
    sending: bool,
    /// Open connections, for starting and pacing.
    open: Vec<usize>,
    cursor: usize,
    /// Paced sends done or given up, against the schedule.
    scheduled: u64,
    outstanding: u64,
    tally: Tally,
}

impl Echo {
    pub(crate) fn new(in_flight: usize, payload: usize, rate: Option<f64>) -> Self {
        Self {
            in_flight: in_flight as u32,
            rate,
            payload: template(payload),
            timeline: None,
            sending: false,
            open: Vec::new(),
            cursor: 0,
            scheduled: 0,
            outstanding: 0,
            tally: Tally::new(),
        }
    }

    /// Sends the next message on `key`, stamped `now` (the time of the read or timer that
    /// caused it: the write follows within the same turn).
    fn send(&mut self, conns: &mut Conns<EchoPeer>, key: usize, now: u64) -> bool {
        let Some(peer) = conns.peer_mut(key) else { return false };
        let seq = peer.next_seq;
        stamp(&mut self.payload, now, seq);
        if !conns.send(key, &self.payload) {
            return false;
        }
        if let Some(peer) = conns.peer_mut(key) {
            peer.next_seq += 1;
            peer.in_flight += 1;
        }
        self.outstanding += 1;
        self.tally.sent += 1;
        true
    }
}

impl Workload for Echo {
    type Peer = EchoPeer;

    fn peer(&mut self, _slot: usize) -> EchoPeer {
        EchoPeer::default()
    }

    fn on_open(&mut self, _conns: &mut Conns<EchoPeer>, key: usize, _now: u64) {
        self.open.push(key);
    }

    fn start(&mut self, conns: &mut Conns<EchoPeer>, timeline: Timeline, now: u64) {
        self.timeline = Some(timeline);
        self.sending = true;
        if self.rate.is_none() {
            for i in 0..self.open.len() {
                for _ in 0..self.in_flight {
                    self.send(conns, self.open[i], now);
                }
            }
        }
    }

    fn on_message(&mut self, conns: &mut Conns<EchoPeer>, key: usize, payload: &[u8], now: u64) {
        let Some(peer) = conns.peer_mut(key) else { return };
        let Some((sent_at, seq)) = read_stamp(payload) else {
            self.tally.errors += 1;
            return;
        };
        if payload.len() != self.payload.len() || seq != peer.expect_seq || peer.in_flight == 0 {
            self.tally.errors += 1;
        }
        peer.expect_seq = seq.wrapping_add(1);
        if peer.in_flight > 0 {
            peer.in_flight -= 1;
            self.outstanding -= 1;
        }
        self.tally.received_total += 1;
        let Some(timeline) = self.timeline else { return };
        if timeline.measuring(now) {
            self.tally.received += 1;
            self.tally.latency.saturating_record(now.saturating_sub(sent_at) / 1000);
        }
        if self.sending && self.rate.is_none() && now < timeline.end {
            self.send(conns, key, now);
        }
    }

    fn on_lost(&mut self, key: usize, peer: &EchoPeer) {
        self.outstanding -= u64::from(peer.in_flight);
        if let Some(i) = self.open.iter().position(|&k| k == key) {
            self.open.swap_remove(i);
        }
    }

    fn on_tick(&mut self, conns: &mut Conns<EchoPeer>, now: u64) -> Option<u64> {
        let (rate, timeline) = (self.rate?, self.timeline?);
        if !self.sending || self.open.is_empty() {
            return None;
        }
        let target = (now.saturating_sub(timeline.start) as f64 * rate / 1e9) as u64;
        let mut due = target.saturating_sub(self.scheduled);
        // Never burst more than every connection can take: the rest is a shortfall.
        let room = self.open.len() as u64 * u64::from(self.in_flight);
        if due > room {
            self.tally.shortfall += due - room;
            self.scheduled += due - room;
            due = room;
        }
        let mut misses = 0;
        while due > 0 && misses < self.open.len() {
            self.cursor = (self.cursor + 1) % self.open.len();
            let key = self.open[self.cursor];
            let has_room = conns.peer_mut(key).is_some_and(|p| p.in_flight < self.in_flight);
            if has_room && self.send(conns, key, now) {
                due -= 1;
                self.scheduled += 1;
                misses = 0;
            } else {
                misses += 1;
            }
        }
        if due > 0 {
            // Late sends wait for room: the answers that make it wake the loop anyway.
            return Some(now + 1_000_000);
        }
        Some(timeline.start + ((self.scheduled + 1) as f64 * 1e9 / rate) as u64)
    }

    fn stop(&mut self, _now: u64) {
        self.sending = false;
    }

    fn drained(&self) -> bool {
        self.outstanding == 0
    }

    fn received(&self) -> u64 {
        self.tally.received
    }

    fn finish(mut self) -> Tally {
        self.tally.unanswered = self.outstanding;
        self.tally
    }
}

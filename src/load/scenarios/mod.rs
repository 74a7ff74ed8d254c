//! What the connections of each scenario do. The driver owns the sockets and the lifecycle;
//! a scenario is a [`Workload`](super::driver::Workload): what to send on open, on each
//! message, on timers, and what to count.

mod broadcast;
mod connect;
mod echo;
mod idle;
mod pacer;
mod room;
mod seqs;

use hdrhistogram::Histogram;

pub(crate) use broadcast::Broadcast;
pub(crate) use connect::Connect;
pub(crate) use echo::Echo;
pub(crate) use idle::Idle;
pub(crate) use room::{App, AppPlan};
pub(crate) use seqs::{Seqs, Track, account};

/// A histogram of microseconds from 1 µs to 60 s at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A payload template: the stamp (send time, sequence) is rewritten in place for each send,
/// the rest is a fixed printable pattern.
pub(crate) fn template(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Writes the send time and sequence number into the first 16 bytes.
pub(crate) fn stamp(payload: &mut [u8], sent_at: u64, seq: u64) {
    payload[..8].copy_from_slice(&sent_at.to_le_bytes());
    payload[8..16].copy_from_slice(&seq.to_le_bytes());
}

/// The send time and sequence number of a stamped payload.
pub(crate) fn read_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let ts = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((ts, seq))
}

/// One thread's message counts.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    /// Messages sent (echo requests, broadcast publishes), warmup included.
    pub(crate) sent: u64,
    /// Round trips or deliveries in the measured window.
    pub(crate) received: u64,
    /// Deliveries over the whole run and drain (broadcast loss accounting).
    pub(crate) received_total: u64,
    /// Deliveries in the window of a publisher's own message.
    pub(crate) self_received: u64,
    /// Mismatched echoes and messages that were not ours.
    pub(crate) errors: u64,
    /// Echo: answers missing after the drain.
    pub(crate) unanswered: u64,
    /// Echo with a rate: scheduled sends dropped for lack of room.
    pub(crate) shortfall: u64,
    /// Latency in the window, µs.
    pub(crate) latency: Histogram<u64>,
    /// Game, tick: tick jitter in the window, µs.
    pub(crate) jitter: Histogram<u64>,
    /// Tick: from the server's tick (the batch's `ts`, a wall clock in ms) to the batch's
    /// arrival, µs (to within the 1 ms of the stamp).
    pub(crate) tick_delay: Histogram<u64>,
    /// Room, tick: subscribers whose join was acked before the run started.
    pub(crate) joined: u64,
    /// Room, tick: subscribers refused, or not answered before the run started.
    pub(crate) join_failed: u64,
    /// Tick: batches received in the window.
    pub(crate) batches: u64,
    /// Room, tick: publishes acked ok.
    pub(crate) acks_ok: u64,
    /// Room, tick: publishes answered with a failed ack.
    pub(crate) acks_failed: u64,
    /// Room, tick: the seqs the publishers' acks carried.
    pub(crate) acked: Seqs,
    /// Tick: of those, the seqs of messages with a key.
    pub(crate) keyed: Seqs,
    /// Room, tick: each joined subscriber's view of the room's seqs.
    pub(crate) tracks: Vec<Track>,
    /// Room, tick: the distinct epochs the acks named (more than one: the room's numbering
    /// started over during the run).
    pub(crate) epochs: Vec<Vec<u8>>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            sent: 0,
            received: 0,
            received_total: 0,
            self_received: 0,
            errors: 0,
            unanswered: 0,
            shortfall: 0,
            latency: histogram(),
            jitter: histogram(),
            tick_delay: histogram(),
            joined: 0,
            join_failed: 0,
            batches: 0,
            acks_ok: 0,
            acks_failed: 0,
            acked: Seqs::default(),
            keyed: Seqs::default(),
            tracks: Vec::new(),
            epochs: Vec::new(),
        }
    }

    pub(crate) fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.received += other.received;
        self.received_total += other.received_total;
        self.self_received += other.self_received;
        self.errors += other.errors;
        self.unanswered += other.unanswered;
        self.shortfall += other.shortfall;
        self.joined += other.joined;
        self.join_failed += other.join_failed;
        self.batches += other.batches;
        self.acks_ok += other.acks_ok;
        self.acks_failed += other.acks_failed;
        self.acked.merge(other.acked);
        self.keyed.merge(other.keyed);
        self.tracks.extend(other.tracks);
        for epoch in other.epochs {
            if !self.epochs.contains(&epoch) {
                self.epochs.push(epoch);
            }
        }
        let _ = self.latency.add(&other.latency);
        let _ = self.jitter.add(&other.jitter);
        let _ = self.tick_delay.add(&other.tick_delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut p = template(20);
        stamp(&mut p, 123_456_789, 42);
        assert_eq!(read_stamp(&p), Some((123_456_789, 42)));
        assert_eq!(&p[16..], b"qrst");
        assert_eq!(read_stamp(&p[..15]), None);
    }
}

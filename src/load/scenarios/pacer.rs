//! Publishers on a fixed schedule, shared by the scenarios that publish (broadcast, game,
//! room, tick); or, for broadcast and room, in a closed loop: each publisher keeps a window of
//! messages unconfirmed (broadcast: until it receives its own back; room: until the ack) and
//! sends the next as soon as one is confirmed, which measures a server at saturation without
//! letting its queues grow.

/// Bits of a message's sequence number below its publisher's id.
pub(super) const PUBLISHER_SHIFT: u32 = 40;
/// Most messages one publisher sends in one turn when it is behind its schedule.
const MAX_BURST: u32 = 1000;

#[derive(Debug)]
struct Publisher {
    key: usize,
    id: u64,
    sent: u64,
    /// Offset of this publisher's schedule, spreading the publishers over one period.
    offset: f64,
    alive: bool,
    /// Closed loop: messages sent and not confirmed.
    unconfirmed: u32,
}

/// This thread's publishers, each sending `rate` messages per second.
#[derive(Debug)]
pub(super) struct Pacer {
    pubs: Vec<Publisher>,
    /// Publishers over all threads.
    publishers: usize,
    /// Nanoseconds between two messages of one publisher.
    period: f64,
    /// Closed loop: messages each publisher keeps unconfirmed (no schedule).
    window: Option<u32>,
}

impl Pacer {
    /// `publishers` in all, at `rate` messages per second each.
    pub(super) fn new(publishers: usize, rate: f64) -> Self {
        Self { pubs: Vec::new(), publishers, period: 1e9 / rate, window: None }
    }

    /// `publishers` in all, each keeping `window` messages unconfirmed.
    pub(super) fn closed_loop(publishers: usize, window: u32) -> Self {
        Self { pubs: Vec::new(), publishers, period: 0.0, window: Some(window.max(1)) }
    }

    /// Closed loop: one message of the publisher on `key` is confirmed (on a schedule:
    /// nothing to do).
    pub(super) fn confirm(&mut self, key: usize) {
        if self.window.is_none() {
            return;
        }
        if let Some(publisher) = self.pubs.iter_mut().find(|p| p.key == key) {
            publisher.unconfirmed = publisher.unconfirmed.saturating_sub(1);
        }
    }

    /// Nanoseconds between two messages of one publisher.
    pub(super) fn period(&self) -> f64 {
        self.period
    }

    /// Publisher `id` publishes on connection `key`.
    pub(super) fn add(&mut self, key: usize, id: u64) {
        let offset = id as f64 * self.period / self.publishers.max(1) as f64;
        self.pubs.push(Publisher { key, id, sent: 0, offset, alive: true, unconfirmed: 0 });
    }

    /// Connection `key` is gone.
    pub(super) fn lost(&mut self, key: usize) {
        for publisher in self.pubs.iter_mut().filter(|p| p.key == key) {
            publisher.alive = false;
        }
    }

    fn due(&self, publisher: &Publisher, start: u64) -> u64 {
        start + (publisher.offset + publisher.sent as f64 * self.period) as u64
    }

    /// Sends every message due by `now` (schedules counted from `start`; closed loop: until
    /// each publisher's window is full), calling `send(key, seq)`; a `false` from it stops
    /// that publisher. `seq` carries the publisher id above [`PUBLISHER_SHIFT`] and its
    /// message count below. Returns the messages sent and when the next one is due (closed
    /// loop: never, a confirmation is what sends more).
    pub(super) fn run(
        &mut self,
        start: u64,
        now: u64,
        mut send: impl FnMut(usize, u64) -> bool,
    ) -> (u64, Option<u64>) {
        let mut next = u64::MAX;
        let mut total = 0;
        let mut pubs = std::mem::take(&mut self.pubs);
        for publisher in pubs.iter_mut().filter(|p| p.alive) {
            let mut burst = 0;
            while match self.window {
                Some(window) => publisher.unconfirmed < window,
                None => self.due(publisher, start) <= now && burst < MAX_BURST,
            } {
                let seq = publisher.id << PUBLISHER_SHIFT | publisher.sent;
                if !send(publisher.key, seq) {
                    publisher.alive = false;
                    break;
                }
                publisher.sent += 1;
                if self.window.is_some() {
                    publisher.unconfirmed += 1;
                }
                total += 1;
                burst += 1;
            }
            if publisher.alive && self.window.is_none() {
                next = next.min(self.due(publisher, start));
            }
        }
        self.pubs = pubs;
        (total, (next != u64::MAX).then_some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_loop_keeps_its_window_and_sends_on_each_confirmation() {
        let mut pacer = Pacer::closed_loop(2, 3);
        pacer.add(10, 0);
        pacer.add(11, 1);
        let mut sent = Vec::new();
        let (n, next) = pacer.run(0, 0, |key, seq| {
            sent.push((key, seq));
            true
        });
        assert_eq!((n, next), (6, None), "a full window each, no timer");
        assert_eq!(sent[..3], [(10, 0), (10, 1), (10, 2)]);
        assert_eq!(sent[3], (11, 1 << PUBLISHER_SHIFT));
        // Nothing more until a confirmation, whatever the time.
        assert_eq!(pacer.run(0, u64::MAX / 2, |_, _| true).0, 0);
        pacer.confirm(11);
        sent.clear();
        let (n, _) = pacer.run(0, 1, |key, seq| {
            sent.push((key, seq));
            true
        });
        assert_eq!((n, sent), (1, vec![(11, 1 << PUBLISHER_SHIFT | 3)]));
        // A refused send stops that publisher.
        pacer.confirm(10);
        assert_eq!(pacer.run(0, 2, |_, _| false).0, 0);
        pacer.confirm(10);
        assert_eq!(pacer.run(0, 3, |_, _| true).0, 0, "10 is gone");
    }

    #[test]
    fn a_schedule_sends_what_is_due() {
        let mut pacer = Pacer::new(1, 1000.0);
        pacer.add(1, 0);
        let (n, next) = pacer.run(0, 2_500_000, |_, _| true);
        assert_eq!((n, next), (3, Some(3_000_000)), "at 0, 1 and 2 ms");
    }
}

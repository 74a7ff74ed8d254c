//! Publishers on a fixed schedule, shared by the scenarios that publish (broadcast, game,
//! room, tick).

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
}

/// This thread's publishers, each sending `rate` messages per second.
#[derive(Debug)]
pub(super) struct Pacer {
    pubs: Vec<Publisher>,
    /// Publishers over all threads.
    publishers: usize,
    /// Nanoseconds between two messages of one publisher.
    period: f64,
}

impl Pacer {
    /// `publishers` in all, at `rate` messages per second each.
    pub(super) fn new(publishers: usize, rate: f64) -> Self {
        Self { pubs: Vec::new(), publishers, period: 1e9 / rate }
    }

    /// Nanoseconds between two messages of one publisher.
    pub(super) fn period(&self) -> f64 {
        self.period
    }

    /// Publisher `id` publishes on connection `key`.
    pub(super) fn add(&mut self, key: usize, id: u64) {
        let offset = id as f64 * self.period / self.publishers.max(1) as f64;
        self.pubs.push(Publisher { key, id, sent: 0, offset, alive: true });
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

    /// Sends every message due by `now` (schedules counted from `start`), calling
    /// `send(key, seq)`; a `false` from it stops that publisher. `seq` carries the publisher id
    /// above [`PUBLISHER_SHIFT`] and its message count below. Returns the messages sent and
    /// when the next one is due.
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
            while self.due(publisher, start) <= now && burst < MAX_BURST {
                let seq = publisher.id << PUBLISHER_SHIFT | publisher.sent;
                if !send(publisher.key, seq) {
                    publisher.alive = false;
                    break;
                }
                publisher.sent += 1;
                total += 1;
                burst += 1;
            }
            if publisher.alive {
                next = next.min(self.due(publisher, start));
            }
        }
        self.pubs = pubs;
        (total, (next != u64::MAX).then_some(next))
    }
}

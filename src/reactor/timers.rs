//! A hashed timing wheel: each connection sits in at most one slot, so a tick costs the
//! connections due in it, not the number of connections.
//!
//! A connection's deadline is not moved when it is active: when its slot comes up, the
//! worker looks at what the connection did since and schedules it again. Entries are
//! `(slot, generation, tick)`; one whose connection has gone or was rescheduled is stale and
//! skipped.

use std::time::{Duration, Instant};

const SLOTS: usize = 512;

/// Resolution of a worker's timing wheel.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// A duration in wheel ticks, rounded up.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(TICK.as_nanos())) as u64
}

#[derive(Debug)]
pub(crate) struct Wheel {
    slots: Vec<Vec<Entry>>,
    resolution: Duration,
    start: Instant,
    current: u64,
    len: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The connection's slab key (a `u32`: a worker holds far fewer than 4 billion; the entry
    /// is 16 bytes, one per connection).
    pub(crate) key: u32,
    pub(crate) generation: u32,
    /// The tick it fires at, in 32 bits (see `conn::Stamp`): 12 bytes an entry.
    pub(crate) tick: u32,
}

impl Wheel {
    pub(crate) fn new(resolution: Duration, now: Instant) -> Self {
        Self { slots: vec![Vec::new(); SLOTS], resolution, start: now, current: 0, len: 0 }
    }

    /// The tick at or after `at`.
    pub(crate) fn tick_at(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.start).as_nanos();
        nanos.div_ceil(self.resolution.as_nanos()) as u64
    }

    /// Schedules `key` at `at` (at least one tick from now); returns the tick to remember.
    pub(crate) fn schedule(&mut self, key: usize, generation: u32, at: Instant) -> u64 {
        let tick = self.tick_at(at).max(self.current + 1);
        self.slots[(tick % SLOTS as u64) as usize].push(Entry {
            key: key as u32,
            generation,
            tick: tick as u32,
        });
        self.len += 1;
        tick
    }

    /// Moves the wheel to `now`, appending every entry that came due to `due`.
    pub(crate) fn advance(&mut self, now: Instant, due: &mut Vec<Entry>) {
        let target = self.tick_at(now + Duration::from_nanos(1)).saturating_sub(1);
        // After a long stall, a full turn visits every slot once.
        let steps = target.saturating_sub(self.current).min(SLOTS as u64);
        let end = self.current + steps;
        for tick in self.current + 1..=end {
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            let before = slot.len();
            slot.retain(|e| {
                if (target as u32).wrapping_sub(e.tick) as i32 >= 0 {
                    due.push(*e);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.current = target.max(self.current);
    }

    /// When the next tick happens, if anything waits.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.start + self.resolution * (self.current + 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_once_at_their_tick() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut wheel = Wheel::new(ms(10), t0);
        wheel.schedule(1, 0, t0 + ms(25));
        wheel.schedule(2, 0, t0 + ms(10_000)); // beyond one turn of the wheel
        wheel.schedule(3, 7, t0);
        let mut due = Vec::new();
        wheel.advance(t0 + ms(12), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![3]);
        due.clear();
        wheel.advance(t0 + ms(29), &mut due);
        assert!(due.is_empty());
        wheel.advance(t0 + ms(31), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![1]);
        due.clear();
        wheel.advance(t0 + ms(9_000), &mut due);
        assert!(due.is_empty(), "not yet: {due:?}");
        wheel.advance(t0 + ms(10_001), &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![2]);
        assert_eq!(wheel.next_deadline(), None);
    }
}

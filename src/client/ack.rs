//! Client-side bookkeeping of acknowledged sends: [`AckTracker`].

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What [`AckTracker::expired`] decided for an id whose ack is overdue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expired<Id> {
    /// Send it again (same id, so the server can deduplicate); its timer restarted.
    Retry(Id),
    /// Retries are used up; the id is forgotten. Report the send as failed.
    Failed(Id),
}

impl<Id> Expired<Id> {
    /// The id, whatever the decision.
    pub fn id(&self) -> &Id {
        match self {
            Self::Retry(id) | Self::Failed(id) => id,
        }
    }
}

#[derive(Copy, Clone, Debug)]
struct Pending {
    sent_at: Instant,
    retries: u32,
    /// (Re)send order, to break ties between equal send times.
    seq: u64,
}

/// Client-side bookkeeping of acknowledged sends, pure (the caller passes the time in).
///
/// The application protocol wraps messages in envelopes
/// `{"type": ..., "id": ..., "payload": ..., "ts": ...}`, and the server answers those that
/// want it with `{"type": "ack", "payload": {"id": ..., "ok": true|false, "error": ...}}`. An
/// [`AckTracker`] remembers which ids are waiting for their ack and since when, so that the
/// caller can resend the ones that took too long (up to a retry limit) and report the rest as
/// failed. It neither parses nor sends anything: the envelope wiring belongs to the layer that
/// speaks the app protocol.
///
/// ```
/// use std::time::{Duration, Instant};
/// use hibiki::client::{AckTracker, Expired};
///
/// let timeout = Duration::from_secs(5);
/// let mut acks = AckTracker::new(1);
/// let t0 = Instant::now();
/// acks.register(7u64, t0);
/// acks.register(8u64, t0);
/// assert!(acks.acknowledge(&7));
/// assert_eq!(acks.expired(t0 + timeout, timeout), [Expired::Retry(8)]); // resend it
/// assert_eq!(acks.expired(t0 + 2 * timeout, timeout), [Expired::Failed(8)]); // give up
/// assert!(acks.is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct AckTracker<Id> {
    pending: HashMap<Id, Pending>,
    max_retries: u32,
    seq: u64,
}

impl<Id: Eq + Hash + Clone> AckTracker<Id> {
    /// A tracker that resends an overdue message at most `max_retries` times before failing it
    /// (0: fail at the first timeout).
    pub fn new(max_retries: u32) -> Self {
        Self { pending: HashMap::new(), max_retries, seq: 0 }
    }

    /// The retry limit.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Starts waiting for the ack of `id`, sent at `now`. Returns `false` (and restarts its
    /// timer, keeping its retry count) if `id` was already waiting.
    pub fn register(&mut self, id: Id, now: Instant) -> bool {
        self.seq += 1;
        let seq = self.seq;
        match self.pending.get_mut(&id) {
            Some(entry) => {
                entry.sent_at = now;
                entry.seq = seq;
                false
            }
            None => {
                self.pending.insert(id, Pending { sent_at: now, retries: 0, seq });
                true
            }
        }
    }

    /// The ack for `id` arrived: stop waiting. Returns whether it was waiting (a `false` is a
    /// duplicate or late ack, for an id already acknowledged or failed).
    pub fn acknowledge(&mut self, id: &Id) -> bool {
        self.pending.remove(id).is_some()
    }

    /// Stops waiting for `id` without an ack (the caller gave up on it). Returns whether it
    /// was waiting.
    pub fn forget(&mut self, id: &Id) -> bool {
        self.pending.remove(id).is_some()
    }

    /// The ids sent at least `timeout` before `now` and still unacknowledged, oldest first:
    /// [`Expired::Retry`] for those with retries left (their timer restarts at `now` and the
    /// retry is counted), [`Expired::Failed`] for the others (forgotten).
    pub fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<Expired<Id>> {
        let mut overdue: Vec<(Pending, Id)> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent_at) >= timeout)
            .map(|(id, p)| (*p, id.clone()))
            .collect();
        overdue.sort_by_key(|(p, _)| (p.sent_at, p.seq));
        overdue
            .into_iter()
            .map(|(p, id)| {
                if p.retries >= self.max_retries {
                    self.pending.remove(&id);
                    Expired::Failed(id)
                } else {
                    self.seq += 1;
                    if let Some(entry) = self.pending.get_mut(&id) {
                        entry.sent_at = now;
                        entry.retries += 1;
                        entry.seq = self.seq;
                    }
                    Expired::Retry(id)
                }
            })
            .collect()
    }

    /// When the next id becomes overdue with this `timeout`, if any is waiting: when to call
    /// [`expired`](Self::expired) next.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.pending.values().map(|p| p.sent_at + timeout).min()
    }

    /// Whether `id` is waiting for its ack.
    pub fn is_pending(&self, id: &Id) -> bool {
        self.pending.contains_key(id)
    }

    /// How many times `id` was retried, if it is waiting.
    pub fn retries(&self, id: &Id) -> Option<u32> {
        self.pending.get(id).map(|p| p.retries)
    }

    /// How many ids are waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets everything and returns the ids that were waiting, oldest first (e.g. to resend
    /// them all after a reconnect).
    pub fn drain(&mut self) -> Vec<Id> {
        let mut all: Vec<(Pending, Id)> = self.pending.drain().map(|(id, p)| (p, id)).collect();
        all.sort_by_key(|(p, _)| (p.sent_at, p.seq));
        all.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn acknowledge_stops_waiting() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(3);
        assert!(acks.register("a", t0));
        assert!(acks.is_pending(&"a"));
        assert!(acks.acknowledge(&"a"));
        assert!(!acks.acknowledge(&"a"), "a duplicate ack");
        assert!(!acks.acknowledge(&"never sent"));
        assert!(acks.is_empty());
        assert_eq!(acks.expired(secs(t0, 100), TIMEOUT), []);
    }

    #[test]
    fn only_overdue_ids_expire_oldest_first() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(1);
        acks.register(3, secs(t0, 2));
        acks.register(1, t0);
        acks.register(2, t0);
        acks.register(4, secs(t0, 3));
        assert_eq!(acks.next_deadline(TIMEOUT), Some(secs(t0, 5)));
        assert_eq!(acks.expired(secs(t0, 4), TIMEOUT), []);
        assert_eq!(
            acks.expired(secs(t0, 7), TIMEOUT),
            [Expired::Retry(1), Expired::Retry(2), Expired::Retry(3)]
        );
        assert_eq!(acks.retries(&1), Some(1));
        assert_eq!(acks.retries(&4), Some(0));
        // The retried ones restarted at 7; 4 is due at 8.
        assert_eq!(acks.next_deadline(TIMEOUT), Some(secs(t0, 8)));
        assert_eq!(acks.expired(secs(t0, 8), TIMEOUT), [Expired::Retry(4)]);
        assert!(acks.acknowledge(&2));
        assert_eq!(acks.expired(secs(t0, 12), TIMEOUT), [Expired::Failed(1), Expired::Failed(3)]);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks.expired(secs(t0, 13), TIMEOUT), [Expired::Failed(4)]);
        assert!(acks.is_empty());
        assert_eq!(acks.next_deadline(TIMEOUT), None);
    }

    #[test]
    fn max_retries_zero_fails_at_first_timeout() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(0);
        acks.register(String::from("x"), t0);
        let expired = acks.expired(secs(t0, 5), TIMEOUT);
        assert_eq!(expired, [Expired::Failed(String::from("x"))]);
        assert_eq!(expired[0].id(), "x");
        assert!(!acks.acknowledge(&String::from("x")), "a late ack after failing");
    }

    #[test]
    fn reregistering_restarts_the_timer_and_keeps_retries() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(2);
        acks.register(1, t0);
        assert_eq!(acks.expired(secs(t0, 5), TIMEOUT), [Expired::Retry(1)]);
        assert!(!acks.register(1, secs(t0, 6)));
        assert_eq!(acks.retries(&1), Some(1));
        assert_eq!(acks.expired(secs(t0, 10), TIMEOUT), []);
        assert_eq!(acks.expired(secs(t0, 11), TIMEOUT), [Expired::Retry(1)]);
        assert_eq!(acks.expired(secs(t0, 16), TIMEOUT), [Expired::Failed(1)]);
    }

    #[test]
    fn time_going_backwards_is_not_overdue() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(0);
        acks.register(1, secs(t0, 10));
        assert_eq!(acks.expired(t0, TIMEOUT), []);
    }

    #[test]
    fn drain_and_forget() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(0);
        acks.register('b', secs(t0, 1));
        acks.register('a', t0);
        acks.register('c', secs(t0, 1));
        assert!(acks.forget(&'c'));
        assert!(!acks.forget(&'c'));
        assert_eq!(acks.drain(), ['a', 'b']);
        assert!(acks.is_empty());
        assert_eq!(acks.max_retries(), 0);
    }
}

//! Tick rooms: what a tick gathered reaches each member as one `batch` frame, within a
//! bounded share of the tick period.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Out;
use super::broadcast::{Broadcast, Variant, batch_body, ws_frame};
use super::envelope::{Encoding, now_ms};
use super::rooms::LocalRoom;
use super::{Hub, HubLocal};
use crate::reactor::ConnId;

/// Messages a lagging member of a tick room may hold before it is closed as a slow consumer.
const TICK_BACKLOG: usize = 4096;
/// The fewest members a tick serves, however long the last one took.
const MIN_TICK_BUDGET: usize = 64;
impl HubLocal {
    /// Members the next tick may serve: cut at once to what fits in `target` at the pace the
    /// last tick wrote when it took longer, raised by a quarter of the headroom when the
    /// budget bound and the tick took less.
    fn adapt_budget(&mut self, last_work: Option<Duration>, target: Duration) {
        let Some(work) = last_work else { return };
        if self.last_served == 0 || work.is_zero() {
            return;
        }
        let fit = (self.last_served as f64 * target.as_secs_f64() / work.as_secs_f64()) as usize;
        let fit = fit.max(MIN_TICK_BUDGET);
        if work > target {
            self.tick_budget = fit.min(self.tick_budget);
        } else if self.last_served >= self.tick_budget && fit > self.tick_budget {
            self.tick_budget += (fit - self.tick_budget) / 4;
        }
        // Otherwise the budget did not bind: it stays (unbounded until a tick is slow).
    }
}

/// A tick's batch for a member, or for every member served from the same log position.
struct TickBatch<'a> {
    /// Where in the log it starts.
    from: usize,
    /// The messages, in log order, the newest of each `key` only.
    items: Vec<&'a Arc<Broadcast>>,
    /// The highest seq among them (0: none numbered).
    newest: u64,
    /// Keyed messages left out for a newer one with the same key.
    replaced: u64,
    /// The frame per variant, encoded on first use.
    frames: [Option<Bytes>; 4],
}

impl<'a> TickBatch<'a> {
    /// The messages of `log` from `from` on; with `(since, conn)`, only those that member is
    /// owed (newer than `since`, not its own when it asked for no echo).
    fn new(log: &'a VecDeque<Arc<Broadcast>>, from: usize, member: Option<(u64, ConnId)>) -> Self {
        let mut keys: Vec<&Arc<str>> = Vec::new();
        let mut items: Vec<&Arc<Broadcast>> = Vec::new();
        let (mut newest, mut replaced) = (0, 0);
        for item in log.range(from..).rev() {
            if let Some((since, conn)) = member {
                if (item.seq != 0 && item.seq <= since) || item.excludes(conn) {
                    continue;
                }
            }
            if let Some(key) = &item.key {
                if keys.contains(&key) {
                    replaced += 1;
                    continue;
                }
                keys.push(key);
            }
            newest = newest.max(item.seq);
            items.push(item);
        }
        items.reverse();
        Self { from, items, newest, replaced, frames: Default::default() }
    }

    /// The batch frame for a variant, encoded once.
    fn frame(&mut self, encoding: Encoding, deflate: bool, ts: u64) -> &Bytes {
        let items = &self.items;
        self.frames[encoding.index() * 2 + usize::from(deflate)].get_or_insert_with(|| {
            let bodies: Vec<&Bytes> = items.iter().map(|b| b.body(encoding)).collect();
            ws_frame(encoding, &batch_body(encoding, &bodies, ts), deflate)
        })
    }
}
impl Hub {
    /// One tick: every tick room on this worker sends what it gathered as one `batch` frame
    /// per member, encoded once per variant when members are in step.
    ///
    /// A tick's work is bounded so the tick rate holds under load: `last_work` (how long the
    /// previous tick took, writes included) sets how many members this tick serves, aiming at
    /// [`HubConfig::tick_share`](super::HubConfig::tick_share) of a period. Members past the budget keep their messages (latest state per key) and
    /// are served first next tick, so every member gets its turn.
    pub fn on_tick(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        now: Instant,
        last_work: Option<Duration>,
    ) {
        let period = Duration::from_secs(1) / self.config.tick_rate.max(1);
        if let Some(last) = local.last_tick {
            if now.duration_since(last) > period + period / 2 {
                self.counters.late_ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
        local.last_tick = Some(now);
        self.retry_fills(local, out, None, now);
        self.counters.ticks.fetch_add(1, Ordering::Relaxed);
        local.adapt_budget(last_work, period.mul_f64(self.config.tick_share.clamp(0.05, 1.0)));
        let ts = now_ms();
        let soft = out.soft_limit();
        let budget = local.tick_budget;
        let mut served = 0usize;
        let mut rooms: Vec<&mut LocalRoom> = local.rooms.values_mut().filter(|r| r.tick).collect();
        if !rooms.is_empty() {
            // Rooms take turns at being first, as members do within a room.
            let first = local.tick_count % rooms.len();
            rooms.rotate_left(first);
        }
        local.tick_count = local.tick_count.wrapping_add(1);
        for room in rooms {
            let end = room.log_end();
            if room.members.iter().all(|m| m.next >= end) {
                room.log.clear();
                room.log_start = end;
                continue;
            }
            let (log, log_start, members) = (&room.log, room.log_start, &mut room.members);
            // Members served from the same position with nothing left out for them get the
            // same batch: worked out and encoded once, however many members share it.
            let mut shared: Vec<TickBatch<'_>> = Vec::new();
            let (mut batches, mut deferred) = (0, 0);
            let n = members.len();
            let mut resume_at = None;
            for k in 0..n {
                let i = (room.cursor + k) % n;
                let member = &mut members[i];
                if member.next >= end || !member.is_live() {
                    // Up to date, or its position is not known yet (its log entries wait).
                    continue;
                }
                if served >= budget {
                    deferred += 1;
                    resume_at.get_or_insert(i);
                    continue;
                }
                if member.ws.is_some() && out.buffered(member.conn) > soft {
                    // Behind: it keeps its position and gets the latest state when it drains.
                    continue;
                }
                let from = (member.next - log_start) as usize;
                let (since, conn) = (member.since, member.conn);
                member.next = end;
                let owed_all = log.range(from..).all(|b| (b.seq == 0 || b.seq > since) && !b.excludes(conn));
                let mut own;
                let batch = if owed_all {
                    let at = shared.iter().position(|b| b.from == from).unwrap_or_else(|| {
                        shared.push(TickBatch::new(log, from, None));
                        shared.len() - 1
                    });
                    &mut shared[at]
                } else {
                    own = TickBatch::new(log, from, Some((since, conn)));
                    &mut own
                };
                if batch.replaced > 0 {
                    self.counters.replaced.fetch_add(batch.replaced, Ordering::Relaxed);
                }
                member.since = member.since.max(batch.newest);
                if batch.items.is_empty() {
                    continue;
                }
                served += 1;
                match member.ws {
                    Some((encoding, deflate)) => {
                        out.send_frame(conn, batch.frame(encoding, deflate, ts));
                        batches += 1;
                    }
                    None => {
                        for item in &batch.items {
                            out.send_raw(conn, item.frame(Variant::Sse));
                        }
                    }
                }
            }
            // Next tick starts with the first member this one could not serve.
            if let Some(i) = resume_at {
                room.cursor = i;
            }
            self.counters.batches.fetch_add(batches, Ordering::Relaxed);
            self.counters.deferred.fetch_add(deferred, Ordering::Relaxed);
            let mut oldest = end;
            for member in members.iter_mut() {
                if end - member.next > TICK_BACKLOG as u64 {
                    // Messages are never dropped silently: a member this far behind is closed
                    // as a slow consumer (its reconnect can resume from history).
                    member.next = end;
                    out.close_slow_consumer(member.conn);
                }
                oldest = oldest.min(member.next);
            }
            // Forget what every member has been sent.
            room.log.drain(..(oldest - room.log_start) as usize);
            room.log_start = oldest;
        }
        local.last_served = served;
        self.keepalive(local, out, now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hub::store::{Kind, NodeId, Origin, Publication};

    #[test]
    fn a_slow_tick_cuts_the_next_ticks_budget_and_fast_ones_raise_it_slowly() {
        let mut local = HubLocal::new(0);
        assert_eq!(local.tick_budget(), usize::MAX, "unbounded until a tick is measured");
        local.last_served = 1000;
        local.adapt_budget(Some(Duration::from_millis(20)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), 400, "1000 batches took 20 ms: 400 fit in 8 ms");
        local.last_served = 400;
        local.adapt_budget(Some(Duration::from_millis(4)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), 500, "a quarter of the way to the 800 that would fit");
        local.last_served = 10;
        local.adapt_budget(Some(Duration::from_millis(1)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), 500, "a budget that did not bind stays");
        local.last_served = 500;
        local.adapt_budget(Some(Duration::from_secs(1)), Duration::from_millis(8));
        assert_eq!(local.tick_budget(), MIN_TICK_BUDGET, "never below the floor");
        local.adapt_budget(None, Duration::from_millis(8));
        assert_eq!(local.tick_budget(), MIN_TICK_BUDGET);
    }

    #[test]
    fn a_member_gets_the_newest_state_per_key_in_log_order() {
        let node = NodeId::from("here");
        let make = |seq: u64, key: Option<&str>, exclude: Option<ConnId>| {
            let publication = Publication {
                seq,
                key: key.map(Arc::from),
                exclude: exclude.map(|c| Origin { node: node.clone(), conn: c.as_u64() }),
                ..Publication::new("game:1".into(), Kind::Message, "a".into(), json!({"seq": seq}), 0)
            };
            Arc::new(Broadcast::new(publication, Some(&node)))
        };
        let me = ConnId::new(0, 1, 7);
        let log: VecDeque<Arc<Broadcast>> = [
            make(1, Some("pos"), None),
            make(2, Some("hp"), None),
            make(3, None, None),
            make(4, Some("pos"), None),
            make(5, None, Some(me)),
        ]
        .into();
        let seqs = |batch: &TickBatch<'_>| batch.items.iter().map(|b| b.seq).collect::<Vec<_>>();
        let all = TickBatch::new(&log, 0, None);
        assert_eq!(
            (seqs(&all), all.newest, all.replaced),
            (vec![2, 3, 4, 5], 5, 1),
            "pos@1 replaced by pos@4"
        );
        let mine = TickBatch::new(&log, 0, Some((2, me)));
        assert_eq!((seqs(&mine), mine.newest), (vec![3, 4], 4), "seq <= since and its own message left out");
        let later = TickBatch::new(&log, 3, None);
        assert_eq!((seqs(&later), later.replaced), (vec![4, 5], 0), "from a later position");
    }
}

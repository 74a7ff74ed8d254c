//! The stats room: once a period (default 1 s) `hibiki serve` publishes its counters as a
//! volatile message into [`STATS_ROOM`], so a dashboard is one more member of a room (the
//! page at `/` draws its charts from it) instead of a poller of `/metrics`.
//!
//! A small thread, started by `ServeApp::on_start`, posts [`AppCommand::PublishStats`] to
//! worker 0 every period; worker 0 reads the counters and hands the message to every worker
//! of this node, which deliver it to their members of the room. It never goes through the
//! room stores: with several nodes, each node's dashboard shows that node (`node` says
//! which). On the wire it is a volatile `message` (`seq` 0, `from` `server`); it is not
//! counted as published and, while nobody is in the room, it goes nowhere. The thread ends
//! when the server stops (its post to worker 0 fails).
//!
//! The room is readable by every client, whatever its token's `rooms` claim says (see
//! [`Identity::may_join`](crate::hub::Identity::may_join)); no client may publish to a
//! `hibiki:` room (only the server does).
//!
//! Every field of the message's `data`, counters since start unless said otherwise:
//!
//! | field | what |
//! |---|---|
//! | `node` | the node's id (`--node-id`) |
//! | `ts`, `uptime_s`, `period_ms` | when (ms since the epoch), seconds since start, the publishing period |
//! | `connections` | WebSocket and SSE connections open now |
//! | `connections_total` | connections opened |
//! | `messages_in`, `messages_out` | messages received and queued to peers |
//! | `messages_in_per_sec`, `messages_out_per_sec` | their rates over the last period |
//! | `bytes_in`, `bytes_out`, `bytes_in_per_sec`, `bytes_out_per_sec` | socket bytes and their rates |
//! | `published`, `published_per_sec` | messages published to rooms |
//! | `rooms`, `room_members`, `history_messages` | rooms with members on this node, memberships, messages kept (gauges) |
//! | `dropped_volatile`, `slow_consumer_closes`, `heartbeat_timeouts`, `abnormal_closes` | what was dropped or closed |
//! | `ticks`, `late_ticks`, `batches`, `replaced`, `tick_deferred` | tick rooms |
//! | `store_errors`, `gaps`, `stores_up` | room-state calls that failed, gaps members were told of, whether room state is reachable |

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::serve::AppCommand;
use crate::hub::Hub;
pub use crate::hub::STATS_ROOM;
use crate::hub::envelope::now_ms;
use crate::hub::store::{Broadcast, Kind, Publication};
use crate::reactor::{Handle, StatsSnapshot};

/// Worker 0's memory of the previous sample, for the rates.
#[derive(Debug)]
pub(crate) struct StatsFeed {
    started: Instant,
    period: Duration,
    last: Option<(Instant, StatsSnapshot, u64)>,
}

impl StatsFeed {
    pub(crate) fn new(period: Duration) -> Self {
        Self { started: Instant::now(), period, last: None }
    }

    /// The message for `snapshot` taken at `now`: counters, gauges, and rates since the
    /// previous sample (0 for the first).
    pub(crate) fn sample(&mut self, now: Instant, snapshot: StatsSnapshot, hub: &Hub) -> Value {
        let c = &hub.counters;
        let published = c.published.load(Ordering::Relaxed);
        let rate = |new: u64, old: u64, secs: f64| {
            if secs <= 0.0 { 0.0 } else { (new.saturating_sub(old) as f64 / secs * 10.0).round() / 10.0 }
        };
        let (in_rate, out_rate, bin_rate, bout_rate, pub_rate) = match &self.last {
            Some((at, old, old_published)) => {
                let secs = now.duration_since(*at).as_secs_f64();
                (
                    rate(snapshot.messages_in, old.messages_in, secs),
                    rate(snapshot.messages_out, old.messages_out, secs),
                    rate(snapshot.bytes_in, old.bytes_in, secs),
                    rate(snapshot.bytes_out, old.bytes_out, secs),
                    rate(published, *old_published, secs),
                )
            }
            None => (0.0, 0.0, 0.0, 0.0, 0.0),
        };
        let data = json!({
            "node": hub.config().node.as_str(),
            "ts": now_ms(),
            "uptime_s": (now.duration_since(self.started).as_secs_f64() * 10.0).round() / 10.0,
            "period_ms": self.period.as_millis() as u64,
            "connections": snapshot.connections,
            "connections_total": snapshot.connections_total,
            "messages_in": snapshot.messages_in,
            "messages_out": snapshot.messages_out,
            "messages_in_per_sec": in_rate,
            "messages_out_per_sec": out_rate,
            "bytes_in": snapshot.bytes_in,
            "bytes_out": snapshot.bytes_out,
            "bytes_in_per_sec": bin_rate,
            "bytes_out_per_sec": bout_rate,
            "published": published,
            "published_per_sec": pub_rate,
            "rooms": c.rooms.load(Ordering::Relaxed),
            "room_members": c.members.load(Ordering::Relaxed),
            "history_messages": hub.stores().broker.kept().unwrap_or(0),
            "dropped_volatile": snapshot.dropped_volatile,
            "slow_consumer_closes": snapshot.slow_consumer_closes,
            "heartbeat_timeouts": snapshot.heartbeat_timeouts,
            "abnormal_closes": snapshot.abnormal,
            "ticks": c.ticks.load(Ordering::Relaxed),
            "late_ticks": c.late_ticks.load(Ordering::Relaxed),
            "batches": c.batches.load(Ordering::Relaxed),
            "replaced": c.replaced.load(Ordering::Relaxed),
            "tick_deferred": c.deferred.load(Ordering::Relaxed),
            "store_errors": c.store_errors.load(Ordering::Relaxed),
            "gaps": c.gaps.load(Ordering::Relaxed),
            "stores_up": hub.health().is_ok(),
        });
        self.last = Some((now, snapshot, published));
        data
    }

    /// Samples the counters as the message for [`STATS_ROOM`]'s members on this node
    /// (volatile, from `server`), encoded once for all of them.
    pub(crate) fn message(&mut self, now: Instant, snapshot: StatsSnapshot, hub: &Hub) -> Arc<Broadcast> {
        let data = self.sample(now, snapshot, hub);
        let from: Arc<str> = Arc::from("server");
        let publication = Publication {
            volatile: true,
            ..Publication::new(Arc::from(STATS_ROOM), Kind::Message, from, data, now_ms())
        };
        Arc::new(Broadcast::new(publication, Some(&hub.config().node)))
    }
}

/// Starts the thread that asks worker 0 for a stats message every `period`.
pub(crate) fn spawn(handle: Handle<AppCommand>, period: Duration) {
    let started = std::thread::Builder::new().name("hibiki-stats".into()).spawn(move || {
        let mut next = Instant::now() + period;
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += period;
            if !handle.post(0, AppCommand::PublishStats) {
                return;
            }
        }
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "the stats room thread did not start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;

    #[test]
    fn a_sample_has_rates_over_the_period_since_the_previous_one() {
        let hub = Hub::new(HubConfig::default());
        let mut feed = StatsFeed::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let first =
            StatsSnapshot { messages_in: 100, messages_out: 40, connections: 3, ..Default::default() };
        let data = feed.sample(t0, first, &hub);
        assert_eq!(
            (data["messages_in_per_sec"].as_f64(), data["connections"].as_u64()),
            (Some(0.0), Some(3))
        );
        let second = StatsSnapshot { messages_in: 400, messages_out: 1040, ..Default::default() };
        let data = feed.sample(t0 + Duration::from_secs(2), second, &hub);
        assert_eq!(data["messages_in_per_sec"], 150.0);
        assert_eq!(data["messages_out_per_sec"], 500.0);
        assert_eq!(data["period_ms"], 1000);
        assert_eq!(data["messages_in"], 400);
    }
}

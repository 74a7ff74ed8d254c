//! Server-Sent Events: a room as an HTTP stream, resumable with `Last-Event-ID`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::broadcast::Variant;
use super::rooms::{LocalRoom, Member};
use super::{Hub, HubLocal, Resume};
use crate::reactor::{ConnId, Outbox};

impl Hub {
    /// Opens an SSE stream on `room`, replaying history after `last_event_id`.
    pub fn sse_open(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        room: &str,
        last_event_id: Option<u64>,
    ) {
        let name: Arc<str> = Arc::from(room);
        let mut since = self.stores.broker.subscribe(&name, local.worker);
        let missed = match last_event_id.map(|after| self.stores.history.since(room, after)) {
            Some(Resume::Replay(missed, last)) => {
                // Replayed up to `last`: live delivery continues after it, never twice.
                since = since.max(last);
                missed
            }
            _ => Vec::new(),
        };
        out.send_raw_to(conn, &Bytes::from_static(b"retry: 2000\n\n"));
        for message in &missed {
            out.send_raw_to(conn, message.frame(Variant::Sse));
        }
        let tick = self.is_tick_room(room);
        let entry = local.rooms.entry(name).or_insert_with(|| LocalRoom { tick, ..LocalRoom::default() });
        let next = entry.log_end();
        entry.members.push(Member { conn, ws: None, since, next });
        local.streams.push(conn);
    }

    /// Closes an SSE stream.
    pub fn sse_close(&self, local: &mut HubLocal, conn: ConnId, room: &str) {
        local.streams.retain(|&c| c != conn);
        if let Some(entry) = local.rooms.get_mut(room) {
            entry.members.retain(|m| m.conn != conn);
            if entry.members.is_empty() {
                local.rooms.remove(room);
            }
        }
        self.stores.broker.unsubscribe(room, local.worker, &*self.stores.history);
    }

    /// Heartbeat comments on SSE streams, every 15 s, so proxies keep them open.
    pub(super) fn keepalive(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        now: Instant,
    ) {
        let due = local.last_keepalive.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(15));
        if !due {
            return;
        }
        local.last_keepalive = Some(now);
        let comment = Bytes::from_static(b": keepalive\n\n");
        for &conn in &local.streams {
            out.send_raw_to(conn, &comment);
        }
    }
}

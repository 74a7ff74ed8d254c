//! Server-Sent Events: a room as an HTTP stream, resumable with `Last-Event-ID`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::pending::JoinKind;
use super::{Hub, HubLocal, Out};
use crate::reactor::ConnId;

impl Hub {
    /// Opens an SSE stream on `room`, replaying history after `last_event_id` (what history
    /// still has, when it no longer reaches back that far), then live.
    pub fn sse_open(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        conn: ConnId,
        room: &str,
        last_event_id: Option<u64>,
    ) {
        let name = self.add_member(local, room, conn, None);
        local.streams.push(conn);
        let _ = self.start_join(local, out, conn, &name, JoinKind::Sse { after: last_event_id }, None, None);
    }

    /// Closes an SSE stream.
    pub fn sse_close(&self, local: &mut HubLocal, conn: ConnId, room: &str) {
        local.streams.retain(|&c| c != conn);
        let Some((name, _)) = local.rooms.get_key_value(room) else { return };
        let name = std::sync::Arc::clone(name);
        self.remove_member(local, conn, &name);
        self.stores.broker.unsubscribe(&name, local.worker);
    }

    /// Heartbeat comments on SSE streams, every 15 s, so proxies keep them open.
    pub(super) fn keepalive(&self, local: &mut HubLocal, out: &mut impl Out, now: Instant) {
        let due = local.last_keepalive.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(15));
        if !due {
            return;
        }
        local.last_keepalive = Some(now);
        let comment = Bytes::from_static(b": keepalive\n\n");
        for &conn in &local.streams {
            out.send_raw(conn, &comment);
        }
    }
}

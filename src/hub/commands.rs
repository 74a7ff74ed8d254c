//! What a client sends on `/ws`: each command, its checks, and its one `ack`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::broadcast::{Variant, ws_frame};
use super::envelope::{self, Encoding, MessageId, Outgoing, decode, now_ms};
use super::identity::Identity;
use super::rooms::{LocalRoom, Member};
use super::{Hub, HubLocal, Resume};
use crate::reactor::{ConnId, Message, Outbox};

/// Cached acks per connection, for idempotent retries.
const ACK_CACHE: usize = 128;

/// A client's mistake, answered with an `error` (or a failed `ack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubError {
    /// A stable code: `bad_request`, `forbidden`, `unknown_type`, `history_gap`, `too_many_rooms`, `not_joined`.
    pub code: &'static str,
    /// A human explanation.
    pub message: String,
}

impl HubError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A connection's state in the hub.
#[derive(Debug)]
pub struct Session {
    /// Who this is.
    pub identity: Identity,
    /// How envelopes are encoded.
    pub encoding: Encoding,
    deflate: bool,
    joined: Vec<Arc<str>>,
    acks: VecDeque<(MessageId, Bytes)>,
}

impl Session {
    /// A session for an authenticated connection.
    pub fn new(identity: Identity, encoding: Encoding) -> Self {
        Self { identity, encoding, deflate: false, joined: Vec::new(), acks: VecDeque::new() }
    }

    /// Rooms joined.
    pub fn rooms(&self) -> &[Arc<str>] {
        &self.joined
    }
}
fn envelope_frame<P: Serialize>(encoding: Encoding, kind: &str, id: Option<&MessageId>, payload: P) -> Bytes {
    let body = envelope::encode(encoding, &Outgoing { kind, id, payload, ts: now_ms() });
    ws_frame(encoding, &body, false)
}

fn str_field<'a>(payload: &'a Value, name: &str) -> Result<&'a str, HubError> {
    payload
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| HubError::new("bad_request", format!("payload.{name} must be a non-empty string")))
}

fn seq_field(payload: &Value, name: &str) -> Result<u64, HubError> {
    payload
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| HubError::new("bad_request", format!("payload.{name} must be a number")))
}

impl Hub {
    /// A connection opened: `welcome`, and its `user:ID` room for direct messages.
    pub fn on_open(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
    ) {
        s.deflate = out_is_compressed(out, conn);
        let welcome = json!({"conn": conn.to_string(), "user": &*s.identity.user, "name": s.identity.name});
        out.send_frame_to(conn, &envelope_frame(s.encoding, "welcome", None, welcome));
        let own = format!("user:{}", s.identity.user);
        let _ = self.join(local, out, conn, s, &own, false);
    }

    /// A connection closed: it leaves every room.
    pub fn on_close(&self, local: &mut HubLocal, conn: ConnId, s: &mut Session) {
        for room in std::mem::take(&mut s.joined) {
            self.leave_room(local, conn, s, &room);
        }
    }

    /// Handles one client message; every message with an `id` gets exactly one `ack`.
    pub fn on_message(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        message: &Message,
    ) {
        let incoming = match decode(s.encoding, message.kind, &message.data) {
            Ok(incoming) => incoming,
            Err(e) => {
                let error = HubError::new("bad_request", e.0);
                out.send_frame_to(conn, &envelope_frame(s.encoding, "error", None, &error));
                return;
            }
        };
        if let Some(id) = &incoming.id {
            if let Some((_, ack)) = s.acks.iter().find(|(i, _)| i == id) {
                // A retry of something already done: the same answer, no second effect.
                let ack = ack.clone();
                out.send_frame_to(conn, &ack);
                return;
            }
        }
        let p = &incoming.payload;
        let result = match incoming.kind.as_str() {
            "join" => str_field(p, "room").and_then(|room| self.join(local, out, conn, s, room, true)),
            "leave" => str_field(p, "room").and_then(|room| self.leave(local, conn, s, room)),
            "publish" => self.client_publish(conn, s, p, incoming.id.as_ref()),
            "direct" => self.direct(s, p, incoming.id.as_ref()),
            "typing" => self.typing(conn, s, p),
            "read" => self.read(conn, s, p),
            "resume" => self.resume(local, out, conn, s, p),
            "ping" => {
                out.send_frame_to(conn, &envelope_frame(s.encoding, "pong", incoming.id.as_ref(), json!({})));
                Ok(None)
            }
            other => Err(HubError::new("unknown_type", format!("unknown message type {other:?}"))),
        };
        match (incoming.id, result) {
            (Some(id), result) => {
                let payload = match &result {
                    Ok(Some(seq)) => json!({"id": &id, "ok": true, "seq": seq}),
                    Ok(None) => json!({"id": &id, "ok": true}),
                    Err(e) => json!({"id": &id, "ok": false, "error": e}),
                };
                let ack = envelope_frame(s.encoding, "ack", Some(&id), payload);
                out.send_frame_to(conn, &ack);
                if s.acks.len() == ACK_CACHE {
                    s.acks.pop_front();
                }
                s.acks.push_back((id, ack));
            }
            (None, Err(e)) => {
                out.send_frame_to(conn, &envelope_frame(s.encoding, "error", None, &e));
            }
            (None, Ok(_)) => {}
        }
    }

    fn join(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        name: &str,
        announce: bool,
    ) -> Result<Option<u64>, HubError> {
        if !s.identity.may_join(name) {
            return Err(HubError::new("forbidden", format!("not allowed to join {name:?}")));
        }
        if s.joined.iter().any(|r| &**r == name) {
            return Ok(None);
        }
        if s.joined.len() >= self.config.max_rooms_per_connection {
            return Err(HubError::new("too_many_rooms", "too many rooms for one connection"));
        }
        let name: Arc<str> = match local.rooms.get_key_value(name) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(name),
        };
        let limit = self.config.presence_limit;
        let since = self.stores.broker.subscribe(&name, local.worker);
        let joined = self.stores.presence.add(&name, &s.identity.user, limit);
        let (count, newcomer) = (joined.count, joined.newcomer);
        let ws = Some((s.encoding, s.deflate));
        let tick = self.is_tick_room(&name);
        let entry = local
            .rooms
            .entry(Arc::clone(&name))
            .or_insert_with(|| LocalRoom { tick, ..LocalRoom::default() });
        let next = entry.log_end();
        entry.members.push(Member { conn, ws, since, next });
        s.joined.push(Arc::clone(&name));
        let name = &*name;
        if announce {
            let users: Option<Vec<&str>> = joined.users.as_ref().map(|u| u.iter().map(|u| &**u).collect());
            let presence = json!({"room": name, "users": users, "count": count, "seq": since});
            out.send_frame_to(conn, &envelope_frame(s.encoding, "presence", None, presence));
            if newcomer && count <= limit {
                let event = json!({"room": name, "user": &*s.identity.user, "name": s.identity.name});
                self.emit(name, "user_joined", event, Some(conn), false);
            }
        }
        Ok(None)
    }

    fn leave(
        &self,
        local: &mut HubLocal,
        conn: ConnId,
        s: &mut Session,
        name: &str,
    ) -> Result<Option<u64>, HubError> {
        let Some(i) = s.joined.iter().position(|r| &**r == name) else {
            return Err(HubError::new("not_joined", format!("not in room {name:?}")));
        };
        let room = s.joined.swap_remove(i);
        self.leave_room(local, conn, s, &room);
        Ok(None)
    }

    fn leave_room(&self, local: &mut HubLocal, conn: ConnId, s: &Session, name: &Arc<str>) {
        if let Some(entry) = local.rooms.get_mut(name) {
            entry.members.retain(|m| m.conn != conn);
            if entry.members.is_empty() {
                local.rooms.remove(name);
            }
        }
        self.stores.broker.unsubscribe(name, local.worker, &*self.stores.history);
        // Announced only while the room is small enough to announce joins.
        let gone = self
            .stores
            .presence
            .remove(name, &s.identity.user)
            .is_some_and(|left| left < self.config.presence_limit);
        if gone && !name.starts_with("user:") {
            self.emit(
                name,
                "user_left",
                json!({"room": &**name, "user": &*s.identity.user}),
                Some(conn),
                false,
            );
        }
    }

    fn client_publish(
        &self,
        conn: ConnId,
        s: &Session,
        p: &Value,
        id: Option<&MessageId>,
    ) -> Result<Option<u64>, HubError> {
        let room = str_field(p, "room")?;
        if !s.identity.may_join(room) {
            return Err(HubError::new("forbidden", format!("not allowed to publish to {room:?}")));
        }
        let data = p.get("data").cloned().unwrap_or(Value::Null);
        let volatile = p.get("volatile").and_then(Value::as_bool).unwrap_or(false);
        let echo = p.get("echo").and_then(Value::as_bool).unwrap_or(true);
        let key = p.get("key").and_then(Value::as_str).map(Arc::from);
        let seq = self.publish(room, data, &s.identity.user, Some(conn), echo, volatile, key, id);
        Ok(Some(seq))
    }

    fn direct(&self, s: &Session, p: &Value, id: Option<&MessageId>) -> Result<Option<u64>, HubError> {
        let user = str_field(p, "user")?;
        let data = p.get("data").cloned().unwrap_or(Value::Null);
        let seq = self.publish(&format!("user:{user}"), data, &s.identity.user, None, true, false, None, id);
        Ok(Some(seq))
    }

    fn joined<'a>(s: &Session, p: &'a Value) -> Result<&'a str, HubError> {
        let room = str_field(p, "room")?;
        if !s.joined.iter().any(|r| &**r == room) {
            return Err(HubError::new("not_joined", format!("not in room {room:?}")));
        }
        Ok(room)
    }

    fn typing(&self, conn: ConnId, s: &Session, p: &Value) -> Result<Option<u64>, HubError> {
        let room = Self::joined(s, p)?;
        self.emit(room, "user_typing", json!({"room": room, "user": &*s.identity.user}), Some(conn), true);
        Ok(None)
    }

    fn read(&self, conn: ConnId, s: &Session, p: &Value) -> Result<Option<u64>, HubError> {
        let room = Self::joined(s, p)?;
        let seq = seq_field(p, "seq")?;
        let event = json!({"room": room, "user": &*s.identity.user, "seq": seq});
        self.emit(room, "messages_read", event, Some(conn), false);
        Ok(None)
    }

    fn resume(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        p: &Value,
    ) -> Result<Option<u64>, HubError> {
        let room = str_field(p, "room")?;
        let after = seq_field(p, "after")?;
        if !s.identity.may_join(room) {
            return Err(HubError::new("forbidden", format!("not allowed to join {room:?}")));
        }
        self.join(local, out, conn, s, room, false)?;
        match self.stores.history.since(room, after) {
            Resume::Gap { oldest } => Err(HubError::new(
                "history_gap",
                format!(
                    "history of {room:?} starts at seq {oldest}: messages after {after} can no longer all be replayed"
                ),
            )),
            Resume::Replay(missed, seq) => {
                // Deliver what was missed, in order, then let live delivery continue after it.
                let variant = Variant::Ws(s.encoding, s.deflate);
                for message in &missed {
                    out.send_frame_to(conn, message.frame(variant));
                }
                if let Some(entry) = local.rooms.get_mut(room) {
                    if let Some(member) = entry.members.iter_mut().find(|m| m.conn == conn) {
                        member.since = member.since.max(seq);
                    }
                }
                Ok(Some(seq))
            }
        }
    }
}

fn out_is_compressed(out: &Outbox<'_, impl Send + 'static>, conn: ConnId) -> bool {
    out.is_compressed(conn)
}

//! What a client sends on `/ws`: each command, its checks, and its one `ack`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::broadcast::{Broadcast, Variant, ws_frame};
use super::envelope::{self, Encoding, MessageId, Outgoing, decode, fingerprint, now_ms};
use super::identity::Identity;
use super::rooms::{LocalRoom, Member};
use super::{Hub, HubLocal, Publish, Resume};
use crate::reactor::{ConnId, Message, Outbox};

/// Acks a connection remembers, for idempotent retries: a repeated id among the last 128
/// answered gets the same answer again (or `id_reused` when the message differs).
const ACK_CACHE: usize = 128;

/// The code of a failed `ack` or an `error`, as it travels (`bad_request`, ...).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A malformed envelope or payload.
    BadRequest,
    /// A `type` the server does not know.
    UnknownType,
    /// The token does not allow this room.
    Forbidden,
    /// `leave`, `typing` or `read` for a room the connection has not joined.
    NotJoined,
    /// Past the rooms one connection may join.
    TooManyRooms,
    /// A resume that history can no longer serve in full.
    HistoryGap,
    /// An id already used for another message.
    IdReused,
}

/// A refusal, answered with a failed `ack` (or an `error` for a message without an id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human explanation.
    pub message: String,
    /// `history_gap`: the first seq replayed after the ack (the room's seq + 1 when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    /// `history_gap`: the room's seq; `id_reused`: the seq the id's first message got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl HubError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), oldest: None, seq: None }
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
    /// The last acks sent: id, fingerprint of the message it answered, the ack frame.
    acks: VecDeque<(MessageId, u64, Bytes)>,
}

impl Session {
    /// A session for an authenticated connection.
    pub fn new(identity: Identity, encoding: Encoding) -> Self {
        Self { identity, encoding, deflate: false, joined: Vec::new(), acks: VecDeque::new() }
    }

    /// Rooms joined, the connection's own `user:ID` room included.
    pub fn rooms(&self) -> &[Arc<str>] {
        &self.joined
    }

    /// Whether `room` is this user's own `user:ID` room (joined at open, not counted
    /// against the room limit).
    fn owns(&self, room: &str) -> bool {
        room.strip_prefix("user:") == Some(&*self.identity.user)
    }
}

/// What a command did: the ack's answer, whether the connection is now in the room (told to
/// a `resume`), and messages to send after the ack (a resume's replay).
struct Outcome {
    result: Result<Option<u64>, HubError>,
    joined: Option<bool>,
    replay: Vec<Arc<Broadcast>>,
}

impl From<Result<Option<u64>, HubError>> for Outcome {
    fn from(result: Result<Option<u64>, HubError>) -> Self {
        Self { result, joined: None, replay: Vec::new() }
    }
}

/// The payload of an `ack`.
#[derive(Serialize)]
struct AckPayload<'a> {
    id: &'a MessageId,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a HubError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<bool>,
}

fn envelope_frame<P: Serialize>(encoding: Encoding, kind: &str, id: Option<&MessageId>, payload: P) -> Bytes {
    let body = envelope::encode(encoding, &Outgoing { kind, id, payload, ts: now_ms() });
    ws_frame(encoding, &body, false)
}

fn ack_frame(
    encoding: Encoding,
    id: &MessageId,
    result: &Result<Option<u64>, HubError>,
    joined: Option<bool>,
) -> Bytes {
    let payload = match result {
        Ok(seq) => AckPayload { id, ok: true, seq: *seq, error: None, joined },
        Err(e) => AckPayload { id, ok: false, seq: None, error: Some(e), joined },
    };
    envelope_frame(encoding, "ack", Some(id), payload)
}

fn str_field<'a>(payload: &'a Value, name: &str) -> Result<&'a str, HubError> {
    payload.get(name).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 256).ok_or_else(|| {
        HubError::new(ErrorCode::BadRequest, format!("payload.{name} must be a non-empty string"))
    })
}

fn seq_field(payload: &Value, name: &str) -> Result<u64, HubError> {
    payload
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| HubError::new(ErrorCode::BadRequest, format!("payload.{name} must be a number")))
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

    /// A connection closed: it leaves every room (the others see `user_left` when it was the
    /// user's last connection there).
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
                let error = HubError::new(ErrorCode::BadRequest, e.message);
                let frame = match &e.id {
                    Some(id) => ack_frame(s.encoding, id, &Err(error), None),
                    None => envelope_frame(s.encoding, "error", None, &error),
                };
                out.send_frame_to(conn, &frame);
                return;
            }
        };
        let p = &incoming.payload;
        let id = incoming.id.as_ref().map(|id| (id, fingerprint(&incoming.kind, p)));
        if let Some((id, print)) = id {
            if let Some((_, first, ack)) = s.acks.iter().find(|(i, _, _)| i == id) {
                let frame = if *first == print {
                    // A retry of something already done: the same answer, no second effect.
                    ack.clone()
                } else {
                    let error = HubError::new(
                        ErrorCode::IdReused,
                        "this id was used for another message on this connection",
                    );
                    ack_frame(s.encoding, id, &Err(error), None)
                };
                out.send_frame_to(conn, &frame);
                return;
            }
        }
        let outcome: Outcome = match incoming.kind.as_str() {
            "join" => str_field(p, "room").and_then(|room| self.join(local, out, conn, s, room, true)).into(),
            "leave" => str_field(p, "room").and_then(|room| self.leave(local, conn, s, room)).into(),
            "publish" => self.client_publish(conn, s, p, id).into(),
            "direct" => self.direct(s, p, id).into(),
            "typing" => self.typing(conn, s, p).into(),
            "read" => self.read(conn, s, p).into(),
            "resume" => self.resume(local, out, conn, s, p),
            "ping" => {
                out.send_frame_to(conn, &envelope_frame(s.encoding, "pong", incoming.id.as_ref(), json!({})));
                Ok(None).into()
            }
            other => {
                Err(HubError::new(ErrorCode::UnknownType, format!("unknown message type {other:?}"))).into()
            }
        };
        match id {
            Some((id, print)) => {
                let ack = ack_frame(s.encoding, id, &outcome.result, outcome.joined);
                out.send_frame_to(conn, &ack);
                if s.acks.len() == ACK_CACHE {
                    s.acks.pop_front();
                }
                s.acks.push_back((id.clone(), print, ack));
            }
            None => {
                if let Err(e) = &outcome.result {
                    out.send_frame_to(conn, &envelope_frame(s.encoding, "error", None, e));
                }
            }
        }
        // A resume's replay comes after its ack, so the client knows where it starts.
        let variant = Variant::Ws(s.encoding, s.deflate);
        for message in &outcome.replay {
            out.send_frame_to(conn, message.frame(variant));
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
            return Err(HubError::new(ErrorCode::Forbidden, format!("not allowed to join {name:?}")));
        }
        if s.joined.iter().any(|r| &**r == name) {
            return Ok(None);
        }
        let max = self.config.max_rooms_per_connection;
        if !s.owns(name) && s.joined.iter().filter(|r| !s.owns(r)).count() >= max {
            return Err(HubError::new(
                ErrorCode::TooManyRooms,
                format!("a connection may join {max} rooms (besides its own user: room)"),
            ));
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
            return Err(HubError::new(ErrorCode::NotJoined, format!("not in room {name:?}")));
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
        id: Option<(&MessageId, u64)>,
    ) -> Result<Option<u64>, HubError> {
        let room = str_field(p, "room")?;
        if !s.identity.may_join(room) {
            return Err(HubError::new(ErrorCode::Forbidden, format!("not allowed to publish to {room:?}")));
        }
        let publish = Publish {
            sender: Some(conn),
            echo: p.get("echo").and_then(Value::as_bool).unwrap_or(true),
            volatile: p.get("volatile").and_then(Value::as_bool).unwrap_or(false),
            key: p.get("key").and_then(Value::as_str).map(Arc::from),
            id,
            ..Publish::new(room, &s.identity.user, p.get("data").cloned().unwrap_or(Value::Null))
        };
        self.publish(publish).map(Some)
    }

    fn direct(&self, s: &Session, p: &Value, id: Option<(&MessageId, u64)>) -> Result<Option<u64>, HubError> {
        let user = str_field(p, "user")?;
        let room = format!("user:{user}");
        let data = p.get("data").cloned().unwrap_or(Value::Null);
        self.publish(Publish { id, ..Publish::new(&room, &s.identity.user, data) }).map(Some)
    }

    fn joined<'a>(s: &Session, p: &'a Value) -> Result<&'a str, HubError> {
        let room = str_field(p, "room")?;
        if !s.joined.iter().any(|r| &**r == room) {
            return Err(HubError::new(ErrorCode::NotJoined, format!("not in room {room:?}")));
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

    /// `resume {room, after}`: a join (announced like one) that first replays what the client
    /// missed. The ack comes before the replay and says whether the connection is joined;
    /// when history no longer reaches back to `after + 1` (or `after` is from an earlier
    /// life of the room) it fails with `history_gap`, the connection stays joined, and what
    /// history still has is replayed from `oldest`.
    fn resume(
        &self,
        local: &mut HubLocal,
        out: &mut Outbox<'_, impl Send + 'static>,
        conn: ConnId,
        s: &mut Session,
        p: &Value,
    ) -> Outcome {
        let (room, after) = match str_field(p, "room").and_then(|r| Ok((r, seq_field(p, "after")?))) {
            Ok(fields) => fields,
            Err(e) => return Err(e).into(),
        };
        if let Err(e) = self.join(local, out, conn, s, room, true) {
            let joined = s.joined.iter().any(|r| &**r == room);
            return Outcome { joined: Some(joined), ..Err(e).into() };
        }
        let member =
            local.rooms.get_mut(room).and_then(|entry| entry.members.iter_mut().find(|m| m.conn == conn));
        let Some(member) = member else { return Ok(None).into() };
        let (result, replay) = match self.stores.history.since(room, after) {
            Resume::Replay(missed, last) => {
                member.since = member.since.max(last);
                (Ok(Some(member.since)), missed)
            }
            Resume::Gap { oldest } => {
                let kept = match self.stores.history.since(room, oldest.saturating_sub(1)) {
                    Resume::Replay(kept, last) => {
                        member.since = member.since.max(last);
                        kept
                    }
                    Resume::Gap { .. } => Vec::new(),
                };
                let seq = member.since;
                let error = HubError {
                    oldest: Some(kept.first().map_or(seq + 1, |m| m.seq)),
                    seq: Some(seq),
                    ..HubError::new(
                        ErrorCode::HistoryGap,
                        format!(
                            "history of {room:?} starts at seq {oldest}: messages after {after} cannot all be replayed"
                        ),
                    )
                };
                (Err(error), kept)
            }
        };
        // Live delivery continues after what is replayed (`member.since`), never twice.
        Outcome { result, joined: Some(true), replay }
    }
}

fn out_is_compressed(out: &Outbox<'_, impl Send + 'static>, conn: ConnId) -> bool {
    out.is_compressed(conn)
}

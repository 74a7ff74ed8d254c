//! What a client sends on `/ws`: each command, its checks, and its one `ack` — now, or when
//! the stores answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::broadcast::ws_frame;
use super::command::Command;
use super::envelope::{self, Encoding, MessageId, Outgoing, decode, fingerprint, now_ms};
use super::identity::Identity;
use super::pending::{JoinKind, Pending};
use super::store::{Kind, PresenceEntry, Reply};
use super::{Hub, HubLocal, Out, Publish};
use crate::reactor::{ConnId, Message};

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
    /// A resume that history can no longer serve in full, or a hole in a room's stream that
    /// could not be filled.
    HistoryGap,
    /// An id already used for another message.
    IdReused,
    /// Room state cannot be reached now (the store is down or slow): nothing took effect.
    Unavailable,
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
    /// `history_gap`: the room's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

impl HubError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), oldest: None, seq: None, epoch: None }
    }
}

/// A connection's state in the hub.
#[derive(Debug)]
pub struct Session {
    /// Who this is.
    pub identity: Identity,
    /// How envelopes are encoded.
    pub encoding: Encoding,
    pub(super) deflate: bool,
    pub(super) joined: Vec<Arc<str>>,
    /// The last acks sent: id, fingerprint of the message it answered, the ack frame.
    acks: VecDeque<(MessageId, u64, Bytes)>,
    /// Ids whose answer waits for the stores, with the fingerprint of their message.
    in_flight: Vec<(MessageId, u64)>,
}

impl Session {
    /// A session for an authenticated connection.
    pub fn new(identity: Identity, encoding: Encoding) -> Self {
        Self {
            identity,
            encoding,
            deflate: false,
            joined: Vec::new(),
            acks: VecDeque::new(),
            in_flight: Vec::new(),
        }
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

    pub(super) fn entry(&self, node: &super::store::NodeId, conn: ConnId) -> PresenceEntry {
        PresenceEntry {
            node: node.clone(),
            conn: conn.as_u64(),
            user: Arc::clone(&self.identity.user),
            name: self.identity.name.as_deref().map(Arc::from),
        }
    }
}

/// How a command was answered.
pub(super) enum Answer {
    /// Ack with this (or send an `error` without an id), saying whether the connection is
    /// in the room when that is asked (a resume).
    Ack(Result<Option<u64>, HubError>, Option<bool>),
    /// Ack a publish with its position (seq and epoch).
    Published(Result<super::store::Position, HubError>),
    /// Already answered.
    Sent,
    /// A store answers later; the pending operation will answer.
    Later,
}

/// The payload of an `ack`.
#[derive(Serialize)]
struct AckPayload<'a> {
    id: &'a MessageId,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a HubError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<bool>,
}

pub(super) fn envelope_frame<P: Serialize>(
    encoding: Encoding,
    kind: &str,
    id: Option<&MessageId>,
    payload: P,
) -> Bytes {
    let body = envelope::encode(encoding, &Outgoing { kind, id, payload, ts: now_ms() });
    ws_frame(encoding, &body, false)
}

/// What an ack says: its result, the epoch its seq belongs to, and (resumes) whether the
/// connection is in the room.
pub(super) struct AckBody<'a> {
    pub(super) result: &'a Result<Option<u64>, HubError>,
    pub(super) epoch: Option<&'a str>,
    pub(super) joined: Option<bool>,
}

fn ack_frame(encoding: Encoding, id: &MessageId, body: &AckBody<'_>) -> Bytes {
    let payload = match body.result {
        Ok(seq) => {
            AckPayload { id, ok: true, seq: *seq, epoch: body.epoch, error: None, joined: body.joined }
        }
        Err(e) => AckPayload { id, ok: false, seq: None, epoch: None, error: Some(e), joined: body.joined },
    };
    envelope_frame(encoding, "ack", Some(id), payload)
}

impl Hub {
    /// A connection opened: `welcome`, and its `user:ID` room for direct messages.
    pub fn on_open(&self, local: &mut HubLocal, out: &mut impl Out, conn: ConnId, mut session: Session) {
        session.deflate = out.is_compressed(conn);
        let s = &session;
        let welcome = json!({"conn": conn.to_string(), "user": &*s.identity.user, "name": s.identity.name});
        out.send_frame(conn, &envelope_frame(s.encoding, "welcome", None, welcome));
        let own = format!("user:{}", s.identity.user);
        local.sessions.insert(conn, session);
        let _ = self.join(local, out, conn, &own, JoinKind::Own, None);
    }

    /// A connection closed: it leaves every room (the others see `user_left` when it was the
    /// user's last connection there). Answers still pending for it are dropped.
    pub fn on_close(&self, local: &mut HubLocal, conn: ConnId) {
        let Some(mut s) = local.sessions.remove(&conn) else { return };
        for room in std::mem::take(&mut s.joined) {
            self.leave_room(local, conn, &s, &room);
        }
    }

    /// Handles one client message; every message with an `id` gets exactly one `ack`.
    pub fn on_message(&self, local: &mut HubLocal, out: &mut impl Out, conn: ConnId, message: &Message) {
        let Some(s) = local.sessions.get_mut(&conn) else { return };
        let encoding = s.encoding;
        let mut incoming = match decode(encoding, message.kind, &message.data) {
            Ok(incoming) => incoming,
            Err(e) => {
                let error = HubError::new(ErrorCode::BadRequest, e.message);
                let frame = match &e.id {
                    Some(id) => {
                        ack_frame(encoding, id, &AckBody { result: &Err(error), epoch: None, joined: None })
                    }
                    None => envelope_frame(encoding, "error", None, &error),
                };
                out.send_frame(conn, &frame);
                return;
            }
        };
        let id = incoming.id.take().map(|id| {
            let print = fingerprint(&incoming.kind, &incoming.payload);
            (id, print)
        });
        if let Some((id, print)) = &id {
            if let Some((_, first, ack)) = s.acks.iter().find(|(i, _, _)| i == id) {
                if first == print {
                    // A retry of something already done: the same answer, no second effect.
                    out.send_frame(conn, &ack.clone());
                } else {
                    Self::refuse_reuse(out, conn, encoding, id);
                }
                return;
            }
            if let Some((_, first)) = s.in_flight.iter().find(|(i, _)| i == id) {
                // A retry of something still in progress: it is answered when that completes.
                if first != print {
                    Self::refuse_reuse(out, conn, encoding, id);
                }
                return;
            }
        }
        let data = incoming.payload.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let answer = match Command::parse(&incoming.kind, &incoming.payload, data) {
            Err(e) => Answer::Ack(Err(e), None),
            Ok(command) => self.run(local, out, conn, command, id.as_ref()),
        };
        match answer {
            Answer::Ack(result, joined) => {
                self.answer(local, out, conn, id, &AckBody { result: &result, epoch: None, joined });
            }
            Answer::Published(result) => {
                let epoch = result.as_ref().ok().map(|p| p.epoch.clone());
                let result = result.map(|p| Some(p.seq));
                let body =
                    AckBody { result: &result, epoch: epoch.as_ref().map(|e| e.as_str()), joined: None };
                self.answer(local, out, conn, id, &body);
            }
            Answer::Sent => {}
            Answer::Later => {
                if let (Some(id), Some(s)) = (id, local.sessions.get_mut(&conn)) {
                    s.in_flight.push(id);
                }
            }
        }
    }

    fn refuse_reuse(out: &mut impl Out, conn: ConnId, encoding: Encoding, id: &MessageId) {
        let error =
            HubError::new(ErrorCode::IdReused, "this id was used for another message on this connection");
        out.send_frame(
            conn,
            &ack_frame(encoding, id, &AckBody { result: &Err(error), epoch: None, joined: None }),
        );
    }

    fn run(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        conn: ConnId,
        command: Command<'_>,
        id: Option<&(MessageId, u64)>,
    ) -> Answer {
        match command {
            Command::Join { room } => self.join(local, out, conn, room, JoinKind::Join, id.cloned()),
            Command::Resume { room, after, epoch } => {
                self.join(local, out, conn, room, JoinKind::Resume { after, epoch }, id.cloned())
            }
            Command::Leave { room } => Answer::Ack(self.leave(local, conn, room), None),
            Command::Publish { room, data, volatile, key, echo } => {
                let Some(s) = local.sessions.get(&conn) else { return Answer::Sent };
                if !s.identity.may_publish(room) {
                    let error =
                        HubError::new(ErrorCode::Forbidden, format!("not allowed to publish to {room:?}"));
                    return Answer::Ack(Err(error), None);
                }
                let from = Arc::clone(&s.identity.user);
                let publish = Publish {
                    sender: Some(conn),
                    echo,
                    volatile,
                    key: key.map(Arc::from),
                    id: id.map(|(id, print)| (id, *print)),
                    ..Publish::new(room, &from, data)
                };
                self.publish_for(local, conn, publish)
            }
            Command::Direct { user, data } => {
                let Some(s) = local.sessions.get(&conn) else { return Answer::Sent };
                let from = Arc::clone(&s.identity.user);
                let room = format!("user:{user}");
                let publish =
                    Publish { id: id.map(|(id, print)| (id, *print)), ..Publish::new(&room, &from, data) };
                self.publish_for(local, conn, publish)
            }
            Command::Typing { room } => {
                Answer::Ack(self.event(local, conn, room, Kind::UserTyping, Value::Null, true), None)
            }
            Command::Read { room, seq } => {
                Answer::Ack(self.event(local, conn, room, Kind::MessagesRead, json!(seq), false), None)
            }
            Command::Ping => {
                if let Some(s) = local.sessions.get(&conn) {
                    let frame = envelope_frame(s.encoding, "pong", id.map(|(id, _)| id), json!({}));
                    out.send_frame(conn, &frame);
                }
                Answer::Ack(Ok(None), None)
            }
        }
    }

    /// Publishes for a connection: acked now, or when the broker answers.
    fn publish_for(&self, local: &mut HubLocal, conn: ConnId, publish: Publish<'_>) -> Answer {
        let ticket = local.next_ticket();
        let id = publish.id.map(|(id, print)| (id.clone(), print));
        match self.publish(publish, ticket) {
            Reply::Now(result) => Answer::Published(result),
            Reply::Later => {
                local.pending.insert(Pending::Publish { conn, id });
                Answer::Later
            }
        }
    }

    /// Sends the answer to a command with `id` (or an `error` for a failure without one),
    /// and remembers it for retries.
    pub(super) fn answer(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        conn: ConnId,
        id: Option<(MessageId, u64)>,
        body: &AckBody<'_>,
    ) {
        let Some(s) = local.sessions.get_mut(&conn) else { return };
        match id {
            Some((id, print)) => {
                let ack = ack_frame(s.encoding, &id, body);
                out.send_frame(conn, &ack);
                s.in_flight.retain(|(i, _)| *i != id);
                // An `unavailable` answer is not remembered: a retry of the id is tried
                // again (the store's own idempotency keeps it from taking effect twice).
                if matches!(body.result, Err(e) if e.code == ErrorCode::Unavailable) {
                    return;
                }
                if s.acks.len() == ACK_CACHE {
                    s.acks.pop_front();
                }
                s.acks.push_back((id, print, ack));
            }
            None => {
                if let Err(e) = body.result {
                    out.send_frame(conn, &envelope_frame(s.encoding, "error", None, e));
                }
            }
        }
    }

    /// Starts a join (or resume, or the connection's own room): the member is added at
    /// once, its live messages held until the broker's and the presence store's answers
    /// arrive; then it is announced, acked and released (see `finish_join`).
    fn join(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        conn: ConnId,
        name: &str,
        kind: JoinKind,
        id: Option<(MessageId, u64)>,
    ) -> Answer {
        let Some(s) = local.sessions.get(&conn) else { return Answer::Sent };
        // A refused resume also says the connection is not in the room.
        let resuming = matches!(kind, JoinKind::Resume { .. });
        let refuse = |error: HubError| Answer::Ack(Err(error), resuming.then_some(false));
        if !s.identity.may_join(name) {
            return refuse(HubError::new(ErrorCode::Forbidden, format!("not allowed to join {name:?}")));
        }
        let already = s.joined.iter().any(|r| &**r == name);
        if already && !resuming {
            return Answer::Ack(Ok(None), None);
        }
        let max = self.config.max_rooms_per_connection;
        if !already && !s.owns(name) && s.joined.iter().filter(|r| !s.owns(r)).count() >= max {
            return refuse(HubError::new(
                ErrorCode::TooManyRooms,
                format!("a connection may join {max} rooms (besides its own user: room)"),
            ));
        }
        let entry = s.entry(&self.config.node, conn);
        let ws = Some((s.encoding, s.deflate));
        if already {
            // A resume of a room the connection is in: only the replay.
            return self.start_join(local, out, conn, name, kind, id, None);
        }
        let room = self.add_member(local, name, conn, ws);
        if let Some(s) = local.sessions.get_mut(&conn) {
            s.joined.push(Arc::clone(&room));
        }
        self.start_join(local, out, conn, &room, kind, id, Some(entry))
    }

    fn leave(&self, local: &mut HubLocal, conn: ConnId, name: &str) -> Result<Option<u64>, HubError> {
        let Some(s) = local.sessions.get_mut(&conn) else { return Ok(None) };
        let Some(i) = s.joined.iter().position(|r| &**r == name) else {
            return Err(HubError::new(ErrorCode::NotJoined, format!("not in room {name:?}")));
        };
        let room = s.joined.swap_remove(i);
        let Some(s) = local.sessions.remove(&conn) else { return Ok(None) };
        self.leave_room(local, conn, &s, &room);
        local.sessions.insert(conn, s);
        Ok(None)
    }

    /// Takes a connection out of a room: locally, from the broker's routing and from
    /// presence; the others see `user_left` when it was the user's last connection there
    /// (announced only while the room is small enough to announce joins).
    pub(super) fn leave_room(&self, local: &mut HubLocal, conn: ConnId, s: &Session, name: &Arc<str>) {
        let _ = self.remove_member(local, conn, name);
        self.stores.broker.unsubscribe(name, local.worker);
        let entry = s.entry(&self.config.node, conn);
        let ticket = local.next_ticket();
        let key = local
            .pending
            .insert(Pending::Leave { room: Arc::clone(name), user: Arc::clone(&s.identity.user) });
        if let Reply::Now(result) = self.stores.presence.remove(name, &entry, ticket) {
            local.pending.remove(key);
            self.left(name, &s.identity.user, result);
        }
    }

    /// Presence answered a leave: announce it if it was the user's last connection.
    pub(super) fn left(
        &self,
        room: &Arc<str>,
        user: &Arc<str>,
        result: Result<super::store::Left, super::store::StoreError>,
    ) {
        match result {
            Ok(left)
                if left.gone && left.count < self.config.presence_limit && !room.starts_with("user:") =>
            {
                self.emit(room, Kind::UserLeft, user, Value::Null, None, false);
            }
            Ok(_) => {}
            Err(_) => {
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `typing` and `read`: an event to the other members of a room the connection is in.
    fn event(
        &self,
        local: &HubLocal,
        conn: ConnId,
        room: &str,
        kind: Kind,
        data: Value,
        volatile: bool,
    ) -> Result<Option<u64>, HubError> {
        let Some(s) = local.sessions.get(&conn) else { return Ok(None) };
        if !s.joined.iter().any(|r| &**r == room) {
            return Err(HubError::new(ErrorCode::NotJoined, format!("not in room {room:?}")));
        }
        self.emit(room, kind, &s.identity.user, data, Some(conn), volatile);
        Ok(None)
    }
}

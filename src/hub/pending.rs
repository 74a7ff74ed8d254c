//! Operations a worker waits for: the stores' answers, now or later, and what the hub does
//! with each — ack a publish, finish a join (announce, ack, replay, release the member's
//! held messages), fill a hole, announce a leave.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::broadcast::Variant;
use super::commands::{AckBody, Answer, ErrorCode, HubError, envelope_frame};
use super::envelope::MessageId;
use super::rooms::Hold;
use super::store::{Done, Epoch, Joined, Kind, PresenceEntry, Replay, Reply, Since, StoreError, Ticket};
use super::{Hub, HubLocal, Out};
use crate::reactor::ConnId;

/// How long a hole's fill is tried again while the store fails, before the members are told
/// of a gap.
const FILL_PATIENCE: Duration = Duration::from_secs(10);
/// How soon a failed fill is tried again.
const FILL_RETRY: Duration = Duration::from_millis(200);

/// A hole whose fill failed: tried again at `next`, given up `FILL_PATIENCE` after `since`.
#[derive(Debug)]
pub(super) struct Refill {
    pub(super) room: Arc<str>,
    pub(super) after: u64,
    pub(super) since: Instant,
    pub(super) next: Instant,
}

/// What a join is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JoinKind {
    /// The connection's own `user:ID` room, at open: not announced, not acked.
    Own,
    /// `join`: announced, acked.
    Join,
    /// `resume {after, epoch}`: announced, acked with the position, then the replay.
    Resume { after: u64, epoch: Option<Epoch> },
    /// An SSE stream, replaying after `Last-Event-ID` when given.
    Sse { after: Option<u64> },
}

/// A join waiting for its answers: the broker's subscription and the presence store's add.
#[derive(Debug)]
pub(super) struct JoinWait {
    pub(super) conn: ConnId,
    pub(super) room: Arc<str>,
    pub(super) id: Option<(MessageId, u64)>,
    pub(super) kind: JoinKind,
    /// The connection was in the room already (a second resume): only the replay.
    pub(super) rejoin: bool,
    pub(super) subscribed: Option<Result<Replay, StoreError>>,
    /// `None` until presence answers; SSE streams and rejoins do not ask it.
    pub(super) presence: Option<Result<Option<Joined>, StoreError>>,
    pub(super) entry: Option<PresenceEntry>,
}

/// An operation a worker waits for.
#[derive(Debug)]
pub(super) enum Pending {
    /// A join or resume.
    Join(Box<JoinWait>),
    /// A publish to ack.
    Publish { conn: ConnId, id: Option<(MessageId, u64)> },
    /// A hole in `room` after `after`, being fetched from history.
    Fill { room: Arc<str>, after: u64 },
    /// A leave: announced if presence says it was the user's last connection.
    Leave { room: Arc<str>, user: Arc<str> },
}

impl Hub {
    /// Asks the stores for a join's answers; finishes it at once when both answer now.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_join(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        conn: ConnId,
        room: &str,
        kind: JoinKind,
        id: Option<(MessageId, u64)>,
        entry: Option<PresenceEntry>,
    ) -> Answer {
        let room: Arc<str> = match local.rooms.get_key_value(room) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(room),
        };
        let since = match &kind {
            JoinKind::Resume { after, epoch } => Since::After { seq: *after, epoch: epoch.clone() },
            JoinKind::Sse { after: Some(after) } => Since::After { seq: *after, epoch: None },
            _ => Since::Now,
        };
        let rejoin = entry.is_none() && !matches!(kind, JoinKind::Sse { .. });
        let ticket = local.next_ticket();
        let wait = JoinWait {
            conn,
            room: Arc::clone(&room),
            id,
            kind,
            rejoin,
            subscribed: None,
            presence: None,
            entry: entry.clone(),
        };
        let key = local.pending.insert(Pending::Join(Box::new(wait)));
        let subscribed = if rejoin {
            // In the room already: no second subscription, only the replay.
            let Since::After { seq, epoch } = since else { unreachable!("a rejoin is a resume") };
            self.stores.broker.history(&room, seq, epoch.as_ref(), ticket)
        } else {
            self.stores.broker.subscribe(&room, local.worker, since, ticket)
        };
        let presence = match &entry {
            Some(entry) => match self.stores.presence.add(&room, entry, self.config.presence_limit, ticket) {
                Reply::Now(r) => Reply::Now(r.map(Some)),
                Reply::Later => Reply::Later,
            },
            None => Reply::Now(Ok(None)),
        };
        if let Some(Pending::Join(wait)) = local.pending.get_mut(key) {
            if let Reply::Now(r) = subscribed {
                wait.subscribed = Some(r);
            }
            if let Reply::Now(r) = presence {
                wait.presence = Some(r);
            }
            if wait.subscribed.is_some() && wait.presence.is_some() {
                let Pending::Join(wait) = local.pending.remove(key) else { unreachable!() };
                self.finish_join(local, out, key, *wait);
                return Answer::Sent;
            }
        }
        Answer::Later
    }

    /// A later answer for operation `key`.
    pub(super) fn on_done(&self, local: &mut HubLocal, out: &mut impl Out, key: u64, done: Done) {
        let key = key as usize;
        let complete = match (local.pending.get_mut(key), &done) {
            (None, _) => return,
            (Some(Pending::Join(wait)), _) => {
                match done {
                    Done::Subscribed(r) | Done::History(r) => wait.subscribed = Some(r),
                    Done::Joined(r) => wait.presence = Some(r.map(Some)),
                    _ => return,
                }
                if wait.subscribed.is_none() || wait.presence.is_none() {
                    return;
                }
                let Pending::Join(wait) = local.pending.remove(key) else { unreachable!() };
                self.finish_join(local, out, key, *wait);
                return;
            }
            (Some(_), _) => local.pending.remove(key),
        };
        match (complete, done) {
            (Pending::Publish { conn, id }, Done::Published(result)) => {
                let result = self.published(result);
                let epoch = result.as_ref().ok().map(|p| p.epoch.clone());
                let result = result.map(|p| Some(p.seq));
                let body =
                    AckBody { result: &result, epoch: epoch.as_ref().map(Epoch::as_str), joined: None };
                self.answer(local, out, conn, id, &body);
            }
            (Pending::Fill { room, after }, Done::History(result)) => {
                self.filled(local, out, &room, after, result)
            }
            (Pending::Leave { room, user }, Done::Left(result)) => self.left(&room, &user, result),
            (other, done) => tracing::warn!(?other, ?done, "a store answered the wrong call"),
        }
    }

    /// Both answers of a join are in: the member goes live at its position (or the join is
    /// undone and refused), announced, acked, replayed.
    pub(super) fn finish_join(&self, local: &mut HubLocal, out: &mut impl Out, key: usize, wait: JoinWait) {
        let JoinWait { conn, room, id, kind, rejoin, subscribed, presence, entry } = wait;
        let (Some(subscribed), Some(presence)) = (subscribed, presence) else { return };
        let resuming = matches!(kind, JoinKind::Resume { .. });
        let (replay, joined) = match (subscribed, presence) {
            (Ok(replay), Ok(joined)) => (replay, joined),
            (subscribed, presence) => {
                // Undo what did take effect; nothing is announced.
                let error = match (&subscribed, &presence) {
                    (Err(e), _) | (_, Err(e)) => self.store_error(e.clone()),
                    _ => unreachable!(),
                };
                // A member that left meanwhile was uncounted by its leave; one still here is
                // uncounted now (the broker counted it whatever it answered).
                if !rejoin && self.remove_joining(local, conn, &room, key) {
                    self.stores.broker.unsubscribe(&room, local.worker);
                    if let (Ok(Some(_)), Some(entry)) = (&presence, &entry) {
                        let _ = self.stores.presence.remove(&room, entry, self.detached(local));
                    }
                }
                if !rejoin {
                    if let Some(s) = local.sessions.get_mut(&conn) {
                        s.joined.retain(|r| *r != room);
                    }
                }
                let body = AckBody { result: &Err(error), epoch: None, joined: resuming.then_some(rejoin) };
                self.answer(local, out, conn, id, &body);
                return;
            }
        };
        // The member this join added (a rejoin: the member already there).
        let ours = |m: &super::rooms::Member| {
            m.conn == conn && (rejoin || m.held.as_ref().is_some_and(|h| h.0 == Hold::Joining(key)))
        };
        let Some(state) = local.rooms.get_mut(&room).filter(|r| r.members.iter().any(ours)) else {
            // Left (or closed) meanwhile: the leave undid the stores' side.
            let body = AckBody { result: &Ok(None), epoch: None, joined: resuming.then_some(false) };
            self.answer(local, out, conn, id, &body);
            return;
        };
        let position = &replay.position;
        match &state.epoch {
            None => state.epoch = Some(position.epoch.clone()),
            Some(epoch) if *epoch != position.epoch => {
                let epoch = position.epoch.clone();
                self.restart_epoch(state, out, &room, epoch);
            }
            Some(_) => {}
        }
        if state.tick && state.logged == 0 {
            state.logged = position.seq;
        }
        let last = replay.messages.last().map_or(0, |m| m.seq);
        let since = position.seq.max(last);
        let epoch = position.epoch.as_str();
        let (encoding, deflate, user, name) = match local.sessions.get(&conn) {
            Some(s) => (s.encoding, s.deflate, Arc::clone(&s.identity.user), s.identity.name.clone()),
            None => (super::envelope::Encoding::Json, false, Arc::from(""), None),
        };
        // Announce: `presence` to the joiner, `user_joined` to the others.
        if let Some(joined) = &joined {
            if matches!(kind, JoinKind::Join | JoinKind::Resume { .. }) {
                let limit = self.config.presence_limit;
                let users: Option<Vec<&str>> =
                    joined.users.as_ref().map(|u| u.iter().map(|u| &**u).collect());
                let payload = json!({
                    "room": &*room, "users": users, "count": joined.count, "seq": position.seq, "epoch": epoch,
                });
                out.send_frame(conn, &envelope_frame(encoding, "presence", None, payload));
                if joined.newcomer && joined.count <= limit {
                    let data = name.map_or(Value::Null, Value::String);
                    self.emit(&room, Kind::UserJoined, &user, data, Some(conn), false);
                }
            }
        }
        match &kind {
            JoinKind::Own => {}
            JoinKind::Join => {
                self.answer(local, out, conn, id, &AckBody { result: &Ok(None), epoch: None, joined: None });
            }
            JoinKind::Resume { after, .. } => {
                let result = if replay.gap {
                    let oldest = replay.messages.first().map_or(since + 1, |m| m.seq);
                    Err(HubError {
                        oldest: Some(oldest),
                        seq: Some(since),
                        epoch: Some(epoch.to_owned()),
                        ..HubError::new(
                            ErrorCode::HistoryGap,
                            format!(
                                "history of {room:?} cannot replay everything after {after}: it resumes at {oldest}"
                            ),
                        )
                    })
                } else {
                    Ok(Some(since))
                };
                // The ack comes before the replay, so the client knows where it starts.
                let body = AckBody { result: &result, epoch: Some(epoch), joined: Some(true) };
                self.answer(local, out, conn, id, &body);
                let variant = Variant::Ws(encoding, deflate);
                for message in &replay.messages {
                    out.send_frame(conn, message.frame(variant));
                }
            }
            JoinKind::Sse { .. } => {
                out.send_raw(conn, &bytes::Bytes::from_static(b"retry: 2000\n\n"));
                for message in &replay.messages {
                    out.send_raw(conn, message.frame(Variant::Sse));
                }
            }
        }
        let Some(state) = local.rooms.get_mut(&room) else { return };
        let Some(member) = state.members.iter_mut().find(|m| ours(m)) else { return };
        if rejoin && !member.is_live() {
            // A resume while the member's own join is still pending: that join releases it.
            return;
        }
        let released = member.release(out, since);
        if let Err(after) = released {
            self.fill(local, out, &room, after);
        }
    }

    /// History answered a hole: members waiting on it get what it had, then what was held;
    /// what it could not fill they are told of.
    pub(super) fn filled(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        name: &Arc<str>,
        after: u64,
        result: Result<Replay, StoreError>,
    ) {
        let now = Instant::now();
        let failing = local.refills.iter().position(|r| r.room == *name && r.after == after);
        let since = failing.map(|i| local.refills.swap_remove(i).since);
        let Some(room) = local.rooms.get_mut(name) else { return };
        room.filling.retain(|&a| a != after);
        let replay = match result {
            Ok(replay) => replay,
            Err(e) => {
                self.store_error(e);
                let since = since.unwrap_or(now);
                if now.duration_since(since) < FILL_PATIENCE {
                    // The store failed: the members stay held and the fill is tried again.
                    local.refills.push(Refill {
                        room: Arc::clone(name),
                        after,
                        since,
                        next: now + FILL_RETRY,
                    });
                    return;
                }
                // It kept failing: a hole nothing could fill, told as a gap.
                let epoch = room.epoch.clone().unwrap_or_else(Epoch::random);
                Replay {
                    position: super::store::Position { seq: after, epoch },
                    messages: Vec::new(),
                    gap: true,
                }
            }
        };
        self.counters.holes_filled.fetch_add(1, Ordering::Relaxed);
        let mut holes = Vec::new();
        if room.tick {
            let held = room.held.take().unwrap_or_default();
            let first_held = held.iter().map(|m| m.seq).find(|&s| s > 0);
            let start = room.logged;
            for message in replay.messages.iter().filter(|m| m.seq > start) {
                room.logged = message.seq;
                room.log.push_back(Arc::clone(message));
            }
            if let Some(first) = first_held.filter(|&first| first > room.logged + 1) {
                self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                for member in &room.members {
                    member.tell_gap(out, name, first, room.logged, room.epoch.as_ref());
                }
                room.logged = first - 1;
            }
            for message in held {
                if message.seq == 0 || message.seq == room.logged + 1 {
                    room.logged = room.logged.max(message.seq);
                    room.log.push_back(message);
                } else if message.seq > room.logged {
                    // Still a hole: hold the rest and fetch again.
                    room.held.get_or_insert_with(Vec::new).push(message);
                }
            }
            if room.held.is_some() {
                holes.push(room.logged);
            }
        } else {
            for member in room.members.iter_mut() {
                let waiting =
                    member.held.as_ref().is_some_and(|h| h.0 == Hold::Filling) && member.since == after;
                if !waiting {
                    continue;
                }
                let Some(held) = member.held.take() else { continue };
                // First what history had, then (past a gap it could not fill) what was held.
                let replayed: Vec<_> = replay.messages.iter().filter(|m| m.seq > after).cloned().collect();
                let reached = replayed.last().map_or(after, |m| m.seq);
                member.held = Some(Box::new((Hold::Filling, replayed)));
                let since = member.since;
                let mut result = member.release(out, since);
                if result.is_ok() {
                    let first_held = held.1.iter().map(|m| m.seq).find(|&s| s > 0);
                    if let Some(first) = first_held.filter(|&first| first > reached.max(member.since) + 1) {
                        self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                        member.tell_gap(out, name, first, member.since, room.epoch.as_ref());
                        member.since = first - 1;
                    }
                    member.held = Some(held);
                    let since = member.since;
                    result = member.release(out, since);
                }
                if let Err(after) = result {
                    if !holes.contains(&after) {
                        holes.push(after);
                    }
                }
            }
        }
        for after in holes {
            self.fill(local, out, name, after);
        }
    }

    /// Fills that failed and are due to be tried again (from the tick, and when the room
    /// gets a message).
    pub(super) fn retry_fills(
        &self,
        local: &mut HubLocal,
        out: &mut impl Out,
        room: Option<&str>,
        now: Instant,
    ) {
        if local.refills.is_empty() {
            return;
        }
        let mut due = Vec::new();
        for refill in &mut local.refills {
            if refill.next <= now && room.is_none_or(|r| *refill.room == *r) {
                // Not again until this try answered.
                refill.next = now + FILL_PATIENCE;
                due.push((Arc::clone(&refill.room), refill.after));
            }
        }
        for (room, after) in due {
            self.fill(local, out, &room, after);
        }
    }

    /// A ticket whose answer nobody waits for.
    fn detached(&self, local: &HubLocal) -> Ticket {
        Ticket { worker: local.worker, waiter: super::store::Waiter::Op(u64::MAX) }
    }
}

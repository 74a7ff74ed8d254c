//! Room and tick: the app protocol of `hibiki serve` on `/ws` (JSON envelopes in text frames).
//!
//! Subscribers send `join` (with an `id`) when they open and count as members once the `ack`
//! says `ok`; the run starts when every subscriber has its answer (or none came for the
//! settle time). Publishers do not join: they send `publish` with `"echo": false` and an `id`
//! (the stamp's sequence number), whose `data` is a string of `payload` bytes starting with
//! `t=SEND_NS;s=SEQ;` (send time since the run started, sequence number
//! `publisher << 40 | count`) and padded with `x`. Each publish's ack carries the room's `seq`
//! of the message: the seqs every member is owed.
//!
//! Receivers do not parse JSON: the envelope's type is its first bytes (`{"type":"message"`,
//! `{"type":"batch"`, `{"type":"ack"`), each delivery is found by its `"t=` marker, and its
//! room seq is the last `"seq":` before the marker (the server writes `room, seq, from, data`
//! in that order). Each member counts what it saw of the seqs ([`Track`]): lost, duplicated,
//! reordered, and the gaps the server announced (`history_gap`). In a tick room a member gets
//! one `batch` per tick holding any number of messages: each message's latency is measured to
//! the batch's arrival, and the batch's inter-arrival time against the tick period gives the
//! jitter. Half the tick publishes carry `"key":"pos"`, so the server may replace an unsent
//! one with a newer one (counted as replaced, not lost).

use std::io::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use memchr::memmem;

use super::super::driver::{Conns, Shared, Timeline, Workload};
use super::super::target::Route;
use super::pacer::{PUBLISHER_SHIFT, Pacer};
use super::{Tally, Track};

const MESSAGE: &[u8] = b"{\"type\":\"message\"";
const BATCH: &[u8] = b"{\"type\":\"batch\"";
const ACK: &[u8] = b"{\"type\":\"ack\"";
const ERROR: &[u8] = b"{\"type\":\"error\"";
const MARKER: &[u8] = b"\"t=";
const SEQ: &[u8] = b"\"seq\":";
const ID: &[u8] = b"\"id\":";
const OK: &[u8] = b"\"ok\":true";
const GAP: &[u8] = b"\"history_gap\"";
const EPOCH: &[u8] = b"\"epoch\":\"";
/// The start of every publish envelope, up to its id.
const PUBLISH: &[u8] = b"{\"type\":\"publish\",\"id\":";

/// Where a connection stands with its room.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Join {
    /// A publisher: never joins.
    Publisher,
    /// `join` sent, no answer yet.
    Waiting,
    /// Acked before the run started: a member, counted.
    Joined,
    /// Refused, or acked only after the run started: not counted.
    Out,
}

/// Per-connection state.
#[derive(Debug)]
pub(crate) struct AppPeer {
    join: Join,
    publisher: Option<u64>,
    /// The node (index of the run's URLs) the connection went to.
    node: usize,
    /// A member: its index in the thread's tracks.
    track: Option<usize>,
    /// Tick: when the previous batch arrived.
    last_batch: u64,
}

/// What a room (or tick) run is, for every thread.
#[derive(Clone, Debug)]
pub(crate) struct AppPlan {
    /// The room joined and published to.
    pub(crate) room: String,
    /// Publishing connections in all (the first slots).
    pub(crate) publishers: usize,
    /// Messages per second per publisher.
    pub(crate) rate: f64,
    /// Closed loop instead of `rate`: publishes each publisher keeps unacked.
    pub(crate) window: Option<u32>,
    /// Bytes of each message's `data` string.
    pub(crate) payload: usize,
    /// Tick room: the server's ticks per second (`None`: a plain room).
    pub(crate) tick_hz: Option<f64>,
    /// How long to wait without any join answer before starting anyway, ns.
    pub(crate) settle: u64,
    /// The most seqs one member's bitmap spans (more than the run can publish): a seq
    /// farther away is not of this run.
    pub(crate) span: u64,
}

/// The room or tick workload of one thread.
#[derive(Debug)]
pub(crate) struct App<'a> {
    shared: &'a Shared,
    route: &'a Route,
    publishers: usize,
    /// Tick: nanoseconds between two server ticks.
    tick_period: Option<f64>,
    payload: usize,
    join: Vec<u8>,
    head: Vec<u8>,
    head_keyed: Vec<u8>,
    /// How the server starts a single delivery of this room, up to its seq
    /// (`{"type":"message","payload":{"room":"R","seq":`): read in place, without a search.
    single: Vec<u8>,
    buf: Vec<u8>,
    pacer: Pacer,
    timeline: Option<Timeline>,
    sending: bool,
    /// Subscribers of this thread waiting for their join answer.
    waiting: u64,
    /// Subscribers acked ok (before the start).
    joined: u64,
    /// Subscribers refused.
    refused: u64,
    /// Last join sent or answered, for the settle time.
    last_progress: u64,
    settle: u64,
    published: u64,
    span: u64,
    /// Members of this thread (indexed by [`AppPeer::track`]).
    tracks: Vec<Track>,
    /// Deliveries new to their member, over the run and the drain.
    fresh: u64,
    tally: Tally,
}

impl<'a> App<'a> {
    pub(crate) fn new(shared: &'a Shared, route: &'a Route, plan: &AppPlan) -> Self {
        let room = serde_json::to_string(&plan.room).unwrap_or_else(|_| "\"\"".into());
        let join = format!(r#"{{"type":"join","id":1,"payload":{{"room":{room}}}}}"#).into_bytes();
        let head = format!(r#","payload":{{"room":{room},"echo":false,"data":""#);
        let head_keyed = format!(r#","payload":{{"room":{room},"echo":false,"key":"pos","data":""#);
        let single = format!(r#"{{"type":"message","payload":{{"room":{room},"seq":"#);
        Self {
            shared,
            route,
            publishers: plan.publishers,
            tick_period: plan.tick_hz.map(|hz| 1e9 / hz),
            payload: plan.payload,
            join,
            head: head.into_bytes(),
            head_keyed: head_keyed.into_bytes(),
            single: single.into_bytes(),
            buf: Vec::with_capacity(plan.payload + 128),
            pacer: match plan.window {
                Some(window) => Pacer::closed_loop(plan.publishers, window),
                None => Pacer::new(plan.publishers, plan.rate),
            },
            timeline: None,
            sending: false,
            waiting: 0,
            joined: 0,
            refused: 0,
            last_progress: 0,
            settle: plan.settle,
            published: 0,
            span: plan.span,
            tracks: Vec::new(),
            fresh: 0,
            tally: Tally::new(),
        }
    }

    /// Whether the publish stamped `seq` carries the `pos` key: every other one in a tick room.
    fn keyed(&self, seq: u64) -> bool {
        keyed(self.tick_period.is_some(), seq)
    }

    /// A publisher's ack (on `key`): ok ones carry the message's room seq.
    fn on_ack(&mut self, key: usize, body: &[u8]) {
        // Closed loop: any answer frees a place in the window.
        self.pacer.confirm(key);
        if find(body, OK).is_none() {
            self.tally.acks_failed += 1;
            self.tally.errors += 1;
            return;
        }
        self.tally.acks_ok += 1;
        if let Some(at) = find(body, EPOCH) {
            let epoch = &body[at + EPOCH.len()..];
            let epoch = &epoch[..epoch.iter().position(|&b| b == b'"').unwrap_or(epoch.len())];
            if !self.tally.epochs.iter().any(|e| e == epoch) {
                self.tally.epochs.push(epoch.to_vec());
            }
        }
        let Some(seq) = number_after(body, SEQ).filter(|&seq| seq > 0) else { return };
        self.tally.acked.insert(seq);
        if number_after(body, ID).is_some_and(|id| self.keyed(id)) {
            self.tally.keyed.insert(seq);
        }
    }

    /// The publish envelope for `seq`, stamped `now`, in `self.buf`.
    #[cfg(test)]
    fn envelope(&mut self, now: u64, seq: u64, keyed: bool) {
        let head = if keyed { &self.head_keyed } else { &self.head };
        write_envelope(&mut self.buf, head, self.payload, now, seq);
    }

    /// Counts the deliveries stamped in `body`, received at `now` by the member with `track`.
    fn deliveries(&mut self, body: &[u8], now: u64, track: Option<usize>) {
        if let Some((room_seq, stamp)) = single_delivery(body, &self.single) {
            self.delivery(Some(room_seq), stamp, now, track);
            return;
        }
        // Searched for in every delivery: the searcher is built once.
        static MARKER_FINDER: LazyLock<memmem::Finder<'static>> =
            LazyLock::new(|| memmem::Finder::new(MARKER));
        let mut rest = body;
        while let Some(at) = MARKER_FINDER.find(rest) {
            // The message's room seq comes before its data.
            let room_seq = last_seq(&rest[..at]);
            rest = &rest[at + MARKER.len()..];
            self.delivery(room_seq, rest, now, track);
        }
    }

    /// Counts one delivery: `stamp` is what follows its `t=` marker, `room_seq` the seq the
    /// server gave it.
    fn delivery(&mut self, room_seq: Option<u64>, stamp: &[u8], now: u64, track: Option<usize>) {
        let Some((sent_at, seq)) = parse_stamp(stamp) else {
            self.tally.errors += 1;
            return;
        };
        if seq >> PUBLISHER_SHIFT >= self.publishers as u64 {
            self.tally.errors += 1;
            return;
        }
        self.tally.received_total += 1;
        if self.timeline.is_some_and(|tl| tl.measuring(now)) {
            self.tally.received += 1;
            self.tally.latency.saturating_record(now.saturating_sub(sent_at) / 1000);
        }
        // What the drain waits for: deliveries new to their member (a repeat does not stand
        // in for a message still on its way).
        self.fresh += u64::from(match (track, room_seq.filter(|&s| s > 0)) {
            (Some(t), Some(room_seq)) => self.tracks[t].see(room_seq, self.span),
            _ => true,
        });
    }
}

/// A single delivery laid out as the server writes it (`single`, the seq, `,"from":"NAME",`,
/// then `"data":"t=`): its room seq and what follows the marker. Anything else (a batch,
/// fields in another order) is `None`, for the search. The first quote after the name's start
/// ends it, or is an escaped one inside it: then what follows is still the name, which holds
/// no bare quote, so it cannot be `,"data":"` and the answer is `None` too.
fn single_delivery<'b>(body: &'b [u8], single: &[u8]) -> Option<(u64, &'b [u8])> {
    const FROM: &[u8] = b",\"from\":\"";
    const DATA: &[u8] = b",\"data\":\"t=";
    let (room_seq, rest) = digits(body.strip_prefix(single)?)?;
    let name = rest.strip_prefix(FROM)?;
    let end = memchr::memchr(b'"', name)?;
    Some((room_seq, name[end + 1..].strip_prefix(DATA)?))
}

/// Whether the publish stamped `seq` carries the `pos` key: in a tick room, every other one
/// of each publisher.
fn keyed(tick: bool, seq: u64) -> bool {
    tick && (seq & ((1 << PUBLISHER_SHIFT) - 1)) % 2 == 0
}

/// The number after the first `key` in `body` (`"seq":12` -> 12).
fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(body, key)?;
    digits(&body[at + key.len()..]).map(|(n, _)| n)
}

/// The number after the last `"seq":` in `hay` (its searcher built once: this runs for every
/// delivery).
fn last_seq(hay: &[u8]) -> Option<u64> {
    static SEQ_FINDER: LazyLock<memmem::FinderRev<'static>> = LazyLock::new(|| memmem::FinderRev::new(SEQ));
    let at = SEQ_FINDER.rfind(hay)?;
    digits(&hay[at + SEQ.len()..]).map(|(n, _)| n)
}

/// The `ts` a batch ends with (`...],"ts":1700000000000}`): when the server's tick ran, ms.
fn batch_ts(body: &[u8]) -> Option<u64> {
    const TS: &[u8] = b"\"ts\":";
    let at = memmem::rfind(body, TS)?;
    let digits = &body[at + TS.len()..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memmem::find(hay, needle)
}

/// `SEND_NS;s=SEQ;` (what follows a `t=` marker) as (send time, seq).
fn parse_stamp(s: &[u8]) -> Option<(u64, u64)> {
    let (sent_at, rest) = digits(s)?;
    let rest = rest.strip_prefix(b";s=")?;
    let (seq, rest) = digits(rest)?;
    rest.starts_with(b";").then_some((sent_at, seq))
}

fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let value = s[..n].iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    Some((value, &s[n..]))
}

impl Workload for App<'_> {
    type Peer = AppPeer;

    fn peer(&mut self, slot: usize) -> AppPeer {
        let publisher = (slot < self.publishers).then_some(slot as u64);
        let join = if publisher.is_some() { Join::Publisher } else { Join::Waiting };
        AppPeer { join, publisher, node: self.route.node(slot), track: None, last_batch: 0 }
    }

    fn on_open(&mut self, conns: &mut Conns<AppPeer>, key: usize, now: u64) {
        self.last_progress = now;
        match conns.peer_mut(key).and_then(|p| p.publisher) {
            Some(id) => self.pacer.add(key, id),
            None => {
                if conns.send_text(key, &self.join) {
                    self.waiting += 1;
                } else if let Some(peer) = conns.peer_mut(key) {
                    peer.join = Join::Out;
                    self.refused += 1;
                }
            }
        }
    }

    fn settled(&mut self, now: u64) -> bool {
        self.waiting == 0 || now.saturating_sub(self.last_progress) > self.settle
    }

    fn start(&mut self, _conns: &mut Conns<AppPeer>, timeline: Timeline, _now: u64) {
        self.timeline = Some(timeline);
        self.sending = true;
        self.tally.joined = self.joined;
        self.tally.join_failed = self.refused + self.waiting;
    }

    fn on_message(&mut self, conns: &mut Conns<AppPeer>, key: usize, payload: &[u8], now: u64) {
        let Some(peer) = conns.peer_mut(key) else { return };
        match peer.join {
            Join::Joined => {}
            Join::Waiting => {
                if payload.starts_with(ACK) {
                    self.waiting -= 1;
                    self.last_progress = now;
                    if self.timeline.is_none() && find(payload, OK).is_some() {
                        peer.join = Join::Joined;
                        peer.track = Some(self.tracks.len());
                        self.tracks.push(Track::new(peer.node));
                        self.joined += 1;
                    } else {
                        peer.join = Join::Out;
                        if self.timeline.is_none() {
                            self.refused += 1;
                        }
                    }
                }
                return;
            }
            Join::Publisher => {
                if payload.starts_with(ACK) {
                    self.on_ack(key, payload);
                } else if payload.starts_with(ERROR) {
                    self.tally.errors += 1;
                }
                return;
            }
            Join::Out => return,
        }
        let track = peer.track;
        match self.tick_period {
            None if payload.starts_with(MESSAGE) => self.deliveries(payload, now, track),
            Some(period) if payload.starts_with(BATCH) => {
                if let Some(tl) = self.timeline {
                    if tl.measuring(now) {
                        self.tally.batches += 1;
                        if peer.last_batch != 0 {
                            // Empty ticks send nothing: compare with the nearest whole number
                            // of periods.
                            let gap = (now - peer.last_batch) as f64;
                            let ticks = (gap / period).round().max(1.0);
                            let jitter = (gap - ticks * period).abs();
                            self.tally.jitter.saturating_record((jitter / 1000.0) as u64);
                        }
                    }
                    peer.last_batch = now;
                    if tl.measuring(now) {
                        if let Some(tick_ms) = batch_ts(payload) {
                            let wall_us = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_micros() as u64);
                            self.tally.tick_delay.saturating_record(wall_us.saturating_sub(tick_ms * 1000));
                        }
                    }
                }
                self.deliveries(payload, now, track);
            }
            _ if payload.starts_with(ERROR) || payload.starts_with(ACK) => {
                // A gap announced: an error, or a failed ack (of a resume), saying history_gap.
                match track.filter(|_| find(payload, GAP).is_some()) {
                    Some(t) => self.tracks[t].gaps += 1,
                    None if payload.starts_with(ERROR) => self.tally.errors += 1,
                    None => {}
                }
            }
            // Presence, user_joined and the like.
            _ => {}
        }
    }

    fn on_lost(&mut self, key: usize, peer: &AppPeer) {
        if peer.join == Join::Waiting {
            self.waiting -= 1;
            if self.timeline.is_none() {
                self.refused += 1;
            }
        }
        if let Some(t) = peer.track {
            self.tracks[t].closed = true;
        }
        self.pacer.lost(key);
    }

    fn on_tick(&mut self, conns: &mut Conns<AppPeer>, now: u64) -> Option<u64> {
        let timeline = self.timeline?;
        if !self.sending {
            return None;
        }
        let tick = self.tick_period.is_some();
        let (buf, head, head_keyed, payload) = (&mut self.buf, &self.head, &self.head_keyed, self.payload);
        let (sent, next) = self.pacer.run(timeline.start, now, |key, seq| {
            let head = if keyed(tick, seq) { head_keyed } else { head };
            write_envelope(buf, head, payload, now, seq);
            conns.send_text(key, buf)
        });
        self.published += sent;
        next
    }

    fn stop(&mut self, _now: u64) {
        self.sending = false;
        self.shared.published.fetch_add(self.published, Ordering::AcqRel);
        self.shared.publish_done.fetch_add(1, Ordering::AcqRel);
    }

    fn drained(&self) -> bool {
        self.shared.publish_done.load(Ordering::Acquire) == self.shared.threads
            && self.tally.acks_ok + self.tally.acks_failed >= self.published
            && self.fresh >= self.shared.published.load(Ordering::Acquire) * self.tally.joined
    }

    fn received(&self) -> u64 {
        self.tally.received
    }

    fn finish(mut self) -> Tally {
        self.tally.sent = self.published;
        // A seq far from the others: not a message of this run.
        self.tally.errors += self.tracks.iter().map(|t| t.out_of_range).sum::<u64>();
        self.tally.tracks = self.tracks;
        self.tally
    }
}

/// A publish envelope with id `seq`: `head` (the envelope after the id, up to the opening
/// quote of `data`), then the stamp `t=NOW;s=SEQ;` padded with `x` to `payload` bytes, then
/// the closing `"}}`.
fn write_envelope(buf: &mut Vec<u8>, head: &[u8], payload: usize, now: u64, seq: u64) {
    buf.clear();
    buf.extend_from_slice(PUBLISH);
    let _ = write!(buf, "{seq}");
    buf.extend_from_slice(head);
    let start = buf.len();
    let _ = write!(buf, "t={now};s={seq};");
    let pad = payload.saturating_sub(buf.len() - start);
    buf.resize(buf.len() + pad, b'x');
    buf.extend_from_slice(b"\"}}");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Seqs;
    use super::*;

    #[test]
    fn reads_the_tick_stamp_of_a_batch_not_of_its_messages() {
        let body = br#"{"type":"batch","payload":[{"type":"message","ts":111}],"ts":1700000000123}"#;
        assert_eq!(batch_ts(body), Some(1_700_000_000_123));
        assert_eq!(batch_ts(br#"{"type":"batch","payload":[]}"#), None);
    }

    #[test]
    fn publishes_and_reads_stamps() {
        let shared = Shared::new(1, Duration::ZERO, Duration::from_secs(1));
        let url = ["ws://127.0.0.1:1/ws".to_string()];
        let route = Route::resolve(&url, &url, 2).unwrap();
        let plan = AppPlan {
            room: "chat:bench".into(),
            publishers: 2,
            rate: 10.0,
            window: None,
            payload: 40,
            tick_hz: None,
            settle: 1,
            span: 1 << 16,
        };
        let mut app = App::new(&shared, &route, &plan);
        app.envelope(123_456_789, 1 << PUBLISHER_SHIFT | 42, true);
        let text = std::str::from_utf8(&app.buf).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["id"], 1u64 << PUBLISHER_SHIFT | 42, "the id is the stamp's sequence number");
        assert_eq!(value["payload"]["room"], "chat:bench");
        assert_eq!(value["payload"]["echo"], false);
        assert_eq!(value["payload"]["key"], "pos");
        let data = value["payload"]["data"].as_str().unwrap();
        assert_eq!(data.len(), 40);
        assert!(data.starts_with("t=123456789;s=1099511627818;xx"), "{data}");
        // As the server sends it (room, seq, from, data), twice in a batch, after an event
        // that has a seq of its own.
        let message = |seq: u64| {
            format!(
                r#"{{"type":"message","payload":{{"room":"chat:bench","seq":{seq},"from":"anon-1","data":"{data}","ts":1}},"ts":1}}"#
            )
        };
        let read = r#"{"type":"messages_read","payload":{"room":"chat:bench","user":"u","seq":99}}"#;
        let batch = format!(r#"{{"type":"batch","payload":[{read},{},{}]}}"#, message(7), message(7));
        app.tracks.push(Track::new(0));
        app.deliveries(batch.as_bytes(), 1, Some(0));
        assert_eq!((app.tally.received_total, app.tally.errors), (2, 0));
        app.deliveries(message(5).as_bytes(), 1, Some(0));
        assert_eq!(
            single_delivery(message(5).as_bytes(), &app.single).map(|(seq, _)| seq),
            Some(5),
            "a single delivery is read in place"
        );
        let mut seven = Seqs::default();
        seven.insert(7);
        let track = &app.tracks[0];
        assert_eq!((track.duplicated, track.reordered, track.missing(&seven)), (1, 1, 0), "7 twice, then 5");
        app.deliveries(br#"{"data":"t=12;s=99999999999999;"}"#, 1, Some(0));
        app.deliveries(br#"{"data":"t=12;q"}"#, 1, Some(0));
        assert_eq!((app.tally.received_total, app.tally.errors), (3, 2));
        // A name with an escaped quote is not read in place, and the search counts it.
        let escaped = message(8).replace(r#""anon-1""#, r#""a\"b""#);
        assert_eq!(single_delivery(escaped.as_bytes(), &app.single), None);
        app.deliveries(escaped.as_bytes(), 1, Some(0));
        assert_eq!((app.tally.received_total, app.tally.errors), (4, 2));
        // Acks: the seq (keyed or not by the id), or a failure.
        app.on_ack(0, br#"{"type":"ack","id":4,"payload":{"id":4,"ok":true,"seq":12,"epoch":"e"},"ts":1}"#);
        app.on_ack(
            0,
            br#"{"type":"ack","id":5,"payload":{"id":5,"ok":false,"error":{"code":"unavailable"}}}"#,
        );
        assert_eq!((app.tally.acks_ok, app.tally.acks_failed, app.tally.acked.len()), (1, 1, 1));
        assert_eq!(app.tally.keyed.len(), 0, "a plain room has no keyed messages");
        app.on_ack(0, br#"{"type":"ack","id":6,"payload":{"id":6,"ok":true,"seq":13,"epoch":"e"},"ts":1}"#);
        app.on_ack(0, br#"{"type":"ack","id":7,"payload":{"id":7,"ok":true,"seq":1,"epoch":"f"},"ts":1}"#);
        assert_eq!(app.tally.epochs, [b"e".to_vec(), b"f".to_vec()], "the numbering started over once");
        assert_eq!(last_seq(b"\"seq\":1,\"seq\":23,x"), Some(23));
        assert_eq!(number_after(b"{\"id\":77,", ID), Some(77));
        assert_eq!(parse_stamp(b"5;s=7;x"), Some((5, 7)));
        assert_eq!(find(b"abc\"t=", MARKER), Some(3));
        assert_eq!(find(b"\"t", MARKER), None);
    }
}

//! The hub's logic through a [`Recorder`], without sockets: a node of a few workers driven
//! by hand, with the in-memory stores or with stores that answer later (and drop
//! deliveries, and fail on demand).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::store::testing::{self, Control, Weather};
use super::store::{Kind, Publication};
use super::*;
use crate::hub::broadcast::Broadcast;
use crate::hub::envelope::Encoding;
use crate::proto::MessageKind;
use crate::reactor::Message;

/// A node: the shared hub, one [`HubLocal`] per worker, and what the stores hand workers.
struct Node {
    hub: Arc<Hub>,
    locals: Vec<HubLocal>,
    inbox: Receiver<(usize, ToWorker)>,
    out: Recorder,
    next_conn: usize,
}

impl Node {
    fn new(workers: usize, stores: Option<Stores>) -> Self {
        let config = HubConfig { history_size: 10_000, ..HubConfig::default() };
        let hub = match stores {
            Some(stores) => Hub::with_stores(config, stores),
            None => Hub::new(config),
        };
        let (sender, inbox) = channel();
        let sender = std::sync::Mutex::new(sender);
        hub.start(
            workers,
            Arc::new(move |worker, what| {
                let _ = sender.lock().unwrap().send((worker, what));
            }),
        );
        let locals = (0..workers).map(HubLocal::new).collect();
        Self { hub: Arc::new(hub), locals, inbox, out: Recorder::default(), next_conn: 1 }
    }

    /// A new connection of `user` on `worker`.
    fn open(&mut self, worker: usize, user: &str) -> ConnId {
        let conn = ConnId::new(worker, self.next_conn, 1);
        self.next_conn += 1;
        let identity = Identity { user: Arc::from(user), name: None, rooms: None };
        self.hub.on_open(
            &mut self.locals[worker],
            &mut self.out,
            conn,
            Session::new(identity, Encoding::Json),
        );
        conn
    }

    fn send(&mut self, conn: ConnId, envelope: Value) {
        let message = Message { kind: MessageKind::Text, data: Bytes::from(envelope.to_string()) };
        self.hub.on_message(&mut self.locals[conn.worker()], &mut self.out, conn, &message);
    }

    fn close(&mut self, conn: ConnId) {
        self.hub.on_close(&mut self.locals[conn.worker()], conn);
    }

    /// Hands workers what the stores sent, until nothing is pending and nothing arrived for
    /// `quiet` (or `limit` passed).
    fn settle(&mut self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = Instant::now();
        while Instant::now() < deadline {
            match self.inbox.recv_timeout(Duration::from_millis(1)) {
                Ok((worker, what)) => {
                    let _ = self.hub.on_store(&mut self.locals[worker], &mut self.out, what);
                    last = Instant::now();
                }
                Err(_) => {
                    let pending: usize = self.locals.iter().map(HubLocal::pending_count).sum();
                    if pending == 0 && last.elapsed() >= quiet {
                        return;
                    }
                }
            }
        }
    }

    fn envelopes(&self, conn: ConnId) -> Vec<Value> {
        self.out.envelopes(conn)
    }

    fn of_type(&self, conn: ConnId, kind: &str) -> Vec<Value> {
        self.envelopes(conn).into_iter().filter(|e| e["type"] == kind).collect()
    }

    fn acks(&self, conn: ConnId) -> Vec<Value> {
        self.of_type(conn, "ack").into_iter().map(|a| a["payload"].clone()).collect()
    }
}

fn seqs(envelopes: &[Value], room: &str) -> Vec<u64> {
    envelopes
        .iter()
        .filter(|e| e["type"] == "message" && e["payload"]["room"] == room)
        .map(|e| e["payload"]["seq"].as_u64().unwrap())
        .collect()
}

fn join(room: &str, id: &str) -> Value {
    json!({"type": "join", "id": id, "payload": {"room": room}})
}

fn publish(room: &str, id: &str, data: Value) -> Value {
    json!({"type": "publish", "id": id, "payload": {"room": room, "data": data}})
}

fn later_node(workers: usize, weather: Weather) -> (Node, Arc<Control>) {
    let (stores, control) = testing::later(10_000, weather);
    (Node::new(workers, Some(stores)), control)
}

const CALM: Weather = Weather { max_delay: Duration::from_millis(3), drop: 0.0 };
const SETTLE: (Duration, Duration) = (Duration::from_millis(30), Duration::from_secs(10));

#[test]
fn join_publish_and_ack_without_sockets() {
    let mut node = Node::new(2, None);
    let (a, b) = (node.open(0, "ann"), node.open(1, "bob"));
    node.send(a, join("chat:1", "j"));
    node.send(b, join("chat:1", "j"));
    node.settle(Duration::ZERO, SETTLE.1);
    node.send(a, publish("chat:1", "p", json!("hi")));
    node.settle(Duration::ZERO, SETTLE.1);
    assert_eq!(node.acks(a).last().unwrap()["seq"], 1);
    for conn in [a, b] {
        assert_eq!(seqs(&node.envelopes(conn), "chat:1"), [1]);
    }
    let presence = node.of_type(b, "presence");
    assert_eq!(presence[0]["payload"]["users"], json!(["ann", "bob"]));
    assert!(presence[0]["payload"]["epoch"].is_string());
    assert_eq!(node.of_type(a, "user_joined")[0]["payload"]["user"], "bob");
}

#[test]
fn a_later_store_acks_when_it_answers_and_a_joining_member_misses_nothing() {
    let (mut node, _) = later_node(2, CALM);
    let (a, b) = (node.open(0, "ann"), node.open(1, "bob"));
    node.send(a, join("chat:1", "j"));
    node.settle(SETTLE.0, SETTLE.1);
    // b joins while a publishes: b's position arrives later than some live messages.
    node.send(b, join("chat:1", "j"));
    for i in 0..20 {
        node.send(a, publish("chat:1", &format!("p{i}"), json!(i)));
    }
    assert!(node.acks(a).iter().all(|ack| ack["id"] == "j"), "no publish is acked before the broker answers");
    node.settle(SETTLE.0, SETTLE.1);
    let acks = node.acks(a);
    assert_eq!(acks.len(), 21);
    assert!(acks.iter().all(|ack| ack["ok"] == true), "{acks:?}");
    assert_eq!(seqs(&node.envelopes(a), "chat:1"), (1..=20).collect::<Vec<_>>());
    let presence = &node.of_type(b, "presence")[0];
    let base = presence["payload"]["seq"].as_u64().unwrap();
    assert_eq!(
        seqs(&node.envelopes(b), "chat:1"),
        (base + 1..=20).collect::<Vec<_>>(),
        "after its position, once"
    );
}

#[test]
fn dropped_deliveries_are_fetched_from_history_in_order() {
    let (mut node, control) = later_node(2, Weather { max_delay: Duration::from_millis(2), drop: 0.3 });
    let members: Vec<ConnId> = (0..4).map(|i| node.open(i % 2, &format!("u{i}"))).collect();
    for &m in &members {
        node.send(m, join("chat:lossy", "j"));
    }
    node.settle(SETTLE.0, SETTLE.1);
    let publisher = node.open(0, "pub");
    for i in 0..60 {
        node.send(publisher, publish("chat:lossy", &format!("p{i}"), json!(i)));
    }
    // One last message, not lost, so that a hole at the end shows too (a lost last message
    // is found by the cluster's probe, not by the hub).
    node.settle(SETTLE.0, SETTLE.1);
    control.set_calm(true);
    node.send(publisher, publish("chat:lossy", "last", json!("last")));
    node.settle(SETTLE.0, SETTLE.1);
    assert!(control.dropped.load(Ordering::Relaxed) > 0, "some deliveries were lost");
    for &m in &members {
        assert_eq!(seqs(&node.envelopes(m), "chat:lossy"), (1..=61).collect::<Vec<_>>(), "{m:?}");
    }
    assert!(node.hub.counters.holes_filled.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_failing_store_gives_failed_acks_never_an_ok_and_recovers() {
    let (mut node, control) = later_node(1, CALM);
    let a = node.open(0, "ann");
    node.settle(SETTLE.0, SETTLE.1);
    control.set_failing(true);
    assert!(node.hub.health().is_err(), "degraded");
    node.send(a, join("chat:down", "j"));
    node.send(a, publish("chat:down", "p", json!(1)));
    node.send(a, json!({"type": "resume", "id": "r", "payload": {"room": "chat:x", "after": 0}}));
    node.settle(SETTLE.0, SETTLE.1);
    let acks = node.acks(a);
    assert_eq!(acks.len(), 3, "{acks:?}");
    for ack in &acks {
        assert_eq!(
            (ack["ok"].clone(), ack["error"]["code"].clone()),
            (json!(false), json!("unavailable")),
            "{ack}"
        );
    }
    assert_eq!(acks[2]["joined"], false, "a failed resume leaves the connection out");
    // A failed join leaves nothing behind: joining again works once the store is back.
    control.set_failing(false);
    assert!(node.hub.health().is_ok());
    node.send(a, join("chat:down", "j2"));
    node.send(a, publish("chat:down", "p2", json!(2)));
    node.settle(SETTLE.0, SETTLE.1);
    let acks = node.acks(a);
    assert_eq!((acks[3]["ok"].clone(), acks[4]["seq"].clone()), (json!(true), json!(1)), "{acks:?}");
    assert_eq!(seqs(&node.envelopes(a), "chat:down"), [1]);
}

#[test]
fn a_retry_of_an_id_still_in_flight_is_not_published_twice() {
    let (mut node, _) = later_node(1, Weather { max_delay: Duration::from_millis(20), drop: 0.0 });
    let a = node.open(0, "ann");
    node.send(a, join("chat:r", "j"));
    node.send(a, publish("chat:r", "p", json!(1)));
    node.send(a, publish("chat:r", "p", json!(1)));
    node.send(a, publish("chat:r", "p", json!(2)));
    node.settle(SETTLE.0, SETTLE.1);
    let acks: Vec<Value> = node.acks(a).into_iter().filter(|a| a["id"] == "p").collect();
    assert_eq!(acks.len(), 2, "one answer for the publish and one refusal: {acks:?}");
    assert_eq!(acks[0]["error"]["code"], "id_reused", "the other message under the same id");
    assert_eq!(acks[1]["seq"], 1);
    assert_eq!(seqs(&node.envelopes(a), "chat:r"), [1], "published once");
}

#[test]
fn a_new_epoch_tells_members_of_the_gap_and_follows_the_new_numbering() {
    let mut node = Node::new(1, None);
    let a = node.open(0, "ann");
    node.send(a, join("chat:e", "j"));
    for i in 0..3 {
        node.send(a, publish("chat:e", &format!("p{i}"), json!(i)));
    }
    node.settle(Duration::ZERO, SETTLE.1);
    // The room's state was lost elsewhere: a message of a new epoch arrives.
    let fresh = Publication {
        seq: 1,
        epoch: Some(store::Epoch::from("new-life")),
        ..Publication::new(Arc::from("chat:e"), Kind::Message, Arc::from("bob"), json!("again"), 0)
    };
    let message = Arc::new(Broadcast::new(fresh, None));
    node.hub.deliver(&mut node.locals[0], &mut node.out, &message);
    let envelopes = node.envelopes(a);
    let gap = envelopes.iter().find(|e| e["type"] == "error").expect("told of the gap");
    assert_eq!(
        (gap["payload"]["code"].clone(), gap["payload"]["epoch"].clone()),
        (json!("history_gap"), json!("new-life"))
    );
    assert_eq!(seqs(&envelopes, "chat:e"), [1, 2, 3, 1], "the new epoch's first message is delivered");
}

#[test]
fn a_resume_replays_after_its_ack_and_a_gap_says_where_history_resumes() {
    let mut node = Node::new(1, None);
    let a = node.open(0, "ann");
    for i in 0..5 {
        node.send(a, publish("chat:h", &format!("p{i}"), json!(i)));
    }
    let b = node.open(0, "bob");
    node.send(b, json!({"type": "resume", "id": "r", "payload": {"room": "chat:h", "after": 2}}));
    node.settle(Duration::ZERO, SETTLE.1);
    let kinds: Vec<Value> = node.envelopes(b).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(kinds, ["welcome", "presence", "ack", "message", "message", "message"], "3, 4 and 5");
    let ack = &node.acks(b)[0];
    assert_eq!((ack["seq"].clone(), ack["joined"].clone()), (json!(5), json!(true)));
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    // Another epoch: a gap, and all of this one's history.
    let c = node.open(0, "cyd");
    node.send(
        c,
        json!({"type": "resume", "id": "r", "payload": {"room": "chat:h", "after": 2, "epoch": "old"}}),
    );
    let ack = &node.acks(c)[0];
    assert_eq!(ack["error"]["code"], "history_gap");
    assert_eq!((ack["error"]["oldest"].clone(), ack["error"]["epoch"].clone()), (json!(1), json!(epoch)));
    assert_eq!(seqs(&node.envelopes(c), "chat:h"), [1, 2, 3, 4, 5]);
}

/// A step of a random run: who does what.
#[derive(Clone, Debug)]
enum Step {
    Join(usize, usize),
    Resume(usize, usize),
    Publish(usize, usize),
    Leave(usize, usize),
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    let (c, r) = (0..5usize, 0..2usize);
    prop_oneof![
        2 => (c.clone(), r.clone()).prop_map(|(c, r)| Step::Join(c, r)),
        1 => (c.clone(), r.clone()).prop_map(|(c, r)| Step::Resume(c, r)),
        4 => (c.clone(), r.clone()).prop_map(|(c, r)| Step::Publish(c, r)),
        1 => (c, r).prop_map(|(c, r)| Step::Leave(c, r)),
        1 => Just(Step::Settle),
    ]
}

/// Each membership of a connection in a room, as its envelopes show it: a join's or
/// resume's base seq, then the messages until the next leave. Each must be exactly the
/// seqs after the base, in order, without a gap or a repeat; the last one must reach the
/// room's last seq.
fn check_streams(
    node: &Node,
    conns: &[ConnId],
    rooms: &[&str],
    last: &BTreeMap<&str, u64>,
) -> Result<(), String> {
    for &conn in conns {
        for &room in rooms {
            let mut segment: Option<(u64, Vec<u64>)> = None;
            let mut segments = Vec::new();
            let envelopes = node.envelopes(conn);
            for e in &envelopes {
                let p = &e["payload"];
                match e["type"].as_str().unwrap_or_default() {
                    "presence" if p["room"] == room => {
                        if let Some(s) = segment.take() {
                            segments.push(s);
                        }
                        segment = Some((p["seq"].as_u64().unwrap(), Vec::new()));
                    }
                    "ack" if p["id"].as_str().is_some_and(|id| id.starts_with(&format!("r-{room}"))) => {
                        // A resume's ack: its replay starts after `after` (its id says).
                        let after: u64 =
                            p["id"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
                        if let Some((base, got)) = &mut segment {
                            if p["ok"] == true && got.is_empty() {
                                *base = after.min(*base);
                            }
                        }
                    }
                    "ack"
                        if p["ok"] == true
                            && p["id"].as_str().is_some_and(|id| id.starts_with(&format!("l-{room}"))) =>
                    {
                        if let Some(s) = segment.take() {
                            segments.push(s);
                        }
                    }
                    "message" if p["room"] == room => {
                        let seq = p["seq"].as_u64().unwrap();
                        match &mut segment {
                            Some((_, got)) => got.push(seq),
                            None => return Err(format!("{conn:?} got {seq} in {room} outside a membership")),
                        }
                    }
                    _ => {}
                }
            }
            let open = segment.is_some();
            segments.extend(segment);
            let count = segments.len();
            for (i, (base, got)) in segments.into_iter().enumerate() {
                let expected: Vec<u64> = (base + 1..base + 1 + got.len() as u64).collect();
                if got != expected {
                    return Err(format!("{conn:?} in {room}: after {base} got {got:?}"));
                }
                let end = last.get(room).copied().unwrap_or(0);
                if open && i + 1 == count && got.last().copied().unwrap_or(base) < end {
                    return Err(format!(
                        "{conn:?} in {room}: after {base} stopped at {got:?}, the room reached {end}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn run_steps(steps: &[Step], weather: Option<Weather>) -> Result<(), String> {
    let (mut node, control) = match weather {
        Some(weather) => {
            let (node, control) = later_node(2, weather);
            (node, Some(control))
        }
        None => (Node::new(2, None), None),
    };
    let rooms = ["chat:a", "chat:b"];
    let conns: Vec<ConnId> = (0..5).map(|i| node.open(i % 2, &format!("user{i}"))).collect();
    let mut sent_ids: Vec<(ConnId, String)> = Vec::new();
    // Who is in which room, as the clients see it (a resume of a room one is in is left out:
    // it replays what the connection may already have).
    let mut inside: std::collections::BTreeSet<(usize, usize)> = std::collections::BTreeSet::new();
    for (n, step) in steps.iter().enumerate() {
        match *step {
            Step::Join(c, r) => {
                inside.insert((c, r));
                let id = format!("j-{}-{n}", rooms[r]);
                node.send(conns[c], join(rooms[r], &id));
                sent_ids.push((conns[c], id));
            }
            Step::Resume(c, r) => {
                if !inside.insert((c, r)) {
                    continue;
                }
                // Resume after the last seq this connection saw in the room (or 0).
                let after = seqs(&node.envelopes(conns[c]), rooms[r]).last().copied().unwrap_or(0);
                let id = format!("r-{}-{n}-{after}", rooms[r]);
                node.send(
                    conns[c],
                    json!({"type": "resume", "id": id, "payload": {"room": rooms[r], "after": after}}),
                );
                sent_ids.push((conns[c], id));
            }
            Step::Publish(c, r) => {
                let id = format!("p-{n}");
                node.send(conns[c], publish(rooms[r], &id, json!(n)));
                sent_ids.push((conns[c], id));
            }
            Step::Leave(c, r) => {
                inside.remove(&(c, r));
                let id = format!("l-{}-{n}", rooms[r]);
                node.send(conns[c], json!({"type": "leave", "id": id, "payload": {"room": rooms[r]}}));
                sent_ids.push((conns[c], id));
            }
            Step::Settle => node.settle(Duration::from_millis(5), SETTLE.1),
        }
    }
    // A last message to each room, not lost, so that a hole at the end shows too.
    node.settle(SETTLE.0, SETTLE.1);
    if let Some(control) = &control {
        control.set_calm(true);
    }
    let end = steps.len();
    let mut steps = steps.to_vec();
    for (r, room) in rooms.iter().enumerate() {
        let id = format!("p-{}", end + r);
        steps.push(Step::Publish(0, r));
        node.send(conns[0], publish(room, &id, json!("end")));
        sent_ids.push((conns[0], id));
    }
    let steps = &steps[..];
    node.settle(SETTLE.0, SETTLE.1);
    // Every id got exactly one ack.
    for (conn, id) in &sent_ids {
        let n = node.acks(*conn).iter().filter(|a| a["id"] == id.as_str()).count();
        if n != 1 {
            return Err(format!("{id} on {conn:?} got {n} acks"));
        }
    }
    let mut last = BTreeMap::new();
    for &conn in &conns {
        for ack in node.acks(conn) {
            if ack["id"].as_str().is_some_and(|id| id.starts_with("p-")) {
                let seq = ack["seq"].as_u64().unwrap_or(0);
                let room = sent_room(steps, ack["id"].as_str().unwrap(), &rooms);
                let entry = last.entry(room).or_insert(0);
                *entry = (*entry).max(seq);
            }
        }
    }
    check_streams(&node, &conns, &rooms, &last)?;
    for &conn in &conns {
        node.close(conn);
    }
    Ok(())
}

fn sent_room<'a>(steps: &[Step], id: &str, rooms: &[&'a str]) -> &'a str {
    let n: usize = id.trim_start_matches("p-").parse().unwrap();
    match steps[n] {
        Step::Publish(_, r) => rooms[r],
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn with_memory_stores_every_member_gets_every_message_once_in_order(steps in proptest::collection::vec(step(), 1..40)) {
        prop_assert_eq!(run_steps(&steps, None), Ok(()));
    }

    #[test]
    fn with_stores_that_answer_later_and_lose_deliveries_too(steps in proptest::collection::vec(step(), 1..40)) {
        let weather = Weather { max_delay: Duration::from_millis(2), drop: 0.2 };
        prop_assert_eq!(run_steps(&steps, Some(weather)), Ok(()));
    }
}

/// A broker that loses the delivery of seq 2 and fails its first history reads.
struct Flaky {
    inner: MemoryBroker,
    failures: std::sync::atomic::AtomicU32,
}

impl Broker for Flaky {
    fn start(&self, node: &NodeId, workers: usize, sink: Sink) {
        let relay: Sink = Arc::new(move |worker, what| {
            if let ToWorker::Deliver(message) = &what {
                if message.seq == 2 {
                    return;
                }
            }
            sink(worker, what);
        });
        self.inner.start(node, workers, relay);
    }

    fn subscribe(
        &self,
        room: &Arc<str>,
        worker: usize,
        since: store::Since,
        ticket: Ticket,
    ) -> Reply<Result<store::Replay, StoreError>> {
        self.inner.subscribe(room, worker, since, ticket)
    }

    fn unsubscribe(&self, room: &Arc<str>, worker: usize) {
        self.inner.unsubscribe(room, worker);
    }

    fn publish(
        &self,
        publication: Publication,
        dedup: Option<Dedup<'_>>,
        ticket: Ticket,
    ) -> Reply<Result<Position, PublishError>> {
        self.inner.publish(publication, dedup, ticket)
    }

    fn history(
        &self,
        room: &Arc<str>,
        after: u64,
        epoch: Option<&store::Epoch>,
        ticket: Ticket,
    ) -> Reply<Result<store::Replay, StoreError>> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Reply::Now(Err(StoreError::Unavailable("flaky".into())));
        }
        self.inner.history(room, after, epoch, ticket)
    }

    fn emit(&self, publication: Publication) {
        self.inner.emit(publication);
    }
}

#[test]
fn a_hole_whose_fill_fails_is_fetched_again_and_nothing_is_lost() {
    let broker = Flaky { inner: MemoryBroker::new(100, None), failures: 2.into() };
    let stores = Stores { broker: Arc::new(broker), presence: Arc::new(MemoryPresence::default()) };
    let mut node = Node::new(1, Some(stores));
    let a = node.open(0, "ann");
    node.send(a, join("chat:flaky", "j"));
    for i in 1..=3 {
        node.send(a, publish("chat:flaky", &format!("p{i}"), json!(i)));
    }
    node.settle(Duration::ZERO, SETTLE.1);
    assert_eq!(seqs(&node.envelopes(a), "chat:flaky"), [1], "2 was lost, 3 waits for it");
    // The tick tries the fill again: it fails once more, then history answers.
    let now = Instant::now();
    for step in 1..=3 {
        node.hub.on_tick(&mut node.locals[0], &mut node.out, now + FILL_STEP * step, None);
    }
    assert_eq!(seqs(&node.envelopes(a), "chat:flaky"), [1, 2, 3], "filled once the store answered");
    assert!(node.of_type(a, "error").is_empty(), "no gap to tell of");
}

/// Longer than the hub waits between two tries of a failed fill.
const FILL_STEP: Duration = Duration::from_millis(300);

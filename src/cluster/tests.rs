//! The publish script and the bridge against a real Redis (`HIBIKI_TEST_REDIS`, or the one
//! at 127.0.0.1:6379; each test under a key prefix of its own): batches mixing new,
//! repeated and reused ids, a batch across an epoch restart, holes when a batched `PUBLISH`
//! is lost.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;

use super::scripts::Script;
use super::wire::{self, Head};
use super::{ClusterConfig, ID_WINDOW};
use crate::hub::store::{
    Done, Epoch, Kind, NodeId, Publication, Reply, Since, Sink, Ticket, ToWorker, Waiter,
};
use crate::hub::{HubConfig, Stores};

fn url() -> String {
    std::env::var("HIBIKI_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn conn() -> redis::Connection {
    let url = url();
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at {url} (set HIBIKI_TEST_REDIS to another): {e}; start one with `redis-server --save '' --appendonly no`"
            )
        })
}

fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t:lib:{test}:{}:{nanos}:", std::process::id())
}

/// One message of a batch: its id key (`None`: no id), fingerprint, payload.
type Message<'a> = (Option<&'a str>, &'a str, &'a [u8]);

/// Runs the publish script on `room` under `prefix`, with `channel` (the room's when `None`).
fn publish(
    conn: &mut redis::Connection,
    prefix: &str,
    room: &str,
    channel: Option<&str>,
    epoch: &str,
    messages: &[Message<'_>],
) -> Vec<(i64, u64, String)> {
    let keys = super::keys::Keys::new(prefix);
    let lua = Script::Publish.lua();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(lua.source).arg(2 + messages.len()).arg(keys.meta(room)).arg(keys.stream(room));
    for (id, _, _) in messages {
        match id {
            Some(id) => cmd.arg(keys.publish_id(room, "u", id)),
            None => cmd.arg(keys.meta(room)),
        };
    }
    cmd.arg(channel.map_or_else(|| keys.channel(room), str::to_owned))
        .arg(epoch)
        .arg(1000)
        .arg(0)
        .arg(ID_WINDOW.as_millis() as u64);
    for (_, fingerprint, payload) in messages {
        cmd.arg(*fingerprint).arg(*payload);
    }
    let value: Value = cmd.query(conn).expect("the publish script runs");
    wire::array(&value, 0)
        .unwrap()
        .iter()
        .map(|a| {
            let a = wire::array(a, 3).unwrap();
            (wire::int(&a[0]).unwrap(), wire::uint(&a[1]).unwrap(), wire::text(&a[2]).unwrap().to_owned())
        })
        .collect()
}

/// The seqs in a room's stream (its entry ids `0-SEQ`).
fn stream_seqs(conn: &mut redis::Connection, prefix: &str, room: &str) -> Vec<u64> {
    let key = super::keys::Keys::new(prefix).stream(room);
    let value: Value = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(conn).unwrap();
    wire::array(&value, 0)
        .unwrap()
        .iter()
        .map(|e| wire::text(&wire::array(e, 2).unwrap()[0]).unwrap()[2..].parse().unwrap())
        .collect()
}

/// A subscriber of one channel, for what the script publishes.
struct Listener {
    pubsub: redis::Connection,
}

impl Listener {
    fn new(channel: &str) -> Self {
        let mut pubsub = conn();
        redis::cmd("SUBSCRIBE").arg(channel).exec(&mut pubsub).unwrap();
        pubsub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self { pubsub }
    }

    /// The next message's payload.
    fn next(&mut self) -> Vec<u8> {
        loop {
            let value = self.pubsub.recv_response().expect("a message within 5 s");
            let items = match value {
                Value::Array(items) | Value::Push { data: items, .. } => items,
                other => panic!("{other:?}"),
            };
            if wire::bytes(&items[0]).unwrap() == b"message" {
                return wire::bytes(&items[2]).unwrap().to_vec();
            }
        }
    }
}

#[test]
fn a_batch_mixing_new_repeated_and_reused_ids_numbers_the_new_ones_in_order() {
    let (prefix, room) = (prefix("mix"), "chat:mix");
    let mut c = conn();
    let mut listener = Listener::new(&super::keys::Keys::new(&prefix).channel(room));
    let answers = publish(
        &mut c,
        &prefix,
        room,
        None,
        "e1",
        &[
            (Some("a"), "fa", b"A"),
            (None, "", b"B"),
            (Some("a"), "fa", b"A"),
            (Some("a"), "fx", b"X"),
            (Some("b"), "fb", b"C:with:colons"),
        ],
    );
    let e = || "e1".to_string();
    assert_eq!(
        answers,
        [(2, 1, e()), (2, 2, e()), (0, 1, e()), (1, 1, e()), (2, 3, e())],
        "new, new, a repeat within the batch, the id reused for another message, new"
    );
    let message = listener.next();
    let (head, body) = wire::split(&message).unwrap();
    assert_eq!(head, Head::Batch { first: 1, count: 3, epoch: "e1" });
    assert_eq!(wire::parts(body, 3).unwrap(), [&b"A"[..], b"B", b"C:with:colons"]);
    assert_eq!(stream_seqs(&mut c, &prefix, room), [1, 2, 3]);

    // A batch of repeats only: the first answers, nothing numbered, nothing published.
    let answers =
        publish(&mut c, &prefix, room, None, "e1", &[(Some("b"), "fb", b"C"), (Some("a"), "fz", b"Z")]);
    assert_eq!(answers, [(0, 3, e()), (1, 1, e())]);
    // One new message: the one-message form.
    assert_eq!(publish(&mut c, &prefix, room, None, "e1", &[(Some("c"), "fc", b"D")]), [(2, 4, e())]);
    assert_eq!(listener.next(), b"4:e1:D", "nothing was published for the repeats");
    assert_eq!(stream_seqs(&mut c, &prefix, room), [1, 2, 3, 4]);
}

#[test]
fn a_batch_after_redis_lost_the_room_starts_a_new_epoch_and_repeats_keep_their_first_answer() {
    let (prefix, room) = (prefix("epoch"), "chat:epoch");
    let mut c = conn();
    let first = publish(&mut c, &prefix, room, None, "e1", &[(Some("a"), "fa", b"A"), (None, "", b"B")]);
    assert_eq!(first, [(2, 1, "e1".into()), (2, 2, "e1".into())]);
    // Redis lost the numbering (not the ids): the next batch is a new life.
    let keys = super::keys::Keys::new(&prefix);
    redis::cmd("DEL").arg(keys.meta(room)).exec(&mut c).unwrap();
    let answers = publish(
        &mut c,
        &prefix,
        room,
        None,
        "e2",
        &[(None, "", b"C"), (Some("a"), "fa", b"A"), (Some("b"), "fb", b"D")],
    );
    assert_eq!(
        answers,
        [(2, 1, "e2".into()), (0, 1, "e1".into()), (2, 2, "e2".into())],
        "numbered from 1 in the new epoch; the repeat answers its first seq and epoch"
    );
    assert_eq!(stream_seqs(&mut c, &prefix, room), [1, 2], "the old epoch's history is gone");
    let answers = publish(&mut c, &prefix, room, None, "e3", &[(None, "", b"E")]);
    assert_eq!(answers, [(2, 3, "e2".into())], "the epoch argument is for a new life only");
}

/// A node's broker on the test Redis, with what reaches its workers.
fn node(prefix: &str) -> (Stores, Receiver<ToWorker>) {
    let config = ClusterConfig::new([url()]).unwrap().prefix(prefix);
    let stores = super::stores(&config, &HubConfig::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let sink: Sink = Arc::new(move |_, what| {
        let _ = super::lock(&tx).send(what);
    });
    stores.broker.start(&NodeId::from("n1"), 1, sink);
    let started = Instant::now();
    while stores.broker.health().is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "not healthy: {:?}", stores.broker.health());
        std::thread::sleep(Duration::from_millis(10));
    }
    (stores, rx)
}

fn next(rx: &Receiver<ToWorker>) -> ToWorker {
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(what) => what,
        Err(RecvTimeoutError::Timeout) => panic!("nothing reached the worker within 5 s"),
        Err(RecvTimeoutError::Disconnected) => panic!("the sink is gone"),
    }
}

#[test]
fn a_lost_batched_publish_is_a_hole_fetched_before_what_follows() {
    let (prefix, room) = (prefix("hole"), "chat:hole");
    let (stores, rx) = node(&prefix);
    let name: Arc<str> = room.into();
    let ticket = Ticket { worker: 0, waiter: Waiter::Op(1) };
    assert!(matches!(stores.broker.subscribe(&name, 0, Since::Now, ticket), Reply::Later));
    match next(&rx) {
        ToWorker::Done(_, Done::Subscribed(Ok(replay))) => assert_eq!(replay.position.seq, 0),
        other => panic!("{other:?}"),
    }
    // Three messages numbered and stored in one call whose PUBLISH nobody hears (as when
    // the pub/sub connection missed it), then one more through the node.
    let payload = |n: u64| {
        wire::encode(&Publication::new(name.clone(), Kind::Message, "u".into(), serde_json::json!(n), 0))
    };
    let (p1, p2, p3) = (payload(1), payload(2), payload(3));
    let mut c = conn();
    let epoch = {
        let lost = [(None, "", &p1[..]), (None, "", &p2[..]), (None, "", &p3[..])];
        let answers = publish(&mut c, &prefix, room, Some("nobody"), "e1", &lost);
        assert_eq!(answers.iter().map(|a| a.1).collect::<Vec<_>>(), [1, 2, 3]);
        answers[0].2.clone()
    };
    let mut publication = Publication::new(name.clone(), Kind::Message, "u".into(), serde_json::json!(4), 0);
    publication.seq = 0;
    let ticket = Ticket { worker: 0, waiter: Waiter::Op(2) };
    assert!(matches!(stores.broker.publish(publication, None, ticket), Reply::Later));
    let mut delivered = Vec::new();
    let mut acked = None;
    while delivered.len() < 4 || acked.is_none() {
        match next(&rx) {
            ToWorker::Deliver(m) => {
                assert_eq!(m.epoch.as_ref().map(Epoch::as_str), Some(epoch.as_str()));
                delivered.push((m.seq, m.data.clone()));
            }
            ToWorker::Done(_, Done::Published(r)) => acked = Some(r.expect("published").seq),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(acked, Some(4));
    let want: Vec<(u64, serde_json::Value)> = (1..=4).map(|n| (n, serde_json::json!(n))).collect();
    assert_eq!(delivered, want, "the lost batch fetched from the stream, then what followed, in order");
}

#[test]
fn publishes_sent_together_through_the_node_are_numbered_in_order_with_their_answers() {
    let (prefix, room) = (prefix("node"), "chat:node");
    let (stores, rx) = node(&prefix);
    let name: Arc<str> = room.into();
    let n = 300u64;
    for i in 1..=n {
        let publication = Publication::new(name.clone(), Kind::Message, "u".into(), serde_json::json!(i), 0);
        let ticket = Ticket { worker: 0, waiter: Waiter::Op(i) };
        assert!(matches!(stores.broker.publish(publication, None, ticket), Reply::Later));
    }
    let mut seqs = vec![0; n as usize];
    for _ in 0..n {
        match next(&rx) {
            ToWorker::Done(Waiter::Op(i), Done::Published(r)) => {
                seqs[i as usize - 1] = r.expect("published").seq
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "numbered in the order they were sent");
    let mut c = conn();
    assert_eq!(stream_seqs(&mut c, &prefix, room), (1..=n).collect::<Vec<_>>());
}

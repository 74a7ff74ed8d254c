//! The app protocol on `/ws` (and `/sse`, `/api/publish`, `/metrics`) with real clients.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{Client, SEC, jwt_server, server, server_with, token};
use common::{Peer, eventually, http, status_of};
use hibiki::app::{ServeApp, ServeConfig};
use hibiki::hub::Broker;
use hibiki::hub::HubConfig;
use hibiki::hub::store::{
    Dedup, Epoch, MemoryBroker, NodeId, Position, Publication, PublishError, Replay, Reply, Since, Sink,
    StoreError, Ticket,
};
use hibiki::proto::MessageKind;
use hibiki::reactor::Server;
use serde_json::{Value, json};

#[test]
fn join_publish_and_ack_in_both_encodings() {
    let server = server();
    for msgpack in [false, true] {
        let mut a = Client::connect_at(&server, "/ws", &[], msgpack);
        let mut b = Client::connect_at(&server, "/ws", &[], msgpack);
        let room = if msgpack { "chat:mp" } else { "chat:json" };
        a.join(room);
        let presence = b.join(room);
        assert_eq!(presence["payload"]["users"].as_array().unwrap().len(), 2);
        let joined = a.expect("user_joined");
        assert_eq!(joined["payload"]["user"], b.user.as_str());
        let ack = a.request("publish", "p1", json!({"room": room, "data": {"text": "hello"}}));
        let epoch = presence["payload"]["epoch"].clone();
        assert_eq!(
            ack,
            json!({"id": "p1", "ok": true, "seq": 1, "epoch": epoch}),
            "the position: seq and epoch"
        );
        let from = a.user.clone();
        for client in [&mut a, &mut b] {
            let message = client.expect("message");
            assert_eq!(message["payload"]["seq"], 1);
            assert_eq!(message["payload"]["room"], room);
            assert_eq!(message["payload"]["from"], from.as_str());
            assert_eq!(message["payload"]["data"]["text"], "hello");
        }
        // echo: false leaves the sender out.
        a.request("publish", "p2", json!({"room": room, "data": 2, "echo": false}));
        assert_eq!(b.expect("message")["payload"]["seq"], 2);
        assert!(a.quiet("message", Duration::from_millis(200)));
    }
}

#[test]
fn malformed_envelopes_get_an_error_and_the_connection_lives() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    a.peer.send_text("{not json");
    let error = a.expect("error");
    assert_eq!(error["payload"]["code"], "bad_request");
    a.peer.send(MessageKind::Binary, b"\x81");
    assert_eq!(a.expect("error")["payload"]["code"], "bad_request", "wrong frame type");
    let ack = a.request("dance", "x1", json!({}));
    assert_eq!(ack["ok"], false);
    assert_eq!(ack["error"]["code"], "unknown_type");
    let ack = a.request("join", "x2", json!({"room": ""}));
    assert_eq!(ack["error"]["code"], "bad_request");
    let ack = a.request("typing", "x3", json!({"room": "never-joined"}));
    assert_eq!(ack["error"]["code"], "not_joined");
    a.send(json!({"type": "ping", "id": "x4"}));
    a.expect("pong");
    assert_eq!(a.expect("ack")["payload"]["ok"], true);
}

#[test]
fn a_retried_id_is_acked_again_without_publishing_twice() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    let mut b = Client::connect(&server, &[]);
    a.join("chat:retry");
    b.join("chat:retry");
    let publish = json!({"room": "chat:retry", "data": "once"});
    let first = a.request("publish", "same-id", publish.clone());
    let second = a.request("publish", "same-id", publish.clone());
    assert_eq!(first, second);
    assert_eq!(b.expect("message")["payload"]["data"], "once");
    assert!(b.quiet("message", Duration::from_millis(300)), "published once");
    // After a reconnect the same id is still recognised (the room remembers it).
    a.close();
    let mut a2 = Client::connect(&server, &[]);
    let _ = a2.user.clone();
    let again = a2.request("publish", "same-id", publish);
    assert_eq!(again["seq"], 2, "a new connection of an anonymous user is another user");
}

#[test]
fn presence_counts_a_user_with_two_tabs_once() {
    let server = jwt_server();
    let alice = token("alice", None, 3600);
    let bob = token("bob", None, 3600);
    let auth_a = format!("Bearer {alice}");
    let auth_b = format!("Bearer {bob}");
    let mut watcher = Client::connect(&server, &[("Authorization", &auth_b)]);
    watcher.join("chat:presence");
    let mut tab1 = Client::connect(&server, &[("Authorization", &auth_a)]);
    let mut tab2 = Client::connect(&server, &[("Authorization", &auth_a)]);
    assert_eq!(tab1.user, "alice");
    tab1.join("chat:presence");
    assert_eq!(watcher.expect("user_joined")["payload"]["user"], "alice");
    let presence = tab2.join("chat:presence");
    assert_eq!(presence["payload"]["users"], json!(["alice", "bob"]));
    assert!(watcher.quiet("user_joined", Duration::from_millis(200)), "the second tab is not a new member");
    tab1.close();
    assert!(watcher.quiet("user_left", Duration::from_millis(300)), "one tab is still there");
    tab2.close();
    assert_eq!(watcher.expect("user_left")["payload"]["user"], "alice");
}

#[test]
fn resume_after_a_disconnect_has_no_gap_and_no_duplicate() {
    let server = jwt_server();
    let auth = format!("Bearer {}", token("carol", None, 3600));
    let mut publisher = Client::connect(&server, &[("Authorization", &auth)]);
    let mut reader = Client::connect(&server, &[("Authorization", &auth)]);
    reader.join("chat:resume");
    for i in 1..=2 {
        publisher.request("publish", &format!("m{i}"), json!({"room": "chat:resume", "data": i}));
    }
    let mut last = 0;
    for _ in 0..2 {
        last = reader.expect("message")["payload"]["seq"].as_u64().unwrap();
    }
    assert_eq!(last, 2);
    reader.close();
    for i in 3..=5 {
        publisher.request("publish", &format!("m{i}"), json!({"room": "chat:resume", "data": i}));
    }
    let mut back = Client::connect(&server, &[("Authorization", &auth)]);
    back.send(json!({"type": "resume", "id": "r1", "payload": {"room": "chat:resume", "after": last}}));
    let mut seen = Vec::new();
    let mut acked = false;
    let mut published = false;
    while let Some(v) = back.next(Duration::from_millis(500)) {
        match v["type"].as_str() {
            Some("message") => seen.push(v["payload"]["seq"].as_u64().unwrap()),
            Some("ack") => {
                assert_eq!(v["payload"]["ok"], true, "{v}");
                acked = true;
            }
            _ => {}
        }
        if acked && !published {
            publisher.send(json!({"type": "publish", "payload": {"room": "chat:resume", "data": 6}}));
            published = true;
        }
    }
    assert!(acked);
    assert_eq!(seen, vec![3, 4, 5, 6], "missed ones replayed in order, then live, each once");
}

#[test]
fn resume_past_the_history_says_so() {
    let mut config = ServeConfig::default();
    config.hub = HubConfig::default();
    config.hub.history_size = 3;
    let server = server_with(config, 1);
    let mut a = Client::connect(&server, &[]);
    for i in 0..10 {
        a.request("publish", &format!("g{i}"), json!({"room": "chat:gap", "data": i}));
    }
    let ack = a.request("resume", "r", json!({"room": "chat:gap", "after": 2}));
    assert_eq!(ack["ok"], false);
    assert_eq!(ack["error"]["code"], "history_gap");
    let ack = a.request("resume", "r2", json!({"room": "chat:gap", "after": 7}));
    assert_eq!(ack["ok"], true);
}

#[test]
fn tick_rooms_deliver_one_batch_per_tick() {
    let server = server();
    let mut player = Client::connect(&server, &[]);
    let mut other = Client::connect(&server, &[]);
    player.join("game:1");
    other.join("game:1");
    // Three states in quick succession, two with the same key.
    other.send(json!({"type": "publish", "payload": {"room": "game:1", "data": {"x": 1}, "key": "pos"}}));
    other.send(json!({"type": "publish", "payload": {"room": "game:1", "data": {"x": 2}, "key": "pos"}}));
    other.send(json!({"type": "publish", "payload": {"room": "game:1", "data": {"hp": 9}}}));
    let mut messages = Vec::new();
    let mut batches = 0;
    while messages.len() < 2 {
        let batch = player.expect("batch");
        batches += 1;
        let items = batch["payload"].as_array().unwrap().clone();
        assert!(!items.is_empty());
        messages.extend(items.into_iter().filter(|m| m["type"] == "message"));
        assert!(batches < 20, "messages never arrived");
    }
    while messages.iter().all(|m| m["payload"]["data"] != json!({"hp": 9})) {
        let batch = player.expect("batch");
        messages
            .extend(batch["payload"].as_array().unwrap().iter().filter(|m| m["type"] == "message").cloned());
    }
    let data: Vec<Value> = messages.iter().map(|m| m["payload"]["data"].clone()).collect();
    let seqs: Vec<u64> = messages.iter().map(|m| m["payload"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    // The latest state is never lost; an older one with the same key may have been replaced.
    assert!(data.contains(&json!({"x": 2})) && data.contains(&json!({"hp": 9})), "{data:?}");
    assert!(player.quiet("message", Duration::from_millis(200)), "tick rooms never send single messages");
}

#[test]
fn jwt_accept_reject_expire_and_forbid() {
    let server = jwt_server();
    let addr = server.local_addr();
    let refused = Peer::try_connect(addr, "/ws", &[], false).err().expect("no token");
    assert_eq!(refused.status, 401);
    let refused =
        Peer::try_connect(addr, "/ws", &[("Authorization", "Bearer not.a.token")], false).err().unwrap();
    assert_eq!(refused.status, 401);
    let expired = format!("Bearer {}", token("dave", None, -3600));
    assert_eq!(
        Peer::try_connect(addr, "/ws", &[("Authorization", &expired)], false).err().unwrap().status,
        401
    );
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "eve", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    let path = format!("/ws?token={wrong_key}");
    assert_eq!(Peer::try_connect(addr, &path, &[], false).err().unwrap().status, 401);
    // A valid token in the query string, then in a cookie.
    let limited = token("frank", Some(vec!["chat:*"]), 3600);
    let mut frank = Client::connect_at(&server, &format!("/ws?token={limited}"), &[], false);
    assert_eq!(frank.user, "frank");
    let cookie = format!("token={limited}");
    let mut frank2 = Client::connect(&server, &[("Cookie", &cookie)]);
    assert_eq!(frank2.user, "frank");
    frank.join("chat:ok");
    let ack = frank.request("join", "j", json!({"room": "game:1"}));
    assert_eq!(ack["error"]["code"], "forbidden");
    let ack = frank2.request("join", "j", json!({"room": "user:someone-else"}));
    assert_eq!(ack["error"]["code"], "forbidden");
    let ack = frank2.request("publish", "p", json!({"room": "admin", "data": 1}));
    assert_eq!(ack["error"]["code"], "forbidden");
}

#[test]
fn direct_typing_and_read_receipts() {
    let server = jwt_server();
    let a_auth = format!("Bearer {}", token("ann", None, 3600));
    let b_auth = format!("Bearer {}", token("ben", None, 3600));
    let mut ann = Client::connect(&server, &[("Authorization", &a_auth)]);
    let mut ben = Client::connect(&server, &[("Authorization", &b_auth)]);
    let mut ben_tab = Client::connect(&server, &[("Authorization", &b_auth)]);
    let ack = ann.request("direct", "d1", json!({"user": "ben", "data": "psst"}));
    assert_eq!(ack["ok"], true);
    for tab in [&mut ben, &mut ben_tab] {
        let dm = tab.expect("message");
        assert_eq!(dm["payload"]["room"], "user:ben");
        assert_eq!(dm["payload"]["from"], "ann");
        assert_eq!(dm["payload"]["data"], "psst");
    }
    ann.join("chat:t");
    ben.join("chat:t");
    ann.send(json!({"type": "typing", "payload": {"room": "chat:t"}}));
    assert_eq!(ben.expect("user_typing")["payload"]["user"], "ann");
    ben.request("read", "r", json!({"room": "chat:t", "seq": 7}));
    let read = ann.expect("messages_read");
    assert_eq!(read["payload"], json!({"room": "chat:t", "user": "ben", "seq": 7}));
}

#[test]
fn sse_streams_a_room_and_resumes_from_last_event_id() {
    let server = jwt_server();
    let addr = server.local_addr();
    let publish = |data: i64| {
        let body = json!({"room": "news", "data": data}).to_string();
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        http(addr, request.as_bytes())
    };
    for i in 1..=3 {
        let answer = publish(i);
        assert_eq!(status_of(&answer), 200, "{answer}");
        assert!(answer.ends_with(&format!("\"seq\":{i}}}")), "{answer}");
    }
    let auth = token("sse", None, 3600);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    let request = format!("GET /sse?room=news&token={auth} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(SEC)).unwrap();
    let mut got = String::new();
    let mut chunk = [0u8; 4096];
    let mut published = false;
    for _ in 0..50 {
        if let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        if got.contains("id: 3\n") && !published {
            assert_eq!(status_of(&publish(4)), 200);
            published = true;
        }
        if got.contains("id: 4\n") {
            break;
        }
    }
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("Content-Type: text/event-stream"));
    assert!(!got.contains("id: 1\n"), "Last-Event-ID 1 was seen already");
    let ids: Vec<&str> = got.lines().filter(|l| l.starts_with("id: ")).collect();
    assert_eq!(ids, vec!["id: 2", "id: 3", "id: 4"], "{got}");
    assert!(got.contains("event: message\ndata: {"));
    // Without a token: 401; a bad API key: 401.
    assert_eq!(status_of(&http(addr, b"GET /sse?room=news HTTP/1.1\r\nHost: x\r\n\r\n")), 401);
    let bad =
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(status_of(&http(addr, bad)), 401);
}

#[test]
fn metrics_expose_the_counters() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    a.join("chat:m");
    a.request("publish", "p", json!({"room": "chat:m", "data": 1}));
    let handle = server.handle();
    assert!(eventually(SEC, || handle.stats().snapshot().messages_in >= 2));
    let metrics = http(server.local_addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&metrics), 200);
    for name in [
        "hibiki_connections 1",
        "hibiki_published_total 1",
        "hibiki_rooms ",
        "hibiki_history_messages 1",
        "hibiki_connections_closed_total{code=\"1000\"}",
        "hibiki_handshakes_rejected_total{cause=\"per_ip\"} 0",
        "hibiki_dropped_volatile_total 0",
        "hibiki_slow_consumer_closes_total 0",
        "hibiki_late_ticks_total",
        "hibiki_messages_in_total",
        "hibiki_bytes_out_total",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}

#[test]
fn big_rooms_stop_announcing_presence() {
    let mut config = ServeConfig::default();
    config.hub.presence_limit = 2;
    let server = server_with(config, 1);
    let mut a = Client::connect(&server, &[]);
    let mut b = Client::connect(&server, &[]);
    let mut c = Client::connect(&server, &[]);
    a.join("chat:big");
    let presence = b.join("chat:big");
    assert_eq!(presence["payload"]["count"], 2);
    assert_eq!(presence["payload"]["users"].as_array().unwrap().len(), 2);
    assert_eq!(a.expect("user_joined")["payload"]["user"], b.user.as_str());
    let presence = c.join("chat:big");
    assert_eq!(presence["payload"]["count"], 3);
    assert!(presence["payload"]["users"].is_null(), "past the limit: the count only");
    assert!(a.quiet("user_joined", Duration::from_millis(300)), "the third join is not announced");
    // Messages still reach everyone.
    c.request("publish", "p", json!({"room": "chat:big", "data": "hi"}));
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.expect("message")["payload"]["data"], "hi");
    }
}

#[test]
fn sse_streams_a_tick_room_too() {
    use std::io::{Read, Write};
    let server = jwt_server();
    let addr = server.local_addr();
    let auth = token("watcher", None, 3600);
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("GET /sse?room=game:sse&token={auth} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = String::new();
    let mut chunk = [0u8; 4096];
    let body = json!({"room": "game:sse", "data": "tick"}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-key\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..25 {
        if got.contains("retry:") && !got.contains("id: 1\n") {
            assert_eq!(status_of(&http(addr, request.as_bytes())), 200);
        }
        if let Ok(n) = stream.read(&mut chunk) {
            got.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        if got.contains("id: 1\n") {
            break;
        }
    }
    assert!(got.contains("id: 1\nevent: message\ndata: {"), "{got}");
}

/// A broker of one's own behind the seam: the in-memory one, with every call counted.
#[derive(Default)]
struct CountingBroker {
    inner: MemoryBroker,
    calls: Mutex<Vec<String>>,
}

impl CountingBroker {
    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Broker for CountingBroker {
    fn start(&self, node: &NodeId, workers: usize, sink: Sink) {
        self.note(format!("start {workers}"));
        self.inner.start(node, workers, sink);
    }
    fn subscribe(
        &self,
        room: &Arc<str>,
        worker: usize,
        since: Since,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        self.note(format!("subscribe {room}"));
        self.inner.subscribe(room, worker, since, ticket)
    }
    fn unsubscribe(&self, room: &Arc<str>, worker: usize) {
        self.note(format!("unsubscribe {room}"));
        self.inner.unsubscribe(room, worker)
    }
    fn publish(
        &self,
        publication: Publication,
        dedup: Option<Dedup<'_>>,
        ticket: Ticket,
    ) -> Reply<Result<Position, PublishError>> {
        self.note(format!("publish {}", publication.room));
        self.inner.publish(publication, dedup, ticket)
    }
    fn history(
        &self,
        room: &Arc<str>,
        after: u64,
        epoch: Option<&Epoch>,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        self.note(format!("history {room}"));
        self.inner.history(room, after, epoch, ticket)
    }
    fn emit(&self, publication: Publication) {
        self.note(format!("emit {} {}", publication.room, publication.kind.as_str()));
        self.inner.emit(publication)
    }
    fn kept(&self) -> Option<u64> {
        self.inner.kept()
    }
}

#[test]
fn room_state_goes_through_the_stores_seam() {
    let config = ServeConfig::default();
    let mut stores = hibiki::hub::Stores::memory(&config.hub);
    let broker = Arc::new(CountingBroker::default());
    stores.broker = broker.clone();
    let server = Server::builder()
        .bind(common::local())
        .threads(2)
        .start(ServeApp::with_stores(config, stores))
        .unwrap();
    let mut a = Client::connect(&server, &[]);
    let mut b = Client::connect(&server, &[]);
    a.join("chat:seam");
    b.join("chat:seam");
    let ack = a.request("publish", "p1", json!({"room": "chat:seam", "data": "hi"}));
    assert_eq!(ack["seq"], 1);
    assert_eq!(b.expect("message")["payload"]["data"], "hi");
    assert_eq!(broker.kept(), Some(1), "the message is in the broker's history");
    b.close();
    assert!(eventually(5 * SEC, || broker
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c == "unsubscribe chat:seam")));
    let calls = broker.calls.lock().unwrap().clone();
    for expected in ["start 2", "subscribe chat:seam", "publish chat:seam", "emit chat:seam user_joined"] {
        assert!(calls.iter().any(|c| c == expected), "{expected:?} not in {calls:?}");
    }
}

#[test]
fn a_tick_over_its_budget_serves_members_in_turn_and_loses_no_message() {
    let mut config = ServeConfig::default();
    // A tiny share of the period: after the first tick with 200 batches to write, the budget
    // falls to a few dozen members per tick and members take turns.
    config.hub.tick_share = 0.05;
    config.hub.presence_limit = 1;
    let server = server_with(config, 1);
    let mut members: Vec<Client> = (0..200).map(|_| Client::connect(&server, &[])).collect();
    for member in &mut members {
        member.join("game:turns");
    }
    let mut publisher = Client::connect(&server, &[]);
    for i in 0..10 {
        let ack = publisher.request("publish", &format!("t{i}"), json!({"room": "game:turns", "data": i}));
        assert_eq!(ack["ok"], true);
        // One publish per tick (50 ms here), so that several ticks have batches to write.
        std::thread::sleep(Duration::from_millis(60));
    }
    let want: Vec<u64> = (1..=10).collect();
    for member in &mut members {
        let mut seqs = Vec::new();
        while seqs.len() < want.len() {
            let batch = member.expect("batch");
            let items = batch["payload"].as_array().unwrap();
            seqs.extend(
                items
                    .iter()
                    .filter(|m| m["type"] == "message")
                    .map(|m| m["payload"]["seq"].as_u64().unwrap()),
            );
        }
        assert_eq!(seqs, want, "every message once, in order, whatever tick served it");
    }
    let metrics = http(server.local_addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let deferred: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hibiki_tick_deferred_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("hibiki_tick_deferred_total in /metrics");
    assert!(deferred > 0, "the budget bound and members took turns");
}

#[test]
fn a_tick_member_too_far_behind_is_closed_as_a_slow_consumer() {
    let server = Server::builder()
        .bind(common::local())
        .threads(1)
        .tick(Some(Duration::from_millis(20)))
        .soft_outbound_limit(16 << 10)
        // This reader only starts reading once everything is published: the close frame
        // must still be there for it then.
        .close_timeout(Duration::from_secs(60))
        .start(ServeApp::new(ServeConfig::default()))
        .unwrap();
    let mut slow = Client::connect(&server, &[]);
    slow.join("game:slow");
    let mut publisher = Client::connect(&server, &[]);
    // 40 MB of unkeyed messages: more than the kernel's buffers hold, so the member falls
    // behind its outbound budget and waits in the room's log; nothing is dropped for it.
    let data = "x".repeat(4096);
    for _ in 0..10_000 {
        publisher.send(json!({"type": "publish", "payload": {"room": "game:slow", "data": &data}}));
    }
    // Past 4,096 messages behind, it is closed as a slow consumer: what was not started is
    // dropped and 1008 comes next, counted in /metrics.
    assert_eq!(slow.peer.expect_close(), hibiki::proto::CloseCode::POLICY_VIOLATION);
    let handle = server.handle();
    assert!(eventually(5 * SEC, || handle.stats().snapshot().slow_consumer_closes == 1));
}

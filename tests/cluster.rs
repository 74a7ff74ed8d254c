//! Several nodes as one server through Redis: fan-out, presence, resume, events and tick
//! rooms across nodes (the shared Redis at 127.0.0.1:6379, a key prefix per test).

mod common;

use std::time::Duration;

use common::app::{Client, SEC, token};
use common::nodes;
use common::redis_server::{prefix, shared};
use hibiki::app::ServeApp;
use hibiki::reactor::Running;
use serde_json::{Value, json};

fn two_nodes(test: &str) -> (Running<ServeApp>, Running<ServeApp>) {
    let urls = [shared()];
    let prefix = prefix(test);
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let b = nodes::start(nodes::config(&urls, &prefix, "b"));
    (a, b)
}

fn jwt_config(urls: &[String], prefix: &str, node: &str) -> hibiki::app::ServeConfig {
    let mut config = nodes::config(urls, prefix, node);
    config.jwt_secret = Some(common::app::SECRET.into());
    config
}

fn seqs_of(client: &mut Client, room: &str, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let m = client.expect("message");
        if m["payload"]["room"] == room {
            seqs.push(m["payload"]["seq"].as_u64().unwrap());
        }
    }
    seqs
}

#[test]
fn messages_published_on_one_node_reach_members_on_both_in_seq_order() {
    let (a, b) = two_nodes("fanout");
    let mut on_a = Client::connect(&a, &[]);
    let mut on_b = Client::connect(&b, &[]);
    let mut on_b2 = Client::connect(&b, &[]);
    on_a.join("chat:x");
    on_b.join("chat:x");
    on_b2.join("chat:x");
    let mut publisher = Client::connect(&a, &[]);
    for i in 1..=50u64 {
        let ack = publisher.request("publish", &format!("p{i}"), json!({"room": "chat:x", "data": i}));
        assert_eq!((ack["ok"].clone(), ack["seq"].clone()), (json!(true), json!(i)), "{ack}");
    }
    let want: Vec<u64> = (1..=50).collect();
    for client in [&mut on_a, &mut on_b, &mut on_b2] {
        assert_eq!(seqs_of(client, "chat:x", 50), want);
        assert!(client.quiet("message", Duration::from_millis(200)), "each once");
    }
    // Publishing from the other node continues the same numbering.
    let mut publisher_b = Client::connect(&b, &[]);
    let ack = publisher_b.request("publish", "q", json!({"room": "chat:x", "data": "from b", "echo": false}));
    assert_eq!(ack["seq"], 51);
    assert_eq!(on_a.expect("message")["payload"]["data"], "from b");
    // A retry of an id through the other node answers the first seq, without a second message.
    let again =
        publisher_b.request("publish", "q", json!({"room": "chat:x", "data": "from b", "echo": false}));
    assert_eq!(again["seq"], 51);
    assert!(on_a.quiet("message", Duration::from_millis(300)));
}

#[test]
fn presence_counts_a_user_on_two_nodes_once_and_events_cross_nodes() {
    let urls = [shared()];
    let prefix = prefix("presence");
    let a = nodes::start(jwt_config(&urls, &prefix, "a"));
    let b = nodes::start(jwt_config(&urls, &prefix, "b"));
    let auth = |user: &str| format!("Bearer {}", token(user, None, 3600));
    let (ann, bob) = (auth("ann"), auth("bob"));
    let mut bob_b = Client::connect(&b, &[("Authorization", &bob)]);
    bob_b.join("chat:p");
    let mut ann_a = Client::connect(&a, &[("Authorization", &ann)]);
    ann_a.join("chat:p");
    assert_eq!(bob_b.expect("user_joined")["payload"]["user"], "ann");
    let mut ann_b = Client::connect(&b, &[("Authorization", &ann)]);
    let presence = ann_b.join("chat:p");
    assert_eq!(presence["payload"]["users"], json!(["ann", "bob"]));
    assert_eq!(presence["payload"]["count"], 2);
    assert!(bob_b.quiet("user_joined", Duration::from_millis(300)), "ann's second tab is not a new member");
    // Typing and read receipts, across nodes.
    ann_a.send(json!({"type": "typing", "payload": {"room": "chat:p"}}));
    assert_eq!(bob_b.expect("user_typing")["payload"]["user"], "ann");
    bob_b.request("read", "r", json!({"room": "chat:p", "seq": 3}));
    assert_eq!(ann_a.expect("messages_read")["payload"], json!({"room": "chat:p", "user": "bob", "seq": 3}));
    // echo: false across nodes: the sender only is left out (ann's other tab gets it).
    ann_a.request("publish", "e", json!({"room": "chat:p", "data": "quiet", "echo": false}));
    assert_eq!(ann_b.expect("message")["payload"]["data"], "quiet");
    assert_eq!(bob_b.expect("message")["payload"]["data"], "quiet");
    assert!(ann_a.quiet("message", Duration::from_millis(300)));
    // direct: every connection of the user, on every node.
    let ack = bob_b.request("direct", "d", json!({"user": "ann", "data": "psst"}));
    assert_eq!(ack["ok"], true);
    for tab in [&mut ann_a, &mut ann_b] {
        let dm = tab.expect("message");
        assert_eq!(
            (dm["payload"]["room"].clone(), dm["payload"]["data"].clone()),
            (json!("user:ann"), json!("psst"))
        );
    }
    // One tab leaves: ann is still there; the last one leaves: bob sees her go.
    ann_a.close();
    assert!(bob_b.quiet("user_left", Duration::from_millis(400)));
    ann_b.close();
    assert_eq!(bob_b.expect("user_left")["payload"]["user"], "ann");
}

#[test]
fn a_client_resumes_on_another_node_without_a_gap_or_a_duplicate() {
    let (a, b) = two_nodes("resume");
    let mut publisher = Client::connect(&a, &[]);
    let mut reader = Client::connect(&a, &[]);
    reader.join("chat:r");
    for i in 1..=5 {
        publisher.request("publish", &format!("m{i}"), json!({"room": "chat:r", "data": i}));
    }
    assert_eq!(seqs_of(&mut reader, "chat:r", 5), [1, 2, 3, 4, 5]);
    let epoch = reader.request("resume", "r0", json!({"room": "chat:r", "after": 5}))["epoch"].clone();
    reader.close();
    for i in 6..=9 {
        publisher.request("publish", &format!("m{i}"), json!({"room": "chat:r", "data": i}));
    }
    let mut back = Client::connect(&b, &[]);
    let ack = back.request("resume", "r", json!({"room": "chat:r", "after": 5, "epoch": epoch}));
    assert_eq!((ack["ok"].clone(), ack["seq"].clone(), ack["epoch"].clone()), (json!(true), json!(9), epoch));
    publisher.request("publish", "m10", json!({"room": "chat:r", "data": 10}));
    assert_eq!(seqs_of(&mut back, "chat:r", 5), [6, 7, 8, 9, 10]);
    assert!(back.quiet("message", Duration::from_millis(200)));
    // Another epoch is a gap.
    let mut other = Client::connect(&b, &[]);
    let ack = other.request("resume", "r", json!({"room": "chat:r", "after": 5, "epoch": "elsewhere"}));
    assert_eq!(ack["error"]["code"], "history_gap", "{ack}");
}

#[test]
fn tick_rooms_batch_messages_published_on_another_node() {
    let (a, b) = two_nodes("tick");
    let mut player_a = Client::connect(&a, &[]);
    let mut player_b = Client::connect(&b, &[]);
    player_a.join("game:1");
    player_b.join("game:1");
    for i in 0..5 {
        player_a.send(json!({"type": "publish", "payload": {"room": "game:1", "data": {"i": i}}}));
    }
    for player in [&mut player_a, &mut player_b] {
        let mut seqs = Vec::new();
        while seqs.len() < 5 {
            let batch = player.expect("batch");
            seqs.extend(
                batch["payload"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["type"] == "message")
                    .map(|m| m["payload"]["seq"].as_u64().unwrap()),
            );
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert!(player.quiet("message", Duration::from_millis(100)), "tick rooms send batches only");
    }
}

#[test]
fn rooms_without_members_on_a_node_are_not_subscribed_there() {
    let urls = [shared()];
    let prefix = prefix("interest");
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let mut conn = redis::Client::open(urls[0].as_str()).unwrap().get_connection().unwrap();
    let channel = format!("{prefix}{{chat:i}}");
    let subscribers = |conn: &mut redis::Connection| -> i64 {
        let v: Vec<(String, i64)> = redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query(conn).unwrap();
        v[0].1
    };
    assert_eq!(subscribers(&mut conn), 0);
    let mut member = Client::connect(&a, &[]);
    member.join("chat:i");
    assert_eq!(subscribers(&mut conn), 1, "subscribed before the join is acked");
    member.request("leave", "l", json!({"room": "chat:i"}));
    assert!(
        common::eventually(2 * SEC, || subscribers(&mut conn) == 0),
        "unsubscribed after the last member left"
    );
    let _: Value = json!(null);
}

#[test]
fn the_publish_api_and_sse_streams_work_across_nodes() {
    use std::io::{Read, Write};
    let (a, b) = two_nodes("api");
    let publish = |data: i64| {
        let body = json!({"room": "news", "data": data}).to_string();
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-key\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        common::http(a.local_addr(), request.as_bytes())
    };
    for i in 1..=3 {
        let answer = publish(i);
        assert_eq!(common::status_of(&answer), 200, "{answer}");
        assert!(answer.contains(&format!("\"seq\":{i}")), "{answer}");
    }
    // An SSE stream on the other node, resuming after 1.
    let mut stream = std::net::TcpStream::connect(b.local_addr()).unwrap();
    stream.write_all(b"GET /sse?room=news HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut got, mut chunk, mut published) = (String::new(), [0u8; 4096], false);
    for _ in 0..50 {
        if let Ok(n) = stream.read(&mut chunk) {
            got.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        if got.contains("id: 3\n") && !published {
            assert_eq!(common::status_of(&publish(4)), 200);
            published = true;
        }
        if got.contains("id: 4\n") {
            break;
        }
    }
    let ids: Vec<&str> = got.lines().filter(|l| l.starts_with("id: ")).collect();
    assert_eq!(ids, ["id: 2", "id: 3", "id: 4"], "{got}");
}

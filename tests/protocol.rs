//! The contract of docs/protocol.md where it is easy to get wrong: subprotocol choice, ids,
//! exactly one ack, retries against reuse, resume as a join, the room limit, and what the
//! document decides for closing, `echo: false`, `/sse` and `/api/publish`.

mod common;

use std::time::Duration;

use common::app::{Client, SEC, jwt_server, server, server_with, token};
use common::{Peer, http, status_of};
use hibiki::app::ServeConfig;
use hibiki::proto::Event;
use serde_json::{Value, json};

fn bearer(user: &str) -> String {
    format!("Bearer {}", token(user, None, 3600))
}

/// The next text frame, as it came.
fn raw_text(peer: &mut Peer) -> String {
    loop {
        match peer.next_event(5 * SEC).expect("a frame") {
            Event::Text(t) => return String::from_utf8(t.to_vec()).unwrap(),
            Event::Ping(_) | Event::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[test]
fn the_first_protocol_the_client_offers_that_the_server_knows_wins() {
    let server = server();
    for (offer, text) in [
        (["hibiki.v1.json", "hibiki.v1.msgpack"], true),
        (["hibiki.v1.msgpack", "hibiki.v1.json"], false),
        (["chat.other", "hibiki.v1.msgpack"], false),
    ] {
        let mut peer = Peer::try_connect_with(server.local_addr(), "/ws", &[], false, &offer).unwrap();
        let welcome = peer.next_event(5 * SEC).expect("welcome");
        assert_eq!(matches!(welcome, Event::Text(_)), text, "{offer:?} gives {welcome:?}");
        assert_eq!(matches!(welcome, Event::Binary(_)), !text, "{offer:?}");
    }
}

#[test]
fn any_string_or_number_is_an_id_and_comes_back_exactly_as_sent() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    for id in ["-1", "1.5", "1000.0", "0", "18446744073709551615", "\"\"", "\"x y\""] {
        a.peer.send_text(&format!(r#"{{"type":"join","id":{id},"payload":{{"room":"chat:ids"}}}}"#));
        let mut ack = raw_text(&mut a.peer);
        while !ack.starts_with(r#"{"type":"ack""#) {
            ack = raw_text(&mut a.peer);
        }
        assert!(ack.contains(&format!(r#""id":{id},"ok":true"#)), "{id}: {ack}");
    }
    // MessagePack: a negative and a float id, echoed as numbers of the same kind.
    let mut m = Client::connect_at(&server, "/ws", &[], true);
    for id in [json!(-7), json!(2.5)] {
        m.send(json!({"type": "ping", "id": id}));
        m.expect("pong");
        let ack = m.expect("ack");
        assert_eq!(ack["payload"]["id"], id);
        assert_eq!(ack["id"], id);
    }
}

#[test]
fn every_message_with_an_id_gets_exactly_one_ack() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    for (i, envelope) in [
        json!({"id": "no-type", "payload": {}}),
        json!({"type": 5, "id": "number-type"}),
        json!({"type": ["join"], "id": "array-type"}),
        json!({"type": "join", "id": "string-payload", "payload": "chat:x"}),
        json!({"type": "publish", "id": "array-payload", "payload": [1, 2]}),
        json!({"type": "resume", "id": "no-after", "payload": {"room": "chat:x"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = envelope["id"].clone();
        a.send(envelope);
        let ack = a.expect("ack");
        assert_eq!(ack["payload"]["id"], id, "case {i}");
        assert_eq!(ack["payload"]["ok"], false, "case {i}");
        assert_eq!(ack["payload"]["error"]["code"], "bad_request", "case {i}");
        assert!(a.quiet("ack", Duration::from_millis(50)), "one ack only, case {i}");
    }
    // The same through MessagePack.
    let mut m = Client::connect_at(&server, "/ws", &[], true);
    m.send(json!({"id": 9, "payload": null}));
    let ack = m.expect("ack");
    assert_eq!((ack["payload"]["id"].clone(), ack["payload"]["ok"].clone()), (json!(9), json!(false)));
    // An id that is neither a string nor a number cannot be acked: an `error` says why.
    a.send(json!({"type": "ping", "id": {"n": 1}}));
    let error = a.expect("error");
    assert_eq!(error["payload"]["code"], "bad_request");
}

#[test]
fn an_id_reused_for_another_message_is_refused_not_taken_for_a_retry() {
    let server = jwt_server();
    let auth = bearer("dora");
    let mut reader = Client::connect(&server, &[("Authorization", &bearer("eve"))]);
    reader.join("chat:reuse");
    let mut a = Client::connect(&server, &[("Authorization", &auth)]);
    let first = a.request("publish", "7", json!({"room": "chat:reuse", "data": "one"}));
    assert_eq!(first["seq"], 1);
    // The same id, another message, on the same connection.
    let reused = a.request("publish", "7", json!({"room": "chat:reuse", "data": "two"}));
    assert_eq!((reused["ok"].clone(), reused["error"]["code"].clone()), (json!(false), json!("id_reused")));
    // And on a new connection of the same user, as after a reconnect.
    a.close();
    let mut again = Client::connect(&server, &[("Authorization", &auth)]);
    let reused = again.request("publish", "7", json!({"room": "chat:reuse", "data": "three"}));
    assert_eq!(reused["error"]["code"], "id_reused", "{reused}");
    assert_eq!(reused["error"]["seq"], 1, "the seq the id's first message got");
    // A true retry (on another connection, since this one used the id for "three") still
    // gets the first answer.
    let mut third = Client::connect(&server, &[("Authorization", &auth)]);
    let retry = third.request("publish", "7", json!({"room": "chat:reuse", "data": "one"}));
    assert_eq!((retry["ok"].clone(), retry["seq"].clone()), (json!(true), json!(1)));
    assert_eq!(reader.expect("message")["payload"]["data"], "one");
    assert!(reader.quiet("message", Duration::from_millis(300)), "nothing else was published");
}

#[test]
fn resume_is_announced_like_a_join_and_its_ack_says_whether_the_connection_is_joined() {
    let server = jwt_server();
    let mut watcher = Client::connect(&server, &[("Authorization", &bearer("fay"))]);
    watcher.join("chat:back");
    watcher.request("publish", "w1", json!({"room": "chat:back", "data": 1}));
    let mut back = Client::connect(&server, &[("Authorization", &bearer("gil"))]);
    back.send(json!({"type": "resume", "id": "r", "payload": {"room": "chat:back", "after": 0}}));
    let presence = back.expect("presence");
    assert_eq!(presence["payload"]["users"], json!(["fay", "gil"]));
    let ack = back.expect("ack");
    let p = &ack["payload"];
    assert_eq!(
        (p["ok"].clone(), p["seq"].clone(), p["joined"].clone()),
        (json!(true), json!(1), json!(true)),
        "{ack}"
    );
    assert_eq!(p["epoch"], presence["payload"]["epoch"], "the ack and presence name the room's epoch");
    assert!(p["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(back.expect("message")["payload"]["seq"], 1, "the replay follows the ack");
    assert_eq!(watcher.expect("user_joined")["payload"]["user"], "gil");
    back.request("leave", "l", json!({"room": "chat:back"}));
    assert_eq!(watcher.expect("user_left")["payload"]["user"], "gil");

    // Refused: not joined.
    let limited = format!("Bearer {}", token("hal", Some(vec!["chat:open"]), 3600));
    let mut hal = Client::connect(&server, &[("Authorization", &limited)]);
    let ack = hal.request("resume", "r", json!({"room": "chat:back", "after": 0}));
    assert_eq!((ack["error"]["code"].clone(), ack["joined"].clone()), (json!("forbidden"), json!(false)));
}

#[test]
fn a_resume_past_history_is_a_gap_but_joins_and_replays_what_is_left() {
    let mut config = ServeConfig::default();
    config.hub.history_size = 3;
    let server = server_with(config, 1);
    let mut a = Client::connect(&server, &[]);
    for i in 1..=6 {
        a.request("publish", &format!("p{i}"), json!({"room": "chat:gap", "data": i}));
    }
    let mut b = Client::connect(&server, &[]);
    b.send(json!({"type": "resume", "id": "r", "payload": {"room": "chat:gap", "after": 1}}));
    let ack = b.expect("ack");
    let p = &ack["payload"];
    assert_eq!((p["ok"].clone(), p["joined"].clone()), (json!(false), json!(true)), "{ack}");
    assert_eq!(p["error"]["code"], "history_gap");
    assert_eq!((p["error"]["oldest"].clone(), p["error"]["seq"].clone()), (json!(4), json!(6)));
    let replayed: Vec<Value> = (0..3).map(|_| b.expect("message")["payload"]["seq"].clone()).collect();
    assert_eq!(replayed, [json!(4), json!(5), json!(6)]);
    // Live delivery continues after the replay.
    a.request("publish", "p7", json!({"room": "chat:gap", "data": 7}));
    assert_eq!(b.expect("message")["payload"]["seq"], 7);
    // A position the room never reached (an earlier life of it) is a gap too.
    let mut c = Client::connect(&server, &[]);
    let ack = c.request("resume", "r", json!({"room": "chat:gap", "after": 99}));
    assert_eq!((ack["error"]["code"].clone(), ack["joined"].clone()), (json!("history_gap"), json!(true)));
}

#[test]
fn a_connection_joins_256_rooms_besides_its_own() {
    let server = server_with(ServeConfig::default(), 1);
    let mut a = Client::connect(&server, &[]);
    for i in 0..256 {
        a.send(json!({"type": "join", "id": i, "payload": {"room": format!("chat:{i}")}}));
    }
    let mut ok = 0;
    while ok < 256 {
        let ack = a.expect("ack");
        assert_eq!(ack["payload"]["ok"], true, "{ack}");
        ok += 1;
    }
    let over = a.request("join", "over", json!({"room": "chat:256"}));
    assert_eq!(over["error"]["code"], "too_many_rooms");
    // The connection's own room still works: direct messages reach it.
    let me = a.user.clone();
    a.request("direct", "d", json!({"user": me, "data": "to myself"}));
    assert_eq!(a.expect("message")["payload"]["data"], "to myself");
}

#[test]
fn closing_a_connection_leaves_its_rooms() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    let mut b = Client::connect(&server, &[]);
    a.join("chat:bye");
    b.join("chat:bye");
    let gone = b.user.clone();
    b.close();
    assert_eq!(a.expect("user_left")["payload"]["user"], gone.as_str());
    let mut c = Client::connect(&server, &[]);
    assert_eq!(c.join("chat:bye")["payload"]["count"], 2, "a and c");
}

#[test]
fn echo_false_leaves_out_the_sending_connection_only() {
    let server = jwt_server();
    let auth = bearer("ivy");
    let mut tab1 = Client::connect(&server, &[("Authorization", &auth)]);
    let mut tab2 = Client::connect(&server, &[("Authorization", &auth)]);
    tab1.join("chat:tabs");
    tab2.join("chat:tabs");
    tab1.request("publish", "e", json!({"room": "chat:tabs", "data": "quiet", "echo": false}));
    assert_eq!(tab2.expect("message")["payload"]["data"], "quiet", "the user's other tab gets it");
    assert!(tab1.quiet("message", Duration::from_millis(300)), "the sender does not");
}

#[test]
fn not_joined_answers_leave_typing_and_read_for_a_room_not_joined() {
    let server = server();
    let mut a = Client::connect(&server, &[]);
    for (kind, payload) in [
        ("leave", json!({"room": "chat:no"})),
        ("typing", json!({"room": "chat:no"})),
        ("read", json!({"room": "chat:no", "seq": 1})),
    ] {
        let ack = a.request(kind, kind, payload);
        assert_eq!(ack["error"]["code"], "not_joined", "{kind}");
    }
    // Publishing needs no membership.
    assert_eq!(a.request("publish", "p", json!({"room": "chat:no", "data": 1}))["ok"], true);
}

#[test]
fn sse_and_the_publish_api_answer_with_the_documented_statuses() {
    let server = jwt_server();
    let addr = server.local_addr();
    let limited = token("jo", Some(vec!["chat:mine"]), 3600);
    let ok = token("jo", None, 3600);
    let get =
        |target: &str| status_of(&http(addr, format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()));
    assert_eq!(get(&format!("/sse?token={ok}")), 400, "no room");
    assert_eq!(get(&format!("/sse?room=&token={ok}")), 400, "an empty room");
    assert_eq!(get(&format!("/sse?room=chat:other&token={limited}")), 403, "a room the token does not allow");
    assert_eq!(get("/sse?room=chat:mine"), 401, "no token");
    assert_eq!(get("/sse?room=chat:mine&token=garbage"), 401, "a bad token");
    let post = |key: &str, body: &str| {
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        http(addr, request.as_bytes())
    };
    assert_eq!(status_of(&post("api-key", r#"{"room":"news","data":1}"#)), 200);
    assert_eq!(status_of(&post("wrong", r#"{"room":"news","data":1}"#)), 401);
    assert_eq!(status_of(&post("api-key", "not json")), 400);
    assert_eq!(status_of(&post("api-key", r#"{"data":1}"#)), 400, "no room");
    let get_api = http(addr, b"GET /api/publish HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&get_api), 405);
    assert!(get_api.to_ascii_lowercase().contains("allow: post"), "{get_api}");
    // Without --api-key the API is off.
    let plain = server_with(ServeConfig::default(), 1);
    let body = r#"{"room":"news","data":1}"#;
    let request =
        format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(status_of(&http(plain.local_addr(), request.as_bytes())), 403);
}

#[test]
fn a_room_with_no_members_and_no_history_starts_its_numbering_over() {
    let mut config = ServeConfig::default();
    config.hub.history_ttl = Some(Duration::from_millis(200));
    let server = server_with(config, 1);
    let mut a = Client::connect(&server, &[]);
    a.join("chat:fresh");
    for i in 1..=3 {
        assert_eq!(
            a.request("publish", &format!("p{i}"), json!({"room": "chat:fresh", "data": i}))["seq"],
            i
        );
    }
    a.request("leave", "l", json!({"room": "chat:fresh"}));
    // Still remembered while its history lasts...
    assert_eq!(a.request("publish", "p4", json!({"room": "chat:fresh", "data": 4}))["seq"], 4);
    std::thread::sleep(Duration::from_millis(400));
    // ...forgotten once that is gone and nobody is there: the next member starts the room over.
    a.request("join", "j2", json!({"room": "chat:fresh"}));
    a.request("leave", "l2", json!({"room": "chat:fresh"}));
    assert_eq!(a.request("publish", "p5", json!({"room": "chat:fresh", "data": 5}))["seq"], 1);
    let ack = a.request("resume", "r", json!({"room": "chat:fresh", "after": 4}));
    assert_eq!(ack["error"]["code"], "history_gap", "a position from the room's earlier life");
}

#[test]
fn every_metrics_series_is_documented_and_every_documented_one_exists() {
    let server = server();
    let text = http(server.local_addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let served: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# HELP ")).filter_map(|l| l.split(' ').next()).collect();
    let doc = include_str!("../docs/protocol.md");
    let section = doc.split("## Metrics").nth(1).expect("docs/protocol.md has a Metrics section");
    let documented: std::collections::BTreeSet<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(|name| name.split('{').next().unwrap_or(name))
        .collect();
    assert!(!served.is_empty());
    assert_eq!(served, documented, "/metrics against docs/protocol.md");
}

//! Redis faults under a cluster of nodes: killed and restarted (with and without
//! persistence), paused, unreachable; and the cost of a publish in Redis commands. Each
//! test runs its own `redis-server` on a free port.

mod common;

use std::time::{Duration, Instant};

use common::app::{Client, SEC};
use common::nodes;
use common::redis_server::{RedisServer, command_calls, prefix};
use serde_json::{Value, json};

/// Publishes `data` under `id` until an ack says ok (retrying a failed one, as a client
/// does); the seq, and how long each failed attempt took to be answered.
fn publish_until_ok(
    client: &mut Client,
    room: &str,
    id: &str,
    data: Value,
    failures: &mut Vec<Duration>,
) -> u64 {
    loop {
        let sent = Instant::now();
        let ack = client.request("publish", id, json!({"room": room, "data": data}));
        if ack["ok"] == true {
            return ack["seq"].as_u64().unwrap();
        }
        assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
        failures.push(sent.elapsed());
        if failures.len() % 50 == 1 {
            eprintln!("{id}: {ack}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every message of `room` a client got until seq `last`: its seqs in arrival order.
fn received(client: &mut Client, room: &str, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let Some(v) = client.next(5 * SEC) else { panic!("{room}: stopped after {seqs:?}") };
        if v["type"] == "message" && v["payload"]["room"] == room {
            seqs.push(v["payload"]["seq"].as_u64().unwrap());
        }
        assert!(v["type"] != "error", "{v}");
    }
    seqs
}

#[test]
fn redis_killed_and_restarted_with_aof_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start(true);
    let urls = [redis.url()];
    let prefix = prefix("aof");
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let b = nodes::start(nodes::config(&urls, &prefix, "b"));
    let mut on_a = Client::connect(&a, &[]);
    let mut on_b = Client::connect(&b, &[]);
    on_a.join("chat:aof");
    on_b.join("chat:aof");
    let mut publisher = Client::connect(&a, &[]);
    let mut failures = Vec::new();
    for i in 1..=20u64 {
        assert_eq!(
            publish_until_ok(&mut publisher, "chat:aof", &format!("m{i}"), json!(i), &mut failures),
            i
        );
    }
    redis.kill();
    let down = Instant::now();
    // While Redis is down: failed acks within 100 ms, /healthz 503 with the reason within 1 s,
    // local volatile traffic goes on.
    let sent = Instant::now();
    let ack = publisher.request("publish", "m21", json!({"room": "chat:aof", "data": 21}));
    assert_eq!(
        (ack["ok"].clone(), ack["error"]["code"].clone()),
        (json!(false), json!("unavailable")),
        "{ack}"
    );
    assert!(sent.elapsed() < Duration::from_millis(100), "answered in {:?}", sent.elapsed());
    assert!(common::eventually(SEC, || nodes::health(a.local_addr()).0 == 503));
    assert!(down.elapsed() < Duration::from_millis(1500), "health noticed in {:?}", down.elapsed());
    let (_, body) = nodes::health(a.local_addr());
    assert!(body.contains("redis"), "{body}");
    on_a.send(json!({"type": "publish", "payload": {"room": "chat:aof", "data": "v", "volatile": true}}));
    let mut seen_a = Vec::new();
    loop {
        let m = on_a.expect("message");
        match m["payload"]["seq"].as_u64().unwrap() {
            0 => break assert_eq!(m["payload"]["data"], "v"),
            seq => seen_a.push(seq),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    for i in 21..=40u64 {
        assert_eq!(
            publish_until_ok(&mut publisher, "chat:aof", &format!("m{i}"), json!(i), &mut failures),
            i
        );
    }
    assert!(
        failures.iter().all(|d| *d < Duration::from_millis(600)),
        "every failure was answered in time: {failures:?}"
    );
    nodes::wait_healthy(a.local_addr(), 5 * SEC);
    let want: Vec<u64> = (1..=40).collect();
    seen_a.extend(received(&mut on_a, "chat:aof", 40));
    assert_eq!(seen_a, want, "every message once, in order, none lost");
    assert_eq!(received(&mut on_b, "chat:aof", 40), want);
    assert!(on_b.quiet("message", Duration::from_millis(200)));
}

#[test]
fn without_persistence_members_learn_of_the_new_epoch_instead_of_a_silent_hole() {
    let mut redis = RedisServer::start(false);
    let urls = [redis.url()];
    let prefix = prefix("noaof");
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let b = nodes::start(nodes::config(&urls, &prefix, "b"));
    let mut on_a = Client::connect(&a, &[]);
    let mut on_b = Client::connect(&b, &[]);
    on_a.join("chat:lost");
    on_b.join("chat:lost");
    let mut publisher = Client::connect(&a, &[]);
    let mut failures = Vec::new();
    let mut old_epoch = Value::Null;
    for i in 1..=5u64 {
        publish_until_ok(&mut publisher, "chat:lost", &format!("m{i}"), json!(i), &mut failures);
    }
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(received(client, "chat:lost", 5), [1, 2, 3, 4, 5]);
    }
    let ack = publisher.request("resume", "r0", json!({"room": "chat:lost", "after": 5}));
    old_epoch.clone_from(&ack["epoch"]);
    redis.restart();
    nodes::wait_healthy(a.local_addr(), 5 * SEC);
    nodes::wait_healthy(b.local_addr(), 5 * SEC);
    let seq = publish_until_ok(&mut publisher, "chat:lost", "after", json!("new life"), &mut failures);
    assert_eq!(seq, 1, "numbering started over");
    for client in [&mut on_a, &mut on_b] {
        let gap = client.expect("error");
        assert_eq!(gap["payload"]["code"], "history_gap", "{gap}");
        assert!(gap["payload"]["epoch"].is_string() && gap["payload"]["epoch"] != old_epoch, "{gap}");
        let m = client.expect("message");
        assert_eq!(
            (m["payload"]["seq"].clone(), m["payload"]["data"].clone()),
            (json!(1), json!("new life"))
        );
    }
    let mut late = Client::connect(&b, &[]);
    let ack = late.request("resume", "r", json!({"room": "chat:lost", "after": 5, "epoch": old_epoch}));
    assert_eq!(ack["error"]["code"], "history_gap", "{ack}");
}

#[test]
fn a_paused_redis_never_stalls_the_sockets() {
    let redis = RedisServer::start(false);
    let urls = [redis.url()];
    let a = nodes::start(nodes::config(&urls, &prefix("pause"), "a"));
    let mut member = Client::connect(&a, &[]);
    member.join("chat:slow");
    let mut echo = common::Peer::connect(a.local_addr(), "/echo");
    let round_trip = |echo: &mut common::Peer| {
        let sent = Instant::now();
        echo.send_text("ping");
        match echo.recv() {
            hibiki::proto::Event::Text(t) => assert_eq!(&t[..], b"ping"),
            other => panic!("{other:?}"),
        }
        sent.elapsed()
    };
    round_trip(&mut echo);
    let mut conn = redis.conn();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("ALL").query(&mut conn).unwrap();
    let paused = Instant::now();
    // A publish waits on Redis; the socket does not.
    member.send(json!({"type": "publish", "id": "p", "payload": {"room": "chat:slow", "data": 1}}));
    let mut worst = Duration::ZERO;
    while paused.elapsed() < Duration::from_millis(1200) {
        worst = worst.max(round_trip(&mut echo));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(worst < Duration::from_millis(50), "/echo took {worst:?} while Redis was paused");
    let ack = member.expect("ack");
    assert_eq!(ack["payload"]["error"]["code"], "unavailable", "the publish timed out: {ack}");
    // After the pause everything works again.
    std::thread::sleep(Duration::from_millis(400));
    nodes::wait_healthy(a.local_addr(), 5 * SEC);
    let ack = member.request("publish", "p2", json!({"room": "chat:slow", "data": 2}));
    assert_eq!(ack["ok"], true, "{ack}");
}

#[test]
fn a_node_without_redis_answers_unavailable_at_once_and_serves_the_rest() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let urls = [format!("redis://127.0.0.1:{port}/")];
    let config = nodes::config(&urls, "t:none:", "a");
    let server = hibiki::reactor::Server::builder()
        .bind(common::local())
        .threads(1)
        .start(hibiki::app::ServeApp::new(config))
        .unwrap();
    let (status, body) = nodes::health(server.local_addr());
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}")), "the reason names the server: {body}");
    let mut client = Client::connect(&server, &[]);
    for (kind, payload) in [
        ("join", json!({"room": "chat:n"})),
        ("publish", json!({"room": "chat:n", "data": 1})),
        ("resume", json!({"room": "chat:n", "after": 3})),
    ] {
        let sent = Instant::now();
        let ack = client.request(kind, kind, payload);
        assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
        assert!(sent.elapsed() < Duration::from_millis(100), "{kind} answered in {:?}", sent.elapsed());
    }
    let body = json!({"room": "news", "data": 1}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-key\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = common::http(server.local_addr(), request.as_bytes());
    assert_eq!(common::status_of(&answer), 503, "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    let mut echo = common::Peer::connect(server.local_addr(), "/echo");
    echo.send_text("still here");
    assert!(matches!(echo.recv(), hibiki::proto::Event::Text(t) if &t[..] == b"still here"));
}

#[test]
fn numbered_publishes_cost_at_most_one_redis_command_each() {
    let redis = RedisServer::start(false);
    let urls = [redis.url()];
    let a = nodes::start(nodes::config(&urls, &prefix("cost"), "a"));
    // Not a member: the acks are all it gets.
    let mut member = Client::connect(&a, &[]);
    // Its own room's join (at open) must be done before counting: a join acked after it,
    // through the same pipeline, says so.
    member.request("join", "warm", json!({"room": "chat:warm"}));
    let mut conn = redis.conn();
    let before = command_calls(&mut conn);
    let n = 200u64;
    for i in 1..=n {
        member.send(json!({"type": "publish", "id": i, "payload": {"room": "chat:cost", "data": i}}));
    }
    let mut seqs: Vec<u64> = (0..n)
        .map(|_| {
            let ack = member.expect("ack");
            assert_eq!(ack["payload"]["ok"], true, "{ack}");
            ack["payload"]["seq"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let after = command_calls(&mut conn);
    let delta = |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    // The publishes pending at a flush go as one script call: one call per publish at most.
    let calls = delta("evalsha");
    assert!((1..=n).contains(&calls), "{calls} script calls for {n} publishes: {after:?}");
    assert_eq!(delta("eval"), 0);
    // One PUBLISH per script call (the probe's and the heartbeat's are not counted here:
    // they run outside scripts, as plain commands, at most a few in this window).
    assert!(delta("publish") <= calls + 10, "{} PUBLISH for {calls} script calls", delta("publish"));
}

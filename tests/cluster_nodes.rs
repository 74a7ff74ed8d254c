//! Nodes behind a real load balancer (nginx, with the configuration of docs/deploy.md), and
//! nodes that die: their clients resume on a survivor, their presence does not linger.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::{Client, SEC};
use common::nginx::Nginx;
use common::nodes::{self, Process};
use common::redis_server::{prefix, shared};
use hibiki::client::{Backoff, ClientBuilder, Incoming, ReconnectingClient};
use serde_json::{Value, json};

/// Open WebSocket connections of a node, from its /metrics.
fn connections(addr: std::net::SocketAddr) -> u64 {
    let metrics = common::http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("hibiki_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("hibiki_connections in /metrics")
}

#[test]
fn through_nginx_clients_on_different_nodes_reach_each_other() {
    let urls = [shared()];
    let prefix = prefix("nginx");
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let b = nodes::start(nodes::config(&urls, &prefix, "b"));
    let nginx = Nginx::start(a.local_addr(), b.local_addr());
    // ip_hash spreads clients by address: clients from 127.0.K.1 land on one node or the other.
    let (mut on_a, mut on_b) = (None, None);
    for k in 1..=40u8 {
        let before = (connections(a.local_addr()), connections(b.local_addr()));
        let source: IpAddr = format!("127.0.{k}.1").parse().unwrap();
        let peer =
            common::Peer::try_connect_from(source, nginx.addr, "/ws", &["hibiki.v1.json"]).expect("upgrade");
        // Open (welcomed) on its node: counted there.
        let client = Client::from_peer(peer);
        let after = (connections(a.local_addr()), connections(b.local_addr()));
        if after.0 > before.0 && on_a.is_none() {
            on_a = Some(client);
        } else if after.1 > before.1 && on_b.is_none() {
            on_b = Some(client);
        }
        if on_a.is_some() && on_b.is_some() {
            break;
        }
    }
    let (Some(mut on_a), Some(mut on_b)) = (on_a, on_b) else {
        panic!("ip_hash put every client on one node")
    };
    on_a.join("chat:lb");
    on_b.join("chat:lb");
    on_a.send(json!({"type": "publish", "id": "from-a", "payload": {"room": "chat:lb", "data": "hello b"}}));
    // Its own message may come before its ack or after it: the ack and the delivery come
    // back over two Redis connections.
    let mut got = Vec::new();
    loop {
        let v = on_a.next(5 * SEC).expect("the ack of from-a");
        if v["type"] == "message" {
            got.push(v["payload"]["data"].clone());
        } else if v["type"] == "ack" {
            assert_eq!(v["payload"]["ok"], true, "{v}");
            break;
        }
    }
    assert_eq!(on_b.expect("message")["payload"]["data"], "hello b");
    on_b.request("publish", "from-b", json!({"room": "chat:lb", "data": "hello a", "echo": false}));
    while got.len() < 2 {
        got.push(on_a.expect("message")["payload"]["data"].clone());
    }
    assert_eq!(got, [json!("hello b"), json!("hello a")]);
    // Plain HTTP through the proxy too.
    let health = common::http(nginx.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(common::status_of(&health), 200, "{health}");
}

/// What the subscriber saw: seqs in order, the room's epoch, when each came.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    epoch: Option<String>,
    at: Vec<Instant>,
}

#[test]
fn the_clients_of_a_killed_node_resume_on_a_survivor_without_a_gap_or_a_duplicate() {
    let urls = [shared()];
    let prefix = prefix("kill");
    let mut a = Process::start(&urls, &prefix, "a", &[]);
    let mut b = Process::start(&urls, &prefix, "b", &[]);
    let nginx = Nginx::start(a.addr, b.addr);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let hook = Arc::clone(&seen);
    let mut subscriber = ReconnectingClient::builder()
        .client(ClientBuilder::new().protocol("hibiki.v1.json"))
        .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(400)).max_attempts(None))
        .on_connect(move |conn| {
            let seen = hook.lock().unwrap();
            let after = seen.seqs.last().copied().unwrap_or(0);
            let payload = json!({"room": "chat:kill", "after": after, "epoch": seen.epoch});
            conn.send_text(
                &json!({"type": "resume", "id": format!("r{after}"), "payload": payload}).to_string(),
            )
        })
        .connect(&format!("ws://{}/ws", nginx.addr))
        .unwrap();
    let read = |subscriber: &mut ReconnectingClient, seen: &Mutex<Seen>, timeout: Duration| {
        let Ok(Some(Incoming::Text(text))) = subscriber.recv_timeout(timeout) else { return };
        let v: Value = serde_json::from_str(&text).unwrap();
        let mut seen = seen.lock().unwrap();
        match v["type"].as_str() {
            Some("message") => {
                seen.seqs.push(v["payload"]["seq"].as_u64().unwrap());
                seen.at.push(Instant::now());
            }
            Some("ack") => {
                assert_eq!(v["payload"]["ok"], true, "{v}");
                seen.epoch = v["payload"]["epoch"].as_str().map(str::to_owned);
            }
            _ => {}
        }
    };
    // Wait for the resume's ack: the subscriber is in the room.
    let deadline = Instant::now() + 5 * SEC;
    while seen.lock().unwrap().epoch.is_none() {
        assert!(Instant::now() < deadline, "no resume ack");
        read(&mut subscriber, &seen, Duration::from_millis(100));
    }
    let on_a = connections(a.addr) == 1;
    let survivor = if on_a { b.addr } else { a.addr };
    // The publisher talks to the survivor directly: 150 messages, one every 10 ms.
    let publisher = std::thread::spawn(move || {
        let mut client = Client::connect_to(survivor, "/ws", &[], false);
        for i in 1..=150u64 {
            loop {
                let ack =
                    client.request("publish", &format!("m{i}"), json!({"room": "chat:kill", "data": i}));
                if ack["ok"] == true {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    while seen.lock().unwrap().seqs.len() < 40 {
        read(&mut subscriber, &seen, Duration::from_millis(100));
    }
    let killed = Instant::now();
    if on_a {
        a.kill()
    } else {
        b.kill()
    }
    let deadline = Instant::now() + 15 * SEC;
    while seen.lock().unwrap().seqs.last() != Some(&150) {
        assert!(Instant::now() < deadline, "stopped at {:?}", seen.lock().unwrap().seqs.last());
        read(&mut subscriber, &seen, Duration::from_millis(100));
    }
    publisher.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.seqs, (1..=150).collect::<Vec<_>>(), "every message once, in order");
    // The first message after the kill that came through the survivor.
    let resumed = seen.at.iter().find(|t| **t > killed).copied().unwrap();
    assert!(
        resumed.duration_since(killed) < 3 * SEC,
        "resumed {:?} after the kill",
        resumed.duration_since(killed)
    );
    assert!(subscriber.reconnects() >= 1);
}

#[test]
fn presence_has_no_ghosts_after_repeated_node_kills() {
    let urls = [shared()];
    let prefix = prefix("ghosts");
    let survivor = nodes::start(nodes::config(&urls, &prefix, "s"));
    let mut watcher = Client::connect(&survivor, &[]);
    watcher.join("chat:ghost");
    for round in 0..3 {
        let victim = Process::start(&urls, &prefix, "v", &[]);
        let mut doomed = Client::connect_to(victim.addr, "/ws", &[], false);
        doomed.join("chat:ghost");
        let joined = watcher.expect("user_joined");
        assert_eq!(joined["payload"]["user"], doomed.user.as_str(), "round {round}");
        let mut victim = victim;
        victim.kill();
        let killed = Instant::now();
        let left = watcher.expect_within("user_left", 10 * SEC);
        assert_eq!(left["payload"]["user"], doomed.user.as_str(), "round {round}");
        assert!(killed.elapsed() < 10 * SEC, "user_left {:?} after the kill", killed.elapsed());
    }
    let mut late = Client::connect(&survivor, &[]);
    let presence = late.join("chat:ghost");
    let mut want = vec![watcher.user.clone(), late.user.clone()];
    want.sort();
    assert_eq!(presence["payload"]["users"], json!(want), "only the living");
}

//! The hub's seam contract against the Redis engine, through real sockets on two nodes: the
//! random runs of the hub's property test (joins, resumes, publishes, leaves by connections
//! on either node) — every member gets every message of its membership exactly once, in
//! order, and every id gets exactly one ack.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::app::Client;
use common::nodes;
use common::redis_server::{prefix, shared};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
enum Step {
    Join(usize, usize),
    Resume(usize, usize),
    Publish(usize, usize),
    Leave(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let (c, r) = (0..4usize, 0..2usize);
    prop_oneof![
        2 => (c.clone(), r.clone()).prop_map(|(c, r)| Step::Join(c, r)),
        1 => (c.clone(), r.clone()).prop_map(|(c, r)| Step::Resume(c, r)),
        4 => (c.clone(), r.clone()).prop_map(|(c, r)| Step::Publish(c, r)),
        1 => (c, r).prop_map(|(c, r)| Step::Leave(c, r)),
    ]
}

const ROOMS: [&str; 2] = ["chat:a", "chat:b"];

/// A client and everything it received.
struct Logged {
    client: Client,
    log: Vec<Value>,
}

impl Logged {
    fn drain(&mut self, wait: Duration) {
        while let Some(v) = self.client.next(wait) {
            self.log.push(v);
        }
    }

    fn seqs(&self, room: &str) -> Vec<u64> {
        self.log
            .iter()
            .filter(|e| e["type"] == "message" && e["payload"]["room"] == room)
            .map(|e| e["payload"]["seq"].as_u64().unwrap())
            .collect()
    }
}

/// Each membership (from a `presence` to the next leave) must hold the seqs after its base,
/// in order, without a gap or a repeat; the last one must reach the room's last seq.
fn check(logged: &Logged, who: usize, room: &str, last: u64) -> Result<(), String> {
    let mut segment: Option<(u64, Vec<u64>)> = None;
    let mut segments = Vec::new();
    for e in &logged.log {
        let p = &e["payload"];
        match e["type"].as_str().unwrap_or_default() {
            "presence" if p["room"] == room => {
                segments.extend(segment.take());
                segment = Some((p["seq"].as_u64().unwrap(), Vec::new()));
            }
            "ack" if p["id"].as_str().is_some_and(|id| id.starts_with(&format!("r-{room}-"))) => {
                let after: u64 = p["id"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
                if let Some((base, got)) = &mut segment {
                    if p["ok"] == true && got.is_empty() {
                        *base = after.min(*base);
                    }
                }
            }
            "ack"
                if p["ok"] == true
                    && p["id"].as_str().is_some_and(|id| id.starts_with(&format!("l-{room}-"))) =>
            {
                segments.extend(segment.take());
            }
            "message" if p["room"] == room => match &mut segment {
                Some((_, got)) => got.push(p["seq"].as_u64().unwrap()),
                None => return Err(format!("client {who} got {p} outside a membership")),
            },
            _ => {}
        }
    }
    let open = segment.is_some();
    segments.extend(segment);
    let count = segments.len();
    for (i, (base, got)) in segments.into_iter().enumerate() {
        let expected: Vec<u64> = (base + 1..base + 1 + got.len() as u64).collect();
        if got != expected {
            return Err(format!("client {who} in {room}: after {base} got {got:?}"));
        }
        if open && i + 1 == count && got.last().copied().unwrap_or(base) < last {
            return Err(format!(
                "client {who} in {room}: after {base} stopped at {got:?}, the room reached {last}"
            ));
        }
    }
    Ok(())
}

fn run(steps: &[Step]) -> Result<(), String> {
    let urls = [shared()];
    let prefix = prefix("contract");
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let b = nodes::start(nodes::config(&urls, &prefix, "b"));
    let mut clients: Vec<Logged> = (0..4)
        .map(|i| Logged { client: Client::connect(if i % 2 == 0 { &a } else { &b }, &[]), log: Vec::new() })
        .collect();
    let mut ids: Vec<(usize, String)> = Vec::new();
    let mut inside = BTreeSet::new();
    let send = |clients: &mut Vec<Logged>,
                ids: &mut Vec<(usize, String)>,
                c: usize,
                kind: &str,
                id: String,
                payload: Value| {
        clients[c].client.send(json!({"type": kind, "id": id, "payload": payload}));
        ids.push((c, id));
    };
    for (n, step) in steps.iter().enumerate() {
        match *step {
            Step::Join(c, r) => {
                inside.insert((c, r));
                send(
                    &mut clients,
                    &mut ids,
                    c,
                    "join",
                    format!("j-{}-{n}", ROOMS[r]),
                    json!({"room": ROOMS[r]}),
                );
            }
            Step::Resume(c, r) => {
                if !inside.insert((c, r)) {
                    continue;
                }
                clients[c].drain(Duration::from_millis(30));
                let after = clients[c].seqs(ROOMS[r]).last().copied().unwrap_or(0);
                let id = format!("r-{}-{n}-{after}", ROOMS[r]);
                send(&mut clients, &mut ids, c, "resume", id, json!({"room": ROOMS[r], "after": after}));
            }
            Step::Publish(c, r) => {
                send(
                    &mut clients,
                    &mut ids,
                    c,
                    "publish",
                    format!("p-{n}"),
                    json!({"room": ROOMS[r], "data": n}),
                );
            }
            Step::Leave(c, r) => {
                inside.remove(&(c, r));
                send(
                    &mut clients,
                    &mut ids,
                    c,
                    "leave",
                    format!("l-{}-{n}", ROOMS[r]),
                    json!({"room": ROOMS[r]}),
                );
            }
        }
    }
    for client in &mut clients {
        client.drain(Duration::from_millis(300));
    }
    // A last message to each room, so that a hole at the end shows too.
    for (r, room) in ROOMS.iter().enumerate() {
        send(
            &mut clients,
            &mut ids,
            0,
            "publish",
            format!("p-end-{r}"),
            json!({"room": room, "data": "end"}),
        );
    }
    // Until every id has its ack (or 10 s), then until quiet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        for client in &mut clients {
            client.drain(Duration::from_millis(100));
        }
        let acked = |c: usize, id: &str| {
            clients[c].log.iter().any(|e| e["type"] == "ack" && e["payload"]["id"] == id)
        };
        if ids.iter().all(|(c, id)| acked(*c, id)) || std::time::Instant::now() > deadline {
            break;
        }
    }
    for client in &mut clients {
        client.drain(Duration::from_millis(300));
    }
    for client in &clients {
        let _ = client.client.peer.stream.shutdown(std::net::Shutdown::Both);
    }
    a.shutdown();
    b.shutdown();
    let acks = |c: usize| -> Vec<Value> {
        clients[c].log.iter().filter(|e| e["type"] == "ack").map(|e| e["payload"].clone()).collect()
    };
    for (c, id) in &ids {
        let n = acks(*c).iter().filter(|a| a["id"] == id.as_str()).count();
        if n != 1 {
            return Err(format!("{id} on client {c} got {n} acks: {:?}", clients[*c].log));
        }
    }
    for ack in acks(0) {
        if let Some(id) = ack["id"].as_str().filter(|id| id.starts_with("p-end-")) {
            if ack["ok"] != true {
                return Err(format!("{id}: {ack}"));
            }
        }
    }
    let mut last = BTreeMap::new();
    for (r, room) in ROOMS.iter().enumerate() {
        let end =
            acks(0).into_iter().find(|a| a["id"] == format!("p-end-{r}")).and_then(|a| a["seq"].as_u64());
        last.insert(*room, end.unwrap_or(0));
    }
    for (who, client) in clients.iter().enumerate() {
        for room in ROOMS {
            check(client, who, room, last[room])?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn on_two_nodes_every_member_gets_every_message_once_in_order(steps in proptest::collection::vec(step(), 1..30)) {
        prop_assert_eq!(run(&steps), Ok(()));
    }
}

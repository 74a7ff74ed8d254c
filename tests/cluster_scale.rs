//! Rooms spread over two Redis servers, and 10,000 rooms resubscribed in a few commands
//! after the pub/sub connection was lost.

mod common;

use std::time::Instant;

use common::app::{Client, SEC};
use common::nodes;
use common::redis_server::{RedisServer, command_calls, prefix};
use serde_json::json;

#[test]
fn rooms_spread_over_two_redis_servers_and_work_across_nodes() {
    let (r1, r2) = (RedisServer::start(false), RedisServer::start(false));
    let urls = [r1.url(), r2.url()];
    let prefix = prefix("shards");
    let a = nodes::start(nodes::config(&urls, &prefix, "a"));
    let b = nodes::start(nodes::config(&urls, &prefix, "b"));
    let mut member = Client::connect(&b, &[]);
    let mut publisher = Client::connect(&a, &[]);
    let rooms: Vec<String> = (0..20).map(|i| format!("chat:s{i}")).collect();
    for room in &rooms {
        member.join(room);
        let ack = publisher.request("publish", room, json!({"room": room, "data": room}));
        assert_eq!(ack["seq"], 1, "{ack}");
        let m = member.expect("message");
        assert_eq!(m["payload"]["room"], room.as_str());
    }
    let held = |server: &RedisServer| -> Vec<String> {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}*.m")).query(&mut server.conn()).unwrap();
        keys.iter()
            .map(|k| k[prefix.len() + 1..k.len() - 3].to_owned())
            .filter(|r| r.starts_with("chat:"))
            .collect()
    };
    let (mut one, two) = (held(&r1), held(&r2));
    assert!(!one.is_empty() && !two.is_empty(), "both servers hold rooms: {one:?} {two:?}");
    assert!(one.iter().all(|r| !two.contains(r)), "each room on one server");
    one.extend(two);
    one.sort();
    let mut want = rooms.clone();
    want.sort();
    assert_eq!(one, want);
}

#[test]
fn ten_thousand_rooms_resubscribe_in_a_few_commands_and_miss_nothing() {
    let redis = RedisServer::start(false);
    let urls = [redis.url()];
    let prefix = prefix("many");
    let mut config = nodes::config(&urls, &prefix, "a");
    config.hub.max_rooms_per_connection = 10_000;
    config.hub.presence_limit = 1;
    let a = nodes::start(config);
    let mut member = Client::connect(&a, &[]);
    let n = 10_000;
    for i in 0..n {
        member.send(json!({"type": "join", "id": i, "payload": {"room": format!("r{i}")}}));
    }
    let mut acked = 0;
    while acked < n {
        let ack = member.expect_within("ack", 60 * SEC);
        assert_eq!(ack["payload"]["ok"], true, "{ack}");
        acked += 1;
    }
    let mut conn = redis.conn();
    let channels = |conn: &mut redis::Connection| -> usize {
        let list: Vec<String> =
            redis::cmd("PUBSUB").arg("CHANNELS").arg(format!("{prefix}{{r*")).query(conn).unwrap();
        list.len()
    };
    assert_eq!(channels(&mut conn), n);
    let before = command_calls(&mut conn);
    let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut conn).unwrap();
    let killed = Instant::now();
    assert!(common::eventually(20 * SEC, || channels(&mut conn) == n), "resubscribed");
    let after = command_calls(&mut conn);
    let subscribes = after["subscribe"] - before.get("subscribe").copied().unwrap_or(0);
    assert!(subscribes <= 20, "{subscribes} SUBSCRIBE commands for {n} rooms");
    eprintln!("{n} rooms resubscribed with {subscribes} commands in {:?}", killed.elapsed());
    let mut publisher = Client::connect(&a, &[]);
    publisher.request("publish", "p", json!({"room": "r9999", "data": "still here"}));
    let m = member.expect_within("message", 5 * SEC);
    assert_eq!(
        (m["payload"]["room"].clone(), m["payload"]["data"].clone()),
        (json!("r9999"), json!("still here"))
    );
}

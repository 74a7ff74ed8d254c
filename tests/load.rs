//! `hibiki load` through its library API, against an in-process `hibiki serve` app: each
//! scenario for about a second, several URLs (nodes) at once, a server that gets delivery
//! wrong on purpose, Redis's `INFO`, and the ways a run can go wrong.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use hibiki::app::ServeApp;
use hibiki::load::{FailureCause, LoadConfig, LoadError, Scenario, run_scenario, svg};
use hibiki::reactor::{
    ConnId, Ctx, Decision, Handler, HttpRequest, HttpResponse, Message, MessageKind, Running, Server,
};

fn server() -> Running<ServeApp> {
    Server::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .threads(1)
        .start(ServeApp::default())
        .expect("server starts")
}

fn config(scenario: Scenario, addr: SocketAddr, path: &str) -> LoadConfig {
    let mut config = LoadConfig::new(scenario, format!("ws://{addr}{path}"));
    config.duration = Duration::from_secs(1);
    config.warmup = Duration::from_millis(200);
    config.connections = 10;
    config
}

#[test]
fn echo_measures_round_trips() {
    let server = server();
    let mut config = config(Scenario::Echo, server.local_addr(), "/echo");
    config.in_flight = 4;
    config.server_pids = vec![std::process::id()];
    let summary = run_scenario(&config).expect("run");
    let c = &summary.connections;
    assert_eq!((c.attempted, c.opened, c.failed, c.open_at_end), (10, 10, 0, 10), "{summary:#?}");
    let m = summary.messages.as_ref().unwrap();
    assert!(m.per_sec > 0.0 && m.received > 0, "{summary:#?}");
    assert_eq!((m.errors, m.unanswered), (0, 0), "{summary:#?}");
    assert!(m.sent >= m.received);
    let p = summary.latency.unwrap();
    assert_eq!(p.count, m.received);
    assert!(p.min <= p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
    assert!(p.p50 < 1_000_000, "a loopback round trip under a second: {p:?}");
    assert!(summary.handshake.unwrap().count == 10);
    // The server runs in this process: its CPU time is there, and the headline figure.
    assert!(summary.usage.server_cpu_secs.is_some());
    assert!(summary.usage.per_server_cpu_sec.is_some());
    assert!(summary.rate() > 0.0);
    assert!(!summary.all_failed());
    // The table, the JSON and the plot.
    let table = summary.table();
    assert!(table.contains("round trip µs") && table.contains("p99.9"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert_eq!(json["scenario"], "echo");
    assert_eq!(json["connections"]["opened"], 10);
    assert!(json["messages"]["per_sec"].as_f64().unwrap() > 0.0);
    assert!(json["latency"]["p99"].is_u64());
    let plot = svg(&summary).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("<polyline") && plot.trim_end().ends_with("</svg>"));
    server.shutdown();
}

#[test]
fn echo_with_a_rate_and_two_threads() {
    let server = server();
    let mut config = config(Scenario::Echo, server.local_addr(), "/echo");
    config.rate = Some(500.0);
    config.threads = 2;
    config.payload = 1000;
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.threads, 2);
    assert_eq!(summary.connections.opened, 10);
    let m = summary.messages.unwrap();
    assert_eq!((m.errors, m.unanswered), (0, 0));
    // 500/s over a 1 s window: allow for scheduling slack.
    assert!((350..=650).contains(&m.received), "{m:?}");
    server.shutdown();
}

#[test]
fn broadcast_loses_nothing() {
    let server = server();
    let mut config = config(Scenario::Broadcast, server.local_addr(), "/broadcast");
    config.rate = Some(50.0);
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.connections.opened, 11, "10 subscribers and the publisher: {summary:#?}");
    let b = summary.broadcast.as_ref().unwrap();
    assert_eq!(b.members, 11);
    assert!(b.published >= 50, "{b:?}");
    assert_eq!(b.expected, b.published * 11);
    assert_eq!(b.lost, 0, "{summary:#?}");
    assert_eq!(b.delivered, b.expected);
    // The publisher gets its own messages: one delivery in eleven.
    let m = summary.messages.as_ref().unwrap();
    assert!(b.self_deliveries > 0 && b.self_deliveries * 11 == m.received, "{summary:#?}");
    assert_eq!(m.errors, 0);
    assert!(summary.latency.is_some());
    server.shutdown();
}

#[test]
fn broadcast_in_a_closed_loop_keeps_its_window() {
    let server = server();
    let mut config = config(Scenario::Broadcast, server.local_addr(), "/broadcast");
    config.window = Some(4);
    let summary = run_scenario(&config).expect("run");
    let b = summary.broadcast.as_ref().unwrap();
    assert_eq!((b.window, b.members, b.lost), (Some(4), 11, 0), "{summary:#?}");
    // No schedule: as fast as the publisher's own messages come back, far past the default
    // 100/s of a scheduled run.
    assert!(b.published > 500, "{b:?}");
    assert_eq!(b.delivered, b.expected);
    assert!(summary.table().contains("4 unconfirmed each (closed loop"), "{}", summary.table());
    server.shutdown();
}

#[test]
fn room_in_a_closed_loop_waits_for_acks() {
    let server = tick_server();
    let mut config = config(Scenario::Room, server.local_addr(), "/ws");
    config.window = Some(8);
    let summary = run_scenario(&config).expect("run");
    let b = summary.broadcast.as_ref().unwrap();
    assert_eq!((b.window, b.members, b.lost), (Some(8), 10, 0), "{summary:#?}");
    assert!(b.published > 500, "{b:?}");
    let q = summary.sequence.as_ref().unwrap();
    assert_eq!((q.lost, q.duplicated, q.reordered, q.after_close), (0, 0, 0, 0), "{q:?}");
    server.shutdown();
}

#[test]
fn echo_with_deflate_negotiates_it_on_every_connection() {
    let server = server();
    let mut config = config(Scenario::Echo, server.local_addr(), "/echo");
    config.deflate = true;
    config.payload = 2000;
    let summary = run_scenario(&config).expect("run");
    let c = &summary.connections;
    assert_eq!((c.opened, c.deflated, c.failed), (10, 10, 0), "{summary:#?}");
    let m = summary.messages.as_ref().unwrap();
    assert!(m.received > 0 && m.errors == 0 && m.unanswered == 0, "{m:?}");
    assert!(summary.table().contains("10 with permessage-deflate"), "{}", summary.table());
    // Without the offer, nothing is compressed.
    config.deflate = false;
    assert_eq!(run_scenario(&config).expect("run").connections.deflated, 0);
    server.shutdown();
}

#[test]
fn game_measures_tick_jitter() {
    let server = server();
    let mut config = config(Scenario::Game, server.local_addr(), "/broadcast");
    config.connections = 5;
    config.payload = 64;
    let summary = run_scenario(&config).expect("run");
    let b = summary.broadcast.as_ref().unwrap();
    assert_eq!((b.publishers, b.members, b.lost), (1, 6, 0), "{summary:#?}");
    // 60 Hz over 1.2 s of traffic.
    assert!((60..=80).contains(&b.published), "{b:?}");
    let jitter = summary.jitter.unwrap();
    assert!(jitter.count > 0);
    assert!(jitter.p50 < 16_667, "{jitter:?}");
    assert!(summary.table().contains("missed ticks"));
    server.shutdown();
}

fn tick_server() -> Running<ServeApp> {
    Server::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .threads(1)
        .tick(Some(Duration::from_millis(16)))
        .start(ServeApp::default())
        .expect("server starts")
}

#[test]
fn room_loses_nothing() {
    let server = tick_server();
    let mut config = config(Scenario::Room, server.local_addr(), "/ws");
    config.connections = 20;
    config.rate = Some(100.0);
    config.server_pids = vec![std::process::id()];
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.connections.opened, 21, "20 subscribers and the publisher: {summary:#?}");
    let r = summary.room.as_ref().unwrap();
    assert_eq!((r.room.as_str(), r.joined, r.join_failed), ("chat:bench", 20, 0), "{summary:#?}");
    let b = summary.broadcast.as_ref().unwrap();
    // The publisher does not join and publishes with echo false: 20 members.
    assert_eq!((b.members, b.self_deliveries), (20, 0));
    assert!(b.published >= 100, "{b:?}");
    assert_eq!(b.expected, b.published * 20);
    assert_eq!(b.lost, 0, "{summary:#?}");
    assert_eq!(b.delivered, b.expected);
    // Every seq acked to the publisher reached every member once, in order.
    let q = summary.sequence.as_ref().unwrap();
    assert_eq!((q.subscribers, q.lost, q.duplicated, q.reordered, q.gaps), (20, 0, 0, 0, 0), "{q:?}");
    assert_eq!(summary.room.as_ref().unwrap().acked, b.published);
    let m = summary.messages.as_ref().unwrap();
    assert!(m.per_sec > 0.0 && m.received > 0, "{summary:#?}");
    assert_eq!((m.errors, m.payload), (0, 100));
    let p = summary.latency.unwrap();
    assert_eq!(p.count, m.received);
    assert!(summary.usage.per_server_cpu_sec.is_some());
    let table = summary.table();
    assert!(table.contains("chat:bench · 20 joined") && table.contains("0 lost"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert_eq!(json["scenario"], "room");
    assert_eq!(json["room"]["joined"], 20);
    assert_eq!(json["broadcast"]["lost"], 0);
    server.shutdown();
}

#[test]
fn tick_measures_batches_and_late_ticks() {
    let server = tick_server();
    let mut config = config(Scenario::Tick, server.local_addr(), "/ws");
    config.connections = 20;
    config.tick_hz = 62.5;
    let summary = run_scenario(&config).expect("run");
    let r = summary.room.as_ref().unwrap();
    assert_eq!((r.room.as_str(), r.joined), ("game:bench", 20), "{summary:#?}");
    let batches = r.batches.unwrap();
    assert!(batches > 0, "{summary:#?}");
    let per = r.batches_per_sec_per_client.unwrap();
    assert!(per > 10.0 && per < 100.0, "{summary:#?}");
    // The in-process server answers /metrics.
    assert!(r.late_ticks.is_some() && r.server_ticks.unwrap() > 0, "{summary:#?}");
    let b = summary.broadcast.as_ref().unwrap();
    assert_eq!((b.publishers, b.members), (1, 20));
    assert!((60..=80).contains(&b.published), "{b:?}");
    let p = summary.latency.unwrap();
    assert!(p.count > 0 && p.p50 < 1_000_000, "{p:?}");
    assert!(summary.jitter.unwrap().count > 0);
    assert_eq!(summary.messages.as_ref().unwrap().errors, 0);
    let table = summary.table();
    assert!(table.contains("batch jitter µs") && table.contains("late ticks"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert!(json["room"]["batches"].as_u64().unwrap() > 0);
    assert!(json["room"]["late_ticks"].is_u64());
    server.shutdown();
}

#[test]
fn room_joins_the_given_room() {
    let server = server();
    let mut config = config(Scenario::Room, server.local_addr(), "/ws");
    config.connections = 3;
    config.room = Some("chat:other".into());
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.room.as_ref().unwrap().room, "chat:other");
    assert!(summary.room.as_ref().unwrap().late_ticks.is_none(), "room does not read /metrics");
    server.shutdown();
}

#[test]
fn connect_counts_handshakes() {
    let server = server();
    let mut config = config(Scenario::Connect, server.local_addr(), "/echo");
    config.concurrency = 4;
    let summary = run_scenario(&config).expect("run");
    let k = summary.connect.as_ref().unwrap();
    assert!(k.per_sec > 0.0 && k.handshakes > 0, "{summary:#?}");
    assert_eq!(summary.connections.failed, 0, "{summary:#?}");
    assert_eq!(summary.handshake.unwrap().count, k.handshakes);
    assert!(svg(&summary).unwrap().contains("handshake"));
    server.shutdown();
}

#[test]
fn idle_holds_connections() {
    let server = server();
    let mut config = config(Scenario::Idle, server.local_addr(), "/echo");
    config.connections = 200;
    config.server_pids = vec![std::process::id()];
    let summary = run_scenario(&config).expect("run");
    let c = &summary.connections;
    assert_eq!((c.opened, c.failed, c.open_at_end), (200, 0, 200), "{summary:#?}");
    let memory = summary.memory.as_ref().unwrap();
    assert!(memory.rss_after_kib > 0);
    assert!(summary.messages.is_none());
    server.shutdown();
}

#[test]
fn refused_upgrade_is_counted_by_cause() {
    let server = server();
    let config = config(Scenario::Echo, server.local_addr(), "/nope");
    let summary = run_scenario(&config).expect("the run takes place");
    let c = &summary.connections;
    assert_eq!((c.attempted, c.opened, c.failed), (10, 0, 10));
    assert_eq!(c.failures.get(&FailureCause::HttpStatus(404)), Some(&10), "{summary:#?}");
    assert!(summary.all_failed());
    let lines = summary.failure_lines();
    assert_eq!(lines, ["10 of 10 connections failed: upgrade refused with HTTP 404"]);
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert_eq!(json["connections"]["failures"]["http_404"], 10);
    server.shutdown();
}

#[test]
fn unreachable_port_is_an_error() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = LoadConfig::new(Scenario::Echo, format!("ws://127.0.0.1:{port}/echo"));
    let err = run_scenario(&config).unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot connect to 127.0.0.1:{port}")), "{text}");
}

#[test]
fn bad_input_is_rejected() {
    let bad = |config: LoadConfig| run_scenario(&config).unwrap_err().to_string();
    assert!(bad(LoadConfig::new(Scenario::Echo, "http://127.0.0.1/echo")).contains("ws:// or wss://"));
    assert!(bad(LoadConfig::new(Scenario::Echo, "127.0.0.1:8080")).contains("invalid URL"));
    let mut small = LoadConfig::new(Scenario::Echo, "ws://127.0.0.1:1/echo");
    small.payload = 8;
    assert!(bad(small).contains("--payload"));
    let mut both = LoadConfig::new(Scenario::Broadcast, "ws://127.0.0.1:1/broadcast");
    both.window = Some(8);
    both.rate = Some(10.0);
    assert!(bad(both).contains("--window and --rate"));
    let mut echo = LoadConfig::new(Scenario::Echo, "ws://127.0.0.1:1/echo");
    echo.window = Some(8);
    assert!(bad(echo).contains("--window is for broadcast and room"));
    let mut zero = LoadConfig::new(Scenario::Room, "ws://127.0.0.1:1/ws");
    zero.window = Some(0);
    assert!(bad(zero).contains("--window must be at least 1"));
}

#[test]
fn server_closing_mid_run_is_counted() {
    let server = server();
    let mut config = config(Scenario::Echo, server.local_addr(), "/echo");
    config.duration = Duration::from_secs(2);
    config.warmup = Duration::ZERO;
    let run = std::thread::spawn(move || run_scenario(&config));
    std::thread::sleep(Duration::from_millis(700));
    server.shutdown();
    let summary = run.join().unwrap().expect("run");
    let c = &summary.connections;
    assert_eq!((c.opened, c.failed_after_open, c.open_at_end), (10, 10, 0), "{summary:#?}");
    assert_eq!(c.failures.get(&FailureCause::ClosedByServer(1001)), Some(&10), "{summary:#?}");
    // Every connection was lost: the command exits non-zero.
    assert!(summary.all_failed());
    assert!(summary.messages.unwrap().received > 0);
}

#[test]
fn room_over_two_urls_spreads_subscribers_and_sums_server_cpu() {
    let server = tick_server();
    let addr = server.local_addr();
    // Two URLs of the same server stand for two nodes: the plumbing is the same.
    let (a, b) = (format!("ws://{addr}/ws"), format!("ws://{addr}/ws?node=b"));
    let mut config = config(Scenario::Room, addr, "/ws");
    config.subscribe_urls = vec![a.clone(), b.clone()];
    config.connections = 20;
    config.rate = Some(100.0);
    // The same process twice: two nodes' CPU seconds, summed.
    config.server_pids = vec![std::process::id(), std::process::id()];
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.connections.opened, 21, "{summary:#?}");
    let nodes: Vec<_> =
        summary.nodes.iter().map(|n| (n.url.as_str(), n.publishers, n.subscribers, n.joined)).collect();
    assert_eq!(nodes, [(a.as_str(), 1, 10, Some(10)), (b.as_str(), 0, 10, Some(10))]);
    let q = summary.sequence.as_ref().expect("seqs were acked");
    assert_eq!(q.subscribers, 20);
    assert_eq!((q.lost, q.duplicated, q.reordered, q.gaps, q.affected_subscribers), (0, 0, 0, 0, 0), "{q:?}");
    assert_eq!(q.replaced, None, "no keyed messages in a plain room");
    for node in &summary.nodes {
        let n = node.sequence.as_ref().unwrap();
        assert_eq!((n.subscribers, n.lost, n.affected_subscribers), (10, 0, 0), "{node:?}");
    }
    let r = summary.room.as_ref().unwrap();
    let b_stats = summary.broadcast.as_ref().unwrap();
    assert_eq!((r.acked, r.ack_failed, r.unacked), (b_stats.published, 0, 0), "every publish acked");
    assert_eq!(b_stats.lost, 0);
    let u = &summary.usage;
    assert_eq!(u.servers.len(), 2);
    let (one, two) = (u.servers[0].cpu_secs.unwrap(), u.servers[1].cpu_secs.unwrap());
    let sum = u.server_cpu_secs.unwrap();
    assert!((sum - (one + two)).abs() < 1e-9, "{u:?}");
    let received = summary.messages.as_ref().unwrap().received as f64;
    if sum > 0.0 {
        assert!((u.per_server_cpu_sec.unwrap() - received / sum).abs() < 1e-6, "per CPU-second of the sum");
    }
    let table = summary.table();
    for line in ["2 nodes", "nodes           ", "1 publisher · 10 subscribers · 10 joined", "0 lost", "sum "]
    {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    assert!(table.contains(&format!("{b}  10 subscribers")), "{table}");
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert_eq!(json["nodes"][1]["url"], b.as_str());
    assert_eq!(json["nodes"][1]["sequence"]["lost"], 0);
    assert_eq!(json["sequence"]["lost"], 0);
    assert_eq!(json["sequence"]["affected_subscribers"], 0);
    assert_eq!(json["usage"]["servers"].as_array().unwrap().len(), 2);
    server.shutdown();
}

#[test]
fn tick_over_a_publish_url_and_a_subscribe_url() {
    let server = tick_server();
    let addr = server.local_addr();
    let mut config = config(Scenario::Tick, addr, "/ws");
    config.publish_urls = vec![format!("ws://{addr}/ws?publish")];
    config.subscribe_urls = vec![format!("ws://{addr}/ws?subscribe")];
    config.connections = 10;
    let summary = run_scenario(&config).expect("run");
    let nodes: Vec<_> = summary.nodes.iter().map(|n| (n.publishers, n.subscribers, n.joined)).collect();
    assert_eq!(nodes, [(1, 0, Some(0)), (0, 10, Some(10))], "{summary:#?}");
    let q = summary.sequence.as_ref().unwrap();
    // Keyed messages may be replaced; nothing else may go missing.
    assert_eq!((q.subscribers, q.lost, q.duplicated, q.reordered), (10, 0, 0, 0), "{q:?}");
    assert!(q.replaced.is_some());
    assert!(summary.room.as_ref().unwrap().late_ticks.is_some(), "/metrics of the node");
    server.shutdown();
}

/// A `/ws` server that speaks just enough of the app protocol for `hibiki load room` and gets
/// delivery wrong on purpose: the first member never gets seq 3, the second gets seq 5 twice,
/// the third gets seq 7 after seq 8, the fourth is told of a gap before seq 2. The others get
/// everything.
struct Faulty;

#[derive(Default)]
struct FaultyRoom {
    members: Vec<ConnId>,
    seq: u64,
    held: Option<String>,
}

impl Handler for Faulty {
    type Session = ();
    type Local = FaultyRoom;
    type Command = ();

    fn local(&self, _worker: usize) -> FaultyRoom {
        FaultyRoom::default()
    }

    fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<()> {
        match request.head.path() {
            "/ws" if request.upgrade.is_some() => Decision::Upgrade { session: (), protocol: None },
            _ => Decision::Respond(HttpResponse::text(404, "not found\n")),
        }
    }

    fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message) {
        let Some(text) = message.as_text() else { return };
        let envelope: serde_json::Value = serde_json::from_str(text).unwrap();
        let id = envelope["id"].to_string();
        let payload = &envelope["payload"];
        match envelope["type"].as_str() {
            Some("join") => {
                let me = ctx.id();
                ctx.local().members.push(me);
                ctx.send_text(&format!(r#"{{"type":"ack","id":{id},"payload":{{"id":{id},"ok":true}}}}"#));
            }
            Some("publish") => {
                let room = ctx.local();
                room.seq += 1;
                let seq = room.seq;
                ctx.send_text(&format!(
                    r#"{{"type":"ack","id":{id},"payload":{{"id":{id},"ok":true,"seq":{seq}}}}}"#
                ));
                // The fields in the order hibiki serve writes them.
                let message = format!(
                    r#"{{"type":"message","payload":{{"room":{},"seq":{seq},"from":"faulty","data":{},"ts":0}},"ts":0}}"#,
                    payload["room"], payload["data"]
                );
                let members = ctx.local().members.clone();
                for (i, member) in members.into_iter().enumerate() {
                    let send = |ctx: &mut Ctx<'_, Self>, text: &str| {
                        ctx.send_to(member, MessageKind::Text, text.as_bytes());
                    };
                    match (i, seq) {
                        (0, 3) => {}
                        (1, 5) => {
                            send(ctx, &message);
                            send(ctx, &message);
                        }
                        (2, 7) => ctx.local().held = Some(message.clone()),
                        (2, 8) => {
                            send(ctx, &message);
                            let held = ctx.local().held.take().unwrap();
                            send(ctx, &held);
                        }
                        (3, 2) => {
                            let gap = r#"{"type":"error","payload":{"code":"history_gap","message":"lost","oldest":2,"seq":1}}"#;
                            send(ctx, gap);
                            send(ctx, &message);
                        }
                        _ => send(ctx, &message),
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn lost_duplicated_and_reordered_seqs_are_counted() {
    let server = Server::builder().bind("127.0.0.1:0".parse().unwrap()).threads(1).start(Faulty).unwrap();
    let mut config = config(Scenario::Room, server.local_addr(), "/ws");
    config.connections = 6;
    config.rate = Some(50.0);
    let summary = run_scenario(&config).expect("run");
    let b = summary.broadcast.as_ref().unwrap();
    assert!(b.published >= 8, "{b:?}");
    // One delivery missing and one repeated: counting deliveries alone sees nothing.
    assert_eq!((b.expected, b.delivered, b.lost), (b.published * 6, b.published * 6, 0), "{b:?}");
    let q = summary.sequence.as_ref().unwrap();
    assert_eq!((q.subscribers, q.lost, q.lost_subscribers), (6, 1, 1), "{q:?}");
    assert_eq!((q.duplicated, q.duplicated_subscribers), (1, 1), "{q:?}");
    assert_eq!((q.reordered, q.reordered_subscribers), (1, 1), "{q:?}");
    assert_eq!((q.gaps, q.gap_subscribers), (1, 1), "{q:?}");
    assert_eq!(q.affected_subscribers, 4, "{q:?}");
    assert_eq!(summary.messages.as_ref().unwrap().errors, 0, "a gap notice is not an error");
    let table = summary.table();
    let line = "1 lost (1 subscriber) · 1 duplicated (1 subscriber) · 1 reordered (1 subscriber) · \
                1 gaps announced (1 subscriber) · 4 of 6 subscribers affected";
    assert!(table.contains(line), "{table}");
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert_eq!(json["sequence"]["lost"], 1);
    assert_eq!(json["sequence"]["duplicated"], 1);
    assert_eq!(json["sequence"]["reordered"], 1);
    assert_eq!(json["sequence"]["gaps"], 1);
    assert_eq!(json["nodes"][0]["sequence"]["affected_subscribers"], 4);
    server.shutdown();
}

/// The local Redis (127.0.0.1:6379), which this test needs running.
fn local_redis() -> SocketAddr {
    let addr: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        panic!(
            "this test needs Redis on {addr} ({e}); start it with \
             redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no"
        );
    }
    addr
}

#[test]
fn redis_cpu_and_command_calls_over_the_window() {
    let redis = local_redis();
    let server = server();
    let mut config = config(Scenario::Room, server.local_addr(), "/ws");
    config.connections = 4;
    config.warmup = Duration::ZERO;
    config.duration = Duration::from_secs(2);
    config.redis = vec![format!("redis://{redis}/")];
    let run = std::thread::spawn(move || run_scenario(&config));
    // Twenty ECHO commands well inside the window.
    std::thread::sleep(Duration::from_millis(800));
    let mut conn = TcpStream::connect(redis).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut echoes = Vec::new();
    for _ in 0..20 {
        echoes.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n$11\r\nhibiki-load\r\n");
    }
    conn.write_all(&echoes).unwrap();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 1024];
    while answers.len() < 20 * "$11\r\nhibiki-load\r\n".len() {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "Redis closed the connection");
        answers.extend_from_slice(&chunk[..n]);
    }
    let summary = run.join().unwrap().expect("run");
    let r = &summary.usage.redis[0];
    assert_eq!((r.url.clone(), r.error.clone()), (format!("redis://{redis}/"), None), "{r:?}");
    assert!(r.cpu_secs.is_some_and(|cpu| cpu >= 0.0), "{r:?}");
    assert!(r.commands.get("echo").is_some_and(|&n| n >= 20), "{r:?}");
    assert!(r.calls.unwrap() >= 20 && !r.commands.contains_key("info"), "{r:?}");
    assert!(r.calls_per_publish.is_some(), "{r:?}");
    assert_eq!(r.script_calls, Some(0), "ECHO is no script call: {r:?}");
    assert_eq!(summary.usage.redis_cpu_secs, r.cpu_secs);
    let table = summary.table();
    assert!(table.contains(&format!("redis           redis://{redis}/: ")), "{table}");
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert!(json["usage"]["redis"][0]["cpu_secs"].is_f64());
    server.shutdown();
}

#[test]
fn a_redis_url_that_is_not_redis_is_a_clear_error() {
    let server = server();
    // Something that answers, but not in RESP.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.read(&mut buf);
    });
    let mut config = config(Scenario::Room, server.local_addr(), "/ws");
    config.redis = vec![format!("redis://{fake}/")];
    let err = run_scenario(&config).unwrap_err();
    assert!(matches!(err, LoadError::Redis { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("Redis at redis://{fake}/")) && text.contains("not a Redis reply"),
        "{text}"
    );
    thread.join().unwrap();
    // Nothing listening; a URL that is not redis://.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.redis = vec![format!("redis://127.0.0.1:{port}/")];
    assert!(run_scenario(&config).unwrap_err().to_string().contains("cannot connect"));
    config.redis = vec!["http://127.0.0.1:6379/".into()];
    assert!(run_scenario(&config).unwrap_err().to_string().contains("expected redis://"));
    server.shutdown();
}

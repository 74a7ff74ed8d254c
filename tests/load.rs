//! `hibiki load` through its library API, against an in-process `hibiki serve` app: each
//! scenario for about a second, and the ways a run can go wrong.

use std::net::SocketAddr;
use std::time::Duration;

use hibiki::app::ServeApp;
use hibiki::load::{FailureCause, LoadConfig, LoadError, Scenario, run_scenario, svg};
use hibiki::reactor::{Running, Server};

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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = LoadConfig::new(Scenario::Echo, format!("ws://127.0.0.1:{port}/echo"));
    let err = run_scenario(&config).unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot connect to 127.0.0.1:{port}")), "{text}");
}

#[test]
fn bad_input_is_rejected() {
    let bad = |config: LoadConfig| run_scenario(&config).unwrap_err().to_string();
    assert!(bad(LoadConfig::new(Scenario::Echo, "wss://127.0.0.1/echo")).contains("TLS"));
    assert!(bad(LoadConfig::new(Scenario::Echo, "127.0.0.1:8080")).contains("invalid URL"));
    let mut small = LoadConfig::new(Scenario::Echo, "ws://127.0.0.1:1/echo");
    small.payload = 8;
    assert!(bad(small).contains("--payload"));
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

//! `hibiki serve` on room stores that answer later, from another thread, and fail on
//! demand: over real sockets, acks wait for the stores, a failing store gives failed acks and
//! a degraded `/healthz` (never an `ok`), and the engine keeps serving `/echo` meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::app::{Client, SEC};
use common::{Peer, http, status_of};
use hibiki::app::{ServeApp, ServeConfig};
use hibiki::hub::store::testing::{self, Weather};
use hibiki::proto::{Event, MessageKind};
use hibiki::reactor::{Running, Server};
use serde_json::json;

fn server(weather: Weather) -> (Running<ServeApp>, std::sync::Arc<testing::Control>) {
    let (stores, control) = testing::later(1000, weather);
    let mut config = ServeConfig::default();
    config.api_key = Some("key".into());
    let server = Server::builder()
        .bind(common::local())
        .threads(2)
        .start(ServeApp::with_stores(config, stores))
        .unwrap();
    (server, control)
}

fn api_publish(addr: std::net::SocketAddr, data: &str) -> String {
    let body = format!(r#"{{"room":"news","data":"{data}"}}"#);
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(addr, request.as_bytes())
}

#[test]
fn the_publish_api_answers_when_a_later_store_confirmed() {
    let (server, control) = server(Weather { max_delay: Duration::from_millis(30), drop: 0.0 });
    let addr = server.local_addr();
    let mut reader = Client::connect(&server, &[]);
    reader.join("news");
    let answer = api_publish(addr, "first");
    assert_eq!(status_of(&answer), 200, "{answer}");
    let json: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["seq"], 1);
    assert!(json["epoch"].is_string());
    assert_eq!(reader.expect("message")["payload"]["data"], "first");
    control.set_failing(true);
    let answer = api_publish(addr, "lost");
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    control.set_failing(false);
    assert_eq!(status_of(&api_publish(addr, "second")), 200);
    assert_eq!(reader.expect("message")["payload"]["data"], "second", "the failed one was never published");
}

#[test]
fn acks_wait_for_stores_that_answer_later_and_nothing_is_missed() {
    let (server, control) = server(Weather { max_delay: Duration::from_millis(20), drop: 0.1 });
    let mut a = Client::connect(&server, &[]);
    let mut b = Client::connect(&server, &[]);
    a.join("chat:later");
    b.join("chat:later");
    let started = Instant::now();
    for i in 1..=30 {
        if i == 30 {
            // The last one is not lost, so that a hole at the end shows too (a lost last
            // message is the cluster's probe's to find).
            control.set_calm(true);
        }
        let ack = a.request("publish", &format!("p{i}"), json!({"room": "chat:later", "data": i}));
        assert_eq!(ack["seq"], i, "{ack}");
    }
    assert!(started.elapsed() > Duration::from_millis(30), "the acks waited for the store");
    let seqs: Vec<u64> = (1..=30).map(|_| b.expect("message")["payload"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "every message once, in order, holes filled from history");
}

#[test]
fn a_failing_store_fails_acks_and_healthz_while_echo_goes_on() {
    let (server, control) = server(Weather { max_delay: Duration::from_millis(5), drop: 0.0 });
    let addr = server.local_addr();
    let mut a = Client::connect(&server, &[]);
    a.join("chat:down");
    assert_eq!(status_of(&http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
    control.set_failing(true);
    let health = http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&health), 503, "{health}");
    assert!(health.contains("degraded"), "{health}");
    for i in 0..5 {
        let ack = a.request("publish", &format!("f{i}"), json!({"room": "chat:down", "data": i}));
        assert_eq!(
            (ack["ok"].clone(), ack["error"]["code"].clone()),
            (json!(false), json!("unavailable")),
            "{ack}"
        );
    }
    // The engine is not held up: /echo answers at once.
    let mut echo = Peer::connect(addr, "/echo");
    let started = Instant::now();
    echo.send(MessageKind::Text, b"still here");
    assert_eq!(echo.recv(), Event::Text(bytes::Bytes::from_static(b"still here")));
    assert!(started.elapsed() < SEC);
    control.set_failing(false);
    assert_eq!(status_of(&http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
    let ack = a.request("publish", "back", json!({"room": "chat:down", "data": "back"}));
    assert_eq!(
        (ack["ok"].clone(), ack["seq"].clone()),
        (json!(true), json!(1)),
        "nothing failed took effect"
    );
    let metrics = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let errors = metrics.lines().find(|l| l.starts_with("hibiki_store_errors_total ")).unwrap();
    assert_eq!(errors, "hibiki_store_errors_total 5");
}

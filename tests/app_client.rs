//! The client side of acks against the real hub.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hibiki::app::{ServeApp, ServeConfig};
use hibiki::client::{AckError, AppClient, Client};
use hibiki::reactor::Server;
use serde_json::json;

#[test]
fn requests_are_acked_refused_or_time_out_after_retries() {
    let server =
        Server::builder().bind("127.0.0.1:0".parse().unwrap()).threads(1).start(ServeApp::default()).unwrap();
    let url = format!("ws://{}", server.local_addr());
    let mut a = AppClient::new(Client::connect(&format!("{url}/ws")).unwrap());
    let mut b = AppClient::new(Client::connect(&format!("{url}/ws")).unwrap());
    a.request("join", json!({"room": "chat:acks"})).unwrap();
    b.request("join", json!({"room": "chat:acks"})).unwrap();
    let ack = a.request("publish", json!({"room": "chat:acks", "data": "hi"})).unwrap();
    assert_eq!(ack["seq"], 1);
    let mut got = None;
    while let Some(envelope) = b.next(Duration::from_secs(2)).unwrap() {
        if envelope["type"] == "message" {
            got = Some(envelope);
            break;
        }
    }
    assert_eq!(got.expect("b gets the message")["payload"]["data"], "hi");
    match a.request("typing", json!({"room": "chat:elsewhere"})) {
        Err(AckError::Refused { code, .. }) => assert_eq!(code, "not_joined"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // `/echo` never acks: the send is repeated under the same id, then reported.
    let mut echo = AppClient::new(Client::connect(&format!("{url}/echo")).unwrap())
        .ack_timeout(Duration::from_millis(100))
        .max_retries(2);
    match echo.request("publish", json!({"room": "r", "data": 1})) {
        Err(AckError::Timeout { attempts }) => assert_eq!(attempts, 3),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let mut copies = Vec::new();
    while let Some(envelope) = echo.next(Duration::from_millis(200)).unwrap() {
        copies.push(envelope["id"].clone());
    }
    assert_eq!(copies.len(), 3, "three sends");
    assert!(copies.iter().all(|id| id == &copies[0] && id.is_string()), "one id: {copies:?}");
}

/// The server deduplicates publishes by user and id across connections: a client that
/// reconnects must not reuse its ids, or its new message is taken for a retry of the old one.
#[test]
fn a_user_who_reconnects_publishes_new_messages_under_new_ids() {
    let mut config = ServeConfig::default();
    config.jwt_secret = Some("s".into());
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .threads(1)
        .start(ServeApp::new(config))
        .unwrap();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = |sub: &str| {
        let claims = json!({"sub": sub, "exp": exp});
        let key = jsonwebtoken::EncodingKey::from_secret(b"s");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let url = |sub: &str| format!("ws://{}/ws?token={}", server.local_addr(), token(sub));
    let mut reader = AppClient::new(Client::connect(&url("reader")).unwrap());
    reader.request("join", json!({"room": "chat:again"})).unwrap();
    let mut seqs = Vec::new();
    for text in ["first", "second"] {
        // A new connection each time, as after a reconnect, for the same user.
        let mut writer = AppClient::new(Client::connect(&url("writer")).unwrap());
        let ack = writer.request("publish", json!({"room": "chat:again", "data": text})).unwrap();
        seqs.push(ack["seq"].as_u64().unwrap());
        let delivered = loop {
            let envelope = reader.next(Duration::from_secs(5)).unwrap().expect("the reader gets it");
            if envelope["type"] == "message" {
                break envelope;
            }
        };
        assert_eq!(delivered["payload"]["data"], text);
    }
    assert_eq!(seqs, [1, 2], "the second message is new, not a retry of the first");
}

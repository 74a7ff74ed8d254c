//! A room message is encoded once, however many members receive it, over TLS too (encrypted
//! per connection, encoded once). In its own test binary: the encode counter is process-wide,
//! and the tests here take turns.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::tls::{TlsClient, cert, client_config};
use common::{Peer, eventually};
use hibiki::app::{ServeApp, ServeConfig};
use hibiki::hub::broadcast::encode_count;
use hibiki::proto::Event;
use hibiki::reactor::{Server, TlsConfig};

/// The encode counter is shared: one test at a time.
static TURN: Mutex<()> = Mutex::new(());

#[test]
fn publishing_to_a_thousand_members_encodes_once() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::builder().bind(common::local()).threads(1).start(ServeApp::default()).unwrap();
    let addr = server.local_addr();
    let mut members: Vec<Peer> = (0..1000).map(|_| Peer::connect(addr, "/ws")).collect();
    for (i, member) in members.iter_mut().enumerate() {
        member.send_text(&format!(r#"{{"type":"join","id":{i},"payload":{{"room":"chat:big"}}}}"#));
    }
    let handle = server.handle();
    assert!(eventually(Duration::from_secs(10), || handle.stats().snapshot().messages_in >= 1000));
    // Let every join finish (each member gets welcome, presence and an ack).
    for member in members.iter_mut() {
        loop {
            match member.next_event(Duration::from_secs(5)) {
                Some(Event::Text(t)) if t.starts_with(br#"{"type":"ack""#) => break,
                Some(_) => continue,
                None => panic!("no ack for a join"),
            }
        }
    }
    let before = encode_count();
    members[0].send_text(r#"{"type":"publish","payload":{"room":"chat:big","data":"to everyone"}}"#);
    for member in members.iter_mut() {
        loop {
            match member.next_event(Duration::from_secs(5)) {
                Some(Event::Text(t)) if t.starts_with(br#"{"type":"message""#) => break,
                Some(_) => continue,
                None => panic!("a member got no message"),
            }
        }
    }
    assert_eq!(encode_count() - before, 1, "one encode for 1,000 recipients");
}

#[test]
fn over_tls_a_message_is_encoded_once_and_encrypted_per_member() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let cert = cert();
    let tls = TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let mut config = ServeConfig::default();
    config.stats_period = None;
    let server =
        Server::builder().bind(common::local()).threads(1).tls(tls).start(ServeApp::new(config)).unwrap();
    let client = client_config(&[&cert]);
    let mut members: Vec<TlsClient> =
        (0..50).map(|_| TlsClient::connect(server.local_addr(), &client)).collect();
    for member in &mut members {
        member.join("chat:tls-big");
    }
    // The joins' announcements are out once the counter stands still.
    assert!(eventually(Duration::from_secs(5), || {
        let count = encode_count();
        std::thread::sleep(Duration::from_millis(200));
        count == encode_count()
    }));
    let before = encode_count();
    members[0].send(
        serde_json::json!({"type": "publish", "payload": {"room": "chat:tls-big", "data": "to everyone"}}),
    );
    for member in &mut members {
        assert_eq!(member.expect("message")["payload"]["data"], "to everyone");
    }
    assert_eq!(encode_count() - before, 1, "one encode for 50 TLS recipients");
}

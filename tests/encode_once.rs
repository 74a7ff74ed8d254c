//! A room message is encoded once, however many members receive it. In its own test binary:
//! the encode counter is process-wide.

mod common;

use std::time::Duration;

use common::{Peer, eventually};
use hibiki::app::ServeApp;
use hibiki::hub::broadcast::encode_count;
use hibiki::proto::Event;
use hibiki::reactor::Server;

#[test]
fn publishing_to_a_thousand_members_encodes_once() {
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

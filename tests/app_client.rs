//! The client side of acks against the real hub.

use std::time::Duration;

use hibiki::app::ServeApp;
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
    assert_eq!(copies, vec![json!(1), json!(1), json!(1)], "three sends, one id");
}

//! A `/ws` client speaking the app protocol over a test [`Peer`], and servers to talk to.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hibiki::app::{ServeApp, ServeConfig};
use hibiki::proto::{Event, MessageKind};
use hibiki::reactor::{Running, Server};
use serde_json::{Value, json};

use super::Peer;

pub const SEC: Duration = Duration::from_secs(1);
pub const SECRET: &str = "test-secret";

pub fn server_with(config: ServeConfig, threads: usize) -> Running<ServeApp> {
    Server::builder()
        .bind(super::local())
        .threads(threads)
        .tick(Some(Duration::from_millis(50)))
        .start(ServeApp::new(config))
        .unwrap()
}

pub fn server() -> Running<ServeApp> {
    server_with(ServeConfig::default(), 2)
}

/// A `/ws` client speaking JSON (or MessagePack).
pub struct Client {
    pub peer: Peer,
    pub msgpack: bool,
    pub user: String,
}

impl Client {
    pub fn connect(server: &Running<ServeApp>, headers: &[(&str, &str)]) -> Self {
        Self::connect_at(server, "/ws", headers, false)
    }

    pub fn connect_at(
        server: &Running<ServeApp>,
        path: &str,
        headers: &[(&str, &str)],
        msgpack: bool,
    ) -> Self {
        Self::connect_to(server.local_addr(), path, headers, msgpack)
    }

    /// A client of the server at `addr`.
    pub fn connect_to(
        addr: std::net::SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        msgpack: bool,
    ) -> Self {
        let protocols: &[&str] = if msgpack { &["hibiki.v1.msgpack"] } else { &["hibiki.v1.json"] };
        let peer = Peer::try_connect_with(addr, path, headers, false, protocols).expect("upgrade");
        Self::on(peer, msgpack)
    }

    /// A JSON client on a connected peer.
    pub fn from_peer(peer: Peer) -> Self {
        Self::on(peer, false)
    }

    fn on(peer: Peer, msgpack: bool) -> Self {
        let mut client = Self { peer, msgpack, user: String::new() };
        let welcome = client.expect("welcome");
        client.user = welcome["payload"]["user"].as_str().unwrap().to_owned();
        client
    }

    pub fn send(&mut self, value: Value) {
        if self.msgpack {
            let bytes = rmp_serde::to_vec_named(&value).unwrap();
            self.peer.send(MessageKind::Binary, &bytes);
        } else {
            self.peer.send_text(&value.to_string());
        }
    }

    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            match self.peer.next_event(timeout)? {
                Event::Text(t) => {
                    assert!(!self.msgpack, "JSON in a text frame only for the JSON protocol");
                    return Some(serde_json::from_slice(&t).unwrap());
                }
                Event::Binary(b) => {
                    assert!(self.msgpack, "MessagePack in binary frames");
                    return Some(rmp_serde::from_slice(&b).unwrap());
                }
                Event::Ping(_) | Event::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next envelope of type `kind`, skipping others.
    pub fn expect(&mut self, kind: &str) -> Value {
        for _ in 0..100 {
            let Some(v) = self.next(5 * SEC) else { break };
            if v["type"] == kind {
                return v;
            }
        }
        panic!("no {kind} envelope");
    }

    /// The next envelope of type `kind` within `wait`, skipping others.
    pub fn expect_within(&mut self, kind: &str, wait: Duration) -> Value {
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.next(left) {
                Some(v) if v["type"] == kind => return v,
                Some(_) => continue,
                None => break,
            }
        }
        panic!("no {kind} envelope within {wait:?}");
    }

    /// Nothing of type `kind` arrives within `wait`.
    pub fn quiet(&mut self, kind: &str, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.next(left) {
                Some(v) if v["type"] == kind => return false,
                Some(_) => continue,
                None => return true,
            }
        }
        true
    }

    pub fn request(&mut self, kind: &str, id: &str, payload: Value) -> Value {
        self.send(json!({"type": kind, "id": id, "payload": payload}));
        let ack = self.expect("ack");
        assert_eq!(ack["payload"]["id"], id);
        ack["payload"].clone()
    }

    pub fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "id": format!("join-{room}"), "payload": {"room": room}}));
        let presence = self.expect("presence");
        let ack = self.expect("ack");
        assert_eq!(ack["payload"]["ok"], true, "{ack}");
        presence
    }

    pub fn close(self) {
        drop(self.peer);
    }
}

pub fn token(sub: &str, rooms: Option<Vec<&str>>, exp_offset: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut claims = json!({"sub": sub, "name": format!("User {sub}"), "exp": now + exp_offset});
    if let Some(rooms) = rooms {
        claims["rooms"] = json!(rooms);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn jwt_server() -> Running<ServeApp> {
    let mut config = ServeConfig::default();
    config.jwt_secret = Some(SECRET.into());
    config.api_key = Some("api-key".into());
    server_with(config, 2)
}

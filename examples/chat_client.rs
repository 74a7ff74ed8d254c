//! Chat in a room, with typing and read receipts: two users of `hibiki serve` (Ann and Bob)
//! join a room, see each other arrive, type, talk and mark what they read.
//!
//! ```sh
//! cargo run --release -- serve                     # in one terminal; open http://127.0.0.1:8080/
//! cargo run --example chat_client                  # ws://127.0.0.1:8080/ws, room chat:lobby
//! cargo run --example chat_client -- ws://HOST:PORT/ws chat:other
//! ```
//!
//! The messages use the page's format (`{kind: "chat", text, name}`), so a page open on the
//! same room shows them as they come.

use std::error::Error;
use std::time::{Duration, Instant};

use hibiki::client::{AppClient, Client};
use serde_json::{Value, json};

/// What each user saw.
#[derive(Debug, Default)]
pub(crate) struct ChatSummary {
    /// Texts Ann received, in order.
    pub(crate) ann_saw: Vec<String>,
    /// Texts Bob received, in order.
    pub(crate) bob_saw: Vec<String>,
    /// Ann saw Bob typing.
    pub(crate) ann_saw_typing: bool,
    /// The seq Bob was told Ann had read up to.
    pub(crate) bob_saw_read_up_to: Option<u64>,
    /// Users in the room when Bob joined.
    pub(crate) members_at_bob_join: usize,
}

/// One user: a connection, its user id, and envelopes that arrived while it waited for another.
struct User {
    name: &'static str,
    app: AppClient,
    id: String,
    stash: Vec<Value>,
}

impl User {
    fn connect(url: &str, name: &'static str) -> Result<Self, Box<dyn Error>> {
        let mut app = AppClient::new(Client::connect(url)?);
        let welcome = app.next(Duration::from_secs(5))?.ok_or("no welcome")?;
        let id = welcome["payload"]["user"].as_str().unwrap_or_default().to_owned();
        println!("{name}: connected as {id}");
        Ok(Self { name, app, id, stash: Vec::new() })
    }

    /// The next envelope of type `kind` within 5 s (others are kept for later calls).
    fn expect(&mut self, kind: &str) -> Result<Value, Box<dyn Error>> {
        if let Some(i) = self.stash.iter().position(|e| e["type"] == kind) {
            return Ok(self.stash.remove(i));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.app.next(left)? {
                Some(envelope) if envelope["type"] == kind => return Ok(envelope),
                Some(other) => self.stash.push(other),
                None => break,
            }
        }
        Err(format!("{}: no {kind} within 5 s", self.name).into())
    }

    fn say(&mut self, room: &str, text: &str) -> Result<u64, Box<dyn Error>> {
        let data = json!({"kind": "chat", "text": text, "name": self.name});
        let ack = self.app.request("publish", json!({"room": room, "data": data}))?;
        let seq = ack["seq"].as_u64().unwrap_or_default();
        println!("{}: said {text:?} (seq {seq})", self.name);
        Ok(seq)
    }

    /// Reads messages until one with `text` arrives; returns its seq and keeps every text seen.
    fn hear(&mut self, text: &str, log: &mut Vec<String>) -> Result<u64, Box<dyn Error>> {
        loop {
            let message = self.expect("message")?;
            let payload = &message["payload"];
            let heard = payload["data"]["text"].as_str().unwrap_or_default().to_owned();
            let from = payload["data"]["name"].as_str().unwrap_or("?");
            println!("{}: <- {from}: {heard:?} (seq {})", self.name, payload["seq"]);
            log.push(heard.clone());
            if heard == text {
                return Ok(payload["seq"].as_u64().unwrap_or_default());
            }
        }
    }
}

/// Runs the conversation on `room` at `url` (`ws://.../ws`).
pub(crate) fn run(url: &str, room: &str) -> Result<ChatSummary, Box<dyn Error>> {
    let mut summary = ChatSummary::default();
    let mut ann = User::connect(url, "Ann")?;
    let mut bob = User::connect(url, "Bob")?;

    ann.app.request("join", json!({"room": room}))?;
    println!("Ann: joined {room}");
    bob.app.request("join", json!({"room": room}))?;
    let presence = bob.expect("presence")?;
    summary.members_at_bob_join = presence["payload"]["count"].as_u64().unwrap_or_default() as usize;
    println!("Bob: joined {room}, {} there", summary.members_at_bob_join);
    let joined = ann.expect("user_joined")?;
    println!("Ann: sees {} join", joined["payload"]["user"]);

    // Bob starts typing; Ann sees it.
    bob.app.request("typing", json!({"room": room}))?;
    let typing = ann.expect("user_typing")?;
    summary.ann_saw_typing = typing["payload"]["user"] == bob.id.as_str();
    println!("Ann: sees Bob typing");

    let hello = "Hello Ann! Is the release out?";
    bob.say(room, hello)?;
    let seq = ann.hear(hello, &mut summary.ann_saw)?;
    // Ann marks it read: Bob gets a receipt.
    ann.app.request("read", json!({"room": room, "seq": seq}))?;
    let read = bob.expect("messages_read")?;
    summary.bob_saw_read_up_to = read["payload"]["seq"].as_u64();
    println!("Bob: Ann has read up to seq {}", read["payload"]["seq"]);

    let reply = "Yes, 0.1 shipped an hour ago.";
    ann.say(room, reply)?;
    bob.hear(hello, &mut summary.bob_saw)?; // his own message comes back first (echo)
    bob.hear(reply, &mut summary.bob_saw)?;
    ann.hear(reply, &mut summary.ann_saw)?;

    for user in [&mut ann, &mut bob] {
        user.app.request("leave", json!({"room": room}))?;
        println!("{}: left {room}", user.name);
    }
    Ok(summary)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let room = args.next().unwrap_or_else(|| "chat:lobby".into());
    let summary = run(&url, &room)?;
    println!(
        "done: {} in the room; Ann saw {} messages and Bob typing: {}; Bob saw {} and a read receipt up to seq {:?}",
        summary.members_at_bob_join,
        summary.ann_saw.len(),
        summary.ann_saw_typing,
        summary.bob_saw.len(),
        summary.bob_saw_read_up_to
    );
    Ok(())
}

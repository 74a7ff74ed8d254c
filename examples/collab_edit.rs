//! Collaborative editing: two editors of one document broadcast their changes (numbered, kept
//! in history) and their cursors (volatile: only the latest matters). Every editor applies the
//! changes in the room's seq order, so all copies converge. One editor loses its connection,
//! the other keeps typing; the first reconnects, resumes from the last seq it applied, gets
//! exactly the changes it missed, and ends with the same document.
//!
//! ```sh
//! cargo run --release -- serve
//! cargo run --example collab_edit                            # ws://127.0.0.1:8080/ws, doc:readme
//! cargo run --example collab_edit -- ws://HOST:PORT/ws doc:other
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use hibiki::client::{AppClient, Client};
use serde_json::{Value, json};

/// Both copies of the document at the end, and what the resume replayed.
#[derive(Debug, Default)]
pub(crate) struct EditSummary {
    /// Alice's copy.
    pub(crate) alice: String,
    /// Bruno's copy.
    pub(crate) bruno: String,
    /// Changes Bruno got from the resume after his reconnect.
    pub(crate) replayed: usize,
    /// Cursor positions Alice saw from Bruno.
    pub(crate) cursors_seen: usize,
}

/// One editor: a connection, a copy of the document, the last seq applied.
struct Editor {
    name: &'static str,
    app: AppClient,
    text: String,
    last_seq: u64,
    cursors_seen: usize,
}

impl Editor {
    fn connect(url: &str, name: &'static str) -> Result<Self, Box<dyn Error>> {
        let app = AppClient::new(Client::connect(url)?);
        Ok(Self { name, app, text: String::new(), last_seq: 0, cursors_seen: 0 })
    }

    /// Broadcasts an insertion at `at` (a char index) and a cursor after it.
    fn insert(&mut self, doc: &str, at: usize, text: &str) -> Result<u64, Box<dyn Error>> {
        let change = json!({"op": "insert", "at": at, "text": text, "by": self.name});
        let ack = self.app.request("publish", json!({"room": doc, "data": change}))?;
        let cursor = json!({"cursor": at + text.chars().count(), "by": self.name});
        self.app.send("publish", json!({"room": doc, "data": cursor, "volatile": true, "echo": false}))?;
        Ok(ack["seq"].as_u64().unwrap_or_default())
    }

    /// Applies one envelope: a change (in seq order, each once) or a cursor.
    fn apply(&mut self, envelope: &Value) -> bool {
        if envelope["type"] != "message" {
            return false;
        }
        let payload = &envelope["payload"];
        let data = &payload["data"];
        if data.get("cursor").is_some() {
            self.cursors_seen += 1;
            return false;
        }
        let seq = payload["seq"].as_u64().unwrap_or_default();
        if seq <= self.last_seq {
            return false; // applied already
        }
        self.last_seq = seq;
        let at = data["at"].as_u64().unwrap_or_default() as usize;
        let byte = self.text.char_indices().nth(at).map_or(self.text.len(), |(i, _)| i);
        self.text.insert_str(byte, data["text"].as_str().unwrap_or_default());
        true
    }

    /// Applies what arrives until `seq` is applied (or 5 s pass); how many changes applied.
    fn catch_up(&mut self, seq: u64) -> Result<usize, Box<dyn Error>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut applied = 0;
        while self.last_seq < seq {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            let Some(envelope) = self.app.next(left)? else { break };
            applied += usize::from(self.apply(&envelope));
        }
        Ok(applied)
    }

    /// Reads for `wait`, applying what comes (cursors included).
    fn drain(&mut self, wait: Duration) -> Result<(), Box<dyn Error>> {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(envelope) = self.app.next(left)? else { break };
            self.apply(&envelope);
        }
        Ok(())
    }
}

/// Runs the editing session on document room `doc` at `url`.
pub(crate) fn run(url: &str, doc: &str) -> Result<EditSummary, Box<dyn Error>> {
    let mut alice = Editor::connect(url, "Alice")?;
    let mut bruno = Editor::connect(url, "Bruno")?;
    // Both start from the document's history (resume after 0), then follow it live.
    for editor in [&mut alice, &mut bruno] {
        let ack = editor.app.request("resume", json!({"room": doc, "after": 0}))?;
        editor.catch_up(ack["seq"].as_u64().unwrap_or_default())?;
        println!("{}: opened {doc} at seq {}: {:?}", editor.name, editor.last_seq, editor.text);
    }
    let base = alice.text.chars().count();
    let seq = alice.insert(doc, base, "hibiki")?;
    bruno.catch_up(seq)?;
    alice.catch_up(seq)?;
    let end = bruno.text.chars().count();
    let seq = bruno.insert(doc, end, " echoes")?;
    alice.catch_up(seq)?;
    bruno.catch_up(seq)?;
    alice.drain(Duration::from_millis(100))?; // Bruno's cursor
    println!("both: {:?}", alice.text);

    // Bruno's connection drops; Alice goes on.
    let resume_from = bruno.last_seq;
    drop(bruno.app);
    println!("Bruno: connection lost at seq {resume_from}");
    let mut last = 0;
    for word in [" every", " message", " once."] {
        let end = alice.text.chars().count();
        last = alice.insert(doc, end, word)?;
        alice.catch_up(last)?;
    }
    println!("Alice: typed on to seq {last}: {:?}", alice.text);

    // Bruno is back: resume from the last seq he applied.
    bruno.app = AppClient::new(Client::connect(url)?);
    let ack = bruno.app.request("resume", json!({"room": doc, "after": resume_from}))?;
    let replayed = bruno.catch_up(ack["seq"].as_u64().unwrap_or_default())?;
    println!("Bruno: reconnected, resumed after seq {resume_from}: {replayed} changes replayed");
    println!("Bruno: {:?}", bruno.text);
    let summary = EditSummary {
        alice: alice.text.clone(),
        bruno: bruno.text.clone(),
        replayed,
        cursors_seen: alice.cursors_seen,
    };
    println!("converged: {}", summary.alice == summary.bruno);
    Ok(summary)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let doc = args.next().unwrap_or_else(|| "doc:readme".into());
    let summary = run(&url, &doc)?;
    println!(
        "done: {:?} on both sides: {}; {} changes replayed after the reconnect, {} cursor updates seen",
        summary.alice,
        summary.alice == summary.bruno,
        summary.replayed,
        summary.cursors_seen
    );
    Ok(())
}

//! Per-user notifications from a backend: a user connects (and, like every connection, is in
//! its own room `user:ID`); a backend reaches that user through `POST /api/publish` to
//! `user:ID`, through a `direct` message over its own connection, and everyone in a topic
//! room through `POST /api/publish` to that room.
//!
//! ```sh
//! cargo run --release -- serve --api-key demo-key
//! cargo run --example notifications                      # ws://127.0.0.1:8080/ws, key demo-key
//! cargo run --example notifications -- ws://HOST:PORT/ws KEY
//! ```

use std::error::Error;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hibiki::client::{AppClient, Client, WsUrl};
use serde_json::{Value, json};

/// What the user received, and how the API answered.
#[derive(Debug, Default)]
pub(crate) struct NotificationSummary {
    /// The user's id (from `welcome`).
    pub(crate) user: String,
    /// `(room, title)` of each notification received, in order.
    pub(crate) received: Vec<(String, String)>,
    /// HTTP status of each `POST /api/publish`.
    pub(crate) api_statuses: Vec<u16>,
}

/// `POST /api/publish` with `{"room", "data"}`; the status and body of the answer.
fn api_publish(url: &WsUrl, key: &str, room: &str, data: &Value) -> Result<(u16, String), Box<dyn Error>> {
    let body = json!({"room": room, "data": data}).to_string();
    let mut stream = TcpStream::connect((url.host(), url.port()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.host_header(),
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Sends three notifications to a fresh user at `url`, with `api_key` for the publish API.
pub(crate) fn run(url: &str, api_key: &str) -> Result<NotificationSummary, Box<dyn Error>> {
    let ws_url = WsUrl::parse(url)?;
    let mut summary = NotificationSummary::default();

    // The user: connects, learns its id, follows a topic.
    let mut user = AppClient::new(Client::connect(url)?);
    let welcome = user.next(Duration::from_secs(5))?.ok_or("no welcome")?;
    summary.user = welcome["payload"]["user"].as_str().unwrap_or_default().to_owned();
    let inbox = format!("user:{}", summary.user);
    user.request("join", json!({"room": "news"}))?;
    println!("user: connected as {}, following news", summary.user);

    // The backend: the publish API for the user's room and for the topic...
    let mut expected = 1;
    for (room, title) in [(inbox.as_str(), "Your order shipped"), ("news", "Maintenance at 02:00 UTC")] {
        let (status, body) = api_publish(&ws_url, api_key, room, &json!({"title": title}))?;
        summary.api_statuses.push(status);
        match status {
            200 => {
                println!("backend: POST /api/publish to {room}: {body}");
                expected += 1;
            }
            403 => println!("backend: the publish API is off (start the server with --api-key {api_key})"),
            401 => println!("backend: the server refused the API key {api_key:?}"),
            other => println!("backend: POST /api/publish answered {other}: {body}"),
        }
    }
    // ...and `direct` over its own connection.
    let mut backend = AppClient::new(Client::connect(url)?);
    let ack =
        backend.request("direct", json!({"user": summary.user, "data": {"title": "Payment received"}}))?;
    println!("backend: direct to {} (seq {} in {inbox})", summary.user, ack["seq"]);

    let deadline = Instant::now() + Duration::from_secs(5);
    while summary.received.len() < expected {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
        let Some(envelope) = user.next(left)? else { break };
        if envelope["type"] != "message" {
            continue;
        }
        let payload = &envelope["payload"];
        let room = payload["room"].as_str().unwrap_or_default().to_owned();
        let title = payload["data"]["title"].as_str().unwrap_or_default().to_owned();
        println!("user: notification in {room} (seq {}, from {}): {title}", payload["seq"], payload["from"]);
        summary.received.push((room, title));
    }
    Ok(summary)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let key =
        args.next().or_else(|| std::env::var("HIBIKI_API_KEY").ok()).unwrap_or_else(|| "demo-key".into());
    let summary = run(&url, &key)?;
    println!(
        "done: {} notifications received by {} (publish API answered {:?})",
        summary.received.len(),
        summary.user,
        summary.api_statuses
    );
    Ok(())
}

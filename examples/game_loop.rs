//! A 60 Hz game loop in a tick room: players send inputs, a host applies them and publishes a
//! state snapshot every frame, and `hibiki serve` delivers each member everything of one tick
//! as one `batch` frame. Snapshots and inputs carry a `key`, so a member that falls behind
//! gets the latest state instead of a backlog.
//!
//! ```sh
//! cargo run --release -- serve                      # game:* rooms are tick rooms by default
//! cargo run --example game_loop                     # ws://127.0.0.1:8080/ws, game:demo, 3 s
//! cargo run --example game_loop -- ws://HOST:PORT/ws 10
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::thread;
use std::time::{Duration, Instant};

use hibiki::client::{AppClient, Client};
use serde_json::{Value, json};

/// The room (a tick room: it matches the default `--tick-room game:*`).
pub(crate) const ROOM: &str = "game:demo";

/// What each side saw.
#[derive(Debug, Default)]
pub(crate) struct GameSummary {
    /// Frames the host simulated (and snapshots it published).
    pub(crate) frames: u64,
    /// Inputs the host received.
    pub(crate) inputs: u64,
    /// Per player: `(batches received, snapshots in them, last frame seen)`.
    pub(crate) players: Vec<(u64, u64, u64)>,
    /// The final positions, by player.
    pub(crate) positions: Positions,
}

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Where each player is, by name.
type Positions = BTreeMap<String, (i64, i64)>;

/// Messages of an envelope: the items of a `batch`, or the envelope itself.
fn messages(envelope: Value) -> Vec<Value> {
    match envelope["type"].as_str() {
        Some("batch") => match envelope["payload"].clone() {
            Value::Array(items) => items.into_iter().filter(|i| i["type"] == "message").collect(),
            _ => Vec::new(),
        },
        Some("message") => vec![envelope],
        _ => Vec::new(),
    }
}

fn connect(url: &str) -> Result<AppClient> {
    let mut app = AppClient::new(Client::connect(url)?);
    app.request("join", json!({"room": ROOM})).map_err(|e| e.to_string())?;
    Ok(app)
}

/// A player: sends an input 20 times a second, counts the batches and snapshots it gets.
fn player(url: &str, name: &str, run_for: Duration) -> Result<(u64, u64, u64)> {
    let mut app = connect(url)?;
    let (mut batches, mut snapshots, mut last_frame) = (0, 0, 0);
    let start = Instant::now();
    let mut next_input = start;
    let mut n = 0u64;
    while start.elapsed() < run_for {
        if Instant::now() >= next_input {
            n += 1;
            let (dx, dy) = [(1, 0), (0, 1), (-1, 0), (0, -1)][(n / 5 % 4) as usize];
            let input = json!({"input": {"player": name, "dx": dx, "dy": dy, "n": n}});
            app.send(
                "publish",
                json!({"room": ROOM, "data": input, "key": format!("input:{name}"), "echo": false}),
            )?;
            next_input += Duration::from_millis(50);
        }
        let wait = next_input.saturating_duration_since(Instant::now());
        let Some(envelope) = app.next(wait)? else { continue };
        if envelope["type"] == "batch" {
            batches += 1;
        }
        for message in messages(envelope) {
            if let Some(frame) = message["payload"]["data"]["snapshot"]["frame"].as_u64() {
                snapshots += 1;
                last_frame = last_frame.max(frame);
            }
        }
    }
    println!("{name}: {batches} batches, {snapshots} snapshots, last frame {last_frame}");
    Ok((batches, snapshots, last_frame))
}

/// The host: 60 frames a second, applies the inputs of the frame, publishes the state.
fn host(url: &str, run_for: Duration) -> Result<(u64, u64, Positions)> {
    let mut app = connect(url)?;
    let mut positions = Positions::new();
    let (mut frames, mut inputs) = (0u64, 0u64);
    let period = Duration::from_secs(1) / 60;
    let start = Instant::now();
    while start.elapsed() < run_for {
        let due = start + period * (frames as u32 + 1);
        while let Some(left) = due.checked_duration_since(Instant::now()) {
            let Some(envelope) = app.next(left)? else { break };
            for message in messages(envelope) {
                let input = &message["payload"]["data"]["input"];
                let Some(player) = input["player"].as_str() else { continue };
                let at = positions.entry(player.to_owned()).or_default();
                at.0 += input["dx"].as_i64().unwrap_or_default();
                at.1 += input["dy"].as_i64().unwrap_or_default();
                inputs += 1;
            }
        }
        frames += 1;
        let snapshot = json!({"snapshot": {"frame": frames, "players": positions}});
        app.send("publish", json!({"room": ROOM, "data": snapshot, "key": "state", "echo": false}))?;
    }
    println!("host: {frames} frames, {inputs} inputs applied, positions {positions:?}");
    Ok((frames, inputs, positions))
}

/// Plays for `run_for` with two players at `url`.
pub(crate) fn run(url: &str, run_for: Duration) -> Result<GameSummary> {
    let host_url = url.to_owned();
    // The host starts first, so players find it running; it plays a little longer than they do.
    let host = thread::spawn(move || host(&host_url, run_for + Duration::from_millis(300)));
    thread::sleep(Duration::from_millis(100));
    let players: Vec<_> = ["aki", "ben"]
        .into_iter()
        .map(|name| {
            let url = url.to_owned();
            thread::spawn(move || player(&url, name, run_for))
        })
        .collect();
    let mut summary = GameSummary::default();
    for handle in players {
        summary.players.push(handle.join().map_err(|_| "a player panicked")??);
    }
    let (frames, inputs, positions) = host.join().map_err(|_| "the host panicked")??;
    (summary.frames, summary.inputs, summary.positions) = (frames, inputs, positions);
    Ok(summary)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let summary = run(&url, Duration::from_secs_f64(seconds))?;
    println!(
        "done: {} frames, {} inputs; (batches, snapshots, last frame) per player {:?}; positions {:?}",
        summary.frames, summary.inputs, summary.players, summary.positions
    );
    Ok(())
}

//! A live metrics feed: a producer publishes a sample once a second to a dashboard room (as
//! volatile messages: a viewer wants the latest value, not a backlog), and a viewer that
//! joined the room prints each sample as it arrives, with its delay.
//!
//! ```sh
//! cargo run --release -- serve
//! cargo run --example dashboard_feed                          # 5 samples to dashboard:metrics
//! cargo run --example dashboard_feed -- ws://HOST:PORT/ws 30
//! ```
//!
//! The server does the same for itself in the room `hibiki:stats` (the page's dashboard).

use std::error::Error;
use std::time::{Duration, Instant};

use hibiki::client::{AppClient, Client};
use hibiki::hub::envelope::now_ms;
use serde_json::json;

/// The room the samples go to.
pub(crate) const ROOM: &str = "dashboard:metrics";

/// What the viewer got.
#[derive(Debug, Default)]
pub(crate) struct FeedSummary {
    /// Samples published.
    pub(crate) published: u64,
    /// `(sample number, requests per second)` as the viewer received them.
    pub(crate) received: Vec<(u64, f64)>,
}

/// A made-up but plausible sample: requests per second and CPU load that drift.
fn sample(n: u64) -> (f64, f64) {
    let t = n as f64;
    let rps = 1200.0 + 300.0 * (t / 3.0).sin() + 40.0 * (t * 1.7).cos();
    let cpu = 0.35 + 0.2 * (t / 5.0).sin().abs();
    ((rps * 10.0).round() / 10.0, (cpu * 1000.0).round() / 1000.0)
}

/// Publishes `samples` samples, one per `period`, and collects what a viewer receives.
pub(crate) fn run(url: &str, samples: u64, period: Duration) -> Result<FeedSummary, Box<dyn Error>> {
    let mut summary = FeedSummary::default();
    let mut viewer = AppClient::new(Client::connect(url)?);
    viewer.request("join", json!({"room": ROOM}))?;
    let mut producer = AppClient::new(Client::connect(url)?);
    println!("viewer: watching {ROOM}; producer: one sample every {period:?}");
    let start = Instant::now();
    for n in 1..=samples {
        let (rps, cpu) = sample(n);
        let data = json!({"n": n, "rps": rps, "cpu": cpu, "at": now_ms()});
        producer.request("publish", json!({"room": ROOM, "data": data, "volatile": true}))?;
        summary.published += 1;
        // The viewer reads until the next sample is due.
        let next = start + period * n as u32;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            let Some(envelope) = viewer.next(left)? else { break };
            if envelope["type"] != "message" {
                continue;
            }
            let data = &envelope["payload"]["data"];
            let delay = now_ms().saturating_sub(data["at"].as_u64().unwrap_or_default());
            let (n, rps) = (data["n"].as_u64().unwrap_or_default(), data["rps"].as_f64().unwrap_or_default());
            println!(
                "viewer: sample {n}: {rps} req/s, cpu {:.1}% ({delay} ms after it was taken)",
                data["cpu"].as_f64().unwrap_or_default() * 100.0
            );
            summary.received.push((n, rps));
        }
    }
    Ok(summary)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let samples = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
    let summary = run(&url, samples, Duration::from_secs(1))?;
    println!("done: {} published, {} received", summary.published, summary.received.len());
    Ok(())
}

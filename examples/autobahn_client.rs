//! The Autobahn|Testsuite client driver: runs every case of a `wstest -m fuzzingserver`
//! against [`hibiki::client::Client`], echoing each message back.
//!
//! ```sh
//! AUTOBAHN_URL=ws://127.0.0.1:9001 AUTOBAHN_AGENT=hibiki cargo run --release --example autobahn_client
//! ```
//!
//! 1. `/getCaseCount` answers with the number of cases as a text message;
//! 2. `/runCase?case=i&agent=A` for each case: echo every text and binary message until the
//!    server closes (protocol failures end the case: the client already sent the Close frame
//!    the failure calls for);
//! 3. `/updateReports?agent=A` writes the reports.

use std::error::Error;
use std::time::{Duration, Instant};

use hibiki::client::{ClientBuilder, ClientError, Incoming};
use hibiki::proto::deflate::DeflateConfig;

fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let base = base.trim_end_matches('/');
    let agent = encode(&std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "hibiki".into()));
    let builder = ClientBuilder::new()
        .max_message_size(64 << 20)
        // Let the server keep its compression context, to exercise more of the inflater.
        .deflate_config(DeflateConfig::default().server_no_context_takeover(false))
        .connect_timeout(Duration::from_secs(10))
        .close_timeout(Duration::from_secs(2));

    let count = case_count(&builder, base)?;
    println!("{count} cases");
    let started = Instant::now();
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match run_case(&builder, &url) {
            Ok(echoed) => println!("case {case}: {echoed} messages echoed"),
            Err(e) => println!("case {case}: {e}"),
        }
    }
    println!("all cases run in {:.1} s", started.elapsed().as_secs_f64());
    let mut reports = builder.connect(&format!("{base}/updateReports?agent={agent}"))?;
    while let Ok(incoming) = reports.recv() {
        if let Incoming::Close { .. } = incoming {
            break;
        }
    }
    Ok(())
}

fn case_count(builder: &ClientBuilder, base: &str) -> Result<u32, Box<dyn Error>> {
    let mut client = builder.connect(&format!("{base}/getCaseCount"))?;
    let mut count = None;
    loop {
        match client.recv() {
            Ok(Incoming::Text(text)) => count = Some(text.trim().parse()?),
            Ok(Incoming::Close { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    count.ok_or_else(|| "no case count".into())
}

/// Echoes until the server ends the case; returns how many messages were echoed.
fn run_case(builder: &ClientBuilder, url: &str) -> Result<usize, ClientError> {
    let mut client = builder.connect(url)?;
    let mut echoed = 0;
    loop {
        let sent = match client.recv() {
            Ok(Incoming::Text(text)) => client.send_text(&text),
            Ok(Incoming::Binary(data)) => client.send_binary(&data),
            Ok(Incoming::Pong(_)) => continue,
            // The reply is sent and the server has hung up (or the wait timed out).
            Ok(Incoming::Close { .. }) => return Ok(echoed),
            // A protocol failure: the Close frame with its code went out before this returned.
            Err(e) => return Err(e),
        };
        match sent {
            Ok(()) => echoed += 1,
            // The server closed meanwhile: its Close frame is still to be read and answered.
            Err(ClientError::Closed { .. } | ClientError::Io(_)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Percent-encodes what is not unreserved (RFC 3986 §2.3).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

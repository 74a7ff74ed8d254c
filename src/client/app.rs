//! The client side of the app protocol of `hibiki serve` (`/ws`, JSON envelopes): sends that
//! wait for their `ack`, with a timeout and retries under the same id (the server answers a
//! repeated id again without a second effect), and everything else queued for the caller.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ack::{AckTracker, Expired};
use super::blocking::{Client, Incoming};
use super::error::ClientError;

/// Why an acknowledged send did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AckError {
    /// No ack after every retry.
    Timeout {
        /// Attempts made (the first send plus retries).
        attempts: u32,
    },
    /// The server acked with `ok: false`.
    Refused {
        /// The server's error code (`forbidden`, `history_gap`, ...).
        code: String,
        /// Its explanation.
        message: String,
    },
    /// The connection failed.
    Client(ClientError),
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { attempts } => write!(f, "no ack after {attempts} attempts"),
            Self::Refused { code, message } => write!(f, "refused ({code}): {message}"),
            Self::Client(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AckError {}

impl From<ClientError> for AckError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

/// A `/ws` client speaking JSON envelopes.
///
/// ```no_run
/// use hibiki::client::{AppClient, Client};
/// use serde_json::json;
///
/// let mut chat = AppClient::new(Client::connect("ws://127.0.0.1:8080/ws")?);
/// chat.request("join", json!({"room": "chat:lobby"}))?;
/// let ack = chat.request("publish", json!({"room": "chat:lobby", "data": {"text": "hi"}}))?;
/// println!("published as seq {}", ack["seq"]);
/// while let Some(envelope) = chat.next(std::time::Duration::from_secs(1))? {
///     println!("{envelope}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AppClient {
    client: Client,
    /// Ids are `PREFIX-N`: the prefix is random per client, so ids stay unique across the
    /// connections of a user (the server deduplicates publishes by user and id, across
    /// reconnects: a reused id would be taken for a retry, or refused as `id_reused`).
    prefix: String,
    next_id: u64,
    timeout: Duration,
    max_retries: u32,
    inbox: VecDeque<Value>,
}

impl AppClient {
    /// Wraps a connected client. Acks are awaited 5 s, with 2 retries.
    pub fn new(client: Client) -> Self {
        let prefix = format!("{:016x}", rand::random::<u64>());
        Self {
            client,
            prefix,
            next_id: 1,
            timeout: Duration::from_secs(5),
            max_retries: 2,
            inbox: VecDeque::new(),
        }
    }

    /// The id the next [`request`](Self::request) will carry.
    pub fn next_id(&self) -> String {
        format!("{}-{}", self.prefix, self.next_id)
    }

    /// Sets how long to wait for an ack before resending.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many times a send is repeated before [`AckError::Timeout`].
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The underlying connection.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Sends an envelope without asking for an ack.
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub fn send(&mut self, kind: &str, payload: Value) -> Result<(), ClientError> {
        self.client.send_text(&json!({"type": kind, "payload": payload}).to_string())
    }

    /// Sends an envelope with a fresh id and waits for its ack; returns the ack's payload
    /// (`{"id", "ok": true, "seq"?}`). Envelopes that arrive meanwhile are kept for
    /// [`next`](Self::next).
    ///
    /// # Errors
    ///
    /// [`AckError::Refused`] when the server says no, [`AckError::Timeout`] after the retries,
    /// [`AckError::Client`] when the connection fails.
    pub fn request(&mut self, kind: &str, payload: Value) -> Result<Value, AckError> {
        let id = self.next_id();
        self.next_id += 1;
        let envelope = json!({"type": kind, "id": id, "payload": payload}).to_string();
        let mut acks = AckTracker::new(self.max_retries);
        acks.register(id.clone(), Instant::now());
        self.client.send_text(&envelope)?;
        loop {
            let deadline = acks.next_deadline(self.timeout).unwrap_or_else(Instant::now);
            let wait = deadline.saturating_duration_since(Instant::now());
            if let Some(incoming) = self.client.recv_timeout(wait)? {
                let Some(value) = Self::parse(incoming) else { continue };
                if value["type"] == "ack" && value["payload"]["id"] == id {
                    let ack = value["payload"].clone();
                    if ack["ok"] == true {
                        return Ok(ack);
                    }
                    let error = &ack["error"];
                    return Err(AckError::Refused {
                        code: error["code"].as_str().unwrap_or_default().to_owned(),
                        message: error["message"].as_str().unwrap_or_default().to_owned(),
                    });
                }
                self.inbox.push_back(value);
                continue;
            }
            match acks.expired(Instant::now(), self.timeout).first() {
                Some(Expired::Retry(_)) => self.client.send_text(&envelope)?,
                Some(Expired::Failed(_)) => return Err(AckError::Timeout { attempts: self.max_retries + 1 }),
                None => {}
            }
        }
    }

    /// The next envelope that is not an ack of [`request`](Self::request), waiting up to
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// When the connection fails (a close from the server included).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Value>, ClientError> {
        if let Some(value) = self.inbox.pop_front() {
            return Ok(Some(value));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Some(incoming) = self.client.recv_timeout(wait)? else { return Ok(None) };
            if let Some(value) = Self::parse(incoming) {
                return Ok(Some(value));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn parse(incoming: Incoming) -> Option<Value> {
        match incoming {
            Incoming::Text(text) => serde_json::from_str(&text).ok(),
            _ => None,
        }
    }
}

//! A client that stays connected: [`ReconnectingClient`].

use std::fmt;
use std::time::{Duration, Instant};

use crate::proto::{CloseCode, MessageKind};

use super::backoff::Backoff;
use super::blocking::{Client, ClientBuilder, Incoming};
use super::error::ClientError;
use super::url::WsUrl;

/// The payload of heartbeat pings; pongs carrying it are not handed out.
const HEARTBEAT: &[u8] = b"hibiki-heartbeat";

type ConnectHook = Box<dyn FnMut(&mut Client) -> Result<(), ClientError> + Send>;
type DisconnectHook = Box<dyn FnMut(&ClientError) + Send>;

/// Options for a [`ReconnectingClient`].
pub struct ReconnectBuilder {
    client: ClientBuilder,
    backoff: Backoff,
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    on_connect: Option<ConnectHook>,
    on_disconnect: Option<DisconnectHook>,
}

impl fmt::Debug for ReconnectBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectBuilder")
            .field("client", &self.client)
            .field("backoff", &self.backoff)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("on_connect", &self.on_connect.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .finish()
    }
}

impl Default for ReconnectBuilder {
    fn default() -> Self {
        Self {
            client: ClientBuilder::new(),
            backoff: Backoff::default(),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            on_connect: None,
            on_disconnect: None,
        }
    }
}

impl ReconnectBuilder {
    /// The defaults: [`ClientBuilder::new`], [`Backoff::default`] (1 s doubling to 30 s, 10
    /// attempts), a ping after 30 s of silence, 10 s for it to be answered.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options of every connection (subprotocols, headers, deflate, limits, timeouts).
    #[must_use]
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.client = client;
        self
    }

    /// The reconnection backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Silence after which a ping goes out; `None` disables the heartbeat. Default 30 s.
    #[must_use]
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Time after a heartbeat ping within which something must arrive. Default 10 s.
    #[must_use]
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Called on every new connection, the first included, before it is used: re-join rooms,
    /// resend what was not acknowledged, resume from the last seen id. An error fails the
    /// connection (and counts as a failed attempt).
    #[must_use]
    pub fn on_connect(
        mut self,
        hook: impl FnMut(&mut Client) -> Result<(), ClientError> + Send + 'static,
    ) -> Self {
        self.on_connect = Some(Box::new(hook));
        self
    }

    /// Called with the reason whenever a connection is lost or an attempt fails, before the
    /// next attempt is scheduled (for logging and metrics).
    #[must_use]
    pub fn on_disconnect(mut self, hook: impl FnMut(&ClientError) + Send + 'static) -> Self {
        self.on_disconnect = Some(Box::new(hook));
        self
    }

    /// Connects to `url`, retrying failed attempts with the backoff (sleeping in between),
    /// and returns once connected.
    ///
    /// # Errors
    ///
    /// A bad URL; an error that retrying cannot fix; the last error once the attempts are
    /// used up.
    pub fn connect(self, url: &str) -> Result<ReconnectingClient, ClientError> {
        let url = WsUrl::parse(url)?;
        let mut client = ReconnectingClient {
            url,
            options: self,
            client: None,
            phase: Phase::Retry { at: Instant::now() },
            ping_sent_at: None,
            connected_once: false,
            reconnects: 0,
        };
        loop {
            match client.attempt() {
                Ok(()) => return Ok(client),
                Err(error) => {
                    if !client.schedule(&error) {
                        return Err(error);
                    }
                    if let Phase::Retry { at } = client.phase {
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Phase {
    /// `client` is `Some`.
    Connected,
    /// Between connections: the next attempt is due at `at`.
    Retry { at: Instant },
    /// Done for good.
    Closed { code: CloseCode, reason: String },
}

/// A client that stays connected: reconnects with backoff, and notices dead connections with
/// a heartbeat.
///
/// Everything happens on the caller's thread, inside [`ReconnectingClient::recv_timeout`] (and
/// the send methods): there is no background thread. Call `recv_timeout` regularly (a loop
/// with a timeout of a second or less) so that heartbeats go out on time.
///
/// # Policy
///
/// - A connection that ends abnormally (transport error, 1006, a protocol error, a missed
///   heartbeat, or a Close frame with any code but 1000) is replaced: the next attempt waits
///   [`Backoff::next`], and so does each failed attempt after it. A connection that opens
///   (and whose `on_connect` hook succeeds) resets the backoff.
/// - A Close frame with 1000 from the server, or a local [`close`](ReconnectingClient::close),
///   ends the client for good.
/// - Errors that retrying cannot fix ([`ClientError::is_retryable`] false: a 401/403/404
///   refusal, a bad URL) end it too, as does running out of attempts; `recv_timeout` returns
///   that error, then [`ClientError::Closed`].
/// - Heartbeat: when nothing arrived for `ping_interval`, a ping goes out; if nothing at all
///   (pong or anything else) arrives within `ping_timeout` after it, the connection is
///   declared dead and replaced.
pub struct ReconnectingClient {
    url: WsUrl,
    options: ReconnectBuilder,
    client: Option<Client>,
    phase: Phase,
    ping_sent_at: Option<Instant>,
    connected_once: bool,
    reconnects: u64,
}

impl fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("url", &self.url)
            .field("options", &self.options)
            .field("client", &self.client)
            .field("phase", &self.phase)
            .field("reconnects", &self.reconnects)
            .finish_non_exhaustive()
    }
}

impl ReconnectingClient {
    /// Options for a reconnecting client.
    pub fn builder() -> ReconnectBuilder {
        ReconnectBuilder::new()
    }

    /// Connects to `url` with the default options.
    ///
    /// # Errors
    ///
    /// As [`ReconnectBuilder::connect`].
    pub fn connect(url: &str) -> Result<Self, ClientError> {
        ReconnectBuilder::new().connect(url)
    }

    /// The URL connections go to.
    pub fn url(&self) -> &WsUrl {
        &self.url
    }

    /// How many times a lost connection was replaced by a new one.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// Whether the client is done for good (normal close, local close, or given up).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    /// The current connection, if any (to read its subprotocol, or send on it directly).
    pub fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// Waits up to `timeout` for the next message, pong or final Close, reconnecting and
    /// sending heartbeats as needed on the way. `Ok(None)` when nothing arrived in time.
    ///
    /// A connection attempt that starts before the deadline may end after it (bounded by the
    /// connect timeout). Lost connections are not reported here (see
    /// [`ReconnectBuilder::on_disconnect`]); only a Close with 1000 is, as
    /// [`Incoming::Close`], after which the client is closed.
    ///
    /// # Errors
    ///
    /// An error that retrying cannot fix, or the last error once the attempts are used up;
    /// afterwards (and after a close) [`ClientError::Closed`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            match &self.phase {
                Phase::Closed { code, reason } => {
                    return Err(ClientError::Closed { code: *code, reason: reason.clone() });
                }
                Phase::Retry { at } => {
                    let at = *at;
                    if at > now {
                        if deadline <= now {
                            return Ok(None);
                        }
                        std::thread::sleep(at.min(deadline) - now);
                        continue;
                    }
                    if let Err(error) = self.attempt() {
                        if !self.schedule(&error) {
                            return Err(error);
                        }
                    }
                }
                Phase::Connected => {
                    if let Some(incoming) = self.recv_connected(now, deadline)? {
                        return Ok(Some(incoming));
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// One wait on the open connection, up to `deadline` or the next heartbeat event.
    fn recv_connected(&mut self, now: Instant, deadline: Instant) -> Result<Option<Incoming>, ClientError> {
        let Some(client) = self.client.as_mut() else {
            self.phase = Phase::Retry { at: now };
            return Ok(None);
        };
        let mut wake = deadline;
        if let Some(interval) = self.options.ping_interval {
            let last = client.last_activity();
            match self.ping_sent_at {
                Some(sent) if last >= sent => self.ping_sent_at = None,
                Some(sent) => {
                    let dead_at = sent + self.options.ping_timeout;
                    if now >= dead_at {
                        return self.lose(ClientError::Timeout);
                    }
                    wake = wake.min(dead_at);
                }
                None => {}
            }
            if self.ping_sent_at.is_none() {
                let due = last + interval;
                if now >= due {
                    if let Err(error) = client.ping(HEARTBEAT) {
                        return self.lose(error);
                    }
                    self.ping_sent_at = Some(now);
                    wake = wake.min(now + self.options.ping_timeout);
                } else {
                    wake = wake.min(due);
                }
            }
        }
        match client.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Some(Incoming::Pong(payload))) if payload == HEARTBEAT => Ok(None),
            Ok(Some(Incoming::Close { code, reason })) if code == CloseCode::NORMAL => {
                self.client = None;
                self.phase = Phase::Closed { code, reason: reason.clone() };
                Ok(Some(Incoming::Close { code, reason }))
            }
            Ok(Some(Incoming::Close { code, reason })) => self.lose(ClientError::Closed { code, reason }),
            Ok(incoming) => Ok(incoming),
            Err(error) => self.lose(error),
        }
    }

    /// Sends a text message on the current connection.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotConnected`] between connections (the message is not queued: resend
    /// it from the `on_connect` hook if it matters); a transport error, after which the
    /// connection is replaced; [`ClientError::Closed`] once closed for good.
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message on the current connection.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(MessageKind::Binary, data)
    }

    /// Sends a message of `kind` on the current connection.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), ClientError> {
        self.with_client(|client| client.send(kind, payload))
    }

    /// Sends a ping; its pong comes out of [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text), and [`ClientError::Send`] over 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.with_client(|client| client.ping(payload))
    }

    /// Closes the current connection (if any) with `code` and `reason` and stops
    /// reconnecting for good.
    ///
    /// # Errors
    ///
    /// As [`Client::close`]; the client is closed either way.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ClientError> {
        let result = match self.client.take() {
            Some(mut client) => client.close(code, reason),
            None => Ok(()),
        };
        if !self.is_closed() {
            self.phase = Phase::Closed { code, reason: reason.to_owned() };
        }
        result
    }

    fn with_client(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        if let Phase::Closed { code, reason } = &self.phase {
            return Err(ClientError::Closed { code: *code, reason: reason.clone() });
        }
        let Some(client) = self.client.as_mut() else {
            return Err(ClientError::NotConnected);
        };
        let result = f(client);
        if client.is_closed() {
            // The caller gets the send error; if it cannot be retried, the next recv says so.
            self.client = None;
            match &result {
                Err(error) => self.schedule(error),
                Ok(()) => self.schedule(&ClientError::abnormal("the connection ended")),
            };
            self.ping_sent_at = None;
        }
        result
    }

    /// One connection attempt, with the hook.
    fn attempt(&mut self) -> Result<(), ClientError> {
        let mut client = self.options.client.connect_url(&self.url)?;
        if let Some(hook) = self.options.on_connect.as_mut() {
            hook(&mut client)?;
        }
        self.client = Some(client);
        self.phase = Phase::Connected;
        self.ping_sent_at = None;
        self.options.backoff.reset();
        if self.connected_once {
            self.reconnects += 1;
        }
        self.connected_once = true;
        Ok(())
    }

    /// The connection is gone: report it and schedule the next attempt; `Err(error)` if the
    /// client is now closed for good.
    fn lose(&mut self, error: ClientError) -> Result<Option<Incoming>, ClientError> {
        self.client = None;
        self.ping_sent_at = None;
        if self.schedule(&error) { Ok(None) } else { Err(error) }
    }

    /// Reports `error` to the hook and schedules the next attempt. Returns `false`, closing
    /// the client for good, when `error` cannot be fixed by retrying or the attempts are used
    /// up.
    fn schedule(&mut self, error: &ClientError) -> bool {
        if let Some(hook) = self.options.on_disconnect.as_mut() {
            hook(error);
        }
        let delay = if error.is_retryable() { self.options.backoff.next(rand::random()) } else { None };
        if let Some(delay) = delay {
            self.phase = Phase::Retry { at: Instant::now() + delay };
            return true;
        }
        self.phase = match error {
            ClientError::Closed { code, reason } => Phase::Closed { code: *code, reason: reason.clone() },
            _ => {
                Phase::Closed { code: CloseCode::ABNORMAL, reason: format!("gave up reconnecting: {error}") }
            }
        };
        false
    }
}

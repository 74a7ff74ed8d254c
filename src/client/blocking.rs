//! A blocking client over `std::net::TcpStream`, with TLS (rustls) for `wss://`.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::proto::conn::SendError;
use crate::proto::deflate::{DeflateConfig, DeflateState};
use crate::proto::{CloseCode, Config, Connection, Event, MessageKind, Role};

use super::error::ClientError;
use super::handshake::{self, Offer};
use super::tls::{Stream, TlsOptions};
use super::url::WsUrl;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// An output buffer grown past this is released after it was written.
const KEEP_OUTPUT: usize = 1 << 20;

/// What [`Client::recv`] hands out. Pings are answered by the client and not shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A pong (the answer to [`Client::ping`], or an unsolicited heartbeat).
    Pong(Bytes),
    /// The server's Close frame. The reply went out and the connection is over.
    Close {
        /// The server's code; [`CloseCode::NO_STATUS`] (1005) when its frame had none.
        code: CloseCode,
        /// The server's reason.
        reason: String,
    },
}

/// Options for [`Client`] connections; reusable for any number of connections.
///
/// ```no_run
/// use std::time::Duration;
/// use hibiki::client::ClientBuilder;
///
/// let mut client = ClientBuilder::new()
///     .protocol("chat.v1")
///     .header("Authorization", "Bearer secret")
///     .deflate(false)
///     .connect_timeout(Duration::from_secs(3))
///     .max_message_size(64 << 20)
///     .connect("ws://127.0.0.1:8080/echo")?;
/// client.send_text("hi")?;
/// # Ok::<(), hibiki::client::ClientError>(())
/// ```
///
/// `wss://` URLs go through TLS: the server's certificate is checked against the webpki roots
/// (Mozilla's list) plus any [`ca_file`](Self::ca_file), for the host of the URL (sent as SNI);
/// ALPN offers `http/1.1`. [`tls_config`](Self::tls_config) replaces all of that with a rustls
/// configuration of the caller's.
///
/// ```no_run
/// use hibiki::client::ClientBuilder;
///
/// // A development server with a self-signed certificate (or one from a private CA).
/// let mut client = ClientBuilder::new().ca_file("dev-ca.pem").connect("wss://localhost:8443/echo")?;
/// client.send_text("hi")?;
/// # Ok::<(), hibiki::client::ClientError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    headers: Vec<(String, String)>,
    connect_timeout: Duration,
    close_timeout: Duration,
    write_timeout: Option<Duration>,
    config: Config,
    tls: TlsOptions,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            protocols: Vec::new(),
            deflate: Some(DeflateConfig::default()),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            write_timeout: None,
            config: Config::default(),
            tls: TlsOptions::default(),
        }
    }
}

impl ClientBuilder {
    /// The defaults: no subprotocol, permessage-deflate offered, 10 s to connect, 5 s to
    /// close, the core's default limits (16 MiB messages).
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers a subprotocol (call again for more, most preferred first).
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offers permessage-deflate with the default settings (`true`, the default) or not.
    #[must_use]
    pub fn deflate(mut self, on: bool) -> Self {
        self.deflate = on.then(DeflateConfig::default);
        self
    }

    /// Offers permessage-deflate with these settings.
    #[must_use]
    pub fn deflate_config(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// Adds a request header (`Authorization`, `Origin`, `Cookie`, `User-Agent`...). The
    /// headers of the handshake itself (`Host`, `Upgrade`, `Sec-WebSocket-*`...) are refused at
    /// connect time.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Time allowed for the TCP connect and the opening handshake together. Default 10 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time [`Client::close`] waits for the server's Close frame, and the time the client
    /// waits for the server to end the TCP connection after the closing handshake. Default 5 s.
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Time a blocked write may take before the connection is given up (`None`: forever, the
    /// default).
    #[must_use]
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Limits on what the server may send.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the largest message (and frame) the server may send.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config = self.config.max_message_size(bytes);
        self
    }

    /// `wss://`: trusts the CA certificates of this PEM file too, beside the webpki roots
    /// (call again for more files). For servers with a self-signed certificate (give the
    /// certificate itself) or one from a private CA. The file is read at the first `wss://`
    /// connect; a file that cannot be read fails it with [`ClientError::TlsSetup`].
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.add_ca_file(path.into());
        self
    }

    /// `wss://`: uses this rustls configuration as it is, instead of the webpki roots and the
    /// [`ca_file`](Self::ca_file)s: own roots, client certificates, a custom verifier. Set its
    /// `alpn_protocols` to `[b"http/1.1"]` if the server needs ALPN.
    #[must_use]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls.set_config(config);
        self
    }

    /// Connects to `url` (`ws[s]://host[:port]/path?query`) and runs the opening handshake
    /// (after the TLS handshake, for `wss://`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL, [`ClientError::Io`] or [`ClientError::Timeout`]
    /// when the server cannot be reached, [`ClientError::Certificate`] when its certificate is
    /// refused, [`ClientError::Tls`] when the TLS handshake fails otherwise,
    /// [`ClientError::Handshake`] when it refuses the upgrade (see [`ClientError::status`]) or
    /// answers wrongly.
    pub fn connect(&self, url: &str) -> Result<Client, ClientError> {
        self.connect_url(&WsUrl::parse(url)?)
    }

    /// [`connect`](Self::connect) with a parsed URL.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_url(&self, url: &WsUrl) -> Result<Client, ClientError> {
        let offer =
            Offer { protocols: &self.protocols, deflate: self.deflate.as_ref(), headers: &self.headers };
        handshake::check_offer(&offer)?;
        let tls = if url.is_tls() { Some(self.tls.config()?) } else { None };
        let deadline = Instant::now() + self.connect_timeout;
        let tcp = handshake::connect_tcp(url, deadline)?;
        tcp.set_nodelay(true)?;
        let mut stream = match tls {
            Some(config) => Stream::tls(tcp, config, url.host())?,
            None => Stream::Plain(tcp),
        };
        let negotiated = handshake::handshake(&mut stream, url, &offer, deadline)?;
        stream.tcp().set_write_timeout(self.write_timeout)?;
        let deflate = match (negotiated.deflate, &self.deflate) {
            (Some(params), Some(config)) => Some(DeflateState::new(Role::Client, params, config)),
            _ => None,
        };
        let compressed = deflate.is_some();
        Ok(Client {
            local_addr: stream.tcp().local_addr()?,
            peer_addr: stream.tcp().peer_addr()?,
            stream,
            conn: Connection::new(Role::Client, self.config.clone(), deflate),
            input: negotiated.leftover,
            output: BytesMut::new(),
            scratch: Vec::new(),
            protocol: negotiated.protocol,
            compressed,
            close_timeout: self.close_timeout,
            read_timeout: None,
            last_activity: Instant::now(),
            ended: None,
        })
    }
}

/// How a connection ended.
#[derive(Clone, Debug)]
struct Ended {
    code: CloseCode,
    reason: String,
    /// Both Close frames were exchanged.
    clean: bool,
}

/// A blocking WebSocket client connection. See the [module docs](super).
///
/// Messages are read only when asked for ([`recv`](Self::recv),
/// [`recv_timeout`](Self::recv_timeout)); pings that arrive meanwhile are answered then.
/// Dropping a client closes the TCP connection without a closing handshake; call
/// [`close`](Self::close) first to end it cleanly.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    conn: Connection,
    /// Bytes read and not yet consumed by the core: an unfinished frame.
    input: BytesMut,
    output: BytesMut,
    /// Where reads land before joining `input` (allocated on first read).
    scratch: Vec<u8>,
    protocol: Option<String>,
    compressed: bool,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    close_timeout: Duration,
    /// The read timeout the socket has now.
    read_timeout: Option<Duration>,
    last_activity: Instant,
    ended: Option<Ended>,
}

enum Read {
    Data,
    TimedOut,
}

impl Client {
    /// Connects to `url` with the [default options](ClientBuilder::new).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`].
    pub fn connect(url: &str) -> Result<Self, ClientError> {
        ClientBuilder::new().connect(url)
    }

    /// Options for a connection.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Whether the connection goes through TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_deflate(&self) -> bool {
        self.compressed
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// When bytes last arrived from the server (or the connection opened).
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Whether the connection is over (closing handshake done, failed, or dropped).
    pub fn is_closed(&self) -> bool {
        self.ended.is_some()
    }

    /// Sends a text message.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] once the connection is over, [`ClientError::Io`] when the
    /// write fails (the connection is then over).
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(MessageKind::Text, text.as_bytes())
    }

    /// Sends a binary message.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(MessageKind::Binary, data)
    }

    /// Sends a message of `kind`; for text, `payload` must be UTF-8 (the server fails the
    /// connection otherwise).
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), ClientError> {
        self.check_open()?;
        self.conn.poll_transmit(&mut self.output);
        let sent = self.conn.send(kind, payload, &mut self.output);
        self.finish_send(sent)
    }

    /// Sends a ping with `payload` (at most 125 bytes); its pong comes out of
    /// [`recv`](Self::recv) as [`Incoming::Pong`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Send`] over 125 bytes; otherwise as [`send_text`](Self::send_text).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.check_open()?;
        self.conn.poll_transmit(&mut self.output);
        let sent = self.conn.ping(payload, &mut self.output);
        self.finish_send(sent)
    }

    /// Waits for the next message, pong or Close frame.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] when the server broke the protocol (the Close frame that
    /// says so was sent), [`ClientError::Closed`] when the connection ended without a Close
    /// frame (1006) or had already ended, [`ClientError::Io`] on a transport error.
    pub fn recv(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some(incoming) = self.next_incoming(None)? {
                return Ok(incoming);
            }
        }
    }

    /// [`recv`](Self::recv), waiting at most `timeout`: `Ok(None)` if nothing complete arrived
    /// by then (a partial message stays buffered). A zero timeout does not wait: it takes what
    /// already arrived. (A Close frame is returned only after the server hung up, or after the
    /// close timeout, whichever comes first.)
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming>, ClientError> {
        self.next_incoming(Some(Instant::now() + timeout))
    }

    /// Starts the closing handshake with `code` and `reason` (at most 123 bytes), waits for
    /// the server's Close frame (messages arriving meanwhile are dropped), then for the server
    /// to end the TCP connection, each within the close timeout. Closing a connection whose
    /// closing handshake already completed does nothing.
    ///
    /// # Errors
    ///
    /// [`ClientError::Send`] for a code that may not be sent (1005, 1006, 1015...) or a reason
    /// too long; [`ClientError::Timeout`] if the server does not answer in time;
    /// [`ClientError::Closed`] if the connection had ended abnormally.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ClientError> {
        if let Some(ended) = &self.ended {
            return if ended.clean { Ok(()) } else { Err(self.ended_error()) };
        }
        self.conn.poll_transmit(&mut self.output);
        let sent = self.conn.close(code, reason, &mut self.output);
        self.finish_send(sent)?;
        let deadline = Instant::now() + self.close_timeout;
        let mut looked = false;
        loop {
            while let Some(event) = self.conn.poll_event(&mut self.input) {
                match event {
                    Event::Close { code, reason } => {
                        self.linger(deadline);
                        self.end(code, reason_string(&reason), true);
                        return Ok(());
                    }
                    Event::Failed(error) => {
                        self.fail(&error, deadline);
                        return Err(error.into());
                    }
                    _ => {}
                }
            }
            match self.read_more(Some(deadline), &mut looked) {
                Ok(Read::Data) => {}
                Ok(Read::TimedOut) => {
                    self.end(CloseCode::ABNORMAL, "no close frame from the server in time", false);
                    return Err(ClientError::Timeout);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next event for the user, reading until `deadline` (forever when `None`).
    fn next_incoming(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, ClientError> {
        if self.ended.is_some() {
            return Err(self.ended_error());
        }
        let mut looked = false;
        loop {
            while let Some(event) = self.conn.poll_event(&mut self.input) {
                let incoming = match event {
                    Event::Text(text) => match String::from_utf8(Vec::from(text)) {
                        Ok(text) => Incoming::Text(text),
                        // The core validated it; this cannot happen.
                        Err(_) => continue,
                    },
                    Event::Binary(data) => Incoming::Binary(data),
                    Event::Pong(data) => Incoming::Pong(data),
                    Event::Close { code, reason } => {
                        let reason = reason_string(&reason);
                        self.flush_replies();
                        self.linger(Instant::now() + self.close_timeout);
                        self.end(code, reason.clone(), true);
                        return Ok(Some(Incoming::Close { code, reason }));
                    }
                    Event::Failed(error) => {
                        self.fail(&error, Instant::now() + self.close_timeout);
                        return Err(error.into());
                    }
                    // Pings (answered below) and whatever the core adds later.
                    _ => continue,
                };
                self.flush_replies();
                return Ok(Some(incoming));
            }
            self.flush_replies();
            if self.ended.is_some() {
                return Err(self.ended_error());
            }
            match self.read_more(deadline, &mut looked)? {
                Read::Data => {}
                Read::TimedOut => return Ok(None),
            }
        }
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match self.ended {
            Some(_) => Err(self.ended_error()),
            None => Ok(()),
        }
    }

    fn finish_send(&mut self, sent: Result<(), SendError>) -> Result<(), ClientError> {
        match sent {
            Ok(()) => self.write_output(),
            Err(SendError::Closed) => Err(self.ended_error()),
            Err(e) => {
                // Replies the core queued may already be in `output`: send them anyway.
                self.write_output()?;
                Err(ClientError::Send(e))
            }
        }
    }

    fn write_output(&mut self) -> Result<(), ClientError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let written = self.stream.write_all(&self.output);
        if self.output.capacity() > KEEP_OUTPUT {
            self.output = BytesMut::new();
        } else {
            self.output.clear();
        }
        if let Err(e) = written {
            self.end(CloseCode::ABNORMAL, format!("write failed: {e}"), false);
            return Err(e.into());
        }
        Ok(())
    }

    /// Writes what the core queued (pongs, close replies). A failure ends the connection; it
    /// shows on the next call.
    fn flush_replies(&mut self) {
        if self.conn.poll_transmit(&mut self.output) {
            let _ = self.write_output();
        }
    }

    /// Reads once into `input`, waiting until `deadline` at most. Once the deadline has
    /// passed, one last look (a read that does not wait) is taken if `looked` is still false,
    /// so that a zero timeout still picks up what the kernel holds.
    fn read_more(&mut self, deadline: Option<Instant>, looked: &mut bool) -> Result<Read, ClientError> {
        let timeout = match deadline {
            None => None,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ if *looked => return Ok(Read::TimedOut),
                _ => {
                    *looked = true;
                    self.stream.tcp().set_nonblocking(true)?;
                    let read = self.read_once();
                    self.stream.tcp().set_nonblocking(false)?;
                    return read;
                }
            },
        };
        if self.read_timeout != timeout {
            self.stream.tcp().set_read_timeout(timeout)?;
            self.read_timeout = timeout;
        }
        self.read_once()
    }

    fn read_once(&mut self) -> Result<Read, ClientError> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        loop {
            match self.stream.read(&mut self.scratch) {
                Ok(0) => {
                    let reason = "the server closed the TCP connection without a close frame";
                    self.end(CloseCode::ABNORMAL, reason, false);
                    return Err(ClientError::abnormal(reason));
                }
                Ok(n) => {
                    if let Some(needed) = self.conn.bytes_needed(&self.input) {
                        // A large frame: grow once for all of it.
                        self.input.reserve(needed);
                    }
                    self.input.extend_from_slice(&self.scratch[..n]);
                    self.last_activity = Instant::now();
                    return Ok(Read::Data);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ok(Read::TimedOut);
                }
                // TLS: the TCP connection ended without a close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let reason = "the server closed the TCP connection without a close frame";
                    self.end(CloseCode::ABNORMAL, reason, false);
                    return Err(ClientError::abnormal(reason));
                }
                Err(e) => {
                    self.end(CloseCode::ABNORMAL, format!("read failed: {e}"), false);
                    return Err(match ClientError::from(e) {
                        ClientError::Timeout => ClientError::abnormal("read failed"),
                        error => error,
                    });
                }
            }
        }
    }

    /// The server broke the protocol: send the Close frame the core queued, let the server
    /// answer and hang up, then record the end.
    fn fail(&mut self, error: &crate::proto::Error, deadline: Instant) {
        self.flush_replies();
        self.linger(deadline);
        self.end(CloseCode::from(error), error.to_string(), false);
    }

    /// After the closing handshake (or a failure), waits for the server to end the TCP
    /// connection: "the client SHOULD wait for the server to close the connection" (RFC 6455
    /// §7.1.1). What still arrives is dropped.
    fn linger(&mut self, deadline: Instant) {
        if self.ended.is_some() {
            return;
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.tcp().set_read_timeout(Some(left)).is_err() {
                break;
            }
            self.read_timeout = Some(left);
            match self.stream.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.input = BytesMut::new();
        self.stream.shutdown();
    }

    fn end(&mut self, code: CloseCode, reason: impl Into<String>, clean: bool) {
        if self.ended.is_none() {
            self.ended = Some(Ended { code, reason: reason.into(), clean });
            self.stream.shutdown();
        }
        self.input = BytesMut::new();
        self.output = BytesMut::new();
        self.scratch = Vec::new();
    }

    fn ended_error(&self) -> ClientError {
        match &self.ended {
            Some(ended) => ClientError::Closed { code: ended.code, reason: ended.reason.clone() },
            None => ClientError::abnormal("the connection is closing"),
        }
    }
}

fn reason_string(reason: &Bytes) -> String {
    String::from_utf8_lossy(reason).into_owned()
}

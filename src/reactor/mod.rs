//! The engine: sockets, buffers and time around the [`proto`](crate::proto) core.
//!
//! One [`mio::Poll`] per worker thread, each with its own `SO_REUSEPORT` listener, so the
//! kernel spreads new connections over the workers and nothing is shared on the hot path.
//! A worker reads into one buffer of its own; a connection keeps bytes only for an unfinished
//! frame, so an idle connection holds no buffer. Replies to the connection being served are
//! *corked*: every frame that one read brought is answered, and the answers leave in one
//! write. Frames for other connections are queued as shared [`Bytes`] and
//! leave in one vectored write per connection per loop turn: a broadcast is encoded once.
//!
//! # Embedding
//!
//! Implement [`Handler`], then start a [`Server`]:
//!
//! ```no_run
//! use hibiki::reactor::{Ctx, Decision, Handler, HttpRequest, HttpResponse, Message, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type Session = ();
//!     type Local = ();
//!     type Command = ();
//!
//!     fn local(&self, _worker: usize) {}
//!
//!     fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<()> {
//!         match request.head.path() {
//!             "/echo" if request.upgrade.is_some() => Decision::Upgrade { session: (), protocol: None },
//!             "/echo" => Decision::Respond(HttpResponse::upgrade_required()),
//!             _ => Decision::Respond(HttpResponse::text(404, "not found\n")),
//!         }
//!     }
//!
//!     fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message) {
//!         ctx.send(message.kind, &message.data);
//!     }
//! }
//!
//! let server = Server::builder().bind("127.0.0.1:9001".parse().unwrap()).threads(1).start(Echo)?;
//! println!("listening on {}", server.local_addr());
//! server.wait();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # TLS
//!
//! [`ServerBuilder::tls`] makes every connection on the port TLS (`https://`, `wss://`) on
//! rustls, with ALPN `http/1.1`; the handler sees the same requests and messages as over plain
//! TCP. Keep a clone of the [`TlsConfig`] to present a renewed certificate later: connections
//! accepted after [`TlsConfig::reload`] get it, open ones keep theirs.
//!
//! ```no_run
//! use hibiki::app::ServeApp;
//! use hibiki::reactor::{Server, TlsConfig};
//!
//! let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
//! let server = Server::builder()
//!     .bind("0.0.0.0:8443".parse().unwrap())
//!     .tls(tls.clone())
//!     .start(ServeApp::default())?;
//! // After the files are renewed (on SIGHUP, say):
//! tls.reload()?;
//! server.wait();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`TlsConfig::from_rustls`] takes a `rustls::ServerConfig` of one's own (a certificate
//! resolver for several names, client certificates...). A plain HTTP request, a refused
//! ClientHello or an unfinished handshake is refused and counted as [`Rejection::Tls`].
//!
//! # Answering later
//!
//! A handler that needs another thread (a remote store, say) before it can answer returns
//! [`Decision::Defer`]; the connection waits, costing nothing, until the answer comes back
//! through [`Handle::respond`] from any thread or [`WorkerCtx::respond`] on its worker,
//! addressed by [`HttpRequest::id`]. Without an answer within
//! [`ServerConfig::defer_timeout`] the reactor answers 504.
//!
//! ```no_run
//! use std::sync::{Mutex, mpsc};
//! use hibiki::reactor::{ConnId, Ctx, Decision, Handler, HttpRequest, HttpResponse, Message, Server};
//!
//! struct Slow(Mutex<mpsc::Sender<ConnId>>);
//!
//! impl Handler for Slow {
//!     type Session = ();
//!     type Local = ();
//!     type Command = ();
//!
//!     fn local(&self, _worker: usize) {}
//!
//!     fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<()> {
//!         let _ = self.0.lock().unwrap().send(request.id); // to a thread that answers
//!         Decision::Defer
//!     }
//!
//!     fn on_message(&self, _ctx: &mut Ctx<'_, Self>, _message: Message) {}
//! }
//!
//! let (ids, pending) = mpsc::channel();
//! let server = Server::builder().start(Slow(Mutex::new(ids)))?;
//! let handle = server.handle();
//! std::thread::spawn(move || {
//!     for id in pending {
//!         handle.respond(id, HttpResponse::text(200, "done\n"));
//!     }
//! });
//! server.wait();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Portability
//!
//! Linux and the BSDs (epoll/kqueue through mio, `SO_REUSEPORT`). Elsewhere the listener
//! falls back to one socket that every worker polls.

mod conn;
mod core;
mod ctx;
mod handle;
mod http;
mod ip;
mod read;
mod stats;
mod sys;
mod timers;
mod tls;
mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

pub use crate::proto::MessageKind;
use crate::proto::deflate::DeflateConfig;
use crate::proto::handshake::{Request, Upgrade, VERSION};
pub use ctx::{Ctx, Outbox, WorkerCtx};
pub use handle::{ConnId, Handle};
pub use stats::{COUNTED_CLOSE_CODES, REJECTIONS, Rejection, Stats, StatsSnapshot};
pub use tls::{ALPN_HTTP_1_1, TlsConfig};

/// Seconds a client refused by a connection cap is asked to wait (`Retry-After` on the 429
/// and the 503): short, since a slot frees whenever any connection closes.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A whole message from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Text or binary.
    pub kind: MessageKind,
    /// The payload; valid UTF-8 when `kind` is text.
    pub data: Bytes,
}

impl Message {
    /// The payload as text, if it is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            // The core validated it.
            MessageKind::Text => std::str::from_utf8(&self.data).ok(),
            MessageKind::Binary => None,
        }
    }
}

/// A plain HTTP response, for requests that are not (accepted) upgrades.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers. `Content-Length` and `Connection` are added: `Connection: close`, or
    /// `Connection: Upgrade, close` when an `Upgrade` header is among these (RFC 9110 §7.8).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with a plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(body.into()),
        }
    }

    /// A response with a body of the given content type.
    pub fn with_type(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }

    /// `426 Upgrade Required`, for a plain request to a path that only speaks WebSocket:
    /// with `Upgrade: websocket` ("A server that sends a 426 (Upgrade Required) response MUST
    /// send an Upgrade header field to indicate the acceptable protocols", RFC 9110 §7.8) and
    /// `Sec-WebSocket-Version: 13`, as for a handshake with another version (RFC 6455 §4.2.2).
    pub fn upgrade_required() -> Self {
        Self::text(426, "this endpoint speaks WebSocket\n")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", VERSION)
    }

    /// This response with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request as [`Handler::on_request`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct HttpRequest<'r, 'b, 'h> {
    /// The parsed head.
    pub head: &'r Request<'b, 'h>,
    /// The WebSocket opening handshake, when the request is a valid one; `None` for a plain
    /// HTTP request ([`Request::upgrade_attempt`]).
    ///
    /// A malformed attempt never reaches the handler: the reactor answers it itself, whatever
    /// the path, with the status of its [`HandshakeError`](crate::proto::handshake::HandshakeError)
    /// (400; 405 with `Allow: GET`; 426 with `Sec-WebSocket-Version: 13` for another version)
    /// and counts it. RFC 6455 §4.2.1: a server that finds the client "did not send a
    /// handshake that matches the description below ... MUST stop processing the client's
    /// handshake and return an HTTP response with an appropriate error code (such as 400 Bad
    /// Request)".
    pub upgrade: Option<Upgrade<'b, 'h>>,
    /// The body (empty without `Content-Length`).
    pub body: &'r [u8],
    /// The peer's address.
    pub peer: SocketAddr,
    /// The server's counters (for a metrics endpoint).
    pub stats: &'r Stats,
    /// The connection's id; its worker is `id.worker()`.
    pub id: ConnId,
}

impl HttpRequest<'_, '_, '_> {
    /// The worker thread that owns the connection (`id.worker()`): where an answer to a
    /// deferred request is made, e.g. by posting a command to it.
    pub fn worker(&self) -> usize {
        self.id.worker()
    }
}

/// What to do with a request: upgrade it, answer it over plain HTTP and close (now or
/// later), or answer with a stream the application keeps writing to (Server-Sent Events).
#[derive(Debug)]
pub enum Decision<S> {
    /// Upgrade to WebSocket with this session state and (optionally) one of the offered
    /// subprotocols.
    Upgrade {
        /// The new connection's state.
        session: S,
        /// The chosen subprotocol; it must be one the client offered.
        protocol: Option<&'static str>,
    },
    /// Answer over HTTP and close.
    Respond(HttpResponse),
    /// Answer later, with [`WorkerCtx::respond`] or [`Outbox::respond`] on the connection's
    /// worker (`request.id.worker()`, e.g. from [`Handler::on_command`]) or [`Handle::respond`]
    /// from any thread, given [`HttpRequest::id`]. Meanwhile the connection waits without
    /// costing a thing: what the peer still sends is discarded, and if the peer closes the
    /// connection is freed (a later answer is ignored). With no answer within
    /// [`ServerConfig::defer_timeout`] the reactor answers `504 Gateway Timeout` and counts
    /// it ([`Rejection::DeferTimeout`]); at shutdown it answers 503. A deferred request is
    /// answered over HTTP only; copy what the answer needs (the body, say) before returning.
    Defer,
    /// Answer with this head (status and headers; no length) and keep the connection as a
    /// stream: the application writes to it with [`WorkerCtx::send_raw_to`] until either side
    /// closes. [`Handler::on_open`] and [`Handler::on_close`] are called as for WebSockets.
    Stream {
        /// The stream's state.
        session: S,
        /// Status and headers of the answer.
        head: HttpResponse,
    },
}

/// The application side of a [`Server`]: called on the worker thread that owns the connection.
///
/// `Session` is per connection, `Local` per worker thread (rooms, indexes: no locks), and
/// `Command` is what other threads post to a worker through a [`Handle`].
pub trait Handler: Send + Sync + Sized + 'static {
    /// Per-connection state.
    type Session: Send + 'static;
    /// Per-worker state.
    type Local: Send + 'static;
    /// A message for a worker, posted with [`Handle::post`].
    type Command: Send + 'static;

    /// Makes worker `worker`'s state.
    fn local(&self, worker: usize) -> Self::Local;

    /// Called once with the server's handle, before any connection is served.
    fn on_start(&self, handle: &Handle<Self::Command>) {
        let _ = handle;
    }

    /// Decides about a request whose head (and body, if it has one) arrived. The reactor has
    /// already enforced the limits (origin, connection caps, header and body size).
    ///
    /// The default answers `/healthz` with 200 and everything else with 404, upgrades included;
    /// override it to accept upgrades.
    fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Self::Session> {
        match request.head.path() {
            "/healthz" => Decision::Respond(HttpResponse::text(200, "ok\n")),
            _ => Decision::Respond(HttpResponse::text(404, "not found\n")),
        }
    }

    /// A connection is open.
    fn on_open(&self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }

    /// A whole message arrived.
    fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message);

    /// A connection ended: `code` is the peer's close code, [`CloseCode::ABNORMAL`] when the
    /// transport dropped without one (or the heartbeat timed out). Sends are no longer possible.
    ///
    /// [`CloseCode::ABNORMAL`]: crate::proto::CloseCode::ABNORMAL
    fn on_close(&self, ctx: &mut Ctx<'_, Self>, code: crate::proto::CloseCode, reason: &str) {
        let _ = (ctx, code, reason);
    }

    /// A command posted to this worker.
    fn on_command(&self, ctx: &mut WorkerCtx<'_, Self>, command: Self::Command) {
        let _ = (ctx, command);
    }

    /// Called every [`ServerConfig::tick`] on each worker, if set.
    fn on_tick(&self, ctx: &mut WorkerCtx<'_, Self>) {
        let _ = ctx;
    }

    /// A connection's outbound queue drained below the soft budget after being above it.
    fn on_drain(&self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }
}

/// Server settings. Every field has a default; see [`ServerBuilder`] for setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Listen address. Default 127.0.0.1:8080.
    pub addr: SocketAddr,
    /// Worker threads, each with its own poll and listener. Default: the number of cores.
    pub threads: usize,
    /// Frame and message limits for peers. Default: 1 MiB messages.
    pub limits: crate::proto::Config,
    /// permessage-deflate, if offered and enabled. Default on, with no context takeover in
    /// either direction (`server_no_context_takeover` and `client_no_context_takeover` in
    /// every answer): each message is compressed and inflated on its own, so one compressor
    /// and one inflater per worker serve every connection, a broadcast is compressed once, and
    /// an idle connection holds no zlib state (a kept inflater costs tens of KiB each).
    pub deflate: Option<DeflateConfig>,
    /// Largest request head (431 past it). Default 8 KiB.
    pub max_request_size: usize,
    /// Largest request body, for plain HTTP requests (413 past it). Default 64 KiB.
    pub max_body_size: usize,
    /// Most connections on the server (503 past it). Default 1,000,000.
    pub max_connections: usize,
    /// Most connections from one IP address (429 past it). Default unlimited.
    pub max_connections_per_ip: usize,
    /// Origins allowed to upgrade (403 for others); empty allows any. Entries are compared
    /// with the `Origin` header exactly, e.g. `https://example.com`.
    pub allowed_origins: Vec<String>,
    /// Time a client has to send its request head. Default 5 s.
    pub handshake_timeout: Duration,
    /// New handshakes each worker starts per second; the rest wait in the kernel's backlog,
    /// so a reconnect storm cannot starve the connections already open. Default 20,000.
    pub handshake_rate: u32,
    /// The server pings a connection silent for this long. Default 30 s; `None` disables.
    pub ping_interval: Option<Duration>,
    /// A connection that sends nothing within this long after a ping is closed as dead. Default 10 s.
    pub ping_timeout: Duration,
    /// Close a connection that sent no message for this long (1001). Default none.
    pub idle_timeout: Option<Duration>,
    /// How long to wait for the peer's Close frame and TCP close after ours. Default 2 s.
    pub close_timeout: Duration,
    /// Outbound bytes queued for a connection past which it is *backpressured*: volatile
    /// sends are dropped and [`Ctx::is_backpressured`] is true. Default 1 MiB.
    pub soft_outbound_limit: usize,
    /// Outbound bytes queued past which the connection is closed with 1008 as a slow
    /// consumer. Default 16 MiB.
    pub hard_outbound_limit: usize,
    /// Period of [`Handler::on_tick`]. Default none.
    pub tick: Option<Duration>,
    /// How long a request answered with [`Decision::Defer`] waits for its answer before the
    /// reactor answers 504. Default 10 s: longer than a remote store should ever take, short
    /// enough that a lost answer does not hold a connection for long.
    pub defer_timeout: Duration,
    /// Serve TLS (`https://`, `wss://`) with this certificate on every connection. Default
    /// none: plain TCP.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: crate::proto::Config::default().max_message_size(1 << 20),
            deflate: Some(DeflateConfig::default().client_no_context_takeover(true)),
            max_request_size: crate::proto::handshake::DEFAULT_MAX_REQUEST_SIZE,
            max_body_size: 64 * 1024,
            max_connections: 1_000_000,
            max_connections_per_ip: usize::MAX,
            allowed_origins: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
            handshake_rate: 20_000,
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            idle_timeout: None,
            close_timeout: Duration::from_secs(2),
            soft_outbound_limit: 1 << 20,
            hard_outbound_limit: 16 << 20,
            tick: None,
            defer_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Builds a server: `Server::builder().bind(addr).threads(2).start(handler)`.
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    config: ServerConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        })*
    };
}

impl ServerBuilder {
    /// Starts from a whole config.
    pub fn from_config(config: ServerConfig) -> Self {
        Self { config }
    }

    /// Listen address (port 0 picks a free one; see [`Running::local_addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// Largest message (and frame) a peer may send.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.limits = self.config.limits.max_message_size(bytes);
        self
    }

    /// Most fragments in one message.
    pub fn max_fragments(mut self, count: usize) -> Self {
        self.config.limits = self.config.limits.max_fragments(count);
        self
    }

    setters! {
        /// Worker threads.
        threads: usize;
        /// permessage-deflate settings, or `None` to refuse it.
        deflate: Option<DeflateConfig>;
        /// Largest request head.
        max_request_size: usize;
        /// Largest request body.
        max_body_size: usize;
        /// Most connections.
        max_connections: usize;
        /// Most connections per IP address.
        max_connections_per_ip: usize;
        /// Allowed origins.
        allowed_origins: Vec<String>;
        /// Handshake timeout.
        handshake_timeout: Duration;
        /// Handshakes per second per worker.
        handshake_rate: u32;
        /// Heartbeat period.
        ping_interval: Option<Duration>;
        /// Heartbeat timeout.
        ping_timeout: Duration;
        /// Idle timeout.
        idle_timeout: Option<Duration>;
        /// Close handshake timeout.
        close_timeout: Duration;
        /// Soft outbound budget.
        soft_outbound_limit: usize;
        /// Hard outbound cap.
        hard_outbound_limit: usize;
        /// Tick period.
        tick: Option<Duration>;
        /// Time a deferred request waits for its answer.
        defer_timeout: Duration;
    }

    /// Serves TLS with this certificate: every connection on the port is `https://` or
    /// `wss://`. Keep a clone of `tls` to [`TlsConfig::reload`] it while the server runs.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// The config so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listeners and starts the workers.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub fn start<H: Handler>(self, handler: H) -> io::Result<Running<H>> {
        Running::start(self.config, handler)
    }
}

/// Where a server starts: [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// A running server: its workers, and a [`Handle`] to reach them.
#[derive(Debug)]
pub struct Running<H: Handler> {
    handle: Handle<H::Command>,
    local_addr: SocketAddr,
    tls: Option<TlsConfig>,
    threads: Vec<JoinHandle<()>>,
}

impl<H: Handler> Running<H> {
    fn start(config: ServerConfig, handler: H) -> io::Result<Self> {
        let threads = config.threads.max(1);
        let listeners = sys::listeners(config.addr, threads)?;
        let local_addr = listeners[0].local_addr()?;
        let tls = config.tls.clone();
        let config = Arc::new(config);
        let handler = Arc::new(handler);
        let stats = Arc::new(Stats::new(threads));
        let ips = Arc::new(ip::IpCounter::new(config.max_connections_per_ip));
        let mut workers = Vec::with_capacity(threads);
        let mut senders = Vec::with_capacity(threads);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (worker, sender) = worker::Worker::new(
                index,
                listener,
                Arc::clone(&config),
                Arc::clone(&handler),
                Arc::clone(&stats),
                Arc::clone(&ips),
            )?;
            workers.push(worker);
            senders.push(sender);
        }
        let handle = Handle::new(senders, stats);
        handler.on_start(&handle);
        let mut joins = Vec::with_capacity(threads);
        for mut worker in workers {
            worker.set_handle(handle.clone());
            let join = std::thread::Builder::new()
                .name(format!("hibiki-worker-{}", worker.index()))
                .spawn(move || worker.run())?;
            joins.push(join);
        }
        Ok(Self { handle, local_addr, tls, threads: joins })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's TLS configuration, if it serves TLS: [`TlsConfig::reload`] on it presents
    /// a new certificate to the connections accepted from then on.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// A handle to post to the workers, send to connections, read stats and shut down.
    pub fn handle(&self) -> Handle<H::Command> {
        self.handle.clone()
    }

    /// Blocks until every worker has stopped (after [`Handle::shutdown`]).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }

    /// Closes every connection with 1001, flushes, and waits for the workers to stop.
    pub fn shutdown(self) {
        self.handle.shutdown();
        self.wait();
    }
}

/// Binds a std listener the way the server does; for tests that need a free port first.
#[doc(hidden)]
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<StdListener> {
    sys::bind(addr)
}

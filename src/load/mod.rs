//! `hibiki load`: a load generator for WebSocket servers, built on the same sans-IO core.
//!
//! One [`mio`] event loop per thread drives many client connections: a non-blocking connect,
//! the opening handshake ([`proto::handshake::client`](crate::proto::handshake::client)), then
//! frames through a client-role [`Connection`](crate::proto::Connection). Every message carries
//! its send time (nanoseconds since the run started) and a sequence number in its first 16
//! bytes, so latency is measured at the receiver without a clock of the server's.
//!
//! ```text
//!  cli       LoadArgs (clap) -> LoadConfig -> run_scenario -> Summary -> table | JSON | SVG
//!  coord     threads, the shared timeline, progress bar, server CPU/RSS and Redis sampling
//!  target    the URLs (nodes) and which connection goes to which
//!  driver    per thread: Poll, connections (connect, handshake, frames, close), timers
//!  scenarios echo · broadcast (and game) · connect · idle · room (and tick): what each
//!            connection sends; seqs: what each room member saw of the room's numbering
//!  scrape    the servers' /metrics (tick: late ticks)
//!  redis     INFO cpu and INFO commandstats of Redis servers, over plain RESP
//! ```
//!
//! # TLS
//!
//! A `wss://` URL (any scenario) gives each connection a rustls `ClientConnection` over its
//! socket, driven by the same event loop: the ciphertext is read and written by the driver,
//! the plaintext takes the plain path. The server's certificate is checked against the webpki
//! roots plus [`LoadConfig::ca_files`] (`--ca`) for the URL's host (sent as SNI), ALPN offers
//! `http/1.1`; [`LoadConfig::insecure`] (`--insecure`) skips the check. Session resumption is
//! off, so every connect scenario handshake is a full TLS handshake followed by the WebSocket
//! one ([`ConnectStats::tls`]). A refused certificate fails a connection as
//! [`FailureCause::Certificate`], other TLS failures as [`FailureCause::Tls`].
//!
//! # Several nodes
//!
//! A cluster of `hibiki serve` nodes is measured as one server: publishers connect to
//! [`LoadConfig::publish_urls`] (or [`LoadConfig::url`]), the other connections take turns
//! over [`LoadConfig::subscribe_urls`]; [`Summary::nodes`] says which went where. For room and
//! tick, [`Summary::sequence`] compares the room seqs each member received with those the
//! publishers' acks carried (lost, duplicated, reordered, gaps announced), over all members
//! and per node; [`UsageStats`] sums the CPU time of every server pid, beside Redis's own.
//!
//! # Timeline
//!
//! Connections are opened first (no more than `max_pending` handshakes at once per thread);
//! once every thread has its connections, the run starts for all at the same instant:
//! `warmup` (traffic, not measured), then `duration` (measured), then up to `drain` to collect
//! the answers still in flight, then every connection is closed with a Close frame. Nothing
//! runs longer than these bounds: a connection that is neither open nor failed after
//! `connect_timeout` fails as a timeout.
//!
//! # Library use
//!
//! ```no_run
//! use std::time::Duration;
//! use hibiki::load::{LoadConfig, Scenario, run_scenario};
//!
//! let mut config = LoadConfig::new(Scenario::Echo, "ws://127.0.0.1:8080/echo");
//! config.connections = 10;
//! config.duration = Duration::from_secs(1);
//! let summary = run_scenario(&config)?;
//! println!("{:.0} msg/s, p99 {} µs", summary.rate(), summary.latency.unwrap().p99);
//! # Ok::<(), hibiki::load::LoadError>(())
//! ```

mod cli;
mod coord;
mod driver;
mod plot;
mod procfs;
mod redis;
mod report;
mod scenarios;
mod scrape;
mod table;
mod target;
mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{LoadArgs, run};
pub use coord::run_scenario;
pub use plot::svg;
pub use report::{
    BroadcastStats, ConnectStats, ConnectionStats, FailureCause, MemoryStats, MessageStats, NodeStats,
    Percentiles, RedisUsage, RoomStats, SequenceStats, ServerUsage, Summary, UsageStats,
};

/// Which workload to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Connections that send messages and wait for the echo: round-trip latency, messages/s.
    Echo,
    /// Subscribers plus publishers at a fixed rate: deliveries/s, end-to-end latency, losses.
    Broadcast,
    /// Clients on a broadcast URL and one publisher at a tick rate (60 Hz): tick jitter.
    Game,
    /// New connections per second: TCP connect, handshake, close handshake, again.
    Connect,
    /// Connections held open and silent: how many the server holds, and its memory per connection.
    Idle,
    /// The app protocol on `/ws`: subscribers join a room, publishers (not members) publish
    /// at a fixed rate with `echo: false`: deliveries/s, end-to-end latency, losses.
    Room,
    /// The app protocol on a tick room (`game:*`): clients joined, one publisher; batches per
    /// tick, publish-to-batch latency, batch jitter, the server's late ticks.
    Tick,
}

impl Scenario {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Broadcast => "broadcast",
            Self::Game => "game",
            Self::Connect => "connect",
            Self::Idle => "idle",
            Self::Room => "room",
            Self::Tick => "tick",
        }
    }

    /// Whether this scenario sends stamped messages (and so needs a payload of 16 bytes or more).
    pub fn sends_messages(self) -> bool {
        matches!(self, Self::Echo | Self::Broadcast | Self::Game | Self::Room | Self::Tick)
    }

    /// Whether this scenario speaks the app protocol (`/ws`): room and tick.
    pub fn app(self) -> bool {
        matches!(self, Self::Room | Self::Tick)
    }

    /// The URL used when none is given: `/broadcast` for broadcast and game, `/ws` for room
    /// and tick, else `/echo`.
    pub fn default_url(self) -> &'static str {
        match self {
            Self::Broadcast | Self::Game => "ws://127.0.0.1:8080/broadcast",
            Self::Room | Self::Tick => "ws://127.0.0.1:8080/ws",
            _ => "ws://127.0.0.1:8080/echo",
        }
    }

    /// The room used when none is given: `chat:bench` for room, `game:bench` for tick.
    pub fn default_room(self) -> &'static str {
        match self {
            Self::Tick => "game:bench",
            _ => "chat:bench",
        }
    }

    /// Bytes per message when none is given: 100 for room, 64 for tick, else 20.
    pub fn default_payload(self) -> usize {
        match self {
            Self::Room => 100,
            Self::Tick => 64,
            _ => 20,
        }
    }

    /// Messages per second per publisher when none is given (broadcast, room: 100; tick: 60).
    pub fn default_rate(self) -> f64 {
        match self {
            Self::Tick | Self::Game => 60.0,
            _ => 100.0,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The smallest payload of a stamped message: 8 bytes of send time and 8 of sequence number.
pub const MIN_PAYLOAD: usize = 16;

/// Everything a run needs. [`LoadConfig::new`] fills in the defaults of the command line.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoadConfig {
    /// The workload.
    pub scenario: Scenario,
    /// The `ws://` or `wss://` URL to connect to. With several nodes: the first one, where publishers go
    /// unless [`publish_urls`](Self::publish_urls) names others.
    pub url: String,
    /// Broadcast, game, room, tick: the URLs the publishers take turns over (empty: `url`).
    pub publish_urls: Vec<String>,
    /// The URLs the other connections (subscribers, clients) take turns over, round-robin
    /// (empty: `url`): the nodes of a cluster. A URL given twice gets two turns.
    pub subscribe_urls: Vec<String>,
    /// Connections (echo, idle), subscribers (broadcast, room) or clients (game, tick).
    /// Default 100.
    pub connections: usize,
    /// Messages outstanding per echo connection. Default 1.
    pub in_flight: usize,
    /// Bytes per message, at least [`MIN_PAYLOAD`]. Default 20 (room: 100, tick: 64: the
    /// length of the `data` string, stamp included).
    pub payload: usize,
    /// The measured window. Default 10 s.
    pub duration: Duration,
    /// Traffic before the measured window, not counted. Default 1 s.
    pub warmup: Duration,
    /// Echo: total messages/s over all connections (`None`: as fast as the answers come).
    /// Broadcast, room: messages/s per publisher (`None`: 100). Tick: of the one publisher
    /// (`None`: 60).
    pub rate: Option<f64>,
    /// Broadcast, room: instead of a rate, a closed loop: each publisher keeps this many
    /// messages unconfirmed (broadcast: until it receives its own back; room: until it is
    /// acked) and sends the next as one is confirmed: the server at saturation, its queues
    /// bounded. `None`: the rate.
    pub window: Option<u32>,
    /// Offer permessage-deflate (the default settings of
    /// [`DeflateConfig`](crate::proto::deflate::DeflateConfig)) in every handshake; messages
    /// are then compressed both ways if the server accepts. Default off.
    pub deflate: bool,
    /// Broadcast, room: publishing connections (broadcast: they receive their own messages
    /// too; room: they do not join). Default 1.
    pub publishers: usize,
    /// Room, tick: the room to join and publish to (`None`: `chat:bench`, `game:bench`).
    pub room: Option<String>,
    /// Connect: connections in progress at once. Default 50.
    pub concurrency: usize,
    /// Game: ticks per second of the publisher. Tick: the server's tick rate (the period batch
    /// jitter is measured against). Default 60.
    pub tick_hz: f64,
    /// Driver threads, each with its own event loop and share of the connections. Default 1.
    pub threads: usize,
    /// Time for the TCP connect plus the handshake of one connection. Default 5 s.
    pub connect_timeout: Duration,
    /// After the window, how long to wait for the answers still in flight. Default 2 s.
    pub drain: Duration,
    /// Handshakes in progress at once per thread while the connections are opened. Default 512.
    pub max_pending: usize,
    /// The servers' process ids (one per node): the CPU time of each over the window is
    /// reported, and their sum is what deliveries per server CPU-second divide by (idle: the
    /// summed RSS).
    pub server_pids: Vec<u32>,
    /// Redis servers (`redis://[:PASSWORD@]HOST[:PORT][/]`) whose CPU time (`INFO cpu`) and
    /// command calls (`INFO commandstats`) over the window are reported.
    pub redis: Vec<String>,
    /// `wss://`: PEM files of CA certificates to trust beside the webpki roots (a server's
    /// self-signed certificate, a private CA).
    pub ca_files: Vec<PathBuf>,
    /// `wss://`: accept any certificate for any name (handshake signatures are still checked).
    /// For measuring a server with a throwaway certificate; never for anything else.
    pub insecure: bool,
    /// Draw a progress bar on stderr (when it is a terminal). Default off in the library.
    pub progress: bool,
}

impl LoadConfig {
    /// A configuration for `scenario` against `url`, with the command line's defaults.
    pub fn new(scenario: Scenario, url: impl Into<String>) -> Self {
        Self {
            scenario,
            url: url.into(),
            publish_urls: Vec::new(),
            subscribe_urls: Vec::new(),
            connections: 100,
            in_flight: 1,
            payload: scenario.default_payload(),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rate: None,
            window: None,
            deflate: false,
            publishers: 1,
            room: None,
            concurrency: 50,
            tick_hz: 60.0,
            threads: 1,
            connect_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            max_pending: 512,
            server_pids: Vec::new(),
            redis: Vec::new(),
            ca_files: Vec::new(),
            insecure: false,
            progress: false,
        }
    }

    /// Connection slots the run uses: its connections (plus publishers), or the connect
    /// scenario's concurrency.
    pub fn slots(&self) -> usize {
        match self.scenario {
            Scenario::Echo | Scenario::Idle => self.connections,
            Scenario::Broadcast | Scenario::Room => self.connections + self.publishers,
            Scenario::Game | Scenario::Tick => self.connections + 1,
            Scenario::Connect => self.concurrency,
        }
    }

    /// Slots that publish (the first ones): broadcast and room their publishers, game and
    /// tick one, the others none.
    pub fn publisher_slots(&self) -> usize {
        match self.scenario {
            Scenario::Broadcast | Scenario::Room => self.publishers,
            Scenario::Game | Scenario::Tick => 1,
            Scenario::Echo | Scenario::Connect | Scenario::Idle => 0,
        }
    }

    /// Where the publishers go: [`publish_urls`](Self::publish_urls), or [`url`](Self::url).
    pub fn publish_targets(&self) -> &[String] {
        if self.publish_urls.is_empty() { std::slice::from_ref(&self.url) } else { &self.publish_urls }
    }

    /// Where the other connections go: [`subscribe_urls`](Self::subscribe_urls), or
    /// [`url`](Self::url).
    pub fn subscribe_targets(&self) -> &[String] {
        if self.subscribe_urls.is_empty() { std::slice::from_ref(&self.url) } else { &self.subscribe_urls }
    }

    /// The room of a room or tick run: [`room`](Self::room), or the scenario's default.
    pub fn room_name(&self) -> &str {
        self.room.as_deref().unwrap_or(self.scenario.default_room())
    }

    /// Checks the values that cannot work together.
    ///
    /// # Errors
    ///
    /// [`LoadError::Config`] naming the value.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |what: &str| Err(LoadError::Config(what.to_string()));
        if self.scenario.sends_messages() && self.payload < MIN_PAYLOAD {
            return bad("--payload must be at least 16 bytes (send time and sequence number)");
        }
        if self.scenario != Scenario::Connect && self.connections == 0 {
            return bad("--connections must be at least 1");
        }
        if self.scenario == Scenario::Connect && self.concurrency == 0 {
            return bad("--concurrency must be at least 1");
        }
        if matches!(self.scenario, Scenario::Broadcast | Scenario::Room) && self.publishers == 0 {
            return bad("--publishers must be at least 1");
        }
        if self.in_flight == 0 || self.in_flight > u32::MAX as usize {
            return bad("--in-flight must be at least 1");
        }
        if self.room.as_ref().is_some_and(String::is_empty) {
            return bad("--room must not be empty");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return bad("--rate must be a positive number");
        }
        if let Some(window) = self.window {
            if !matches!(self.scenario, Scenario::Broadcast | Scenario::Room) {
                return bad("--window is for broadcast and room");
            }
            if self.rate.is_some() {
                return bad("--window and --rate exclude each other (a closed loop has no rate)");
            }
            if window == 0 {
                return bad("--window must be at least 1");
            }
        }
        if !(self.tick_hz.is_finite() && self.tick_hz > 0.0 && self.tick_hz <= 10_000.0) {
            return bad("--tick-hz must be between 0 and 10000");
        }
        if self.threads == 0 || self.max_pending == 0 {
            return bad("--threads and --max-pending must be at least 1");
        }
        if !self.publish_urls.is_empty() && self.publisher_slots() == 0 {
            return bad("--publish-url needs a scenario with publishers (broadcast, game, room, tick)");
        }
        if self.connect_timeout.is_zero() {
            return bad("--connect-timeout must be positive");
        }
        Ok(())
    }
}

/// Why a run could not take place. Failures of single connections are not errors: they are
/// counted by cause in [`Summary::connections`].
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    Url(String),
    /// The host name did not resolve.
    Resolve {
        /// The host as written.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// Nothing accepts TCP connections at the address (checked once before the run).
    Unreachable {
        /// The resolved address.
        addr: SocketAddr,
        /// The connect error.
        source: io::Error,
    },
    /// A configuration value is out of range.
    Config(String),
    /// A Redis server of [`LoadConfig::redis`] did not answer `INFO` (asked once before the
    /// run).
    Redis {
        /// The URL as given.
        url: String,
        /// What went wrong: unreachable, an error reply, or a reply that is not Redis's.
        reason: String,
    },
    /// The load tool itself failed (creating an event loop, a thread).
    Io(io::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(why) => write!(f, "invalid URL: {why}"),
            Self::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            Self::Unreachable { addr, source } => {
                write!(f, "cannot connect to {addr}: {source} (is the server running?)")
            }
            Self::Config(why) => f.write_str(why),
            Self::Redis { url, reason } => write!(f, "cannot read INFO from Redis at {url}: {reason}"),
            Self::Io(e) => write!(f, "load tool: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Resolve { source, .. } | Self::Unreachable { source, .. } | Self::Io(source) => {
                Some(source)
            }
            Self::Url(_) | Self::Config(_) | Self::Redis { .. } => None,
        }
    }
}

impl From<io::Error> for LoadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

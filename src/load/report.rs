//! The result of a run: [`Summary`], printed as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};

use super::Scenario;

/// Why a connection failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FailureCause {
    /// The TCP connection was refused: nothing listens there (any more).
    Refused,
    /// The TCP connect did not complete within the connect timeout.
    ConnectTimeout,
    /// The server did not answer the upgrade request within the connect timeout.
    HandshakeTimeout,
    /// The server answered the upgrade request with this HTTP status instead of 101.
    HttpStatus(u16),
    /// The server's 101 response was not a valid WebSocket accept (the reason).
    BadHandshake(String),
    /// The connection was reset (ECONNRESET, EPIPE).
    Reset,
    /// The server closed an open connection with a Close frame carrying this code.
    ClosedByServer(u16),
    /// The server closed the TCP connection without a Close frame.
    Eof,
    /// The server broke the WebSocket protocol (the error).
    Protocol(String),
    /// No local port or address was left to connect from (EADDRNOTAVAIL).
    NoLocalPort,
    /// The load tool hit its open-file limit (EMFILE, ENFILE): raise `ulimit -n`.
    TooManyFiles,
    /// `wss://`: the server's certificate was refused (the reason: unknown issuer, expired,
    /// not valid for the host name...). Give its CA with `--ca`.
    Certificate(String),
    /// `wss://`: the TLS session failed otherwise (the error).
    Tls(String),
    /// Another I/O error (its kind).
    Io(String),
}

impl FailureCause {
    /// A short machine-readable name: `refused`, `connect_timeout`, `handshake_timeout`,
    /// `http_404`, `bad_handshake`, `reset`, `closed_1001`, `eof`, `protocol`,
    /// `no_local_port`, `too_many_files`, `certificate`, `tls`, `io`.
    pub fn key(&self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::ConnectTimeout => "connect_timeout".into(),
            Self::HandshakeTimeout => "handshake_timeout".into(),
            Self::HttpStatus(code) => format!("http_{code}"),
            Self::BadHandshake(_) => "bad_handshake".into(),
            Self::Reset => "reset".into(),
            Self::ClosedByServer(code) => format!("closed_{code}"),
            Self::Eof => "eof".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::NoLocalPort => "no_local_port".into(),
            Self::TooManyFiles => "too_many_files".into(),
            Self::Certificate(_) => "certificate".into(),
            Self::Tls(_) => "tls".into(),
            Self::Io(_) => "io".into(),
        }
    }

    /// Whether the cause is a timeout (connect or handshake).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::ConnectTimeout | Self::HandshakeTimeout)
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str("connection refused"),
            Self::ConnectTimeout => f.write_str("timed out connecting"),
            Self::HandshakeTimeout => f.write_str("timed out waiting for the upgrade response"),
            Self::HttpStatus(code) => write!(f, "upgrade refused with HTTP {code}"),
            Self::BadHandshake(why) => write!(f, "invalid upgrade response: {why}"),
            Self::Reset => f.write_str("connection reset"),
            Self::ClosedByServer(code) => write!(f, "closed by the server (close code {code})"),
            Self::Eof => f.write_str("closed by the server without a Close frame"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::NoLocalPort => f.write_str("no local port left (EADDRNOTAVAIL)"),
            Self::TooManyFiles => f.write_str("too many open files (raise ulimit -n)"),
            Self::Certificate(why) => write!(f, "server certificate refused: {why} (trust it with --ca)"),
            Self::Tls(why) => write!(f, "TLS error: {why}"),
            Self::Io(kind) => write!(f, "I/O error: {kind}"),
        }
    }
}

impl Serialize for FailureCause {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.key())
    }
}

/// A latency distribution, in microseconds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of a histogram, or `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// Connections: how many were asked for, opened, and why the others failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectionStats {
    /// Connections attempted (for connect: every attempt).
    pub attempted: u64,
    /// Connections that completed the handshake.
    pub opened: u64,
    /// Connections that failed, before or after opening.
    pub failed: u64,
    /// Of those, connections that failed after opening (server closed or reset mid-run).
    pub failed_after_open: u64,
    /// Connections open when the window ended.
    pub open_at_end: u64,
    /// Connections that negotiated permessage-deflate (`--deflate`).
    pub deflated: u64,
    /// Seconds it took to open the connections, before traffic started.
    pub setup_secs: f64,
    /// Failures by cause.
    pub failures: BTreeMap<FailureCause, u64>,
}

/// Messages of the echo, broadcast, game, room and tick scenarios.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MessageStats {
    /// Payload bytes per message.
    pub payload: usize,
    /// Messages sent during the run (warmup included).
    pub sent: u64,
    /// Echo: round trips completed in the window. Others: deliveries in the window.
    pub received: u64,
    /// `received` per second of the window.
    pub per_sec: f64,
    /// Echoes that did not match what was sent (size, order), and messages that were not ours.
    pub errors: u64,
    /// Echo: messages still unanswered after the drain.
    pub unanswered: u64,
    /// Echo with a rate: sends skipped because every connection had its in-flight messages out.
    pub rate_shortfall: u64,
}

/// Deliveries of the broadcast, game, room and tick scenarios.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BroadcastStats {
    /// Publishing connections.
    pub publishers: usize,
    /// Messages per second per publisher (game: the tick rate; closed loop: what each
    /// sent on average over the warmup and the window).
    pub rate: f64,
    /// Closed loop: the messages each publisher kept unconfirmed (`--window`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Messages published (warmup included).
    pub published: u64,
    /// Connections on the broadcast when publishing started (subscribers and publishers:
    /// publishers receive their own messages). Room, tick: the joined subscribers only.
    pub members: u64,
    /// `published × members`.
    pub expected: u64,
    /// Deliveries received, during the run and the drain.
    pub delivered: u64,
    /// `expected - delivered` (game: missed ticks; tick: lost, or replaced by a newer message
    /// with the same key).
    pub lost: u64,
    /// Deliveries in the window that were a publisher's own message.
    pub self_deliveries: u64,
}

/// The room and tick scenarios: the room, its members, and (tick) batches and server ticks.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoomStats {
    /// The room joined and published to.
    pub room: String,
    /// Subscribers whose join was acked before publishing started (the members counted).
    pub joined: u64,
    /// Subscribers refused, or not answered before publishing started.
    pub join_failed: u64,
    /// Publishes acked ok (each ack carries the message's seq).
    pub acked: u64,
    /// Publishes answered with a failed ack.
    pub ack_failed: u64,
    /// Publishes still unanswered after the drain.
    pub unacked: u64,
    /// Distinct epochs the acks named (0: they name none, as with the in-memory engine, whose
    /// acks come at once). More than one: the room's numbering started over during the run
    /// (its state was lost), and seqs of different epochs were counted as one.
    pub epochs: u64,
    /// Tick: the server's tick rate the jitter is measured against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_hz: Option<f64>,
    /// Tick: `batch` frames received in the window, over all clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<u64>,
    /// Tick: batches per second per client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches_per_sec_per_client: Option<f64>,
    /// Tick: the server's ticks in the window (`hibiki_ticks_total` of `/metrics`; `None`:
    /// unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_ticks: Option<u64>,
    /// Tick: the server's late ticks in the window (`hibiki_late_ticks_total`; `None`: the
    /// server did not answer `/metrics`).
    pub late_ticks: Option<u64>,
}

/// What the subscribers of a room or tick run saw of the room's numbering: the `seq` of
/// each `message` (and of each message in a `batch`), against the seqs the publishers' acks
/// carried. Every subscriber followed joined before the first publish, so it is owed all of
/// them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SequenceStats {
    /// Subscribers followed: those joined before publishing started.
    pub subscribers: u64,
    /// Seqs acked to a publisher and never received by the end of the drain by a subscriber
    /// still connected (or below the last seq a closed one received), summed over
    /// subscribers (tick: of messages without a key; see `replaced`): lost silently.
    pub lost: u64,
    /// Subscribers that lost at least one.
    pub lost_subscribers: u64,
    /// Seqs received more than once (each repeat counts).
    pub duplicated: u64,
    /// Subscribers that received a seq twice.
    pub duplicated_subscribers: u64,
    /// Seqs received after a higher one.
    pub reordered: u64,
    /// Subscribers that received a seq after a higher one.
    pub reordered_subscribers: u64,
    /// Gaps the server announced: `error` envelopes with code `history_gap`, and failed
    /// acks that said `history_gap`.
    pub gaps: u64,
    /// Subscribers told of a gap.
    pub gap_subscribers: u64,
    /// Seqs acked to a publisher and not received by a subscriber whose connection ended
    /// (the server closed it, e.g. as a slow consumer, or it failed) before they came: past
    /// the last seq it received. Not silent: the close told the client, which resumes from
    /// its last seq (and gets them, or a `history_gap`).
    pub after_close: u64,
    /// Subscribers whose connection ended before the run did.
    pub closed_subscribers: u64,
    /// Subscribers with anything above (lost, duplicated, reordered, gaps).
    pub affected_subscribers: u64,
    /// Tick: seqs of keyed messages not received (replaced by a newer one with the same
    /// key before being sent, which the protocol allows, or lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<u64>,
}

/// One URL of the run (a node of a cluster) and the connections that went there.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeStats {
    /// The URL.
    pub url: String,
    /// Publishing connections sent there.
    pub publishers: u64,
    /// Other connections (subscribers, clients) sent there.
    pub subscribers: u64,
    /// Room, tick: subscribers there whose join was acked before publishing started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<u64>,
    /// Room, tick: what the subscribers there saw of the room's seqs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceStats>,
}

/// The connect scenario.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectStats {
    /// Connections in progress at once.
    pub concurrency: usize,
    /// Handshakes completed in the window (`wss://`: each a full TLS handshake, no session
    /// resumption, then the WebSocket handshake).
    pub handshakes: u64,
    /// Handshakes per second.
    pub per_sec: f64,
    /// Whether the connections went through TLS (`wss://`).
    pub tls: bool,
}

/// The server's memory (idle scenario with a server pid).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemoryStats {
    /// Server RSS before the connections were opened, KiB.
    pub rss_before_kib: u64,
    /// Server RSS at the end of the window, KiB.
    pub rss_after_kib: u64,
    /// RSS growth per connection held, bytes.
    pub per_connection_bytes: f64,
}

/// One server process (a node) over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerUsage {
    /// Its process id.
    pub pid: u32,
    /// Its CPU seconds (user + system) in the window (`None`: unreadable, the process gone).
    pub cpu_secs: Option<f64>,
    /// Seconds its threads were runnable but waited for a CPU in the window.
    pub cpu_wait_secs: Option<f64>,
}

/// One Redis server over the measured window (`INFO cpu`, `INFO commandstats` at its start
/// and its end).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RedisUsage {
    /// The URL as given.
    pub url: String,
    /// CPU seconds, `used_cpu_sys + used_cpu_user` (the main thread and the others).
    pub cpu_secs: Option<f64>,
    /// Commands Redis counted, over all commands but the `INFO` that measures it: `INFO
    /// commandstats` counts each command a script runs inside as a call too.
    pub calls: Option<u64>,
    /// `calls` per numbered publish (room, tick: seqs acked; broadcast: messages published):
    /// the commands scripts ran inside included.
    pub calls_per_publish: Option<f64>,
    /// Top-level script calls (`EVALSHA`, `EVAL`, `FCALL` and their read-only forms).
    pub script_calls: Option<u64>,
    /// `script_calls` per numbered publish: below 1 when a call numbers several publishes.
    pub script_calls_per_publish: Option<f64>,
    /// Calls per command (`publish`, `evalsha`, ...), those called in the window only.
    pub commands: BTreeMap<String, u64>,
    /// Why the figures are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// CPU time over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsageStats {
    /// The first server process id, if any was given (see `servers` for all).
    pub server_pid: Option<u32>,
    /// The servers' CPU seconds (user + system) in the window, summed over `servers`
    /// (`None` when any of them could not be read).
    pub server_cpu_secs: Option<f64>,
    /// The headline: messages (echo), deliveries (broadcast) or handshakes (connect) per
    /// server CPU-second (of the sum over the servers).
    pub per_server_cpu_sec: Option<f64>,
    /// The load tool's CPU seconds in the window (its driver threads).
    pub load_cpu_secs: f64,
    /// Seconds the servers' threads were runnable but waited for a CPU in the window
    /// (`/proc/PID/task/*/schedstat`), summed: other processes competing for their cores.
    pub server_cpu_wait_secs: Option<f64>,
    /// Seconds the load tool's driver threads waited for a CPU in the window.
    pub load_cpu_wait_secs: Option<f64>,
    /// Each server process given.
    pub servers: Vec<ServerUsage>,
    /// Each Redis server given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis: Vec<RedisUsage>,
    /// Redis CPU seconds summed over `redis` (`None`: none given, or one unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_secs: Option<f64>,
}

impl UsageStats {
    /// Whether the server or the load tool waited for a CPU for more than a tenth of the
    /// window: other processes competed for the cores, and rates understate the server.
    pub fn contended(&self, window_secs: f64) -> bool {
        let limit = window_secs * 0.1;
        self.server_cpu_wait_secs.is_some_and(|w| w > limit)
            || self.load_cpu_wait_secs.is_some_and(|w| w > limit)
    }
}

/// The histograms behind the percentiles, for plots.
#[derive(Clone, Default)]
pub(crate) struct Curves {
    pub(crate) latency: Option<Histogram<u64>>,
    pub(crate) jitter: Option<Histogram<u64>>,
    pub(crate) tick_delay: Option<Histogram<u64>>,
    pub(crate) handshake: Option<Histogram<u64>>,
}

impl fmt::Debug for Curves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |h: &Option<Histogram<u64>>| h.as_ref().map(Histogram::len);
        f.debug_struct("Curves")
            .field("latency", &len(&self.latency))
            .field("jitter", &len(&self.jitter))
            .field("tick_delay", &len(&self.tick_delay))
            .field("handshake", &len(&self.handshake))
            .finish()
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The workload.
    pub scenario: Scenario,
    /// The URL.
    pub url: String,
    /// Driver threads.
    pub threads: usize,
    /// Warmup seconds (not measured).
    pub warmup_secs: f64,
    /// Seconds of the measured window.
    pub duration_secs: f64,
    /// Connections.
    pub connections: ConnectionStats,
    /// Each URL (node) and the connections that went there, publishers' URLs first.
    pub nodes: Vec<NodeStats>,
    /// Messages (echo, broadcast, game).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageStats>,
    /// Broadcast and game deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastStats>,
    /// Room and tick: the room, joins, acks, batches and late ticks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomStats>,
    /// Room and tick: what the subscribers saw of the room's seqs (lost, duplicated,
    /// reordered, gaps announced), over every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceStats>,
    /// Connect rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectStats>,
    /// Server memory (idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Round-trip (echo) or end-to-end (broadcast, game) latency in the window, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Percentiles>,
    /// Game: |tick inter-arrival − tick period| at each client, µs. Tick: |batch
    /// inter-arrival − the nearest whole number of tick periods| (empty ticks send nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Percentiles>,
    /// Tick: from the server's tick (the batch's `ts`, wall-clock milliseconds) to the batch's
    /// arrival, µs; the stamp's resolution makes it up to 1 ms longer than it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_delay: Option<Percentiles>,
    /// Time from starting the TCP connect to the 101 response, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Percentiles>,
    /// CPU time of the server and of the load tool.
    pub usage: UsageStats,
    #[serde(skip)]
    pub(crate) curves: Curves,
}

impl Summary {
    /// The headline rate: messages (echo), deliveries (broadcast, game) or handshakes (connect)
    /// per second; 0 for idle.
    pub fn rate(&self) -> f64 {
        match (&self.messages, &self.connect) {
            (Some(m), _) => m.per_sec,
            (None, Some(c)) => c.per_sec,
            _ => 0.0,
        }
    }

    /// Whether every connection failed, before or after opening (the command exits non-zero
    /// then). For connect: whether no handshake succeeded.
    pub fn all_failed(&self) -> bool {
        let c = &self.connections;
        match self.scenario {
            Scenario::Connect => c.opened == 0,
            _ => c.opened == 0 || c.failed >= c.attempted,
        }
    }

    /// One line per failure cause, for stderr.
    pub fn failure_lines(&self) -> Vec<String> {
        let c = &self.connections;
        c.failures
            .iter()
            .map(|(cause, n)| format!("{} of {} connections failed: {cause}", group(*n), group(c.attempted)))
            .collect()
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A rate: grouped, with one decimal below 100.
pub(crate) fn group_f(x: f64) -> String {
    if x < 100.0 { format!("{x:.1}") } else { group(x.round() as u64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group_f(12.345), "12.3");
        assert_eq!(group_f(123_456.7), "123,457");
    }

    #[test]
    fn cause_keys() {
        assert_eq!(FailureCause::HttpStatus(404).key(), "http_404");
        assert_eq!(FailureCause::ClosedByServer(1001).key(), "closed_1001");
        assert_eq!(serde_json::to_string(&FailureCause::Refused).unwrap(), "\"refused\"");
        let mut map = BTreeMap::new();
        map.insert(FailureCause::HttpStatus(404), 3u64);
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"http_404":3}"#);
    }
}

//! Counters kept by the workers: relaxed atomics, one cache-line-aligned block per worker so
//! that workers never write to the same line; readers sum the blocks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::proto::CloseCode;

/// Close codes counted one by one; the rest are counted as "other".
pub const COUNTED_CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 0];

/// Why a request was refused before any upgrade, as counted (`/metrics` labels in
/// [`REJECTIONS`]). Refusals by the reactor have their own cause; a refusal by the application
/// (a status of 400 or more from [`Handler::on_request`](super::Handler::on_request)) is
/// counted by its status ([`Rejection::for_status`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(usize)]
#[non_exhaustive]
pub enum Rejection {
    /// 400: a malformed request head, a malformed WebSocket handshake (HTTP/1.0, no `Host`,
    /// no `Connection: Upgrade`, a bad key, ...), a bad `Content-Length`, or a 400 from the
    /// application.
    BadRequest,
    /// 431 or 413: the request head or body over its limit.
    TooLarge,
    /// 403: an `Origin` not in `allowed_origins`.
    Origin,
    /// 429: too many connections from one IP address.
    PerIp,
    /// 503: the server is full (`max_connections`).
    Full,
    /// Refused by the application with a status counted under no other cause (e.g. 500).
    App,
    /// No request head within the handshake timeout: closed without an answer.
    Timeout,
    /// 404 from the application: no such path.
    NotFound,
    /// 405: a WebSocket handshake with a method other than GET, or a 405 from the
    /// application.
    Method,
    /// 426: a WebSocket version other than 13, or a plain request to a WebSocket-only path
    /// (from the application).
    UpgradeRequired,
    /// 401 from the application: a missing, bad or expired token.
    Unauthorized,
    /// 403 from the application (other than the reactor's `Origin` check).
    Forbidden,
    /// 504 from the reactor: a deferred answer ([`Decision::Defer`](super::Decision::Defer))
    /// did not come within `defer_timeout`.
    DeferTimeout,
    /// A TLS connection that never got through its handshake: a plain HTTP request to the
    /// TLS port (answered 400), a ClientHello or record rustls refused (answered with its
    /// alert), a client that closed mid-handshake (one that refused the certificate, say),
    /// or a handshake unfinished within the handshake timeout.
    Tls,
}

impl Rejection {
    /// The cause a refusal with this status is counted under, or `None` below 400.
    pub fn for_status(status: u16) -> Option<Self> {
        Some(match status {
            0..=399 => return None,
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::Method,
            413 | 431 => Self::TooLarge,
            426 => Self::UpgradeRequired,
            _ => Self::App,
        })
    }
}

/// The rejection causes, in counter order, with their metric label.
pub const REJECTIONS: [(Rejection, &str); 14] = [
    (Rejection::BadRequest, "bad_request"),
    (Rejection::TooLarge, "too_large"),
    (Rejection::Origin, "origin"),
    (Rejection::PerIp, "per_ip"),
    (Rejection::Full, "full"),
    (Rejection::App, "app"),
    (Rejection::Timeout, "timeout"),
    (Rejection::NotFound, "not_found"),
    (Rejection::Method, "method"),
    (Rejection::UpgradeRequired, "upgrade_required"),
    (Rejection::Unauthorized, "unauthorized"),
    (Rejection::Forbidden, "forbidden"),
    (Rejection::DeferTimeout, "defer_timeout"),
    (Rejection::Tls, "tls"),
];

#[derive(Debug, Default)]
#[repr(align(128))]
struct Block {
    open: AtomicU64,
    closed: AtomicU64,
    accepted: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    dropped_volatile: AtomicU64,
    slow_consumer_closes: AtomicU64,
    heartbeat_timeouts: AtomicU64,
    abnormal: AtomicU64,
    rejections: [AtomicU64; REJECTIONS.len()],
    close_codes: [AtomicU64; 10],
}

/// The server's counters. Read with [`Stats::snapshot`].
#[derive(Debug)]
pub struct Stats {
    blocks: Box<[Block]>,
}

/// A sum of every worker's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// WebSocket connections open now.
    pub connections: u64,
    /// WebSocket connections opened since start.
    pub connections_total: u64,
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages (frames) sent.
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Volatile messages dropped for slow consumers.
    pub dropped_volatile: u64,
    /// Connections closed with 1008 for passing the outbound cap.
    pub slow_consumer_closes: u64,
    /// Connections closed because the heartbeat went unanswered.
    pub heartbeat_timeouts: u64,
    /// Connections that ended without a close handshake.
    pub abnormal: u64,
    /// Handshakes refused, by cause (see [`REJECTIONS`]).
    pub rejections: [u64; REJECTIONS.len()],
    /// Closed connections by close code (see [`COUNTED_CLOSE_CODES`]; 0 = other).
    pub close_codes: [u64; 10],
}

impl StatsSnapshot {
    /// Requests refused for this cause.
    pub fn rejected(&self, why: Rejection) -> u64 {
        self.rejections[why as usize]
    }
}

impl Stats {
    pub(crate) fn new(workers: usize) -> Self {
        Self { blocks: (0..workers).map(|_| Block::default()).collect() }
    }

    /// Sums the workers' counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for b in self.blocks.iter() {
            s.connections += b.open.load(Relaxed);
            s.connections_total += b.open.load(Relaxed) + b.closed.load(Relaxed);
            s.accepted += b.accepted.load(Relaxed);
            s.messages_in += b.messages_in.load(Relaxed);
            s.messages_out += b.messages_out.load(Relaxed);
            s.bytes_in += b.bytes_in.load(Relaxed);
            s.bytes_out += b.bytes_out.load(Relaxed);
            s.dropped_volatile += b.dropped_volatile.load(Relaxed);
            s.slow_consumer_closes += b.slow_consumer_closes.load(Relaxed);
            s.heartbeat_timeouts += b.heartbeat_timeouts.load(Relaxed);
            s.abnormal += b.abnormal.load(Relaxed);
            for (sum, c) in s.rejections.iter_mut().zip(&b.rejections) {
                *sum += c.load(Relaxed);
            }
            for (sum, c) in s.close_codes.iter_mut().zip(&b.close_codes) {
                *sum += c.load(Relaxed);
            }
        }
        s
    }

    pub(crate) fn worker(&self, index: usize) -> WorkerStats<'_> {
        WorkerStats(&self.blocks[index])
    }
}

/// One worker's block, for the worker to bump.
#[derive(Copy, Clone, Debug)]
pub(crate) struct WorkerStats<'a>(&'a Block);

fn bump(counter: &AtomicU64, n: u64) {
    // Only this worker writes its block: a load and a store, no locked instruction.
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerStats<'_> {
    pub(crate) fn accepted(self) {
        bump(&self.0.accepted, 1);
    }
    pub(crate) fn opened(self) {
        bump(&self.0.open, 1);
    }
    pub(crate) fn closed(self, code: CloseCode, abnormal: bool) {
        bump(&self.0.open, u64::MAX);
        bump(&self.0.closed, 1);
        if abnormal {
            bump(&self.0.abnormal, 1);
        }
        let slot =
            COUNTED_CLOSE_CODES.iter().position(|&c| c == code.0).unwrap_or(COUNTED_CLOSE_CODES.len() - 1);
        bump(&self.0.close_codes[slot], 1);
    }
    pub(crate) fn message_in(self) {
        bump(&self.0.messages_in, 1);
    }
    pub(crate) fn messages_out(self, n: u64) {
        bump(&self.0.messages_out, n);
    }
    pub(crate) fn bytes_in(self, n: usize) {
        bump(&self.0.bytes_in, n as u64);
    }
    pub(crate) fn bytes_out(self, n: usize) {
        bump(&self.0.bytes_out, n as u64);
    }
    pub(crate) fn dropped_volatile(self) {
        bump(&self.0.dropped_volatile, 1);
    }
    pub(crate) fn slow_consumer(self) {
        bump(&self.0.slow_consumer_closes, 1);
    }
    pub(crate) fn heartbeat_timeout(self) {
        bump(&self.0.heartbeat_timeouts, 1);
    }
    pub(crate) fn rejected(self, why: Rejection) {
        bump(&self.0.rejections[why as usize], 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_labels_are_in_counter_order() {
        for (i, (why, label)) in REJECTIONS.iter().enumerate() {
            assert_eq!(*why as usize, i, "{label}");
        }
        assert_eq!(Rejection::for_status(302), None);
        assert_eq!(Rejection::for_status(404), Some(Rejection::NotFound));
        assert_eq!(Rejection::for_status(500), Some(Rejection::App));
    }
}

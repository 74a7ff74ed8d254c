//! A connection as the reactor sees it: the socket, the protocol state, the bytes of an
//! unfinished frame, and the outbound queue.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;

use super::ServerConfig;
use super::timers::ticks;
use super::tls::Tls;
use crate::proto::Connection;

/// Most iovecs handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// A wheel tick kept in 32 bits (the connection holds five of them): at 20 ms a tick, it
/// wraps after 2.7 years, and only differences shorter than that are ever taken.
pub(crate) type Stamp = u32;

/// A connection's `timer_tick` when it has no entry in the wheel.
pub(crate) const NO_TIMER: Stamp = Stamp::MAX;

/// A connection's `ping_sent` when no heartbeat ping is in flight.
pub(crate) const NO_PING: Stamp = Stamp::MAX;

/// The stamp of `tick`.
pub(crate) fn stamp(tick: u64) -> Stamp {
    tick as u32
}

/// The tick a stamp was taken at, given the tick now (and that it was taken before).
pub(crate) fn unstamp(stamp: Stamp, now: u64) -> u64 {
    now.saturating_sub(u64::from((now as u32).wrapping_sub(stamp)))
}

#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for the request head (kept in `input`).
    Handshake {
        /// Tick of the accept: the handshake timeout counts from here.
        since: Stamp,
    },
    /// WebSocket open (or closing: see `Connection::can_send`).
    /// Inline, not boxed: an open connection is the common case, and a box would cost a
    /// pointer and an allocator header besides.
    Open(Connection),
    /// The handler deferred its answer ([`Decision::Defer`](super::Decision::Defer)) at tick
    /// `since`: waiting for `respond` (or the defer timeout), reading nothing more.
    Deferred {
        /// Tick of the decision: the defer timeout counts from here.
        since: Stamp,
    },
    /// Answering over plain HTTP; closed once the answer is flushed.
    Http,
    /// A long-lived HTTP answer the application writes to (Server-Sent Events).
    Stream,
}

/// A refusal decided at accept, before the request is read: answered once its head arrives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Past `max_connections` (503).
    Full,
    /// Past `max_connections_per_ip` (429).
    PerIp,
}

/// Where a connection is in its life, named after what it waits for. Together with [`Phase`]
/// (what it speaks), this is everything that decides its timers and its end.
///
/// ```text
/// Running ──close_key──> ClosingHandshake ──the peer's Close──> Lingering ──EOF / timeout──> removed
///    └──the peer's Close, a failure, an HTTP answer, a slow consumer──> Lingering
/// Refusing (accepted past a cap) ──the request head──> Lingering (429 / 503 answered)
/// ```
///
/// A connection is removed from any state on EOF, a socket error or a timeout. `Refusing` only
/// occurs in [`Phase::Handshake`], `ClosingHandshake` only in [`Phase::Open`], and a
/// [`Phase::Http`] answer always lingers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Waiting for whatever comes next: the request, frames, the application's sends.
    Running,
    /// Waiting for the request head only to answer it with this refusal.
    Refusing(Refusal),
    /// Our Close frame is out (or queued); waiting for the peer's, until the close timeout
    /// counted from tick `since`. Messages still arrive; nothing more can be sent.
    ClosingHandshake {
        /// Tick our Close was queued.
        since: Stamp,
    },
    /// All is said (or given up on): what is queued is flushed, then the write side is shut
    /// and the connection waits for the peer's EOF, until the close timeout counted from tick
    /// `since` (the start of the closing handshake, if there was one). What the peer still
    /// sends is discarded.
    Lingering {
        /// Tick the closing (or the answer) began.
        since: Stamp,
        /// `on_close` ran and the counters settled (always true for an HTTP answer): only the
        /// TCP teardown is left.
        finalized: bool,
    },
}

impl Life {
    /// Whether the connection waits for its TCP teardown only.
    pub(crate) fn is_lingering(self) -> bool {
        matches!(self, Self::Lingering { .. })
    }

    /// The next state once all is said: a closing handshake keeps its start.
    pub(crate) fn linger(self, tick: u64) -> Self {
        let tick = stamp(tick);
        match self {
            Self::Running | Self::Refusing(_) => Self::Lingering { since: tick, finalized: false },
            Self::ClosingHandshake { since } => Self::Lingering { since, finalized: false },
            lingering @ Self::Lingering { .. } => lingering,
        }
    }
}

/// What a connection's timer does when it comes due.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// No complete request within `handshake_timeout` of the accept: closed, counted.
    Handshake,
    /// Silent for `ping_interval` since the last byte read: a ping goes out.
    Ping,
    /// The ping went unanswered for `ping_timeout`: dropped as dead.
    Heartbeat,
    /// No message for `idle_timeout`: closed with 1001.
    Idle,
    /// The closing handshake or the lingering outlasted `close_timeout`: dropped.
    Close,
    /// A deferred answer did not come within `defer_timeout`: answered 504, counted.
    Deferred,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// rustls's state for a TLS connection; `None` for a plain one (and once a refused TLS
    /// connection only has to flush its alert).
    pub(crate) tls: Option<Box<Tls>>,
    pub(crate) peer: Peer,
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    pub(crate) life: Life,
    /// Bytes of an unfinished request head or frame; no allocation at all when idle.
    pub(crate) input: Input,
    /// The outbound queue; no allocation at all when empty.
    pub(crate) out: Out,
    /// Waiting for a writable event (the last write would have blocked).
    pub(crate) blocked: bool,
    /// In the worker's list of connections to flush.
    pub(crate) dirty: bool,
    /// Counted against the per-IP cap.
    pub(crate) counted_ip: bool,
    /// The write side is shut (lingering for the peer's EOF).
    pub(crate) write_shut: bool,
    /// Tick of the last byte read, of the last message, and of the heartbeat ping in flight
    /// ([`NO_PING`] when none is).
    pub(crate) last_read: Stamp,
    pub(crate) last_message: Stamp,
    pub(crate) ping_sent: Stamp,
    /// Tick at which this connection's timer entry fires (entries with another tick are
    /// stale); [`NO_TIMER`] when it has none.
    pub(crate) timer_tick: Stamp,
    /// The outbound queue was past the soft budget (for `on_drain`).
    pub(crate) backpressured: bool,
    /// The peer's close code, when it sent one, for `on_close` (boxed: rare, and the reason
    /// is a string).
    pub(crate) close_code: Option<Box<(crate::proto::CloseCode, String)>>,
    /// The loop turn of the last read, and the bytes read in it (the read budget).
    pub(crate) read_turn: u32,
    pub(crate) read_used: u32,
}

/// The peer's address in 18 bytes rather than `SocketAddr`'s 32 (an IPv4 address is kept
/// IPv4-mapped): it lives in every connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    ip: [u8; 16],
    port: u16,
}

impl Peer {
    pub(crate) fn addr(self) -> SocketAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        let ip = v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4);
        SocketAddr::new(ip, self.port)
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        Self { ip: ip.octets(), port: addr.port() }
    }
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, generation: u32, now_tick: u64) -> Self {
        let now_tick = stamp(now_tick);
        Self {
            stream,
            tls: None,
            peer: Peer::from(peer),
            generation,
            phase: Phase::Handshake { since: now_tick },
            life: Life::Running,
            input: Input::default(),
            out: Out::default(),
            blocked: false,
            dirty: false,
            counted_ip: false,
            write_shut: false,
            last_read: now_tick,
            last_message: now_tick,
            ping_sent: NO_PING,
            timer_tick: NO_TIMER,
            backpressured: false,
            close_code: None,
            read_turn: u32::MAX,
            read_used: 0,
        }
    }

    /// Accounts `n` bytes read at `tick`: the read budget, the heartbeat's last sign of life,
    /// and the end of any ping in flight (plain and TLS reads alike).
    pub(crate) fn note_read(&mut self, n: usize, tick: u64) {
        self.read_used = self.read_used.saturating_add(n as u32);
        self.last_read = stamp(tick);
        self.ping_sent = NO_PING;
    }

    pub(crate) fn ws(&mut self) -> Option<&mut Connection> {
        match &mut self.phase {
            Phase::Open(ws) => Some(ws),
            _ => None,
        }
    }

    /// The tick at which this connection's next timeout falls, and which one; `None` when
    /// nothing is timed (a stream lives until a side closes). The one place that says when a
    /// timer is due: the worker schedules it from here and, when it fires, acts only if this
    /// still says it is due.
    ///
    /// - The handshake timeout counts from the accept, not from the last byte read: a client
    ///   that trickles its head a byte at a time is cut off `handshake_timeout` after the
    ///   accept all the same.
    /// - The close timeout counts from the start of the closing (or of the HTTP answer).
    /// - The defer timeout counts from the handler's decision to answer later.
    /// - An open connection's is the earliest of the heartbeat (`ping_timeout` after the ping
    ///   in flight) or else the next ping (`ping_interval` after the last byte read), and the
    ///   idle timeout (`idle_timeout` after the last message). On a tie the heartbeat goes
    ///   first, then the idle close, then the ping.
    pub(crate) fn next_timeout(&self, config: &ServerConfig, now: u64) -> Option<(u64, Timeout)> {
        let at = |since: Stamp, d: Duration| unstamp(since, now) + ticks(d);
        match self.life {
            Life::ClosingHandshake { since } | Life::Lingering { since, .. } => {
                return Some((at(since, config.close_timeout), Timeout::Close));
            }
            Life::Running | Life::Refusing(_) => {}
        }
        match &self.phase {
            Phase::Handshake { since } => Some((at(*since, config.handshake_timeout), Timeout::Handshake)),
            Phase::Deferred { since } => Some((at(*since, config.defer_timeout), Timeout::Deferred)),
            Phase::Open(_) => {
                let ping = (self.ping_sent != NO_PING).then_some(self.ping_sent);
                let heartbeat = match (ping, config.ping_interval) {
                    (Some(sent), _) => Some((at(sent, config.ping_timeout), Timeout::Heartbeat)),
                    (None, Some(interval)) => Some((at(self.last_read, interval), Timeout::Ping)),
                    (None, None) => None,
                };
                let idle = config.idle_timeout.map(|d| (at(self.last_message, d), Timeout::Idle));
                let rank = |t: Timeout| match t {
                    Timeout::Heartbeat => 0,
                    Timeout::Idle => 1,
                    _ => 2,
                };
                heartbeat.into_iter().chain(idle).min_by_key(|&(tick, what)| (tick, rank(what)))
            }
            // A stream lives until a side closes; the application keeps it warm. An HTTP
            // answer always lingers (above).
            Phase::Stream | Phase::Http => None,
        }
    }
}

/// A queue of frames that holds one frame without allocating (the common case when a
/// fan-out queues one message per recipient per turn) and nothing at all when empty.
#[derive(Debug, Default)]
pub(crate) enum Frames {
    #[default]
    Empty,
    One(Bytes),
    Many(VecDeque<Bytes>),
}

impl Frames {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::One(_) => false,
            Self::Many(q) => q.is_empty(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(q) => q.len(),
        }
    }

    fn push_back(&mut self, frame: Bytes) {
        match std::mem::take(self) {
            Self::Empty => *self = Self::One(frame),
            Self::One(first) => {
                let mut q = VecDeque::with_capacity(4);
                q.push_back(first);
                q.push_back(frame);
                *self = Self::Many(q);
            }
            Self::Many(mut q) => {
                q.push_back(frame);
                *self = Self::Many(q);
            }
        }
    }

    fn front(&self) -> Option<&Bytes> {
        match self {
            Self::Empty => None,
            Self::One(f) => Some(f),
            Self::Many(q) => q.front(),
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        match self {
            Self::Empty => None,
            Self::One(_) => match std::mem::take(self) {
                Self::One(f) => Some(f),
                _ => None,
            },
            Self::Many(q) => {
                let f = q.pop_front();
                if q.is_empty() {
                    // A VecDeque keeps its capacity; an idle connection should not.
                    *self = Self::Empty;
                }
                f
            }
        }
    }

    fn pop_back(&mut self) -> Option<Bytes> {
        match self {
            Self::Many(q) if q.len() > 1 => q.pop_back(),
            _ => self.pop_front(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        let (one, many) = match self {
            Self::Empty => (None, None),
            Self::One(f) => (Some(f), None),
            Self::Many(q) => (None, Some(q.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// An input buffer that costs one pointer while idle: the `BytesMut` (32 bytes) is boxed on
/// first write and dropped by [`Input::release`] once empty.
#[derive(Debug, Default)]
pub(crate) struct Input(Option<Box<BytesMut>>);

static NO_INPUT: std::sync::LazyLock<BytesMut> = std::sync::LazyLock::new(BytesMut::new);

impl Input {
    /// Takes the buffer out (an empty one when none is held), leaving none.
    pub(crate) fn take(&mut self) -> BytesMut {
        self.0.take().map_or_else(BytesMut::new, |b| *b)
    }

    /// Gives the memory back once nothing is buffered.
    pub(crate) fn release(&mut self) {
        if self.0.as_ref().is_some_and(|b| b.is_empty()) {
            self.0 = None;
        }
    }
}

impl From<BytesMut> for Input {
    fn from(bytes: BytesMut) -> Self {
        Self((!bytes.is_empty() || bytes.capacity() > 0).then(|| Box::new(bytes)))
    }
}

impl std::ops::Deref for Input {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        self.0.as_deref().unwrap_or(&NO_INPUT)
    }
}

impl std::ops::DerefMut for Input {
    fn deref_mut(&mut self) -> &mut BytesMut {
        self.0.get_or_insert_default()
    }
}

/// Most spare outbound queues a worker thread keeps for reuse.
const SPARE_QUEUES: usize = 4096;

thread_local! {
    /// Emptied outbound queues, reused so that a fan-out to idle connections allocates nothing.
    /// The boxes themselves are what is reused: each moves into a connection as it is.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<OutQueue>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection's outbound queue, boxed while it holds something and given back to the
/// worker thread's spares once flushed: an idle connection pays one pointer for it, not the
/// queue's 64 bytes, and a fan-out reuses the same few queues turn after turn.
#[derive(Debug, Default)]
pub(crate) struct Out(Option<Box<OutQueue>>);

static NO_OUT: OutQueue = OutQueue { control: None, frames: Frames::Empty, front_written: 0, queued: 0 };

impl Out {
    /// Returns the queue to the thread's spares once everything in it is written.
    pub(crate) fn release(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.is_empty()) {
            if let Some(queue) = self.0.take() {
                SPARE.with_borrow_mut(|spare| {
                    if spare.len() < SPARE_QUEUES {
                        spare.push(queue);
                    }
                });
            }
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::ops::Deref for Out {
    type Target = OutQueue;
    fn deref(&self) -> &OutQueue {
        self.0.as_deref().unwrap_or(&NO_OUT)
    }
}

impl std::ops::DerefMut for Out {
    fn deref_mut(&mut self) -> &mut OutQueue {
        self.0.get_or_insert_with(|| {
            SPARE.with_borrow_mut(Vec::pop).unwrap_or_else(|| Box::new(OutQueue::default()))
        })
    }
}

/// Outbound bytes: control frames that go ahead at the next frame boundary, then frames in
/// order. Invariant: `front_written < frames[0].len()` when `front_written > 0`, and
/// `queued` is the sum of unwritten bytes.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// Pongs, pings and close frames: they jump the data queue (never dropped by the budget).
    /// Boxed on demand and released when written: rare, and idle connections hold nothing.
    pub(crate) control: Option<Box<BytesMut>>,
    pub(crate) frames: Frames,
    /// Bytes of `frames[0]` already written.
    front_written: usize,
    queued: usize,
}

impl OutQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.control.is_none() && self.frames.is_empty()
    }

    /// Bytes waiting, control frames included.
    pub(crate) fn queued(&self) -> usize {
        self.queued + self.control.as_ref().map_or(0, |c| c.len())
    }

    pub(crate) fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    pub(crate) fn push_control(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.control.get_or_insert_default().extend_from_slice(bytes);
        }
    }

    /// Drops every queued data frame not yet started (a slow consumer's backlog).
    pub(crate) fn drop_unstarted(&mut self) {
        let keep = usize::from(self.front_written > 0);
        while self.frames.len() > keep {
            if let Some(frame) = self.frames.pop_back() {
                self.queued -= frame.len();
            }
        }
    }

    /// Lays the unwritten bytes out for one vectored write: the rest of a started frame,
    /// then the control frames, then whole frames.
    #[inline]
    fn fill_iov<'a>(&'a self, iov: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        let mut frames = self.frames.iter();
        if self.front_written > 0 {
            if let Some(front) = frames.next() {
                iov[count] = IoSlice::new(&front[self.front_written..]);
                count += 1;
            }
        }
        if let Some(control) = &self.control {
            iov[count] = IoSlice::new(control);
            count += 1;
        }
        for frame in frames.take(MAX_IOVECS - count) {
            iov[count] = IoSlice::new(frame);
            count += 1;
        }
        count
    }

    /// Writes as much as the socket takes. Returns whether the queue is now empty; `written`
    /// gets the byte count.
    pub(crate) fn flush(&mut self, stream: &mut TcpStream, written: &mut usize) -> io::Result<bool> {
        loop {
            if self.is_empty() {
                return Ok(true);
            }
            let n = {
                let mut iov: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.fill_iov(&mut iov);
                match stream.write_vectored(&iov[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            *written += n;
            self.consume(n);
        }
    }

    /// [`OutQueue::flush`] through TLS: the frames are encrypted for this connection as they
    /// go (a broadcast frame is still encoded once, then encrypted per connection), at most
    /// rustls's buffer limit at a time, and the ciphertext leaves in vectored writes. Returns
    /// whether the queue and rustls's buffer are both empty; `written` gets the ciphertext
    /// byte count.
    pub(crate) fn flush_tls(
        &mut self,
        tls: &mut Tls,
        stream: &mut TcpStream,
        written: &mut usize,
    ) -> io::Result<bool> {
        loop {
            if !tls.write_out(stream, written)? {
                return Ok(false);
            }
            if self.is_empty() {
                return Ok(true);
            }
            let n = {
                let mut iov: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.fill_iov(&mut iov);
                tls.encrypt(&iov[..count])
            };
            if n == 0 {
                return Err(io::Error::other("TLS refused plaintext with its buffer empty"));
            }
            self.consume(n);
        }
    }

    /// Consumes `n` written bytes in the order `flush` laid them out.
    fn consume(&mut self, mut n: usize) {
        if self.front_written > 0 {
            let front_left = self.frames.front().map_or(0, Bytes::len) - self.front_written;
            if n < front_left {
                self.front_written += n;
                self.queued -= n;
                return;
            }
            n -= front_left;
            self.queued -= front_left;
            self.frames.pop_front();
            self.front_written = 0;
        }
        if let Some(control) = &mut self.control {
            let take = n.min(control.len());
            control.advance(take);
            n -= take;
            if control.is_empty() {
                // Give the memory back: idle connections hold nothing.
                self.control = None;
            }
            if n == 0 {
                return;
            }
        }
        while n > 0 {
            let Some(front) = self.frames.front() else { break };
            if n < front.len() {
                self.front_written = n;
                self.queued -= n;
                return;
            }
            n -= front.len();
            self.queued -= front.len();
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(frames: &Frames) -> Vec<u8> {
        frames.iter().map(|f| f[0]).collect()
    }

    #[test]
    fn frames_keep_order_and_hold_one_without_a_deque() {
        let frame = |b: u8| Bytes::from(vec![b]);
        let mut q = Frames::default();
        assert!(q.is_empty() && q.front().is_none());
        q.push_back(frame(1));
        assert!(matches!(q, Frames::One(_)), "one frame: no allocation for a queue");
        q.push_back(frame(2));
        q.push_back(frame(3));
        assert_eq!((q.len(), order(&q)), (3, vec![1, 2, 3]));
        assert_eq!(q.pop_back().map(|f| f[0]), Some(3));
        assert_eq!(q.pop_front().map(|f| f[0]), Some(1));
        assert_eq!(q.pop_front().map(|f| f[0]), Some(2));
        assert!(matches!(q, Frames::Empty), "drained: the deque is given back");
        q.push_back(frame(4));
        assert_eq!(q.pop_back().map(|f| f[0]), Some(4));
        assert!(q.is_empty() && q.pop_front().is_none());
    }
}
/// What one idle connection owns in a worker, counted in bytes so that growth shows up here
/// first: the slab slot (this `Conn`, with the protocol state inline), its one timer entry and
/// its session slot (the app's route), against the 256-byte budget per idle connection. The
/// per-IP table holds one entry per address, not per connection; the hub's session and room
/// memberships come on top for `/ws` connections only.
#[cfg(test)]
mod size {
    use std::mem::size_of;

    use super::{Conn, Input, Life, Out, Peer, Phase};
    use crate::reactor::timers::Entry;

    #[test]
    fn an_idle_connection_fits_in_its_budget() {
        assert_eq!(size_of::<Input>(), 8, "an idle input buffer is one pointer");
        assert_eq!(size_of::<Out>(), 8, "an empty outbound queue is one pointer");
        assert_eq!(size_of::<Life>(), 8);
        assert_eq!(size_of::<Peer>(), 18);
        assert!(size_of::<Phase>() <= 80, "Phase grew to {}", size_of::<Phase>());
        assert!(size_of::<Entry>() <= 12, "a timer entry grew to {}", size_of::<Entry>());
        let conn = size_of::<Conn>();
        // 16 of them are the socket: mio adds a selector id to it in debug builds (4 in release).
        assert!(conn <= 192, "Conn grew to {conn} bytes");
        let route = size_of::<Option<crate::app::Route>>();
        assert!(route <= 16, "the app's session slot grew to {route} bytes");
        let total = conn + size_of::<Entry>() + route;
        assert!(total <= 220, "an idle /echo connection owns {total} bytes of the 256 budget");
    }

    #[test]
    fn a_hub_session_stays_small() {
        let session = size_of::<crate::hub::Session>();
        assert!(session <= 152, "hub::Session grew to {session} bytes");
    }
}

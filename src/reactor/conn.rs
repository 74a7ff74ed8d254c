//! A connection as the reactor sees it: the socket, the protocol state, the bytes of an
//! unfinished frame, and the outbound queue.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;

use crate::proto::Connection;

/// Most iovecs handed to one `writev`.
const MAX_IOVECS: usize = 64;

#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for the request head (kept in `input`).
    Handshake,
    /// WebSocket open (or closing: see `Connection::can_send`).
    Open(Box<Connection>),
    /// Answering over plain HTTP; closed once the answer is flushed.
    Http,
    /// A long-lived HTTP answer the application writes to (Server-Sent Events).
    Stream,
}

/// Why and how a connection is going away.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Still running.
    No,
    /// Flush what is queued, then shut down the write side and wait for the peer's EOF.
    Linger,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// Bytes of an unfinished request head or frame; empty (no allocation) when idle.
    pub(crate) input: BytesMut,
    pub(crate) out: OutQueue,
    pub(crate) ending: Ending,
    /// Waiting for a writable event (the last write would have blocked).
    pub(crate) blocked: bool,
    /// In the worker's list of connections to flush.
    pub(crate) dirty: bool,
    /// Counted against the per-IP cap.
    pub(crate) counted_ip: bool,
    /// An HTTP status to answer instead of upgrading (set at accept: 429, 503).
    pub(crate) reject: Option<u16>,
    /// Tick of the last byte read, of the last message, and of the heartbeat ping in flight.
    pub(crate) last_read: u64,
    pub(crate) last_message: u64,
    pub(crate) ping_sent: Option<u64>,
    /// Tick at which this connection's timer entry fires (entries with another tick are stale).
    pub(crate) timer_tick: u64,
    /// Tick of the close handshake's start, for the close timeout.
    pub(crate) closing_since: Option<u64>,
    /// The outbound queue was past the soft budget (for `on_drain`).
    pub(crate) backpressured: bool,
    /// The peer's close code, when it sent one, for `on_close`.
    pub(crate) close_code: Option<(crate::proto::CloseCode, String)>,
    /// `on_close` ran and the counters settled: what is left is the TCP teardown.
    pub(crate) finalized: bool,
    /// The loop turn of the last read, and the bytes read in it (the read budget).
    pub(crate) read_turn: u32,
    pub(crate) read_used: usize,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, generation: u32, now_tick: u64) -> Self {
        Self {
            stream,
            peer,
            generation,
            phase: Phase::Handshake,
            input: BytesMut::new(),
            out: OutQueue::default(),
            ending: Ending::No,
            blocked: false,
            dirty: false,
            counted_ip: false,
            reject: None,
            last_read: now_tick,
            last_message: now_tick,
            ping_sent: None,
            timer_tick: 0,
            closing_since: None,
            backpressured: false,
            close_code: None,
            finalized: false,
            read_turn: u32::MAX,
            read_used: 0,
        }
    }

    pub(crate) fn ws(&mut self) -> Option<&mut Connection> {
        match &mut self.phase {
            Phase::Open(ws) => Some(ws),
            _ => None,
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

/// Outbound bytes: control frames that go ahead at the next frame boundary, then frames in
/// order. Invariant: `front_written < frames[0].len()` when `front_written > 0`, and
/// `queued` is the sum of unwritten bytes.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// Pongs, pings and close frames: they jump the data queue (never dropped by the budget).
    pub(crate) control: BytesMut,
    pub(crate) frames: Frames,
    /// Bytes of `frames[0]` already written.
    front_written: usize,
    queued: usize,
}

impl OutQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.frames.is_empty()
    }

    /// Bytes waiting, control frames included.
    pub(crate) fn queued(&self) -> usize {
        self.queued + self.control.len()
    }

    pub(crate) fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    pub(crate) fn push_control(&mut self, bytes: &[u8]) {
        self.control.extend_from_slice(bytes);
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

    /// Writes as much as the socket takes. Returns whether the queue is now empty; `written`
    /// gets the byte count.
    pub(crate) fn flush(&mut self, stream: &mut TcpStream, written: &mut usize) -> io::Result<bool> {
        loop {
            if self.is_empty() {
                return Ok(true);
            }
            let n = {
                let mut iov: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                let mut frames = self.frames.iter();
                if self.front_written > 0 {
                    if let Some(front) = frames.next() {
                        iov[count] = IoSlice::new(&front[self.front_written..]);
                        count += 1;
                    }
                }
                if !self.control.is_empty() {
                    iov[count] = IoSlice::new(&self.control);
                    count += 1;
                }
                for frame in frames.take(MAX_IOVECS - count) {
                    iov[count] = IoSlice::new(frame);
                    count += 1;
                }
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
        if !self.control.is_empty() {
            let take = n.min(self.control.len());
            self.control.advance(take);
            n -= take;
            if self.control.is_empty() {
                // Give the memory back: idle connections hold nothing.
                self.control = BytesMut::new();
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

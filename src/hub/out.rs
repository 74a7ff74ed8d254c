//! Where the hub's frames go: [`Out`], implemented by the worker's [`Outbox`] and, for tests
//! of the hub's logic without sockets, by [`Recorder`].

use bytes::Bytes;

use crate::reactor::{ConnId, Outbox};

/// The sending side the hub needs from its worker.
pub trait Out {
    /// Queues a frame that must not be dropped (false: the connection is gone or closing).
    fn send_frame(&mut self, conn: ConnId, frame: &Bytes) -> bool;
    /// Queues a frame that may be dropped for a connection past its soft outbound budget.
    fn send_volatile(&mut self, conn: ConnId, frame: &Bytes) -> bool;
    /// Queues raw bytes to a stream (an SSE answer).
    fn send_raw(&mut self, conn: ConnId, bytes: &Bytes) -> bool;
    /// Bytes queued for a connection.
    fn buffered(&self, conn: ConnId) -> usize;
    /// The soft outbound budget.
    fn soft_limit(&self) -> usize;
    /// Closes a connection that cannot keep up (1008, counted).
    fn close_slow_consumer(&mut self, conn: ConnId) -> bool;
    /// Whether the connection takes frames compressed once for many.
    fn is_compressed(&self, conn: ConnId) -> bool;
}

impl<C: Send + 'static> Out for Outbox<'_, C> {
    fn send_frame(&mut self, conn: ConnId, frame: &Bytes) -> bool {
        self.send_frame_to(conn, frame)
    }

    fn send_volatile(&mut self, conn: ConnId, frame: &Bytes) -> bool {
        self.send_volatile_to(conn, frame)
    }

    fn send_raw(&mut self, conn: ConnId, bytes: &Bytes) -> bool {
        self.send_raw_to(conn, bytes)
    }

    fn buffered(&self, conn: ConnId) -> usize {
        Outbox::buffered(self, conn)
    }

    fn soft_limit(&self) -> usize {
        Outbox::soft_limit(self)
    }

    fn close_slow_consumer(&mut self, conn: ConnId) -> bool {
        Outbox::close_slow_consumer(self, conn)
    }

    fn is_compressed(&self, conn: ConnId) -> bool {
        Outbox::is_compressed(self, conn)
    }
}

/// An [`Out`] that keeps what it is given, for tests: every frame, in order, per connection.
#[derive(Debug, Default)]
pub struct Recorder {
    /// `(connection, bytes)` in the order sent; volatile and raw sends included.
    pub sent: Vec<(ConnId, Bytes)>,
    /// Connections closed as slow consumers.
    pub closed: Vec<ConnId>,
    /// What [`Out::buffered`] answers for every connection.
    pub backlog: usize,
}

impl Recorder {
    /// The JSON envelopes sent to `conn`, in order (WebSocket text frames of up to 64 KiB,
    /// uncompressed, as the hub sends to connections without deflate).
    pub fn envelopes(&self, conn: ConnId) -> Vec<serde_json::Value> {
        self.sent
            .iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, frame)| {
                let header = if frame.get(1).is_some_and(|&b| b & 0x7f == 126) { 4 } else { 2 };
                serde_json::from_slice(frame.get(header..)?).ok()
            })
            .collect()
    }

    /// Forgets what was sent.
    pub fn clear(&mut self) {
        self.sent.clear();
    }
}

impl Out for Recorder {
    fn send_frame(&mut self, conn: ConnId, frame: &Bytes) -> bool {
        self.sent.push((conn, frame.clone()));
        true
    }

    fn send_volatile(&mut self, conn: ConnId, frame: &Bytes) -> bool {
        self.send_frame(conn, frame)
    }

    fn send_raw(&mut self, conn: ConnId, bytes: &Bytes) -> bool {
        self.send_frame(conn, bytes)
    }

    fn buffered(&self, _conn: ConnId) -> usize {
        self.backlog
    }

    fn soft_limit(&self) -> usize {
        1 << 20
    }

    fn close_slow_consumer(&mut self, conn: ConnId) -> bool {
        self.closed.push(conn);
        true
    }

    fn is_compressed(&self, _conn: ConnId) -> bool {
        false
    }
}

//! The driver's connection table: per connection its socket, TLS session, protocol state and
//! buffers, and the calls a workload makes on it (send, close).

use std::io::Write as _;

use bytes::BytesMut;
use mio::Poll;
use mio::net::TcpStream;
use rustls::ClientConnection;
use slab::Slab;

use crate::proto::{CloseCode, Connection, MessageKind};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// TCP connect in progress.
    Connecting,
    /// Request sent, waiting for the 101.
    Handshaking,
    /// Frames flow.
    Open,
    /// Our Close frame is out; waiting for the server's and its TCP close.
    Closing,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn<P> {
    pub(super) stream: TcpStream,
    /// `wss://`: the TLS session; `out` and `input` hold plaintext.
    pub(super) tls: Option<Box<ClientConnection>>,
    pub(super) state: State,
    pub(super) ws: Connection,
    /// An unfinished frame (or response head); empty when idle.
    pub(super) input: BytesMut,
    /// What leaves at the end of the turn.
    pub(super) out: BytesMut,
    pub(super) key: [u8; 24],
    /// When the connect started (handshake latency, connect timeout).
    pub(super) started: u64,
    /// When the close started.
    pub(super) since: u64,
    pub(super) slot: usize,
    pub(super) dirty: bool,
    pub(super) blocked: bool,
    pub(super) peer: P,
}

/// The connections of one thread, as a workload sees them.
#[derive(Debug)]
pub(crate) struct Conns<P> {
    pub(super) slab: Slab<Conn<P>>,
    pub(super) dirty: Vec<usize>,
    /// Connections connecting or handshaking.
    pub(super) pending: usize,
    /// Connections in the close handshake.
    pub(super) closing: usize,
}

impl<P> Conns<P> {
    /// The state of connection `key`.
    pub(crate) fn peer_mut(&mut self, key: usize) -> Option<&mut P> {
        self.slab.get_mut(key).map(|c| &mut c.peer)
    }

    /// Frames `payload` as a binary message for `key`; it leaves at the end of the turn.
    /// Returns false when the connection is not open.
    pub(crate) fn send(&mut self, key: usize, payload: &[u8]) -> bool {
        self.send_kind(key, MessageKind::Binary, payload)
    }

    /// Frames `payload` (UTF-8) as a text message for `key`, as [`send`](Self::send) does.
    pub(crate) fn send_text(&mut self, key: usize, payload: &[u8]) -> bool {
        self.send_kind(key, MessageKind::Text, payload)
    }

    fn send_kind(&mut self, key: usize, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(conn) = self.slab.get_mut(key) else { return false };
        if conn.state != State::Open || conn.ws.send(kind, payload, &mut conn.out).is_err() {
            return false;
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
        true
    }

    /// Starts the close handshake of `key` (code 1000).
    pub(crate) fn close(&mut self, key: usize, now: u64) {
        let Some(conn) = self.slab.get_mut(key) else { return };
        if conn.state != State::Open {
            return;
        }
        let _ = conn.ws.close(CloseCode::NORMAL, "", &mut conn.out);
        conn.state = State::Closing;
        conn.since = now;
        self.closing += 1;
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    pub(super) fn mark(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Takes `key` out, deregistered, with a last try to send what it still has (a Close).
    pub(super) fn remove(&mut self, key: usize, poll: &Poll) -> Option<Conn<P>> {
        let mut conn = self.slab.try_remove(key)?;
        match conn.state {
            State::Connecting | State::Handshaking => self.pending -= 1,
            State::Closing => self.closing -= 1,
            State::Open => {}
        }
        if matches!(conn.state, State::Open | State::Closing) {
            conn.ws.poll_transmit(&mut conn.out);
            if let Some(tls) = &mut conn.tls {
                let _ = tls.writer().write_all(&conn.out);
                if !conn.blocked {
                    let _ = tls.write_tls(&mut conn.stream);
                }
            } else if !conn.out.is_empty() && !conn.blocked {
                let _ = conn.stream.write(&conn.out);
            }
        }
        let _ = poll.registry().deregister(&mut conn.stream);
        Some(conn)
    }
}

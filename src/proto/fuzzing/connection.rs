//! The `connection` target: a connection state machine fed arbitrary bytes, its output
//! decoded by a peer.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::opposite;
use crate::proto::Role;
use crate::proto::close::CloseCode;
use crate::proto::conn::{Config, Connection, Event, MessageKind, SendError};
use crate::proto::deflate::{DeflateConfig, DeflateParams};
use crate::proto::error::{CapacityError, Error};
use crate::proto::frame::MAX_HEADER_LEN;

const CONN_MAX_MESSAGE: usize = 64 << 10;
const CONN_MAX_FRAGMENTS: usize = 64;
/// The tiny limits mode: small enough for fuzzer-sized inputs to cross.
const TINY_MAX_FRAME: usize = 100;
const TINY_MAX_MESSAGE: usize = 300;
const TINY_MAX_FRAGMENTS: usize = 4;

/// A fixed client offer the server side negotiates from: no context takeover either way,
/// narrowed windows (the client's 9 bits exercise the small-window compressor).
const DEFLATE_OFFER: &[u8] =
    b"permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9";

/// Chunk lengths for the chunking modes 1-6; mode 0 feeds everything at once, mode 7 cycles
/// through [`CHUNK_CYCLE`].
const CHUNK_LENS: [usize; 7] = [usize::MAX, 1, 2, 3, 7, 16, 100];
const CHUNK_CYCLE: [usize; 6] = [1, 9, 2, 40, 3, 13];

fn chunk_len(mode: u8, i: usize) -> usize {
    match CHUNK_LENS.get(usize::from(mode)) {
        Some(&len) => len,
        None => CHUNK_CYCLE[i % CHUNK_CYCLE.len()],
    }
}

/// One connection fed the fuzzer's bytes, echoing every message, and a peer of the other role
/// (same negotiation, default limits) that decodes everything the connection writes and must
/// see exactly what was meant: the echoes, the pongs, the closes.
struct Echo {
    conn: Connection,
    peer: Connection,
    max_frame: usize,
    max_message: usize,
    max_fragments: usize,
    /// Start the closing handshake after the first data message.
    close_after_data: bool,
    /// This side's writes, not yet given to the peer.
    out: BytesMut,
    peer_in: BytesMut,
    peer_out: BytesMut,
    /// What the peer must decode next, in order.
    expected: VecDeque<Event>,
    /// A Close or Failed event was seen.
    ended: bool,
    /// This side called `close`.
    close_sent: bool,
}

impl Echo {
    fn handle(&mut self, event: Event) {
        assert!(!self.ended, "event after Close/Failed: {event:?}");
        let mut data = None;
        match event {
            Event::Text(payload) => {
                assert!(std::str::from_utf8(&payload).is_ok(), "Text event with invalid UTF-8");
                data = Some((MessageKind::Text, payload));
            }
            Event::Binary(payload) => data = Some((MessageKind::Binary, payload)),
            Event::Ping(payload) => {
                assert!(payload.len() <= 125, "ping of {} bytes", payload.len());
                if !self.close_sent {
                    self.expected.push_back(Event::Pong(payload));
                }
            }
            Event::Pong(payload) => assert!(payload.len() <= 125, "pong of {} bytes", payload.len()),
            Event::Close { code, reason } => {
                assert!(code == CloseCode::NO_STATUS || code.is_sendable(), "close code {code}");
                assert!(code != CloseCode::NO_STATUS || reason.is_empty());
                assert!(
                    reason.len() <= 123 && std::str::from_utf8(&reason).is_ok(),
                    "close reason {reason:?}"
                );
                self.end(if code == CloseCode::NO_STATUS { CloseCode::NORMAL } else { code });
            }
            Event::Failed(error) => {
                self.check_error(&error);
                self.end(CloseCode::from(&error));
            }
        }
        if let Some((kind, payload)) = data {
            assert!(payload.len() <= self.max_message, "message of {} bytes", payload.len());
            assert!(!self.close_sent, "data event after this side's Close");
            assert!(self.conn.can_send());
            self.conn.send(kind, &payload, &mut self.out).expect("send while open");
            self.expected.push_back(match kind {
                MessageKind::Text => Event::Text(payload),
                MessageKind::Binary => Event::Binary(payload),
            });
            if self.close_after_data {
                self.start_close(CloseCode::NORMAL, "bye");
            }
        }
        self.conn.poll_transmit(&mut self.out);
        self.deliver();
    }

    fn check_error(&self, error: &Error) {
        match *error {
            Error::Capacity(CapacityError::FrameTooLarge { size, max }) => {
                assert!(max == self.max_frame && size > max as u64, "{error:?}")
            }
            Error::Capacity(CapacityError::MessageTooLarge { size, max }) => {
                assert!(max == self.max_message && size > max as u64, "{error:?}")
            }
            Error::Capacity(CapacityError::TooManyFragments { max }) => {
                assert_eq!(max, self.max_fragments, "{error:?}")
            }
            _ => {}
        }
    }

    /// After Close or Failed: closed for good, with a Close frame queued unless this side
    /// already sent one.
    fn end(&mut self, reply: CloseCode) {
        self.ended = true;
        let c = &self.conn;
        assert!(c.is_closed() && !c.wants_read() && !c.can_send() && !c.is_mid_message());
        if !self.close_sent {
            assert!(self.conn.has_pending(), "no Close frame queued");
            self.expected.push_back(Event::Close { code: reply, reason: Bytes::new() });
        }
    }

    fn start_close(&mut self, code: CloseCode, reason: &'static str) {
        self.conn.close(code, reason, &mut self.out).expect("close while open");
        self.close_sent = true;
        self.expected.push_back(Event::Close { code, reason: Bytes::from_static(reason.as_bytes()) });
        // Nothing more may go out.
        let before = self.out.len();
        assert!(!self.conn.can_send());
        assert_eq!(self.conn.send(MessageKind::Binary, b"x", &mut self.out), Err(SendError::Closed));
        assert_eq!(self.conn.ping(b"x", &mut self.out), Err(SendError::Closed));
        assert_eq!(self.conn.close(code, "", &mut self.out), Err(SendError::Closed));
        assert_eq!(self.out.len(), before);
    }

    /// Hands this side's writes to the peer, which must decode exactly what was expected.
    fn deliver(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.peer_in.extend_from_slice(&self.out);
        self.out.clear();
        while let Some(event) = self.peer.poll_event(&mut self.peer_in) {
            let expected = self.expected.pop_front();
            assert_eq!(Some(&event), expected.as_ref(), "the peer decoded something else than was sent");
        }
        self.peer.poll_transmit(&mut self.peer_out);
        self.peer_out.clear();
    }

    fn finish(mut self) {
        if self.conn.can_send() {
            self.start_close(CloseCode::GOING_AWAY, "");
        }
        self.deliver();
        assert!(self.expected.is_empty(), "never decoded by the peer: {:?}", self.expected);
        assert!(self.peer_in.is_empty(), "{} bytes the peer could not decode", self.peer_in.len());
    }
}

/// Runs a [`Connection`] over the input. Byte 0 chooses: bit 0 the role (client if set), bit 1
/// permessage-deflate, bit 2 its parameters (negotiated by a default server from a fixed
/// offer, or [`DeflateParams::default`] if set), bit 3 tiny limits (100-byte frames, 300-byte
/// messages, 4 fragments; else 64 KiB and 64 fragments), bits 4-6 how the rest is cut into
/// reads, bit 7 whether this side starts the closing handshake after the first message.
///
/// After every read the events are drained; each message is echoed with `send`, and
/// everything written is decoded by a peer that must see exactly the echoes, pongs and closes.
/// Checked: no event after Close/Failed, valid UTF-8 in Text, no message over the limit,
/// errors that name the limits, and an input buffer that never holds more than one frame's
/// worth (`max_frame_size + 14` plus the read) — nothing accumulates past the limits.
pub fn connection(data: &[u8]) {
    let Some((&mode, mut stream)) = data.split_first() else { return };
    let role = if mode & 1 == 0 { Role::Server } else { Role::Client };
    let (max_frame, max_message, max_fragments) = if mode & 8 == 0 {
        (CONN_MAX_MESSAGE, CONN_MAX_MESSAGE, CONN_MAX_FRAGMENTS)
    } else {
        (TINY_MAX_FRAME, TINY_MAX_MESSAGE, TINY_MAX_FRAGMENTS)
    };
    let config = Config::default()
        .max_message_size(max_message)
        .max_frame_size(max_frame)
        .max_fragments(max_fragments);
    let (conn, peer) = if mode & 2 == 0 {
        (Connection::new(role, config, None), Connection::new(opposite(role), Config::default(), None))
    } else {
        let params = if mode & 4 == 0 {
            DeflateConfig::default().negotiate([DEFLATE_OFFER]).expect("the fixed offer is acceptable")
        } else {
            DeflateParams::default()
        };
        // A low threshold: most echoes go out compressed.
        let deflate = DeflateConfig::default().threshold(8);
        (
            Connection::with_deflate(role, config, params, &deflate),
            Connection::with_deflate(opposite(role), Config::default(), params, &deflate),
        )
    };
    assert_eq!((conn.role(), conn.is_compressed()), (role, mode & 2 != 0));
    let mut echo = Echo {
        conn,
        peer,
        max_frame,
        max_message,
        max_fragments,
        close_after_data: mode & 0x80 != 0,
        out: BytesMut::new(),
        peer_in: BytesMut::new(),
        peer_out: BytesMut::new(),
        expected: VecDeque::new(),
        ended: false,
        close_sent: false,
    };

    let chunking = (mode >> 4) & 7;
    let mut input = BytesMut::new();
    let mut reads = 0;
    while !echo.ended && !stream.is_empty() {
        let n = chunk_len(chunking, reads).min(stream.len());
        reads += 1;
        input.extend_from_slice(&stream[..n]);
        stream = &stream[n..];
        assert!(input.len() <= max_frame + MAX_HEADER_LEN + n, "{} bytes buffered", input.len());
        while let Some(event) = echo.conn.poll_event(&mut input) {
            echo.handle(event);
        }
        if echo.ended {
            break;
        }
        // What is left is one unfinished frame: part of a header, or a payload under the limit.
        match echo.conn.bytes_needed(&input) {
            Some(need) => {
                assert!(need > 0 && input.len() + need <= max_frame, "{need} more after {}", input.len())
            }
            None => assert!(input.len() < MAX_HEADER_LEN, "{} bytes left without a frame", input.len()),
        }
    }
    if echo.ended {
        input.extend_from_slice(stream);
        assert_eq!(echo.conn.poll_event(&mut input), None, "event after Close/Failed");
    }
    echo.finish();
}

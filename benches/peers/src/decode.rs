//! One decoder per implementation, all fed the same [`MaskedFrames`].
//!
//! Each `run` decodes the whole input once and calls `f` with every payload (benchmarks pass
//! [`touch`](crate::input::touch), [`verify`] a checksum). Each pays for exactly one copy of
//! the wire bytes into its read buffer: hibiki's caller refills its `BytesMut`; tungstenite and
//! fastwebsockets read from a [`MockStream`], as they would from a socket.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use hibiki::proto::{Config, Connection, Event, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::input::{CHECKSUM_INIT, MaskedFrames, checksum};

/// An in-memory duplex stream: reads yield the shared input from a rewindable cursor, writes
/// are discarded. The cursor is shared so that it can be rewound while a peer owns the stream.
#[derive(Clone)]
pub struct MockStream {
    data: Rc<[u8]>,
    pos: Rc<Cell<usize>>,
}

impl MockStream {
    /// A stream whose reads yield `data`.
    pub fn new(data: &[u8]) -> Self {
        Self { data: data.into(), pos: Rc::new(Cell::new(0)) }
    }

    /// Starts the reads over from the first byte.
    pub fn rewind(&self) {
        self.pos.set(0);
    }

    /// Whether every byte was read.
    pub fn is_drained(&self) -> bool {
        self.pos.get() == self.data.len()
    }

    /// Consumes and returns what is left, up to `max` bytes.
    fn next_chunk(&self, max: usize) -> &[u8] {
        let pos = self.pos.get();
        let n = max.min(self.data.len() - pos);
        self.pos.set(pos + n);
        &self.data[pos..pos + n]
    }
}

impl Read for MockStream {
    fn read(&mut self, to: &mut [u8]) -> io::Result<usize> {
        if self.is_drained() {
            // Never "EOF": an idle non-blocking socket, as a real server would see.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let chunk = self.next_chunk(to.len());
        to[..chunk.len()].copy_from_slice(chunk);
        Ok(chunk.len())
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for MockStream {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.is_drained() {
            // The timed loops never read past the last frame; parking here would be a bug.
            return Poll::Ready(Err(io::ErrorKind::WouldBlock.into()));
        }
        // `put_slice` writes into the uninitialized tail as is: no zeroing first.
        let chunk = self.next_chunk(buf.remaining());
        buf.put_slice(chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MockStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// hibiki's sans-IO server [`Connection`], fed by refilling a caller-owned `BytesMut`.
pub struct Hibiki {
    conn: Connection,
    buf: BytesMut,
}

impl Hibiki {
    /// A decoder ready for `input`.
    pub fn new(input: &MaskedFrames) -> Self {
        let config = Config::default().max_message_size(64 << 20);
        Self {
            conn: Connection::new(Role::Server, config, None),
            buf: BytesMut::with_capacity(input.wire.len()),
        }
    }

    #[inline]
    /// Decodes all of `input` once, calling `f` with every payload.
    pub fn run(&mut self, input: &MaskedFrames, mut f: impl FnMut(&[u8])) {
        self.buf.clear();
        self.buf.extend_from_slice(&input.wire);
        while let Some(event) = self.conn.poll_event(&mut self.buf) {
            match event {
                Event::Binary(payload) => f(&payload),
                other => panic!("hibiki: unexpected {other:?}"),
            }
        }
    }
}

/// tungstenite's server [`tungstenite::WebSocket`] over a [`MockStream`].
pub struct Tungstenite {
    /// The socket.
    pub ws: tungstenite::WebSocket<MockStream>,
}

impl Tungstenite {
    /// A decoder ready for `input`.
    pub fn new(input: &MaskedFrames) -> Self {
        let config =
            tungstenite::protocol::WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let stream = MockStream::new(&input.wire);
        let ws = tungstenite::WebSocket::from_raw_socket(
            stream,
            tungstenite::protocol::Role::Server,
            Some(config),
        );
        Self { ws }
    }

    #[inline]
    /// Decodes all of `input` once, calling `f` with every payload.
    pub fn run(&mut self, input: &MaskedFrames, mut f: impl FnMut(&[u8])) {
        self.ws.get_mut().rewind();
        for _ in 0..input.frames {
            match self.ws.read() {
                Ok(tungstenite::Message::Binary(payload)) => f(&payload),
                other => panic!("tungstenite: unexpected {other:?}"),
            }
        }
    }
}

/// fastwebsockets' server [`fastwebsockets::WebSocket`] over a [`MockStream`], driven by a
/// current-thread tokio runtime.
pub struct FastWebSockets {
    ws: fastwebsockets::WebSocket<MockStream>,
    /// The socket's stream (a clone sharing the cursor).
    pub stream: MockStream,
    rt: tokio::runtime::Runtime,
}

impl FastWebSockets {
    /// A decoder ready for `input`.
    pub fn new(input: &MaskedFrames) -> Self {
        let stream = MockStream::new(&input.wire);
        let mut ws = fastwebsockets::WebSocket::after_handshake(stream.clone(), fastwebsockets::Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        ws.set_max_message_size(64 << 20);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("current-thread runtime");
        Self { ws, stream, rt }
    }

    #[inline]
    /// Decodes all of `input` once, calling `f` with every payload.
    pub fn run(&mut self, input: &MaskedFrames, mut f: impl FnMut(&[u8])) {
        self.stream.rewind();
        let ws = &mut self.ws;
        self.rt.block_on(async {
            for _ in 0..input.frames {
                let frame = ws.read_frame().await.expect("fastwebsockets: read_frame");
                assert!(
                    frame.opcode == fastwebsockets::OpCode::Binary && frame.fin,
                    "fastwebsockets: unexpected frame"
                );
                f(&frame.payload);
            }
        });
    }
}

/// Decodes the input twice (the second time over reused state, as the timed loop does) and
/// checks every payload byte against the input's checksum.
pub fn verify(name: &str, input: &MaskedFrames, mut run: impl FnMut(&mut dyn FnMut(&[u8]))) {
    for pass in 0..2 {
        let (mut sum, mut frames) = (CHECKSUM_INIT, 0usize);
        run(&mut |payload: &[u8]| {
            assert_eq!(payload.len(), input.payload_len, "{name}: payload length");
            sum = checksum(sum, payload);
            frames += 1;
        });
        assert_eq!(frames, input.frames, "{name} pass {pass}: frame count");
        assert_eq!(sum, input.checksum, "{name} pass {pass}: payload checksum");
    }
}

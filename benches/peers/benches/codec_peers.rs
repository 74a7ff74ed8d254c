//! Decode + unmask throughput of hibiki against tungstenite and fastwebsockets.
//!
//! Every implementation decodes the SAME input: about 1 MiB of payload per iteration, as
//! masked (client-to-server) binary frames of 20 B, 1 KiB, 16 KiB or one 1 MiB frame, with a
//! random key per frame. Each one pays for one copy of the wire bytes into its read buffer
//! (hibiki: the caller's `BytesMut` refill; the others: their own read from an in-memory
//! stream), decodes every frame, unmasks it and [`touch`]es the payload. The `memcpy` row is
//! that copy alone. Throughput counts wire bytes (headers included).
//!
//! Before timing, each decoder's output is checked against the input's checksum.

#![allow(missing_docs)]

use std::cell::Cell;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hibiki::proto::{Config, Connection, Event, Role};
use hibiki_peers::input::{CHECKSUM_INIT, MaskedFrames, checksum, masked_binary_frames, touch};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const SIZES: [usize; 4] = [20, 1024, 16 << 10, 1 << 20];
const PER_ITER: usize = 1 << 20;

/// An in-memory duplex stream: reads yield the shared input from a rewindable cursor, writes
/// are discarded. The cursor is shared so that it can be rewound while a peer owns the stream.
#[derive(Clone)]
struct MockStream {
    data: Rc<[u8]>,
    pos: Rc<Cell<usize>>,
}

impl MockStream {
    fn new(data: &[u8]) -> Self {
        Self { data: data.into(), pos: Rc::new(Cell::new(0)) }
    }

    fn rewind(&self) {
        self.pos.set(0);
    }

    fn is_drained(&self) -> bool {
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

// ---------------------------------------------------------------------------------------------
// One decoder per implementation. `run` decodes the whole input once and calls `f` with each
// payload; the benchmark passes `touch`, the check passes `checksum`.

struct Hibiki {
    conn: Connection,
    buf: BytesMut,
}

impl Hibiki {
    fn new(input: &MaskedFrames) -> Self {
        let config = Config::default().max_message_size(64 << 20);
        Self {
            conn: Connection::new(Role::Server, config, None),
            buf: BytesMut::with_capacity(input.wire.len()),
        }
    }

    #[inline]
    fn run(&mut self, input: &MaskedFrames, mut f: impl FnMut(&[u8])) {
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

struct Tungstenite {
    ws: tungstenite::WebSocket<MockStream>,
}

impl Tungstenite {
    fn new(input: &MaskedFrames) -> Self {
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
    fn run(&mut self, input: &MaskedFrames, mut f: impl FnMut(&[u8])) {
        self.ws.get_mut().rewind();
        for _ in 0..input.frames {
            match self.ws.read() {
                Ok(tungstenite::Message::Binary(payload)) => f(&payload),
                other => panic!("tungstenite: unexpected {other:?}"),
            }
        }
    }
}

struct FastWebSockets {
    ws: fastwebsockets::WebSocket<MockStream>,
    stream: MockStream,
    rt: tokio::runtime::Runtime,
}

impl FastWebSockets {
    fn new(input: &MaskedFrames) -> Self {
        let stream = MockStream::new(&input.wire);
        let mut ws = fastwebsockets::WebSocket::after_handshake(stream.clone(), fastwebsockets::Role::Server);
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        ws.set_max_message_size(64 << 20);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("current-thread runtime");
        Self { ws, stream, rt }
    }

    #[inline]
    fn run(&mut self, input: &MaskedFrames, mut f: impl FnMut(&[u8])) {
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
fn verify(name: &str, input: &MaskedFrames, mut run: impl FnMut(&mut dyn FnMut(&[u8]))) {
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

fn decode_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_unmask");
    for &size in &SIZES {
        let input = masked_binary_frames(size, PER_ITER, size as u64 + 1);
        group.throughput(Throughput::Bytes(input.wire.len() as u64));

        let mut copy = BytesMut::with_capacity(input.wire.len());
        group.bench_with_input(BenchmarkId::new("memcpy", size), &input, |b, input| {
            b.iter(|| {
                copy.clear();
                copy.extend_from_slice(&input.wire);
                black_box(&mut copy);
            });
        });

        let mut hibiki = Hibiki::new(&input);
        verify("hibiki", &input, |f| hibiki.run(&input, f));
        group.bench_with_input(BenchmarkId::new("hibiki", size), &input, |b, input| {
            b.iter(|| {
                let mut acc = 0usize;
                hibiki.run(input, |p| acc += touch(p));
                black_box(acc)
            });
        });

        let mut tung = Tungstenite::new(&input);
        verify("tungstenite", &input, |f| tung.run(&input, f));
        assert!(tung.ws.get_ref().is_drained());
        group.bench_with_input(BenchmarkId::new("tungstenite", size), &input, |b, input| {
            b.iter(|| {
                let mut acc = 0usize;
                tung.run(input, |p| acc += touch(p));
                black_box(acc)
            });
        });

        let mut fws = FastWebSockets::new(&input);
        verify("fastwebsockets", &input, |f| fws.run(&input, f));
        assert!(fws.stream.is_drained());
        group.bench_with_input(BenchmarkId::new("fastwebsockets", size), &input, |b, input| {
            b.iter(|| {
                let mut acc = 0usize;
                fws.run(input, |p| acc += touch(p));
                black_box(acc)
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode_unmask
}
criterion_main!(benches);

//! Micro-benchmarks of the sans-IO codec: decode, encode, masking, UTF-8 and deflate.
//!
//! Run with `cargo bench --bench codec`. Each group reports throughput in bytes per second.
//! Measurement times are kept short (2 s, 0.5 s warm-up, 20 samples) so the whole file runs in
//! well under three minutes on a 2-core machine; pass `--measurement-time` to criterion for
//! steadier numbers.
//!
//! Groups (criterion ids are `group/row/size`):
//!
//! - `decode_unmask`: a server [`Connection`] decoding about 1 MiB of masked binary frames per
//!   iteration (20 B, 1 KiB, 16 KiB frames, or one 1 MiB frame). Each iteration first refills
//!   the input `BytesMut` from a prebuilt buffer; the `memcpy` row times that refill alone so
//!   it can be subtracted. Throughput counts wire bytes (headers included).
//! - `encode`: server `send` of binary messages (about 256 KiB per iteration) into a reused,
//!   cleared `BytesMut`, against `memcpy` of the same payloads. Throughput counts payload bytes.
//! - `unmask`: [`apply_mask`] (on a cache-line-aligned buffer, and 14 bytes off it, where a
//!   payload behind a 14-byte header starts) vs [`apply_mask_scalar`] vs a plain copy of the
//!   same bytes.
//! - `utf8`: [`Utf8Validator::feed`] vs `std::str::from_utf8`, on mostly-ASCII and on
//!   multibyte text.
//! - `deflate`: permessage-deflate compress and inflate of 16 KiB of JSON.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hibiki::proto::deflate::{DeflateConfig, DeflateParams, DeflateState};
use hibiki::proto::mask::{apply_mask, apply_mask_scalar};
use hibiki::proto::utf8::Utf8Validator;
use hibiki::proto::{Config, Connection, Event, MessageKind, Role};

// ---------------------------------------------------------------------------------------------
// Inputs

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Appends a masked, final binary frame (as a client sends it), written by hand rather than
/// with hibiki's encoder so the decoder is not checked against itself.
fn push_masked_frame(wire: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
    wire.push(0x82);
    match payload.len() {
        len @ 0..=125 => wire.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            wire.push(0x80 | 126);
            wire.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            wire.push(0x80 | 127);
            wire.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    wire.extend_from_slice(&key);
    wire.extend(payload.iter().enumerate().map(|(i, &b)| b ^ key[i % 4]));
}

/// `ceil(total / size)` masked binary frames of `size` payload bytes each, random keys.
fn masked_frames(size: usize, total: usize) -> (Vec<u8>, usize) {
    let mut rng = Rng::new(size as u64);
    let count = total.div_ceil(size).max(1);
    let mut wire = Vec::with_capacity(count * (size + 14));
    for _ in 0..count {
        let payload = rng.bytes(size);
        let key = (rng.next_u64() as u32).to_le_bytes();
        push_masked_frame(&mut wire, &payload, key);
    }
    (wire, count)
}

/// Builds text from `|`-separated `pieces` chosen at random, padded with spaces to exactly
/// `len` bytes.
fn text_of(len: usize, seed: u64, pieces: &str) -> Vec<u8> {
    let pieces: Vec<&str> = pieces.split('|').collect();
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(len);
    loop {
        let piece = pieces[rng.below(pieces.len())];
        if out.len() + piece.len() > len {
            break;
        }
        out.push_str(piece);
    }
    while out.len() < len {
        out.push(' ');
    }
    out.into_bytes()
}

/// Chat-like text, about one non-ASCII character in every 60 bytes.
fn mostly_ascii(len: usize) -> Vec<u8> {
    text_of(
        len,
        7,
        "the |quick |brown |fox |jumps |over |lazy |dog |hello |world |message |room |presence \
         |{\"type\":\"chat\",|\"body\":\"|\"}, |12345 |OK. |see you |at |the |meeting |tomorrow, \
         |café |naïve |€5 ",
    )
}

/// Greek, Japanese, Cyrillic, Korean and emoji: 2-, 3- and 4-byte sequences everywhere.
fn multibyte(len: usize) -> Vec<u8> {
    text_of(
        len,
        11,
        "κόσμε |こんにちは|世界|привет |мир |😀|🎉|𝄞|日本語の|テキスト|ελληνικά |🚀 |ünïcödé |한국어 ",
    )
}

/// Realistic, repetitive JSON: an array of user/event objects, padded to exactly `len` bytes.
fn json_records(len: usize) -> Vec<u8> {
    const NAMES: &[&str] =
        &["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"];
    const ROOMS: &[&str] = &["general", "random", "support", "dev", "ops"];
    const KINDS: &[&str] = &["join", "leave", "message", "typing"];
    let mut rng = Rng::new(42);
    let mut out = String::from("[");
    let mut id = 100_000u64;
    let mut ts = 1_717_000_000u64;
    loop {
        id += 1 + rng.below(3) as u64;
        ts += rng.below(90) as u64;
        let name = NAMES[rng.below(NAMES.len())];
        let record = format!(
            "{{\"id\":{id},\"user\":{{\"id\":{},\"name\":\"{name}\",\"email\":\"{name}@example.com\"}},\
             \"room\":\"{}\",\"kind\":\"{}\",\"ts\":\"2024-05-29T{:02}:{:02}:{:02}Z\",\"seq\":{},\"online\":{}}}",
            1000 + rng.below(50),
            ROOMS[rng.below(ROOMS.len())],
            KINDS[rng.below(KINDS.len())],
            (ts / 3600) % 24,
            (ts / 60) % 60,
            ts % 60,
            rng.below(10_000),
            rng.below(2) == 0,
        );
        // Room for the separator and the closing bracket.
        if out.len() + record.len() + 2 > len {
            break;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&record);
    }
    out.push(']');
    while out.len() < len {
        out.push('\n');
    }
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Groups

fn server() -> Connection {
    Connection::new(Role::Server, Config::default(), None)
}

fn decode_unmask(c: &mut Criterion) {
    const PER_ITER: usize = 1 << 20;
    let mut group = c.benchmark_group("decode_unmask");
    for size in [20usize, 1024, 16 << 10, 1 << 20] {
        let (wire, frames) = masked_frames(size, PER_ITER);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut buf = BytesMut::with_capacity(wire.len());

        group.bench_with_input(BenchmarkId::new("memcpy", size), &wire, |b, wire| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(wire);
                black_box(&mut buf);
            });
        });

        let mut conn = server();
        let decode = |conn: &mut Connection, buf: &mut BytesMut| {
            buf.clear();
            buf.extend_from_slice(&wire);
            let (mut n, mut acc) = (0usize, 0usize);
            while let Some(event) = conn.poll_event(buf) {
                match event {
                    Event::Binary(payload) => {
                        acc += payload.len() + usize::from(payload[payload.len() - 1]);
                        n += 1;
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
            (n, acc)
        };
        // Decode once outside the timer: every frame must come out.
        assert_eq!(decode(&mut conn, &mut buf).0, frames);
        group.bench_function(BenchmarkId::new("hibiki", size), |b| {
            b.iter(|| black_box(decode(&mut conn, &mut buf)));
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    const PER_ITER: usize = 256 << 10;
    let mut group = c.benchmark_group("encode");
    for size in [20usize, 1024, 16 << 10] {
        let payload = Rng::new(size as u64).bytes(size);
        let count = PER_ITER.div_ceil(size);
        group.throughput(Throughput::Bytes((count * size) as u64));
        let mut out = BytesMut::with_capacity(count * (size + 10));

        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    out.extend_from_slice(black_box(&payload));
                }
                black_box(&mut out);
            });
        });

        let mut conn = server();
        group.bench_function(BenchmarkId::new("hibiki", size), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    conn.send(MessageKind::Binary, black_box(&payload), &mut out).expect("send");
                }
                black_box(&mut out);
            });
        });
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("unmask");
    for size in [16usize << 10, 1 << 20] {
        // One arena holds both buffers so their placement is pinned: `aligned` starts on a
        // cache line; `off14` starts 14 bytes in, where a payload lands after a 14-byte header
        // (64-bit length + key); the copy source sits half a page away modulo 4 KiB, so the
        // `memcpy` row is not slowed by 4K aliasing between loads and stores (it otherwise
        // varies 2-4x with where the allocator happens to put the two buffers).
        let mut arena = vec![0u8; 2 * size + 8192];
        let base = arena.as_ptr().align_offset(64);
        let (store, rest) = arena.split_at_mut(base + size + 128);
        let gap = (2048 + 4096 - (size + 128) % 4096) % 4096;
        let src = &mut rest[gap..gap + size];
        src.copy_from_slice(&Rng::new(3).bytes(size));
        let src = &*src;
        let aligned = base..base + size;
        let off14 = base + 14..base + 14 + size;
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_function(BenchmarkId::new("apply_mask", size), |b| {
            b.iter(|| apply_mask(black_box(&mut store[aligned.clone()]), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("apply_mask_off14", size), |b| {
            b.iter(|| apply_mask(black_box(&mut store[off14.clone()]), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("apply_mask_scalar", size), |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut store[aligned.clone()]), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| black_box(&mut store[aligned.clone()]).copy_from_slice(black_box(src)));
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    const SIZE: usize = 16 << 10;
    let mut group = c.benchmark_group("utf8");
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (name, text) in [("ascii", mostly_ascii(SIZE)), ("multibyte", multibyte(SIZE))] {
        assert_eq!(text.len(), SIZE);
        assert!(std::str::from_utf8(&text).is_ok());

        group.bench_function(BenchmarkId::new(format!("validator_{name}"), SIZE), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&text)).expect("valid");
                v.finish().expect("complete");
            });
        });
        group.bench_function(BenchmarkId::new(format!("std_{name}"), SIZE), |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).is_ok());
        });
    }
    group.finish();
}

fn deflate(c: &mut Criterion) {
    const SIZE: usize = 16 << 10;
    const MAX_MESSAGE: usize = 16 << 20;
    let json = json_records(SIZE);
    assert_eq!(json.len(), SIZE);
    let config = DeflateConfig::default();
    // What a server agrees to with its default configuration and a plain client offer.
    let params = DeflateParams {
        server_no_context_takeover: config.server_no_context_takeover,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };

    // A client's compressed message for the server to inflate, checked to round-trip.
    let mut client = DeflateState::new(Role::Client, params, &config);
    let mut compressed = BytesMut::new();
    client.compress(&json, &mut compressed);
    if compressed.is_empty() {
        eprintln!("deflate: DeflateState::compress produced nothing (not implemented yet?); skipped");
        return;
    }
    let mut server = DeflateState::new(Role::Server, params, &config);
    let mut inflated = BytesMut::new();
    server.decompress(&compressed, true, &mut inflated, MAX_MESSAGE).expect("inflate");
    assert_eq!(&inflated[..], &json[..], "deflate round trip");
    eprintln!("deflate: {} B of JSON -> {} B (level {})", json.len(), compressed.len(), config.level);

    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(SIZE as u64));
    let mut out = BytesMut::with_capacity(2 * SIZE);
    group.bench_function(BenchmarkId::new("compress", SIZE), |b| {
        b.iter(|| {
            out.clear();
            server.compress(black_box(&json), &mut out);
            black_box(&mut out);
        });
    });
    group.bench_function(BenchmarkId::new("inflate", SIZE), |b| {
        b.iter(|| {
            out.clear();
            server.decompress(black_box(&compressed), true, &mut out, MAX_MESSAGE).expect("inflate");
            black_box(&mut out);
        });
    });
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
    targets = decode_unmask, encode, unmask, utf8, deflate
}
criterion_main!(benches);

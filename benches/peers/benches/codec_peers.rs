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

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hibiki_peers::decode::{FastWebSockets, Hibiki, Tungstenite, verify};
use hibiki_peers::input::{masked_binary_frames, touch};

const SIZES: [usize; 4] = [20, 1024, 16 << 10, 1 << 20];
const PER_ITER: usize = 1 << 20;

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

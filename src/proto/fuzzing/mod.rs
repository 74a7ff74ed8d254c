//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run <name>`).
//!
//! Each function takes the fuzzer's bytes, drives one part of the protocol core with them and
//! checks what the core promises. No input may make one panic, except by breaking an
//! invariant: then the panic is the finding. They are library code, not part of `fuzz/`, so
//! that `cargo test` runs them too (over the checked-in seed corpus and a few thousand
//! generated inputs) and the fuzz targets stay one-liners. The module is compiled only for
//! the crate's own tests and under `--cfg fuzzing`, which `cargo fuzz` sets (as quinn-proto
//! does): nothing of it is in a normal build.
//!
//! Where a target needs settings (a role, limits, how to cut the input), it reads them from
//! the first bytes of the input; the rest is the data. `fuzz/README.md` lists the layouts.

mod connection;
mod deflate_inflate;
mod frame_header;
mod handshake_request;
mod handshake_response;
mod heads;
mod utf8_incremental;

use crate::proto::Role;

pub use connection::connection;
pub use deflate_inflate::deflate_inflate;
pub use frame_header::frame_header;
pub use handshake_request::handshake_request;
pub use handshake_response::handshake_response;
pub use utf8_incremental::utf8_incremental;

/// The other end's role.
fn opposite(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target: its name in `fuzz/` and its entry point.
    type Target = (&'static str, fn(&[u8]));

    const TARGETS: [Target; 6] = [
        ("handshake_request", handshake_request),
        ("handshake_response", handshake_response),
        ("connection", connection),
        ("deflate_inflate", deflate_inflate),
        ("utf8_incremental", utf8_incremental),
        ("frame_header", frame_header),
    ];

    /// The seed corpus in `fuzz/corpus/<target>/seed-*`, when present (it is not packaged).
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut seeds: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")))
            .collect();
        seeds.sort();
        seeds.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    #[test]
    fn seed_corpus_passes() {
        for (name, target) in TARGETS {
            for seed in seeds(name) {
                target(&seed);
            }
        }
    }

    /// A few thousand inputs per target: seeds with bytes flipped, cut and spliced, and noise,
    /// from a fixed xorshift stream. A cheap stand-in for the fuzzer in `cargo test`.
    #[test]
    fn mutated_inputs_pass() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (name, target) in TARGETS {
            let seeds = seeds(name);
            for _ in 0..1500 {
                let mut input = match seeds.len() {
                    0 => Vec::new(),
                    n => seeds[next() as usize % n].clone(),
                };
                for _ in 0..next() % 4 {
                    match next() % 4 {
                        0 if !input.is_empty() => {
                            let i = next() as usize % input.len();
                            input[i] ^= 1 << (next() % 8);
                        }
                        1 if !input.is_empty() => {
                            let i = next() as usize % input.len();
                            input[i] = next() as u8;
                        }
                        2 => input.truncate(next() as usize % (input.len() + 1)),
                        _ => input.extend((0..next() % 16).map(|_| next() as u8)),
                    }
                }
                target(&input);
            }
        }
    }

    #[test]
    fn tiny_inputs_pass() {
        for (_, target) in TARGETS {
            target(&[]);
            for b in 0..=255u8 {
                target(&[b]);
                target(&[b, b]);
                target(&[b, 0x80, 0, 0]);
            }
        }
    }
}

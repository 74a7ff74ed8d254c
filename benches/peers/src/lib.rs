//! Comparison harness for hibiki against other Rust WebSocket implementations.
//!
//! This crate sits outside the hibiki workspace (it has its own `[workspace]`, lock file and
//! `target/`), so the peers' dependency trees never leak into hibiki's build.
//!
//! - [`input`]: deterministic wire-format inputs shared by every benchmark, so each
//!   implementation decodes byte-for-byte the same frames.
//! - [`decode`]: one decoder per implementation over an in-memory stream, and a checker.
//! - `benches/codec_peers.rs`: decode throughput of hibiki, tungstenite and fastwebsockets.
//! - `src/bin/`: one echo and broadcast server per peer, for end-to-end load tests
//!   (scripts/compare-peers.sh), plain or `wss://` (given a certificate and key).
//! - [`tls`]: the `tokio-rustls` acceptor of the `wss://` variants.

pub mod decode;
pub mod input;
pub mod tls;

//! Comparison harness for hibiki against other Rust WebSocket implementations.
//!
//! This crate sits outside the hibiki workspace (it has its own `[workspace]`, lock file and
//! `target/`), so the peers' dependency trees never leak into hibiki's build.
//!
//! - [`input`]: deterministic wire-format inputs shared by every benchmark, so each
//!   implementation decodes byte-for-byte the same frames.
//! - [`decode`]: one decoder per implementation over an in-memory stream, and a checker.
//! - `benches/codec_peers.rs`: decode throughput of hibiki, tungstenite and fastwebsockets.
//! - `src/bin/` (to come): one echo server per peer, for end-to-end load tests.

pub mod decode;
pub mod input;

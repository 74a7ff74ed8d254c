//! The application of `hibiki serve`: what each path does.
//!
//! - `/ws`: the app protocol (rooms, acks, presence, history, batching) — see `docs/protocol.md`.
//! - `/sse?room=...`: a room as Server-Sent Events, resumable with `Last-Event-ID`.
//! - `POST /api/publish`: a backend publishes to a room (`Authorization: Bearer <api key>`).
//! - `/metrics`: Prometheus text; `/healthz`: 200.
//! - `/`, `/hibiki.js`, `/app.js`, `/app.css`: the page (a chat and a live dashboard) and the
//!   JavaScript client, embedded ([`static_files`]); the dashboard is fed by the stats room
//!   ([`stats_room`]).
//! - `/echo`: every message comes back with its type (the conformance and load target).
//! - `/broadcast`: every message goes to every connection on `/broadcast`, encoded once.
//! - anything else: 404.

pub mod auth;
pub mod metrics;
mod serve;
pub mod static_files;
pub mod stats_room;

pub use serve::{AppCommand, Route, ServeApp, ServeConfig, ServeLocal, SseRoute};
pub use stats_room::STATS_ROOM;

//! The application of `hibiki serve`: what each path does.
//!
//! - `/echo`: every message comes back with its type (the conformance and load target).
//! - `/broadcast`: every message goes to every connection on `/broadcast`, on every worker,
//!   encoded once.
//! - `/healthz`: 200.
//! - anything else: 404.

mod serve;

pub use serve::{Route, ServeApp, ServeLocal};

//! hibiki
pub mod proto;
pub mod reactor;
pub mod app;

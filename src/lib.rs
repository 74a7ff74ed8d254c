//! hibiki
pub mod proto;

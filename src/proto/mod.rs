//! The sans-IO protocol core: bytes in, events and bytes out.
//!
//! Nothing in this module touches a socket, a thread or a clock. The reactor (and any embedder
//! driving another transport) reads bytes, lends them to [`Connection::poll_event`], and writes
//! whatever the core appended to its output buffer.
//!
//! - [`handshake`]: the HTTP/1.1 upgrade, both sides (RFC 6455 §4).
//! - [`frame`]: frame headers, encoding (RFC 6455 §5.2).
//! - [`mask`]: in-place XOR masking (RFC 6455 §5.3).
//! - [`utf8`]: incremental UTF-8 validation for fragmented text.
//! - [`deflate`]: permessage-deflate (RFC 7692).
//! - [`close`]: close codes (RFC 6455 §7.4).
//! - [`conn`]: the connection state machine for both roles.

pub mod close;
pub mod conn;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

pub use close::CloseCode;
pub use conn::{Config, Connection, Event, MessageKind};
pub use error::{CapacityError, Error, ProtocolError};
pub use frame::{FrameHeader, OpCode};

/// Which end of the connection this endpoint is. It decides masking (clients mask, servers
/// do not) and which permessage-deflate parameters apply to which direction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts connections; sends unmasked frames and requires masked ones.
    Server,
    /// Opens connections; sends masked frames and requires unmasked ones.
    Client,
}

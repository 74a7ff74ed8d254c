//! Errors of the protocol core, sorted by who is at fault, each mapped to a close code.

use std::fmt;

use super::close::CloseCode;

/// The peer broke RFC 6455 or RFC 7692. Answered with close 1002 (or 1007 for bad UTF-8).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode the RFC reserves (3-7, 11-15).
    ReservedOpcode(u8),
    /// RSV1, RSV2 or RSV3 set without an extension that defines it.
    ReservedBits,
    /// A client frame without a mask (RFC 6455 §5.1: the server MUST close).
    UnmaskedFrame,
    /// A server frame with a mask (RFC 6455 §5.1: the client MUST close).
    MaskedFrame,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A 64-bit payload length with the most significant bit set.
    LengthHighBit,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// A Close frame with a one-byte payload.
    CloseFrameTooShort,
    /// A Close frame whose code may not be sent on the wire.
    InvalidCloseCode(u16),
    /// Text, or a close reason, that is not valid UTF-8 (answered with 1007).
    InvalidUtf8,
    /// A compressed message that does not inflate.
    BadCompressedData,
    /// RSV1 on a continuation frame (RFC 7692 §6.1: only the first frame carries it).
    CompressedContinuation,
    /// A data frame after the peer's Close frame.
    DataAfterClose,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::ReservedBits => f.write_str("reserved bits set without a negotiated extension"),
            Self::UnmaskedFrame => f.write_str("unmasked frame from a client"),
            Self::MaskedFrame => f.write_str("masked frame from a server"),
            Self::ControlFrameTooLong => f.write_str("control frame payload over 125 bytes"),
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
            Self::LengthHighBit => f.write_str("64-bit payload length with the high bit set"),
            Self::UnexpectedContinuation => f.write_str("continuation frame with no message"),
            Self::ExpectedContinuation => f.write_str("new message inside a fragmented message"),
            Self::CloseFrameTooShort => f.write_str("close frame with a one-byte payload"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::BadCompressedData => f.write_str("compressed message does not inflate"),
            Self::CompressedContinuation => f.write_str("RSV1 set on a continuation frame"),
            Self::DataAfterClose => f.write_str("data frame after close"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The peer sent more than the configured limits allow. Answered with close 1009.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityError {
    /// One frame's declared payload is over `max_frame_size`.
    FrameTooLarge {
        /// The declared payload length.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A message (after inflation, if compressed) is over `max_message_size`.
    MessageTooLarge {
        /// The size reached when the limit was passed (a lower bound of the real size).
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A message arrived in more fragments than `max_fragments`.
    TooManyFragments {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLarge { size, max } => write!(f, "frame of {size} bytes over the limit of {max}"),
            Self::MessageTooLarge { size, max } => {
                write!(f, "message of at least {size} bytes over the limit of {max}")
            }
            Self::TooManyFragments { max } => write!(f, "message in more than {max} fragments"),
        }
    }
}

impl std::error::Error for CapacityError {}

/// Why a connection failed: the peer's fault, sorted by the close code that answers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the protocol.
    Protocol(ProtocolError),
    /// The peer passed a size limit.
    Capacity(CapacityError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Capacity(e) => write!(f, "capacity error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<CapacityError> for Error {
    fn from(e: CapacityError) -> Self {
        Self::Capacity(e)
    }
}

impl From<&Error> for CloseCode {
    fn from(e: &Error) -> Self {
        match e {
            Error::Protocol(ProtocolError::InvalidUtf8) => Self::INVALID_PAYLOAD,
            Error::Protocol(_) => Self::PROTOCOL_ERROR,
            Error::Capacity(_) => Self::MESSAGE_TOO_BIG,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_close_codes() {
        let utf8 = Error::Protocol(ProtocolError::InvalidUtf8);
        assert_eq!(CloseCode::from(&utf8), CloseCode::INVALID_PAYLOAD);
        let proto = Error::Protocol(ProtocolError::UnmaskedFrame);
        assert_eq!(CloseCode::from(&proto), CloseCode::PROTOCOL_ERROR);
        let cap = Error::Capacity(CapacityError::TooManyFragments { max: 4 });
        assert_eq!(CloseCode::from(&cap), CloseCode::MESSAGE_TOO_BIG);
    }
}

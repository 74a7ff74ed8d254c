//! Close codes (RFC 6455 §7.4).

use std::fmt;

/// A close status code, as carried in the first two bytes of a Close frame.
///
/// The code space is open (applications use 3000-4999), so this is a newtype with a
/// constant for each code the RFC registers, not an enum.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

macro_rules! close_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $text:expr;)*) => {
        impl CloseCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The RFC's name for a registered code, if this is one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

close_codes! {
    /// 1000: the purpose for which the connection was established has been fulfilled.
    NORMAL = 1000, "normal closure";
    /// 1001: the endpoint is going away (server shutting down, page navigated away).
    GOING_AWAY = 1001, "going away";
    /// 1002: the peer broke the protocol.
    PROTOCOL_ERROR = 1002, "protocol error";
    /// 1003: a data type the endpoint cannot accept.
    UNSUPPORTED_DATA = 1003, "unsupported data";
    /// 1005: reserved, never sent: the close frame carried no code.
    NO_STATUS = 1005, "no status received";
    /// 1006: reserved, never sent: the connection dropped without a close frame.
    ABNORMAL = 1006, "abnormal closure";
    /// 1007: data inconsistent with its type (invalid UTF-8 in a text message).
    INVALID_PAYLOAD = 1007, "invalid frame payload data";
    /// 1008: a message that violates the endpoint's policy (also: slow consumer).
    POLICY_VIOLATION = 1008, "policy violation";
    /// 1009: a message too big to process.
    MESSAGE_TOO_BIG = 1009, "message too big";
    /// 1010: the client expected an extension the server did not negotiate.
    MANDATORY_EXTENSION = 1010, "mandatory extension";
    /// 1011: the server met an unexpected condition.
    INTERNAL_ERROR = 1011, "internal error";
    /// 1012: the service is restarting.
    SERVICE_RESTART = 1012, "service restart";
    /// 1013: try again later.
    TRY_AGAIN_LATER = 1013, "try again later";
    /// 1014: a gateway got a bad response upstream.
    BAD_GATEWAY = 1014, "bad gateway";
    /// 1015: reserved, never sent: the TLS handshake failed.
    TLS_HANDSHAKE = 1015, "TLS handshake failure";
}

impl CloseCode {
    /// Whether this code may appear in a Close frame on the wire.
    ///
    /// RFC 6455 §7.4: 1000-1003 and 1007-1011 are defined; 1012-1014 are registered with IANA;
    /// 3000-3999 belong to libraries and frameworks, 4000-4999 to applications. 1004, 1005,
    /// 1006 and 1015 "MUST NOT be set as a status code in a Close control frame".
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "CloseCode({} {name})", self.0),
            None => write!(f, "CloseCode({})", self.0),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_follow_the_rfc() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_sendable(), expected, "code {code}");
        }
        assert!(!CloseCode::NO_STATUS.is_sendable());
        assert!(!CloseCode::ABNORMAL.is_sendable());
        assert!(!CloseCode(1004).is_sendable());
        assert!(!CloseCode::TLS_HANDSHAKE.is_sendable());
    }

    #[test]
    fn display_names_registered_codes() {
        assert_eq!(CloseCode::MESSAGE_TOO_BIG.to_string(), "1009 (message too big)");
        assert_eq!(CloseCode(4000).to_string(), "4000");
    }
}

//! The opening handshake (RFC 6455 §4), both sides, sans-IO.
//!
//! > "The opening handshake is intended to be compatible with HTTP-based server-side software
//! > and intermediaries, so that a single port can be used by both HTTP clients talking to that
//! > server and WebSocket clients talking to that server." (RFC 6455 §1.3)
//!
//! This module is a small, hand-written HTTP/1.1 head parser in the style of `httparse`: the
//! caller lends a byte buffer and an array of [`Header`]s, and the parser borrows names and
//! values out of the buffer. Nothing here reads a socket, spawns a thread or looks at a clock,
//! and nothing allocates in proportion to what the peer sent: the only allocation is the
//! caller's output `Vec<u8>` when writing a request or a response.
//!
//! # Incremental and bounded
//!
//! Parsing is restartable: call the parser again with the same (grown) buffer every time more
//! bytes arrive. An incomplete head is [`Status::Partial`], not an error, and consumes nothing.
//! A complete head reports its length (`len`), so bytes that follow it in the same read (the
//! first WebSocket frame) are not lost. A head longer than the size limit, or with more header
//! lines than the caller's array holds, is [`HandshakeError::TooLarge`] (431) — even when the
//! blank line never comes. Bytes that can never start a valid head (control characters, a bare
//! LF, a malformed line) are rejected as soon as they are seen.
//!
//! # Syntax decisions
//!
//! - Lines end with CRLF only. RFC 9112 §2.2 lets a recipient accept a bare LF ("a recipient MAY
//!   recognize a single LF as a line terminator"); we do not: a bare LF is malformed (400).
//! - Obsolete line folding (a header line starting with SP or HTAB) is malformed (400), as RFC
//!   9112 §5.2 allows: "A server that receives an obs-fold in a request message ... MUST either
//!   reject the message by sending a 400 (Bad Request) ...".
//! - Whitespace between a field name and the colon is malformed (400): "A server MUST reject,
//!   with a response status code of 400 (Bad Request), any received request message that
//!   contains whitespace between a header field name and colon" (RFC 9112 §5.1).
//! - Empty lines before the request line are not skipped.
//! - The parser accepts `HTTP/1.0` and `HTTP/1.1` (any `HTTP/1.x`), so an embedder can still
//!   answer a plain HTTP request; the WebSocket checks ([`Request::upgrade`]) then demand
//!   "HTTP/1.1 or higher" (RFC 6455 §4.2.1) and answer an older version with 400
//!   ([`HandshakeError::OldHttpVersion`]) rather than 505: RFC 6455 §4.2.1 says a request that
//!   does not match "MUST stop processing the client's handshake and return an HTTP response
//!   with an appropriate error code (such as 400 Bad Request)". A major version other than 1 is
//!   malformed.
//!
//! # Server flow
//!
//! ```
//! use hibiki::proto::handshake::{parse_request, write_accept, Status, EMPTY_HEADER, MAX_HEADERS,
//!     DEFAULT_MAX_REQUEST_SIZE};
//!
//! let buf = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n";
//! let mut headers = [EMPTY_HEADER; MAX_HEADERS];
//! let mut out = Vec::new();
//! match parse_request(buf, &mut headers, DEFAULT_MAX_REQUEST_SIZE) {
//!     Ok(Status::Partial) => { /* read more */ }
//!     Ok(Status::Complete(req)) => match req.upgrade() {
//!         Ok(up) => write_accept(up.key(), None, None, &mut out),
//!         Err(e) => e.write_response(&mut out),
//!     },
//!     Err(e) => e.write_response(&mut out),
//! }
//! assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! ```

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};

pub mod client;
mod parse;
pub mod request;
pub mod response;

pub use client::{Accepted, ClientRequest, Response, generate_key, parse_response};
pub use parse::{is_field_value, is_token};
pub use request::{Request, Upgrade, parse_request};
pub use response::{reason_phrase, write_accept, write_error};

/// The GUID appended to the client's key before hashing: "a Globally Unique Identifier (GUID,
/// \[RFC4122\]) in string form" (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this crate speaks (RFC 6455 §4.1: "The value of this header field
/// MUST be 13").
pub const VERSION: &str = "13";

/// How many header lines a typical caller's array holds. RFC 6455 requests carry about ten;
/// 64 leaves room for cookies, proxies' `Forwarded`/`X-Forwarded-*` and tracing headers.
pub const MAX_HEADERS: usize = 64;

/// Default limit on the size of a request head (request line, header lines, blank line): 8 KiB,
/// the common default of HTTP servers. Longer heads are answered with 431.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 8192;

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`, as 28 ASCII bytes.
///
/// RFC 6455 §4.2.2: "concatenate this with the Globally Unique Identifier (GUID, \[RFC4122\])
/// "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" in string form ... A SHA-1 hash (160 bits) \[FIPS.180-3\],
/// base64-encoded (see Section 4 of \[RFC4648\]), of this concatenation is then returned in the
/// server's handshake." The key is hashed as given (already trimmed of surrounding whitespace by
/// the parser), not decoded.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new().chain_update(key).chain_update(GUID.as_bytes()).finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 base64 characters (with one `=` of padding).
    let written = STANDARD.encode_slice(digest, &mut out).unwrap_or(0);
    debug_assert_eq!(written, 28);
    out
}

/// The outcome of parsing a buffer that may hold only part of a message head.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The head is complete; `T` borrows from the buffer and reports how many bytes it used.
    Complete(T),
    /// More bytes are needed. Nothing was consumed: call again with the same buffer extended.
    Partial,
}

impl<T> Status<T> {
    /// Whether the head was complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete(_))
    }

    /// Whether more bytes are needed.
    pub fn is_partial(&self) -> bool {
        matches!(self, Self::Partial)
    }

    /// The parsed value, if complete.
    pub fn complete(self) -> Option<T> {
        match self {
            Self::Complete(value) => Some(value),
            Self::Partial => None,
        }
    }
}

/// One header line, borrowed from the parsed buffer.
///
/// The name is a token (RFC 9110 §5.1), kept in the case the peer sent it; compare it
/// case-insensitively. The value has leading and trailing whitespace removed ("OWS", RFC 9112
/// §5.1) and may hold any visible ASCII, SP, HTAB or obs-text (bytes 0x80-0xFF).
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// The field name, as sent.
    pub name: &'a str,
    /// The field value, whitespace-trimmed.
    pub value: &'a [u8],
}

/// A blank header to fill a caller's array with: `[EMPTY_HEADER; MAX_HEADERS]`.
pub const EMPTY_HEADER: Header<'static> = Header { name: "", value: b"" };

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("name", &self.name)
            .field("value", &format_args!("\"{}\"", self.value.escape_ascii()))
            .finish()
    }
}

/// Why an opening handshake failed.
///
/// The server-side variants map to the HTTP status the server answers with ([`Self::status`],
/// [`Self::write_response`]); the client-side ones describe a server response the client
/// must reject: "the client MUST _Fail the WebSocket Connection_" (RFC 6455 §4.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    // ---- 400: malformed HTTP ----
    /// The request head is not valid HTTP/1.1 syntax (request line, header line, line ending,
    /// obs-fold, bytes not allowed in a head, a request target that is not a URI path). 400.
    MalformedRequest,
    // ---- 405 ----
    /// The method is not `GET`: "The method of the request MUST be GET" (RFC 6455 §4.1).
    /// Answered with 405 and `Allow: GET`.
    MethodNotAllowed,
    // ---- 400: not a valid WebSocket upgrade ----
    /// The request is HTTP/1.0: RFC 6455 §4.2.1 requires "An HTTP/1.1 or higher GET request".
    /// 400.
    OldHttpVersion,
    /// `Host` is missing, repeated or empty: "The request MUST contain a |Host| header field"
    /// (RFC 6455 §4.1); "A server MUST respond with a 400 (Bad Request) status code to any
    /// HTTP/1.1 request message that lacks a Host header field and to any request message that
    /// contains more than one Host header field line" (RFC 9112 §3.2). 400.
    BadHost,
    /// The `Upgrade` header is missing or does not name `websocket`. 400 on the server; the
    /// client reports it for a 101 response without `Upgrade: websocket`.
    NotUpgrade,
    /// The `Connection` header is missing or does not hold the `Upgrade` token. 400 on the
    /// server; the client reports it for a 101 response without `Connection: Upgrade`.
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Key` is missing, repeated, or not the base64 encoding of 16 bytes. 400.
    BadKey,
    /// A WebSocket header the server reads has an unusable value: a `Sec-WebSocket-Protocol`
    /// element that is not a token, or an `Origin` that is not ASCII text. 400.
    InvalidHeader,
    // ---- 426 ----
    /// `Sec-WebSocket-Version` is missing, repeated or not `13`. Answered with 426 Upgrade
    /// Required and `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2: "If this version does not
    /// match a version understood by the server, the server MUST abort the WebSocket handshake
    /// ... and instead send an appropriate HTTP error code (such as 426 Upgrade Required) and a
    /// |Sec-WebSocket-Version| header field indicating the version(s) the server is capable of
    /// understanding").
    UnsupportedVersion,
    // ---- 431 ----
    /// The request head is longer than the size limit, or has more header lines than the
    /// caller's array holds. 431 Request Header Fields Too Large.
    TooLarge,
    // ---- client side (a gateway would answer 502) ----
    /// The response head is not valid HTTP/1.1 syntax (status line, header line, line ending).
    MalformedResponse,
    /// The server answered with a status other than 101: "If the status code received from the
    /// server is not 101, the client handles the response per HTTP \[RFC2616\] procedures"
    /// (RFC 6455 §4.1). Carries the status code.
    UnexpectedStatus(u16),
    /// `Sec-WebSocket-Accept` is missing, repeated or not the hash of our key.
    BadAccept,
    /// The server selected a subprotocol we did not offer, or more than one.
    UnexpectedProtocol,
    /// The server selected an extension we did not offer (reported by the caller after
    /// checking [`Accepted::extensions`]).
    UnexpectedExtension,
    /// The response head is longer than the size limit, or has more header lines than the
    /// caller's array holds.
    ResponseTooLarge,
}

impl HandshakeError {
    /// The HTTP status a server answers this error with: 400, 405, 426 or 431.
    ///
    /// Client-side errors (a bad server response) have no request to answer; they report 502
    /// Bad Gateway, what a gateway relaying the handshake would answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedRequest
            | Self::OldHttpVersion
            | Self::BadHost
            | Self::NotUpgrade
            | Self::ConnectionNotUpgrade
            | Self::BadKey
            | Self::InvalidHeader => 400,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedVersion => 426,
            Self::TooLarge => 431,
            Self::MalformedResponse
            | Self::UnexpectedStatus(_)
            | Self::BadAccept
            | Self::UnexpectedProtocol
            | Self::UnexpectedExtension
            | Self::ResponseTooLarge => 502,
        }
    }

    /// Whether this error was found in a server's response (client side).
    pub fn is_client_side(&self) -> bool {
        self.status() == 502
    }

    /// A short human-readable description, also used as the body of error responses.
    pub(crate) fn description(&self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed HTTP request",
            Self::MethodNotAllowed => "WebSocket handshake requires GET",
            Self::OldHttpVersion => "WebSocket handshake requires HTTP/1.1",
            Self::BadHost => "missing or invalid Host header",
            Self::NotUpgrade => "missing Upgrade: websocket",
            Self::ConnectionNotUpgrade => "missing Connection: Upgrade",
            Self::BadKey => "missing or invalid Sec-WebSocket-Key",
            Self::InvalidHeader => "invalid Origin or Sec-WebSocket-Protocol header",
            Self::UnsupportedVersion => "unsupported Sec-WebSocket-Version (supported: 13)",
            Self::TooLarge => "request head too large",
            Self::MalformedResponse => "malformed HTTP response",
            Self::UnexpectedStatus(_) => "server did not switch protocols",
            Self::BadAccept => "missing or wrong Sec-WebSocket-Accept",
            Self::UnexpectedProtocol => "server selected a subprotocol that was not offered",
            Self::UnexpectedExtension => "server selected an extension that was not offered",
            Self::ResponseTooLarge => "response head too large",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedStatus(code) => write!(f, "{} (status {code})", self.description()),
            _ => f.write_str(self.description()),
        }
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(&accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn status_codes() {
        assert_eq!(HandshakeError::MalformedRequest.status(), 400);
        assert_eq!(HandshakeError::BadKey.status(), 400);
        assert_eq!(HandshakeError::MethodNotAllowed.status(), 405);
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::TooLarge.status(), 431);
        assert!(HandshakeError::UnexpectedStatus(404).is_client_side());
        assert!(!HandshakeError::TooLarge.is_client_side());
        assert_eq!(
            HandshakeError::UnexpectedStatus(404).to_string(),
            "server did not switch protocols (status 404)"
        );
    }

    #[test]
    fn status_helpers_and_debug() {
        assert!(Status::Complete(1).is_complete());
        assert!(Status::<u8>::Partial.is_partial());
        assert_eq!(Status::Complete(3).complete(), Some(3));
        let h = Header { name: "X", value: b"a\"\xff" };
        assert_eq!(format!("{h:?}"), r#"Header { name: "X", value: "a\"\xff" }"#);
    }
}

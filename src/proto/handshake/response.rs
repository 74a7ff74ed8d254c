//! Server side: writing the 101 answer (RFC 6455 §4.2.2) or an HTTP error response.

use std::io::Write as _;

use super::{HandshakeError, VERSION, accept_key, parse};

/// The standard reason phrase of an HTTP status code (RFC 9110 §15, RFC 6585), or `""` for a
/// code without one (the grammar allows an empty reason phrase).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends one `name: value` header line.
///
/// # Panics
///
/// If `name` is not a token or `value` holds a byte not allowed in a field value (CR, LF, NUL
/// and other controls): writing it would let the caller's data inject header lines.
pub(super) fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    assert!(parse::is_token(name.as_bytes()), "invalid header name {name:?}");
    assert!(value.iter().all(|&b| parse::is_field_byte(b)), "invalid value for header {name}");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the server's `101 Switching Protocols` answer to a request with `key`
/// (RFC 6455 §4.2.2, item 5):
///
/// ```text
/// HTTP/1.1 101 Switching Protocols
/// Upgrade: websocket
/// Connection: Upgrade
/// Sec-WebSocket-Accept: <accept_key(key)>
/// [Sec-WebSocket-Protocol: <protocol>]
/// [Sec-WebSocket-Extensions: <extensions>]
/// ```
///
/// `protocol` is the one subprotocol the server selected from the client's offer ("the value
/// chosen MUST be derived from the client's handshake, specifically by selecting one of the
/// values from the |Sec-WebSocket-Protocol| field that the server is willing to use"), and
/// `extensions` the negotiated extension list, already serialized.
///
/// # Panics
///
/// If `protocol` or `extensions` hold CR, LF or another control character.
pub fn write_accept(key: &[u8], protocol: Option<&str>, extensions: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    write_header(out, "Upgrade", b"websocket");
    write_header(out, "Connection", b"Upgrade");
    write_header(out, "Sec-WebSocket-Accept", &accept_key(key));
    if let Some(protocol) = protocol {
        write_header(out, "Sec-WebSocket-Protocol", protocol.as_bytes());
    }
    if let Some(extensions) = extensions {
        write_header(out, "Sec-WebSocket-Extensions", extensions.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Connection` value of a response after which the server closes: `close`, and with an
/// `Upgrade` header (a 426) also the `upgrade` option, as RFC 9110 §7.8 asks: "When Upgrade is
/// sent, the sender MUST also send a Connection header field (Section 7.6.1) that contains an
/// "upgrade" connection option, in order to prevent Upgrade from being accidentally forwarded
/// by intermediaries that might not implement the listed protocols."
pub(crate) fn connection_close(upgrade: bool) -> &'static str {
    if upgrade { "Upgrade, close" } else { "close" }
}

/// Appends a complete error response that closes the connection:
///
/// ```text
/// HTTP/1.1 <status> <reason_phrase(status)>
/// Content-Type: text/plain; charset=utf-8
/// Content-Length: <body.len()>
/// Connection: close                     (Connection: Upgrade, close with an Upgrade header)
/// <extra_headers...>
///
/// <body>
/// ```
///
/// # Panics
///
/// If `status` is not three digits (100-999), or an extra header has a name that is not a
/// token or a value with CR, LF or another control character.
pub fn write_error(status: u16, extra_headers: &[(&str, &str)], body: &str, out: &mut Vec<u8>) {
    assert!((100..1000).contains(&status), "invalid HTTP status {status}");
    // Writing into a Vec cannot fail.
    let upgrade = extra_headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: {}\r\n",
        reason_phrase(status),
        body.len(),
        connection_close(upgrade),
    );
    for (name, value) in extra_headers {
        write_header(out, name, value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

impl HandshakeError {
    /// Appends the response a server answers this error with ([`Self::status`]), a short
    /// plain-text body, and `Connection: close` (`Connection: Upgrade, close` for a 426).
    ///
    /// A 405 carries `Allow: GET` ("The origin server MUST generate an Allow header field in a
    /// 405 response", RFC 9110 §15.5.6); a 426 carries `Sec-WebSocket-Version: 13` and
    /// `Upgrade: websocket` (RFC 6455 §4.4: "the server sends an appropriate
    /// |Sec-WebSocket-Version| header field"; RFC 9110 §15.5.22: "The server MUST send an Upgrade
    /// header field in a 426 response").
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let extra: &[(&str, &str)] = match self {
            Self::MethodNotAllowed => &[("Allow", "GET")],
            Self::UnsupportedVersion => &[("Sec-WebSocket-Version", VERSION), ("Upgrade", "websocket")],
            _ => &[],
        };
        write_error(self.status(), extra, self.description(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        core::str::from_utf8(out).unwrap()
    }

    #[test]
    fn accept_response() {
        let mut out = Vec::new();
        write_accept(b"dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), Some("permessage-deflate"), &mut out);
        assert_eq!(
            text(&out),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
        out.clear();
        write_accept(b"dGhlIHNhbXBsZSBub25jZQ==", None, None, &mut out);
        assert!(text(&out).ends_with("xOo=\r\n\r\n"));
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        HandshakeError::UnsupportedVersion.write_response(&mut out);
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{t}");
        assert!(t.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(t.contains("\r\nUpgrade: websocket\r\n"));
        assert!(t.contains("\r\nConnection: Upgrade, close\r\n"), "{t}");
        let body = HandshakeError::UnsupportedVersion.description();
        assert!(t.ends_with(&format!("\r\n\r\n{body}")));
        assert!(t.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));

        out.clear();
        HandshakeError::MethodNotAllowed.write_response(&mut out);
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && t.contains("\r\nAllow: GET\r\n"));
        assert!(t.contains("\r\nConnection: close\r\n"), "{t}");

        out.clear();
        HandshakeError::TooLarge.write_response(&mut out);
        assert!(text(&out).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));

        out.clear();
        write_error(599, &[("Retry-After", "5")], "", &mut out);
        assert_eq!(
            text(&out),
            "HTTP/1.1 599 \r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n\
             Connection: close\r\nRetry-After: 5\r\n\r\n"
        );
        assert_eq!(reason_phrase(429), "Too Many Requests");
    }

    #[test]
    #[should_panic(expected = "invalid value")]
    fn header_injection_panics() {
        write_error(400, &[("X", "a\r\nSet-Cookie: x")], "", &mut Vec::new());
    }
}

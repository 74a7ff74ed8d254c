//! Server side: parsing the client's opening handshake and checking it (RFC 6455 §4.2.1).

use core::str;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::parse::{self, HeadError};
use super::{HandshakeError, Header, Status, VERSION};

/// A parsed request head, borrowing from the read buffer (`'b`) and the caller's header array
/// (`'h`).
///
/// Only the syntax has been checked; [`Request::upgrade`] checks that it is a WebSocket
/// opening handshake.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Request<'b, 'h> {
    /// The method token, case-sensitive ("The method token is case-sensitive", RFC 9110 §9.1).
    pub method: &'b str,
    /// The request target as sent: usually `/path?query` (origin-form), visible ASCII only.
    pub target: &'b str,
    /// The minor HTTP version: `1` for `HTTP/1.1`, `0` for `HTTP/1.0`.
    pub version: u8,
    /// The header lines, in order.
    pub headers: &'h [Header<'b>],
    /// Length of the head in bytes, blank line included. Bytes past it (the first WebSocket
    /// frames, when the client did not wait for the 101) belong to the connection.
    pub len: usize,
}

/// Parses a request head at the start of `buf`.
///
/// Returns [`Status::Partial`] while the head is incomplete and may still fit in `max_size`
/// bytes (call again with more bytes), [`HandshakeError::TooLarge`] once it cannot fit or has
/// more header lines than `headers` holds, and [`HandshakeError::MalformedRequest`] as soon as
/// the bytes seen cannot be a valid head (see the [module docs](super) for the syntax accepted).
///
/// The request line is `method SP request-target SP HTTP-version` (RFC 9112 §3): the method
/// must be a token, the target non-empty visible ASCII, the version `HTTP/1.x`.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    max_size: usize,
) -> Result<Status<Request<'b, 'h>>, HandshakeError> {
    let head = match parse::parse_head(buf, headers, max_size, request_line) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(Status::Partial),
        Err(HeadError::Malformed) => return Err(HandshakeError::MalformedRequest),
        Err(HeadError::TooLarge) => return Err(HandshakeError::TooLarge),
    };
    let headers: &'h [Header<'b>] = headers;
    let (method, target, version) = head.start;
    Ok(Status::Complete(Request { method, target, version, headers: &headers[..head.count], len: head.len }))
}

/// `request-line = method SP request-target SP HTTP-version`.
fn request_line(line: &[u8]) -> Option<(&str, &str, u8)> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !parse::is_token(method) || target.is_empty() || !target.iter().all(|&b| parse::is_vchar(b)) {
        return None;
    }
    let version = parse::http1_minor(version)?;
    Some((str::from_utf8(method).ok()?, str::from_utf8(target).ok()?, version))
}

/// The origin-form part (`/path?query`) of a target in origin-form or in absolute-form with an
/// `http`/`https` scheme; `None` for other forms (`*`, `host:port`, other schemes).
///
/// RFC 6455 §4.2.1: 'The "Request-URI" part of the request MUST match the /resource name/
/// defined in Section 3 (a relative URI) or be an absolute http/https URI that, when parsed,
/// has a /resource name/, /host/, and /port/ that match the corresponding ws/wss URI.'
fn resource(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    let scheme = ["http://", "https://"]
        .into_iter()
        .find(|s| target.as_bytes().get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s.as_bytes())))?;
    let after = target.get(scheme.len()..)?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    if end == 0 {
        return None; // no authority
    }
    after.get(end..)
}

impl<'b, 'h> Request<'b, 'h> {
    /// The path of the target, before any `?` (for an absolute-form target, the path part of
    /// the URI; `/` if it has none). A target in another form is returned whole.
    pub fn path(&self) -> &'b str {
        let Some(resource) = resource(self.target) else {
            return self.target;
        };
        let path = resource.split_once('?').map_or(resource, |(path, _)| path);
        if path.is_empty() { "/" } else { path }
    }

    /// The query of the target: what follows the first `?`, if any.
    pub fn query(&self) -> Option<&'b str> {
        resource(self.target)?.split_once('?').map(|(_, query)| query)
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        parse::first(self.headers, name)
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order.
    pub fn headers<'n>(&self, name: &'n str) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h, 'n> {
        parse::values(self.headers, name)
    }

    /// The value of the cookie `name` (case-sensitive) from the `Cookie` headers, surrounding
    /// double quotes removed (RFC 6265 §4.2.1: `cookie-string = cookie-pair *( ";" SP
    /// cookie-pair )`). `None` if absent or not UTF-8.
    pub fn cookie(&self, name: &str) -> Option<&'b str> {
        self.headers("cookie").flat_map(|v| v.split(|&b| b == b';')).find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            if parse::trim_ows(&pair[..eq]) != name.as_bytes() {
                return None;
            }
            let value = parse::trim_ows(&pair[eq + 1..]);
            let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            str::from_utf8(value).ok()
        })
    }

    /// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1: `credentials =
    /// "Bearer" 1*SP b64token`; the scheme is case-insensitive). `None` if absent, another
    /// scheme, or not a valid `b64token`.
    pub fn bearer_token(&self) -> Option<&'b str> {
        let value = self.header("authorization")?;
        let space = value.iter().position(|&b| b == b' ')?;
        if !value[..space].eq_ignore_ascii_case(b"Bearer") {
            return None;
        }
        let token = parse::trim_ows(&value[space..]);
        // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
        let body_len = token.iter().position(|&b| b == b'=').unwrap_or(token.len());
        let valid = body_len > 0
            && token[..body_len].iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
            && token[body_len..].iter().all(|&b| b == b'=');
        if valid { str::from_utf8(token).ok() } else { None }
    }

    /// Whether this request tries to open a WebSocket, and if so, whether it is a valid
    /// opening handshake: `None` for a plain HTTP request, else [`Request::upgrade`].
    ///
    /// A request is an attempt when it carries `Upgrade: websocket` (the token, ASCII
    /// case-insensitive, in any `Upgrade` header), a `Sec-WebSocket-Key` or a
    /// `Sec-WebSocket-Version`: headers only a WebSocket client sends. A server answers a failed
    /// attempt with the error's status whatever the path: "If the server, while reading the
    /// handshake, finds that the client did not send a handshake that matches the description
    /// below (note that as per \[RFC2616\], the order of the header fields is not important),
    /// including but not limited to any violations of the ABNF grammar specified for the
    /// components of the handshake, the server MUST stop processing the client's handshake and
    /// return an HTTP response with an appropriate error code (such as 400 Bad Request)"
    /// (RFC 6455 §4.2.1). A request with none of them (a browser fetching the page, a `curl`
    /// of a WebSocket path) is left to the application, which may answer `426 Upgrade
    /// Required`.
    pub fn upgrade_attempt(&self) -> Option<Result<Upgrade<'b, 'h>, HandshakeError>> {
        let headers = self.headers;
        let attempt = parse::list_contains(headers, "upgrade", "websocket")
            || parse::first(headers, "sec-websocket-key").is_some()
            || parse::first(headers, "sec-websocket-version").is_some();
        attempt.then(|| self.upgrade())
    }

    /// Checks that this request is a WebSocket opening handshake (RFC 6455 §4.2.1) and returns
    /// what the server needs to answer it.
    ///
    /// Checks, in order, each failing with the error the server answers:
    /// 1. "An HTTP/1.1 or higher GET request": method `GET` else
    ///    [`MethodNotAllowed`](HandshakeError::MethodNotAllowed) (405); version else
    ///    [`OldHttpVersion`](HandshakeError::OldHttpVersion) (400); the target is a path or an
    ///    `http`/`https` URI else [`MalformedRequest`](HandshakeError::MalformedRequest).
    /// 2. No request body (`Transfer-Encoding`, or a `Content-Length` other than 0): bytes
    ///    after the head are WebSocket frames, so a body would be misread as frames.
    ///    [`MalformedRequest`](HandshakeError::MalformedRequest).
    /// 3. "A |Host| header field containing the server's authority": exactly one, non-empty,
    ///    visible ASCII, else [`BadHost`](HandshakeError::BadHost).
    /// 4. "An |Upgrade| header field containing the value "websocket", treated as an ASCII
    ///    case-insensitive value", else [`NotUpgrade`](HandshakeError::NotUpgrade).
    /// 5. "A |Connection| header field that includes the token "Upgrade", treated as an ASCII
    ///    case-insensitive value", else
    ///    [`ConnectionNotUpgrade`](HandshakeError::ConnectionNotUpgrade).
    /// 6. "A |Sec-WebSocket-Version| header field, with a value of 13", exactly once, else
    ///    [`UnsupportedVersion`](HandshakeError::UnsupportedVersion) (426).
    /// 7. "A |Sec-WebSocket-Key| header field with a base64-encoded (see Section 4 of
    ///    \[RFC4648\]) value that, when decoded, is 16 bytes in length", exactly once ("The
    ///    |Sec-WebSocket-Key| header field MUST NOT appear more than once in an HTTP
    ///    request", §11.3.1), else [`BadKey`](HandshakeError::BadKey).
    /// 8. Optional `Origin` (at most once, ASCII) and `Sec-WebSocket-Protocol` (a list of
    ///    tokens: "The elements that comprise this value MUST be non-empty strings with
    ///    characters in the range U+0021 to U+007E not including separator characters", §4.1),
    ///    else [`InvalidHeader`](HandshakeError::InvalidHeader).
    pub fn upgrade(&self) -> Result<Upgrade<'b, 'h>, HandshakeError> {
        let headers = self.headers;
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.version < 1 {
            return Err(HandshakeError::OldHttpVersion);
        }
        if resource(self.target).is_none() {
            return Err(HandshakeError::MalformedRequest);
        }
        let has_body = parse::first(headers, "transfer-encoding").is_some()
            || parse::values(headers, "content-length").any(|v| v != b"0");
        if has_body {
            return Err(HandshakeError::MalformedRequest);
        }

        let host = match parse::single(headers, "host") {
            Ok(Some(host)) if !host.is_empty() && host.iter().all(|&b| parse::is_vchar(b)) => host,
            _ => return Err(HandshakeError::BadHost),
        };
        let host = str::from_utf8(host).map_err(|_| HandshakeError::BadHost)?;

        if !parse::list_contains(headers, "upgrade", "websocket") {
            return Err(HandshakeError::NotUpgrade);
        }
        if !parse::list_contains(headers, "connection", "upgrade") {
            return Err(HandshakeError::ConnectionNotUpgrade);
        }
        if parse::single(headers, "sec-websocket-version") != Ok(Some(VERSION.as_bytes())) {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = match parse::single(headers, "sec-websocket-key") {
            Ok(Some(key)) if is_valid_key(key) => key,
            _ => return Err(HandshakeError::BadKey),
        };

        let origin = match parse::single(headers, "origin") {
            Ok(None) => None,
            Ok(Some(origin)) if origin.is_ascii() => {
                Some(str::from_utf8(origin).map_err(|_| HandshakeError::InvalidHeader)?)
            }
            _ => return Err(HandshakeError::InvalidHeader),
        };
        if !parse::list_elements(headers, "sec-websocket-protocol").all(parse::is_token) {
            return Err(HandshakeError::InvalidHeader);
        }
        Ok(Upgrade { key, host, origin, headers })
    }
}

/// Whether `key` is the base64 encoding of exactly 16 bytes (24 characters, `==` padding,
/// canonical).
fn is_valid_key(key: &[u8]) -> bool {
    let mut raw = [0u8; 18];
    key.len() == 24 && matches!(STANDARD.decode_slice(key, &mut raw), Ok(16))
}

/// A request that passed the RFC 6455 §4.2.1 checks: what the server needs to answer it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Upgrade<'b, 'h> {
    key: &'b [u8],
    host: &'b str,
    origin: Option<&'b str>,
    headers: &'h [Header<'b>],
}

impl<'b, 'h> Upgrade<'b, 'h> {
    /// The `Sec-WebSocket-Key` value (24 base64 characters), to hash into the accept value.
    pub fn key(&self) -> &'b [u8] {
        self.key
    }

    /// The `Sec-WebSocket-Accept` value answering this request ([`accept_key`](super::accept_key)
    /// of [`Self::key`]).
    pub fn accept_key(&self) -> [u8; 28] {
        super::accept_key(self.key)
    }

    /// The `Host` header value (authority: host and optional port).
    pub fn host(&self) -> &'b str {
        self.host
    }

    /// The `Origin` header, if sent. RFC 6455 §4.2.2: "The |Origin| header field is used to
    /// protect against unauthorized cross-origin use of a WebSocket server by scripts using
    /// the WebSocket API in a web browser." Browsers always send it; other clients may not.
    pub fn origin(&self) -> Option<&'b str> {
        self.origin
    }

    /// The subprotocols the client offered, in its order of preference, from every
    /// `Sec-WebSocket-Protocol` header ("The |Sec-WebSocket-Protocol| header field MAY appear
    /// multiple times in an HTTP request (which is logically the same as a single
    /// |Sec-WebSocket-Protocol| header field that contains all values)", §11.3.4).
    pub fn protocols(&self) -> impl Iterator<Item = &'b str> + use<'b, 'h> {
        parse::list_elements(self.headers, "sec-websocket-protocol").filter_map(|p| str::from_utf8(p).ok())
    }

    /// The first of the server's `supported` subprotocols (in the server's order of
    /// preference) that the client offered, to echo in the 101 response. Compared exactly.
    pub fn select_protocol<'s>(&self, supported: &[&'s str]) -> Option<&'s str> {
        supported.iter().copied().find(|s| self.protocols().any(|p| p == *s))
    }

    /// The raw values of every `Sec-WebSocket-Extensions` header, in order, for the extension
    /// negotiation (`DeflateConfig::negotiate`) to parse.
    pub fn extensions(&self) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h> {
        parse::values(self.headers, "sec-websocket-extensions")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_MAX_REQUEST_SIZE, EMPTY_HEADER, MAX_HEADERS};
    use super::*;
    use proptest::prelude::*;

    /// RFC 6455 §1.3 / §4.1, with CRLF line endings.
    const RFC: &[u8] = b"GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    fn parse(buf: &[u8], f: impl FnOnce(Result<Status<Request<'_, '_>>, HandshakeError>)) {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        f(parse_request(buf, &mut headers, DEFAULT_MAX_REQUEST_SIZE));
    }

    fn upgrade_err(buf: &[u8]) -> HandshakeError {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let req = parse_request(buf, &mut headers, DEFAULT_MAX_REQUEST_SIZE);
        req.unwrap().complete().unwrap().upgrade().unwrap_err()
    }

    /// The RFC request with one line replaced (or removed when `with` is empty).
    fn edit(line: &str, with: &str) -> Vec<u8> {
        let text = str::from_utf8(RFC).unwrap();
        let line = text.lines().find(|l| l.starts_with(line)).unwrap();
        let with = if with.is_empty() { String::new() } else { format!("{with}\r\n") };
        let edited = text.replacen(&format!("{line}\r\n"), &with, 1);
        assert_ne!(edited, text);
        edited.into_bytes()
    }

    #[test]
    fn rfc_example() {
        parse(RFC, |r| {
            let req = r.unwrap().complete().unwrap();
            assert_eq!((req.method, req.target, req.version, req.len), ("GET", "/chat", 1, RFC.len()));
            assert_eq!(req.path(), "/chat");
            assert_eq!(req.query(), None);
            assert_eq!(req.header("HOST"), Some(&b"server.example.com"[..]));
            let up = req.upgrade().unwrap();
            assert_eq!(up.host(), "server.example.com");
            assert_eq!(up.origin(), Some("http://example.com"));
            assert_eq!(up.key(), b"dGhlIHNhbXBsZSBub25jZQ==");
            assert_eq!(&up.accept_key(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            assert_eq!(up.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
            assert_eq!(up.select_protocol(&["v2", "superchat", "chat"]), Some("superchat"));
            assert_eq!(up.select_protocol(&["v2"]), None);
            assert_eq!(up.extensions().count(), 0);
        });
    }

    #[test]
    fn every_prefix_is_partial_and_trailing_bytes_are_kept() {
        for end in 0..RFC.len() {
            parse(&RFC[..end], |r| assert_eq!(r, Ok(Status::Partial), "prefix {end}"));
        }
        let mut buf = RFC.to_vec();
        buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, b'H', b'e', b'l', b'l', b'o']);
        parse(&buf, |r| assert_eq!(r.unwrap().complete().unwrap().len, RFC.len()));
    }

    #[test]
    fn errors() {
        use HandshakeError::*;
        let post = [b"POST".as_slice(), &RFC[3..]].concat();
        assert_eq!(upgrade_err(&post), MethodNotAllowed);
        assert_eq!(upgrade_err(&[b"get".as_slice(), &RFC[3..]].concat()), MethodNotAllowed);
        let old = str::from_utf8(RFC).unwrap().replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(upgrade_err(old.as_bytes()), OldHttpVersion);
        let v8 = edit("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8");
        assert_eq!(upgrade_err(&v8), UnsupportedVersion);
        assert_eq!(upgrade_err(&edit("Sec-WebSocket-Version", "")), UnsupportedVersion);
        let twice = edit("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13");
        assert_eq!(upgrade_err(&twice), UnsupportedVersion);
        // 15 bytes, not base64, missing, repeated.
        for key in [
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!!==",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "",
        ] {
            assert_eq!(upgrade_err(&edit("Sec-WebSocket-Key", key)), BadKey, "{key}");
        }
        assert_eq!(upgrade_err(&edit("Host", "")), BadHost);
        assert_eq!(upgrade_err(&edit("Host", "Host:")), BadHost);
        assert_eq!(upgrade_err(&edit("Host", "Host: a\r\nHost: a")), BadHost);
        assert_eq!(upgrade_err(&edit("Upgrade", "Upgrade: h2c")), NotUpgrade);
        assert_eq!(upgrade_err(&edit("Upgrade", "")), NotUpgrade);
        assert_eq!(upgrade_err(&edit("Connection", "Connection: keep-alive")), ConnectionNotUpgrade);
        assert_eq!(upgrade_err(&edit("Origin", "Origin: a\r\nOrigin: b")), InvalidHeader);
        assert_eq!(
            upgrade_err(&edit("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: a b")),
            InvalidHeader
        );
        assert_eq!(upgrade_err(&edit("Origin", "Content-Length: 5")), MalformedRequest);
        assert_eq!(upgrade_err(&edit("Origin", "Transfer-Encoding: chunked")), MalformedRequest);
        let star = str::from_utf8(RFC).unwrap().replacen("/chat", "*", 1);
        assert_eq!(upgrade_err(star.as_bytes()), MalformedRequest);
        for bad in [
            &b"GET /chat HTTP/2.0\r\n\r\n"[..],
            b"GET  /chat HTTP/1.1\r\n",
            b"GET /chat\r\n",
            b"GET /ch\x7fat HTTP/1.1\r\n",
            b"G(T / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\n",
        ] {
            parse(bad, |r| assert_eq!(r, Err(MalformedRequest)));
        }
    }

    #[test]
    fn upgrade_attempts() {
        use HandshakeError::*;
        let attempt = |buf: &[u8]| {
            let mut headers = [EMPTY_HEADER; MAX_HEADERS];
            let req = parse_request(buf, &mut headers, DEFAULT_MAX_REQUEST_SIZE).unwrap().complete().unwrap();
            req.upgrade_attempt().map(|r| r.map(|up| up.key().to_vec()))
        };
        assert_eq!(attempt(RFC), Some(Ok(b"dGhlIHNhbXBsZSBub25jZQ==".to_vec())));
        // Plain requests: nothing WebSocket about them, even with another Upgrade.
        assert_eq!(attempt(b"GET /chat HTTP/1.1\r\nHost: h\r\n\r\n"), None);
        assert_eq!(attempt(b"POST /chat HTTP/1.0\r\n\r\n"), None);
        assert_eq!(
            attempt(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
            None
        );
        // Attempts that fail, each with the error the server answers.
        assert_eq!(
            attempt(&edit("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")),
            Some(Err(UnsupportedVersion))
        );
        assert_eq!(attempt(&edit("Sec-WebSocket-Version", "")), Some(Err(UnsupportedVersion)));
        assert_eq!(attempt(&edit("Sec-WebSocket-Key", "")), Some(Err(BadKey)));
        assert_eq!(attempt(&edit("Connection", "")), Some(Err(ConnectionNotUpgrade)));
        assert_eq!(attempt(&edit("Upgrade", "")), Some(Err(NotUpgrade)), "the key and version say WebSocket");
        assert_eq!(attempt(&edit("Upgrade", "Upgrade: h2c")), Some(Err(NotUpgrade)));
        assert_eq!(attempt(&[b"POST".as_slice(), &RFC[3..]].concat()), Some(Err(MethodNotAllowed)));
        let old = str::from_utf8(RFC).unwrap().replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(attempt(old.as_bytes()), Some(Err(OldHttpVersion)));
        let only_upgrade = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n\r\n";
        assert_eq!(attempt(only_upgrade), Some(Err(ConnectionNotUpgrade)));
    }

    #[test]
    fn lenient_where_allowed() {
        let buf = edit("Connection", "connection: keep-alive, Upgrade");
        let buf = str::from_utf8(&buf).unwrap().replacen("Upgrade: websocket", "UPGRADE:  WebSocket ", 1);
        let buf = buf.replacen(
            "Sec-WebSocket-Protocol: chat, superchat",
            "Sec-WebSocket-Protocol: chat\r\nsec-websocket-protocol: ,superchat,",
            1,
        );
        let buf = buf.replacen("Origin: http://example.com", "Content-Length: 0\r\nSec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions: x; y=\"1\"", 1);
        parse(buf.as_bytes(), |r| {
            let req = r.unwrap().complete().unwrap();
            let up = req.upgrade().unwrap();
            assert_eq!(up.origin(), None);
            assert_eq!(up.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
            let ext: Vec<&[u8]> = up.extensions().collect();
            assert_eq!(ext, [&b"permessage-deflate"[..], b"x; y=\"1\""]);
        });
    }

    #[test]
    fn too_large() {
        // Over 8 KiB, never finished: still 431, without waiting.
        let mut big = b"GET /chat HTTP/1.1\r\nX-Pad: ".to_vec();
        big.resize(100 * 1024, b'a');
        parse(&big, |r| assert_eq!(r, Err(HandshakeError::TooLarge)));
        parse(&big[..DEFAULT_MAX_REQUEST_SIZE], |r| assert_eq!(r, Err(HandshakeError::TooLarge)));
        parse(&big[..DEFAULT_MAX_REQUEST_SIZE - 1], |r| assert_eq!(r, Ok(Status::Partial)));
        // Finished, but over the limit.
        big.truncate(9000);
        big.extend_from_slice(b"\r\n\r\n");
        parse(&big, |r| assert_eq!(r, Err(HandshakeError::TooLarge)));
        // Too many headers for the array.
        let mut many = RFC[..RFC.len() - 2].to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        parse(&many, |r| assert_eq!(r, Err(HandshakeError::TooLarge)));
        let mut headers = [EMPTY_HEADER; 2 * MAX_HEADERS];
        let req = parse_request(&many, &mut headers, DEFAULT_MAX_REQUEST_SIZE).unwrap();
        assert!(req.complete().unwrap().upgrade().is_ok());
    }

    #[test]
    fn target_cookie_bearer() {
        let buf = b"GET http://Example.com:80/a/b?x=1&y HTTP/1.1\r\n\
            Cookie: a=1; session=\"abc\"\r\nCookie: b=2\r\n\
            Authorization: bearer mF_9.B5f-4.1JqM==\r\n\r\n";
        parse(buf, |r| {
            let req = r.unwrap().complete().unwrap();
            assert_eq!((req.path(), req.query()), ("/a/b", Some("x=1&y")));
            assert_eq!(req.cookie("session"), Some("abc"));
            assert_eq!(req.cookie("b"), Some("2"));
            assert_eq!(req.cookie("Session"), None);
            assert_eq!(req.bearer_token(), Some("mF_9.B5f-4.1JqM=="));
            assert_eq!(req.headers("cookie").count(), 2);
        });
        for (target, path, query) in [
            ("https://h?q", "/", Some("q")),
            ("/?", "/", Some("")),
            ("*", "*", None),
            ("ftp://h/x", "ftp://h/x", None),
        ] {
            let buf = format!("GET {target} HTTP/1.1\r\nAuthorization: Basic x\r\n\r\n");
            parse(buf.as_bytes(), |r| {
                let req = r.unwrap().complete().unwrap();
                assert_eq!((req.path(), req.query()), (path, query));
                assert_eq!(req.bearer_token(), None);
            });
        }
    }

    fn arb_header() -> impl Strategy<Value = (String, String)> {
        ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", "[ -~]{0,20}")
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600), max in 0usize..700) {
            let mut headers = [EMPTY_HEADER; 8];
            if let Ok(Status::Complete(req)) = parse_request(&buf, &mut headers, max) {
                prop_assert!(req.len <= max.min(buf.len()));
                let _ = (req.path(), req.query(), req.cookie("a"), req.bearer_token());
                if let Ok(up) = req.upgrade() {
                    let _ = (up.protocols().count(), up.extensions().count());
                }
            }
        }

        #[test]
        fn split_anywhere_same_result(
            extra in proptest::collection::vec(arb_header(), 0..6),
            path in "/[!-~]{0,30}",
            tail in proptest::collection::vec(any::<u8>(), 0..10),
            split in any::<prop::sample::Index>(),
        ) {
            let mut buf = format!("GET {path} HTTP/1.1\r\nHost: h\r\n");
            for (name, value) in &extra {
                buf.push_str(&format!("{name}: {value}\r\n"));
            }
            buf.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
            let head_len = buf.len();
            let mut buf = buf.into_bytes();
            buf.extend_from_slice(&tail);
            let at = split.index(head_len);
            let mut headers = [EMPTY_HEADER; 16];
            prop_assert_eq!(parse_request(&buf[..at], &mut headers, 1024), Ok(Status::Partial));
            let mut headers = [EMPTY_HEADER; 16];
            let req = parse_request(&buf, &mut headers, 1024).unwrap().complete().unwrap();
            prop_assert_eq!(req.len, head_len);
            prop_assert_eq!(req.target, path.as_str());
            prop_assert_eq!(req.headers.len(), extra.len() + 5);
            for (h, (name, value)) in req.headers[1..].iter().zip(&extra) {
                prop_assert_eq!(h.name, name.as_str());
                prop_assert_eq!(h.value, value.trim_matches([' ', '\t']).as_bytes());
            }
        }
    }
}

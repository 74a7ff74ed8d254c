//! Client side: writing the opening handshake (RFC 6455 §4.1) and checking the server's answer.

use core::str;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use super::parse::{self, HeadError};
use super::response::write_header;
use super::{HandshakeError, Header, Status, VERSION, accept_key};

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64-encoded (24 ASCII bytes).
///
/// RFC 6455 §4.1: "The request MUST include a header field with the name |Sec-WebSocket-Key|.
/// The value of this header field MUST be a nonce consisting of a randomly selected 16-byte
/// value that has been base64-encoded ... The nonce MUST be selected randomly for each
/// connection."
pub fn generate_key(rng: &mut impl RngCore) -> [u8; 24] {
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let mut key = [0u8; 24];
    // 16 bytes always encode to exactly 24 base64 characters (with `==` padding).
    let written = STANDARD.encode_slice(nonce, &mut key).unwrap_or(0);
    debug_assert_eq!(written, 24);
    key
}

/// The client's opening handshake, ready to write.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest<'a> {
    /// The `Host` value: "The request MUST contain a |Host| header field whose value contains
    /// /host/ plus optionally ":" followed by /port/ (when not using the default port)".
    pub host: &'a str,
    /// The request target: the path and query ("/resource name/"), starting with `/`.
    pub path: &'a str,
    /// The `Sec-WebSocket-Key`, from [`generate_key`]; keep it to [`Response::validate`].
    pub key: [u8; 24],
    /// Subprotocols to offer, most preferred first; none when empty.
    pub protocols: &'a [&'a str],
    /// The `Sec-WebSocket-Extensions` offer, serialized (e.g. by the deflate module).
    pub extensions: Option<&'a str>,
    /// Further headers (`Origin`, `Authorization`, `Cookie`, `User-Agent` ...).
    pub extra_headers: &'a [(&'a str, &'a str)],
}

impl<'a> ClientRequest<'a> {
    /// A request for `path` on `host` with `key` and nothing optional.
    pub fn new(host: &'a str, path: &'a str, key: [u8; 24]) -> Self {
        Self { host, path, key, protocols: &[], extensions: None, extra_headers: &[] }
    }

    /// Appends the request head:
    ///
    /// ```text
    /// GET <path> HTTP/1.1
    /// Host: <host>
    /// Upgrade: websocket
    /// Connection: Upgrade
    /// Sec-WebSocket-Key: <key>
    /// Sec-WebSocket-Version: 13
    /// [Sec-WebSocket-Protocol: <protocols, comma-separated>]
    /// [Sec-WebSocket-Extensions: <extensions>]
    /// <extra_headers...>
    /// ```
    ///
    /// # Panics
    ///
    /// If `path` is empty or holds anything but visible ASCII, a protocol is not a token, or
    /// another value holds CR, LF or a control character: writing it would let the caller's
    /// data inject header lines.
    pub fn write(&self, out: &mut Vec<u8>) {
        let path = self.path.as_bytes();
        assert!(
            !path.is_empty() && path.iter().all(|&b| parse::is_vchar(b)),
            "invalid request path {:?}",
            self.path
        );
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        write_header(out, "Host", self.host.as_bytes());
        write_header(out, "Upgrade", b"websocket");
        write_header(out, "Connection", b"Upgrade");
        write_header(out, "Sec-WebSocket-Key", &self.key);
        write_header(out, "Sec-WebSocket-Version", VERSION.as_bytes());
        if let [first, rest @ ..] = self.protocols {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            for (i, protocol) in core::iter::once(first).chain(rest).enumerate() {
                assert!(parse::is_token(protocol.as_bytes()), "invalid subprotocol {protocol:?}");
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(protocol.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        if let Some(extensions) = self.extensions {
            write_header(out, "Sec-WebSocket-Extensions", extensions.as_bytes());
        }
        for (name, value) in self.extra_headers {
            write_header(out, name, value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A parsed response head, borrowing from the read buffer (`'b`) and the caller's header array
/// (`'h`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Response<'b, 'h> {
    /// The minor HTTP version: `1` for `HTTP/1.1`.
    pub version: u8,
    /// The status code (three digits).
    pub code: u16,
    /// The reason phrase, possibly empty ("A client SHOULD ignore the reason-phrase content",
    /// RFC 9112 §4).
    pub reason: &'b [u8],
    /// The header lines, in order.
    pub headers: &'h [Header<'b>],
    /// Length of the head in bytes, blank line included. Bytes past it are the server's first
    /// WebSocket frames.
    pub len: usize,
}

/// Parses a response head at the start of `buf`.
///
/// Returns [`Status::Partial`] while the head is incomplete and may still fit in `max_size`
/// bytes, [`HandshakeError::ResponseTooLarge`] once it cannot fit or has more header lines
/// than `headers` holds, and [`HandshakeError::MalformedResponse`] as soon as the bytes seen
/// cannot be a valid head. The status line is `HTTP/1.x SP 3DIGIT SP reason-phrase` (RFC 9112
/// §4); a missing `SP reason-phrase` is tolerated.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    max_size: usize,
) -> Result<Status<Response<'b, 'h>>, HandshakeError> {
    let head = match parse::parse_head(buf, headers, max_size, status_line) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(Status::Partial),
        Err(HeadError::Malformed) => return Err(HandshakeError::MalformedResponse),
        Err(HeadError::TooLarge) => return Err(HandshakeError::ResponseTooLarge),
    };
    let headers: &'h [Header<'b>] = headers;
    let (version, code, reason) = head.start;
    Ok(Status::Complete(Response { version, code, reason, headers: &headers[..head.count], len: head.len }))
}

/// `status-line = HTTP-version SP status-code SP [ reason-phrase ]`.
fn status_line(line: &[u8]) -> Option<(u8, u16, &[u8])> {
    let version = parse::http1_minor(line.get(..8)?)?;
    let (code, reason) = match line.get(8..)? {
        [b' ', digits @ ..] if digits.len() == 3 => (digits, &b""[..]),
        [b' ', d0, d1, d2, b' ', reason @ ..] => (&[*d0, *d1, *d2][..], reason),
        _ => return None,
    };
    let mut value = 0u16;
    for &d in code {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u16::from(d - b'0');
    }
    if !reason.iter().all(|&b| parse::is_field_byte(b)) {
        return None;
    }
    Some((version, value, reason))
}

impl<'b, 'h> Response<'b, 'h> {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.code
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        parse::first(self.headers, name)
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order.
    pub fn headers<'n>(&self, name: &'n str) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h, 'n> {
        parse::values(self.headers, name)
    }

    /// Checks the server's answer to a request sent with `key` offering `offered_protocols`
    /// (RFC 6455 §4.1, "the client MUST validate the server's response as follows"):
    ///
    /// 1. "If the status code received from the server is not 101, the client handles the
    ///    response per HTTP \[RFC2616\] procedures":
    ///    [`UnexpectedStatus`](HandshakeError::UnexpectedStatus) with the code.
    /// 2. "If the response lacks an |Upgrade| header field or the |Upgrade| header field
    ///    contains a value that is not an ASCII case-insensitive match for the value
    ///    "websocket"": [`NotUpgrade`](HandshakeError::NotUpgrade).
    /// 3. "If the response lacks a |Connection| header field or the |Connection| header field
    ///    doesn't contain a token that is an ASCII case-insensitive match for the value
    ///    "Upgrade"": [`ConnectionNotUpgrade`](HandshakeError::ConnectionNotUpgrade).
    /// 4. "If the response lacks a |Sec-WebSocket-Accept| header field or the
    ///    |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of the
    ///    concatenation of the |Sec-WebSocket-Key| (as a string, not base64-decoded) with the
    ///    string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"": [`BadAccept`](HandshakeError::BadAccept).
    /// 5. Extensions are the caller's to check ([`Accepted::extensions`]): "If the response
    ///    includes a |Sec-WebSocket-Extensions| header field and this header field indicates
    ///    the use of an extension that was not present in the client's handshake".
    /// 6. "If the response includes a |Sec-WebSocket-Protocol| header field and this header
    ///    field indicates the use of a subprotocol that was not present in the client's
    ///    handshake": a single header holding exactly one of `offered_protocols` (compared
    ///    exactly), else [`UnexpectedProtocol`](HandshakeError::UnexpectedProtocol).
    pub fn validate(
        &self,
        key: &[u8; 24],
        offered_protocols: &[&str],
    ) -> Result<Accepted<'b, 'h>, HandshakeError> {
        if self.code != 101 {
            return Err(HandshakeError::UnexpectedStatus(self.code));
        }
        let mut upgrade = parse::list_elements(self.headers, "upgrade").peekable();
        if upgrade.peek().is_none() || !upgrade.all(|u| u.eq_ignore_ascii_case(b"websocket")) {
            return Err(HandshakeError::NotUpgrade);
        }
        if !parse::list_contains(self.headers, "connection", "upgrade") {
            return Err(HandshakeError::ConnectionNotUpgrade);
        }
        match parse::single(self.headers, "sec-websocket-accept") {
            Ok(Some(accept)) if accept == accept_key(key) => {}
            _ => return Err(HandshakeError::BadAccept),
        }
        let protocol = match parse::single(self.headers, "sec-websocket-protocol") {
            Ok(None) => None,
            Ok(Some(p)) if offered_protocols.iter().any(|o| o.as_bytes() == p) => {
                Some(str::from_utf8(p).map_err(|_| HandshakeError::UnexpectedProtocol)?)
            }
            _ => return Err(HandshakeError::UnexpectedProtocol),
        };
        Ok(Accepted { protocol, headers: self.headers })
    }
}

/// A validated 101 response: what the server selected.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Accepted<'b, 'h> {
    protocol: Option<&'b str>,
    headers: &'h [Header<'b>],
}

impl<'b, 'h> Accepted<'b, 'h> {
    /// The subprotocol the server selected (one we offered), if any.
    pub fn protocol(&self) -> Option<&'b str> {
        self.protocol
    }

    /// The raw values of every `Sec-WebSocket-Extensions` header, for the caller to check
    /// against its offer (fail with [`HandshakeError::UnexpectedExtension`]).
    pub fn extensions(&self) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h> {
        parse::values(self.headers, "sec-websocket-extensions")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_MAX_REQUEST_SIZE, EMPTY_HEADER, MAX_HEADERS, parse_request, write_accept};
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    const KEY: [u8; 24] = *b"dGhlIHNhbXBsZSBub25jZQ==";

    fn validate(buf: &[u8], offered: &[&str]) -> Result<Option<String>, HandshakeError> {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let resp = parse_response(buf, &mut headers, 4096)?.complete().unwrap();
        resp.validate(&KEY, offered).map(|a| a.protocol().map(String::from))
    }

    /// A 101 answer for KEY with one line edited.
    fn answer(protocol: Option<&str>) -> String {
        let mut out = Vec::new();
        write_accept(&KEY, protocol, None, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_are_random_and_valid() {
        let mut rng = StdRng::seed_from_u64(7);
        let (a, b) = (generate_key(&mut rng), generate_key(&mut rng));
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(a).unwrap().len(), 16);
    }

    #[test]
    fn round_trip() {
        let key = generate_key(&mut StdRng::seed_from_u64(1));
        let req = ClientRequest {
            protocols: &["v2.chat", "chat"],
            extensions: Some("permessage-deflate; client_max_window_bits"),
            extra_headers: &[("Origin", "https://example.com")],
            ..ClientRequest::new("example.com:8080", "/ws?room=1", key)
        };
        let mut wire = Vec::new();
        req.write(&mut wire);

        // Server.
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let parsed = parse_request(&wire, &mut headers, DEFAULT_MAX_REQUEST_SIZE).unwrap();
        let parsed = parsed.complete().unwrap();
        assert_eq!((parsed.path(), parsed.query(), parsed.len), ("/ws", Some("room=1"), wire.len()));
        let up = parsed.upgrade().unwrap();
        assert_eq!(up.host(), "example.com:8080");
        assert_eq!(up.origin(), Some("https://example.com"));
        let ext: Vec<&[u8]> = up.extensions().collect();
        assert_eq!(ext, [&b"permessage-deflate; client_max_window_bits"[..]]);
        let protocol = up.select_protocol(&["chat"]);
        let mut answer = Vec::new();
        write_accept(up.key(), protocol, Some("permessage-deflate"), &mut answer);
        let frame = [0x81, 0x02, b'h', b'i'];
        answer.extend_from_slice(&frame);

        // Client.
        let mut headers = [EMPTY_HEADER; 8];
        for end in 0..answer.len() - frame.len() {
            assert_eq!(parse_response(&answer[..end], &mut headers, 1024), Ok(Status::Partial));
        }
        let resp = parse_response(&answer, &mut headers, 1024).unwrap().complete().unwrap();
        assert_eq!(
            (resp.status(), resp.reason, resp.len),
            (101, &b"Switching Protocols"[..], answer.len() - 4)
        );
        assert_eq!(resp.header("upgrade"), Some(&b"websocket"[..]));
        let accepted = resp.validate(&key, req.protocols).unwrap();
        assert_eq!(accepted.protocol(), Some("chat"));
        assert_eq!(accepted.extensions().collect::<Vec<_>>(), [&b"permessage-deflate"[..]]);
    }

    #[test]
    fn rejections() {
        use HandshakeError::*;
        assert_eq!(validate(answer(None).as_bytes(), &[]), Ok(None));
        assert_eq!(validate(answer(Some("chat")).as_bytes(), &["x", "chat"]), Ok(Some("chat".into())));
        // Wrong accept (another key's), missing accept, repeated accept.
        let wrong = answer(None).replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "s3pPLMBiTxaQ9kYGzzhZRbK+xOp=");
        assert_eq!(validate(wrong.as_bytes(), &[]), Err(BadAccept));
        let missing = answer(None).replace("Sec-WebSocket-Accept", "X-Accept");
        assert_eq!(validate(missing.as_bytes(), &[]), Err(BadAccept));
        let twice = answer(None)
            .replace("Connection", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nConnection");
        assert_eq!(validate(twice.as_bytes(), &[]), Err(BadAccept));
        // Subprotocols: not offered, offered none, a list, case differs.
        assert_eq!(validate(answer(Some("chat")).as_bytes(), &["superchat"]), Err(UnexpectedProtocol));
        assert_eq!(validate(answer(Some("chat")).as_bytes(), &[]), Err(UnexpectedProtocol));
        assert_eq!(validate(answer(Some("a, b")).as_bytes(), &["a", "b"]), Err(UnexpectedProtocol));
        assert_eq!(validate(answer(Some("Chat")).as_bytes(), &["chat"]), Err(UnexpectedProtocol));
        // Upgrade / Connection.
        let h2 = answer(None).replace("Upgrade: websocket", "Upgrade: websocket, h2c");
        assert_eq!(validate(h2.as_bytes(), &[]), Err(NotUpgrade));
        let no_conn = answer(None).replace("Connection: Upgrade", "Connection: close");
        assert_eq!(validate(no_conn.as_bytes(), &[]), Err(ConnectionNotUpgrade));
        let upper = answer(None)
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "CONNECTION: upgrade");
        assert_eq!(validate(upper.as_bytes(), &[]), Ok(None));
        // Non-101, with and without a reason phrase.
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(validate(not_found, &[]), Err(UnexpectedStatus(404)));
        assert_eq!(validate(b"HTTP/1.1 403\r\n\r\n", &[]), Err(UnexpectedStatus(403)));
        assert_eq!(validate(b"HTTP/1.1 200 \r\n\r\n", &[]), Err(UnexpectedStatus(200)));
        for bad in [
            &b"HTTP/1.1 10 x\r\n"[..],
            b"HTTP/1.1 1011 x\r\n",
            b"HTTP/1.1  101\r\n",
            b"HTTP/1.1 1x1 x\r\n",
            b"http/1.1 101 x\r\n",
            b"HTTP/1.1 101 \x01\r\n",
            b"HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH\r\n",
        ] {
            let mut headers = [EMPTY_HEADER; 4];
            assert_eq!(parse_response(bad, &mut headers, 100), Err(MalformedResponse));
        }
        let mut headers = [EMPTY_HEADER; 1];
        assert_eq!(parse_response(answer(None).as_bytes(), &mut headers, 1024), Err(ResponseTooLarge));
        let mut headers = [EMPTY_HEADER; 8];
        assert_eq!(parse_response(answer(None).as_bytes(), &mut headers, 50), Err(ResponseTooLarge));
    }

    #[test]
    fn written_request() {
        let mut out = Vec::new();
        ClientRequest::new("h", "/", KEY).write(&mut out);
        assert_eq!(
            str::from_utf8(&out).unwrap(),
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
    }

    #[test]
    #[should_panic(expected = "invalid value for header Host")]
    fn host_injection_panics() {
        ClientRequest::new("h\r\nX: y", "/", KEY).write(&mut Vec::new());
    }

    proptest! {
        #[test]
        fn arbitrary_responses_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..400), max in 0usize..500) {
            let mut headers = [EMPTY_HEADER; 8];
            if let Ok(Status::Complete(resp)) = parse_response(&buf, &mut headers, max) {
                prop_assert!(resp.len <= max.min(buf.len()));
                if let Ok(a) = resp.validate(&KEY, &["chat"]) {
                    let _ = a.extensions().count();
                }
            }
        }

        #[test]
        fn written_requests_parse_back(
            seed in any::<u64>(),
            host in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
            path in "/[!-~]{0,40}",
            protocols in proptest::collection::vec("[a-z0-9.-]{1,10}", 0..4),
            split in any::<prop::sample::Index>(),
        ) {
            let protocols: Vec<&str> = protocols.iter().map(String::as_str).collect();
            let key = generate_key(&mut StdRng::seed_from_u64(seed));
            let req = ClientRequest { protocols: &protocols, ..ClientRequest::new(&host, &path, key) };
            let mut wire = Vec::new();
            req.write(&mut wire);
            let mut headers = [EMPTY_HEADER; MAX_HEADERS];
            let at = split.index(wire.len());
            prop_assert_eq!(parse_request(&wire[..at], &mut headers, 1024), Ok(Status::Partial));
            let parsed = parse_request(&wire, &mut headers, 1024).unwrap().complete().unwrap();
            prop_assert_eq!(parsed.len, wire.len());
            let up = parsed.upgrade().unwrap();
            prop_assert_eq!(up.key(), &key[..]);
            prop_assert_eq!(up.host(), host.as_str());
            prop_assert_eq!(up.protocols().collect::<Vec<_>>(), protocols);
        }
    }
}

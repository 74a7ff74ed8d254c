//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run <name>`).
//!
//! Each function takes the fuzzer's bytes, drives one part of the protocol core with them and
//! checks what the core promises. No input may make one panic, except by breaking an
//! invariant: then the panic is the finding. They are library code, not part of `fuzz/`, so
//! that `cargo test` runs them too (over the checked-in seed corpus and a few thousand
//! generated inputs) and the fuzz targets stay one-liners.
//!
//! Where a target needs settings (a role, limits, how to cut the input), it reads them from
//! the first bytes of the input; the rest is the data. `fuzz/README.md` lists the layouts.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::Role;
use super::close::CloseCode;
use super::conn::{Config, Connection, Event, MessageKind, SendError};
use super::deflate::{DeflateConfig, DeflateParams, DeflateState, compress_shared};
use super::error::{CapacityError, Error, ProtocolError};
use super::frame::{FrameHeader, MAX_HEADER_LEN};
use super::handshake::{
    self, EMPTY_HEADER, HandshakeError, Header, Status, parse_request, parse_response, write_accept,
};
use super::mask::{apply_mask, apply_mask_scalar};
use super::utf8::{self, Utf8Validator};

// ---- handshakes --------------------------------------------------------------------------

/// Head size limit for both handshake targets: small, so the fuzzer reaches it.
const HEAD_MAX: usize = 1024;

/// Header lines the handshake targets have room for.
const HEADER_SLOTS: usize = 16;

/// The key the response target's client sent (RFC 6455 §1.3).
const CLIENT_KEY: [u8; 24] = *b"dGhlIHNhbXBsZSBub25jZQ==";

/// The subprotocols the server supports / the client offers.
const PROTOCOLS: [&str; 3] = ["chat", "superchat", "v2.chat"];

/// What parsing a (possibly partial) head gave, comparable across prefixes of one input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Partial,
    Complete { len: usize, headers: usize },
    Failed(HandshakeError),
}

fn request_outcome(buf: &[u8]) -> Outcome {
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    match parse_request(buf, &mut headers, HEAD_MAX) {
        Ok(Status::Partial) => Outcome::Partial,
        Ok(Status::Complete(req)) => Outcome::Complete { len: req.len, headers: req.headers.len() },
        Err(e) => Outcome::Failed(e),
    }
}

fn response_outcome(buf: &[u8]) -> Outcome {
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    match parse_response(buf, &mut headers, HEAD_MAX) {
        Ok(Status::Partial) => Outcome::Partial,
        Ok(Status::Complete(resp)) => Outcome::Complete { len: resp.len, headers: resp.headers.len() },
        Err(e) => Outcome::Failed(e),
    }
}

/// Parsing is restartable: a prefix of the input must agree with the whole input. A complete
/// head is `Partial` at every shorter cut and the same head at every longer one; an error seen
/// in a prefix is the whole input's error; a `Partial` input has only `Partial` prefixes.
fn check_prefixes(data: &[u8], full: Outcome, parse: fn(&[u8]) -> Outcome) {
    let seed = data.first().map_or(0, |&b| usize::from(b) * 31) + data.last().map_or(0, |&b| usize::from(b));
    let mut cuts =
        [data.len() / 2, data.len().saturating_sub(1), seed % (data.len() + 1), usize::MAX, usize::MAX];
    if let Outcome::Complete { len, .. } = full {
        assert!(len <= data.len().min(HEAD_MAX), "head of {len} bytes in {} bytes", data.len());
        cuts[3] = len.saturating_sub(1);
        cuts[4] = len;
    }
    for cut in cuts.into_iter().filter(|&cut| cut < data.len()) {
        let prefix = parse(&data[..cut]);
        match full {
            Outcome::Complete { len, .. } if cut >= len => {
                assert_eq!(prefix, full, "a complete head parses differently with {cut} bytes")
            }
            Outcome::Complete { .. } | Outcome::Partial => {
                assert_eq!(prefix, Outcome::Partial, "prefix of {cut} bytes of a valid or unfinished head")
            }
            Outcome::Failed(_) => {
                assert!(
                    prefix == Outcome::Partial || prefix == full,
                    "prefix of {cut} bytes: {prefix:?}, whole: {full:?}"
                )
            }
        }
    }
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in a field value: VCHAR, obs-text, SP, HTAB.
fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

fn is_ows(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Whether `part` borrows from inside `whole`.
fn borrows_from(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr_range(), part.as_ptr_range());
    w.start <= p.start && p.end <= w.end
}

/// What every parsed head (request or response) must look like.
fn check_head(head: &[u8], headers: &[Header<'_>]) {
    assert!(head.ends_with(b"\r\n\r\n"), "a head must end with an empty line: {:?}", head.escape_ascii());
    assert!(headers.len() <= HEADER_SLOTS);
    for h in headers {
        assert!(!h.name.is_empty() && h.name.bytes().all(is_tchar), "header name {:?}", h.name);
        assert!(h.value.iter().all(|&b| is_field_byte(b)), "header value {:?}", h.value.escape_ascii());
        assert!(
            !h.value.first().is_some_and(is_ows) && !h.value.last().is_some_and(is_ows),
            "untrimmed header value {:?}",
            h.value.escape_ascii()
        );
        assert!(
            borrows_from(head, h.name.as_bytes()) && borrows_from(head, h.value),
            "header outside the head"
        );
    }
}

/// A server error must answer with a well-formed response that a client parses back.
fn check_error_response(error: HandshakeError) {
    assert!(!error.is_client_side(), "{error:?} from a request");
    assert!(matches!(error.status(), 400 | 405 | 426 | 431), "{error:?}");
    let mut out = Vec::new();
    error.write_response(&mut out);
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    let resp = match parse_response(&out, &mut headers, HEAD_MAX) {
        Ok(Status::Complete(resp)) => resp,
        other => panic!("error response {:?} does not parse: {other:?}", out.escape_ascii()),
    };
    assert_eq!(resp.status(), error.status());
    let body = &out[resp.len..];
    assert_eq!(body, error.to_string().as_bytes());
    assert_eq!(resp.header("content-length"), Some(body.len().to_string().as_bytes()));
    assert_eq!(resp.header("connection"), Some(&b"close"[..]));
    assert_eq!(resp.validate(&CLIENT_KEY, &PROTOCOLS), Err(HandshakeError::UnexpectedStatus(error.status())));
}

/// Parses the input as a client's opening handshake (1 KiB limit, 16 header slots), calls
/// every getter and [`Request::upgrade`](handshake::Request::upgrade) with its iterators,
/// negotiates permessage-deflate from the offer, answers, and checks that a client accepts the
/// answer. Errors must write a response a client can parse. Prefixes of the input must parse
/// consistently with the whole.
pub fn handshake_request(data: &[u8]) {
    let full = request_outcome(data);
    check_prefixes(data, full, request_outcome);
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    let req = match parse_request(data, &mut headers, HEAD_MAX) {
        Ok(Status::Complete(req)) => req,
        Ok(Status::Partial) => {
            assert!(data.len() < HEAD_MAX, "Partial with {} bytes, over the limit", data.len());
            return;
        }
        Err(e) => {
            assert!(matches!(e, HandshakeError::MalformedRequest | HandshakeError::TooLarge), "{e:?}");
            return check_error_response(e);
        }
    };
    check_head(&data[..req.len], req.headers);
    assert!(!req.method.is_empty() && req.method.bytes().all(is_tchar), "method {:?}", req.method);
    assert!(!req.target.is_empty() && req.target.bytes().all(|b| b.is_ascii_graphic()), "{:?}", req.target);
    assert!(req.version <= 9);

    let path = req.path();
    assert!(path == "/" || req.target.contains(path), "path {path:?} of {:?}", req.target);
    if let Some(query) = req.query() {
        assert!(req.target.ends_with(query), "query {query:?} of {:?}", req.target);
    }
    assert_eq!(req.header("host"), req.headers("HOST").next());
    assert!(req.headers("cookie").count() <= req.headers.len());
    for name in ["session", "a", ""] {
        if let Some(value) = req.cookie(name) {
            assert!(borrows_from(data, value.as_bytes()));
        }
    }
    if let Some(token) = req.bearer_token() {
        assert!(!token.is_empty() && !token.starts_with('='), "bearer token {token:?}");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)));
    }

    let up = match req.upgrade() {
        Ok(up) => up,
        Err(e) => return check_error_response(e),
    };
    assert_eq!((req.method, req.version >= 1), ("GET", true));
    let key: [u8; 24] = up.key().try_into().expect("a valid key is 24 bytes");
    assert_eq!(up.accept_key(), handshake::accept_key(&key));
    assert!(!up.host().is_empty());
    assert!(up.origin().is_none_or(|o| o.is_ascii()));
    let protocols = up.protocols().count();
    for p in up.protocols() {
        assert!(!p.is_empty() && p.bytes().all(is_tchar), "subprotocol {p:?}");
    }
    let protocol = up.select_protocol(&PROTOCOLS);
    if let Some(p) = protocol {
        assert!(PROTOCOLS.contains(&p) && up.protocols().any(|q| q == p));
    } else {
        assert!(protocols == 0 || up.protocols().all(|q| !PROTOCOLS.contains(&q)));
    }
    assert_eq!(up.extensions().count(), req.headers("sec-websocket-extensions").count());

    // The server's side of permessage-deflate, and the client's view of its answer.
    let server = DeflateConfig::default();
    let negotiated = server.negotiate(up.extensions());
    let answer = server.negotiate_response(up.extensions());
    assert_eq!(negotiated, answer.as_ref().map(|(params, _)| *params));
    if let Some((params, value)) = &answer {
        assert!(params.server_no_context_takeover, "the default server config resets per message");
        assert!((9..=15).contains(&params.server_max_window_bits), "{params:?}");
        assert!((8..=15).contains(&params.client_max_window_bits), "{params:?}");
        let again = server.negotiate([params.to_header_value().as_bytes()]);
        assert_eq!(again, Some(*params), "the answer {value:?} read as an offer");
        let client = DeflateConfig::default().accept_response([value.as_bytes()]);
        assert_eq!(client, Ok(Some(*params)), "a default client reading {value:?}");
    }

    // The whole handshake: the answer must satisfy the client that sent this request.
    let mut out = Vec::new();
    write_accept(up.key(), protocol, answer.as_ref().map(|(_, value)| value.as_str()), &mut out);
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    let resp = match parse_response(&out, &mut headers, HEAD_MAX) {
        Ok(Status::Complete(resp)) => resp,
        other => panic!("101 answer {:?} does not parse: {other:?}", out.escape_ascii()),
    };
    assert_eq!((resp.status(), resp.len), (101, out.len()));
    let accepted = resp.validate(&key, &PROTOCOLS).expect("a client rejects the server's own answer");
    assert_eq!(accepted.protocol(), protocol);
    let extensions: Vec<&[u8]> = accepted.extensions().collect();
    assert_eq!(extensions, answer.iter().map(|(_, value)| value.as_bytes()).collect::<Vec<_>>());
}

/// Parses the input as a server's answer (1 KiB limit, 16 header slots), validates it
/// against a fixed key and offer, and runs the client's permessage-deflate checks over its
/// `Sec-WebSocket-Extensions` values with two configurations, checking that an accepted
/// answer honours the offer.
pub fn handshake_response(data: &[u8]) {
    let full = response_outcome(data);
    check_prefixes(data, full, response_outcome);
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    let resp = match parse_response(data, &mut headers, HEAD_MAX) {
        Ok(Status::Complete(resp)) => resp,
        Ok(Status::Partial) => {
            assert!(data.len() < HEAD_MAX, "Partial with {} bytes, over the limit", data.len());
            return;
        }
        Err(e) => {
            let expected = matches!(e, HandshakeError::MalformedResponse | HandshakeError::ResponseTooLarge);
            assert!(expected, "{e:?}");
            return;
        }
    };
    check_head(&data[..resp.len], resp.headers);
    assert!(resp.version <= 9 && resp.status() <= 999);
    assert!(resp.reason.iter().all(|&b| is_field_byte(b)));
    assert_eq!(resp.header("upgrade"), resp.headers("Upgrade").next());

    match resp.validate(&CLIENT_KEY, &PROTOCOLS) {
        Ok(accepted) => {
            assert_eq!(resp.status(), 101);
            assert!(accepted.protocol().is_none_or(|p| PROTOCOLS.contains(&p)));
            let accept: Vec<&[u8]> = resp.headers("sec-websocket-accept").collect();
            assert_eq!(accept, [&handshake::accept_key(&CLIENT_KEY)[..]]);
            assert_eq!(accepted.extensions().count(), resp.headers("sec-websocket-extensions").count());
        }
        Err(HandshakeError::UnexpectedStatus(code)) => assert!(code == resp.status() && code != 101),
        Err(e) => {
            assert_eq!(resp.status(), 101, "{e:?}");
            assert!(
                matches!(
                    e,
                    HandshakeError::NotUpgrade
                        | HandshakeError::ConnectionNotUpgrade
                        | HandshakeError::BadAccept
                        | HandshakeError::UnexpectedProtocol
                ),
                "{e:?}"
            );
        }
    }

    // The default client offer: `server_no_context_takeover; client_max_window_bits`.
    let extensions = || resp.headers("sec-websocket-extensions");
    if let Ok(Some(params)) = DeflateConfig::default().accept_response(extensions()) {
        assert!(params.server_no_context_takeover, "{params:?}: asked for, so required");
        assert!((8..=15).contains(&params.server_max_window_bits), "{params:?}");
        assert!((8..=15).contains(&params.client_max_window_bits), "{params:?}");
    }
    // A stricter offer: the answer may only narrow it.
    let strict = DeflateConfig::default()
        .client_no_context_takeover(true)
        .server_max_window_bits(10)
        .client_max_window_bits(12);
    if let Ok(Some(params)) = strict.accept_response(extensions()) {
        assert!(params.server_no_context_takeover && params.client_no_context_takeover, "{params:?}");
        assert!((8..=10).contains(&params.server_max_window_bits), "{params:?}");
        assert!((8..=12).contains(&params.client_max_window_bits), "{params:?}");
    }
}

// ---- the connection ----------------------------------------------------------------------

const CONN_MAX_MESSAGE: usize = 64 << 10;
const CONN_MAX_FRAGMENTS: usize = 64;
/// The tiny limits mode: small enough for fuzzer-sized inputs to cross.
const TINY_MAX_FRAME: usize = 100;
const TINY_MAX_MESSAGE: usize = 300;
const TINY_MAX_FRAGMENTS: usize = 4;

/// A fixed client offer the server side negotiates from: no context takeover either way,
/// narrowed windows (the client's 9 bits exercise the small-window compressor).
const DEFLATE_OFFER: &[u8] =
    b"permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9";

/// Chunk lengths for the chunking modes 1-6; mode 0 feeds everything at once, mode 7 cycles
/// through [`CHUNK_CYCLE`].
const CHUNK_LENS: [usize; 7] = [usize::MAX, 1, 2, 3, 7, 16, 100];
const CHUNK_CYCLE: [usize; 6] = [1, 9, 2, 40, 3, 13];

fn chunk_len(mode: u8, i: usize) -> usize {
    match CHUNK_LENS.get(usize::from(mode)) {
        Some(&len) => len,
        None => CHUNK_CYCLE[i % CHUNK_CYCLE.len()],
    }
}

fn opposite(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

/// One connection fed the fuzzer's bytes, echoing every message, and a peer of the other role
/// (same negotiation, default limits) that decodes everything the connection writes and must
/// see exactly what was meant: the echoes, the pongs, the closes.
struct Echo {
    conn: Connection,
    peer: Connection,
    max_frame: usize,
    max_message: usize,
    max_fragments: usize,
    /// Start the closing handshake after the first data message.
    close_after_data: bool,
    /// This side's writes, not yet given to the peer.
    out: BytesMut,
    peer_in: BytesMut,
    peer_out: BytesMut,
    /// What the peer must decode next, in order.
    expected: VecDeque<Event>,
    /// A Close or Failed event was seen.
    ended: bool,
    /// This side called `close`.
    close_sent: bool,
}

impl Echo {
    fn handle(&mut self, event: Event) {
        assert!(!self.ended, "event after Close/Failed: {event:?}");
        let mut data = None;
        match event {
            Event::Text(payload) => {
                assert!(std::str::from_utf8(&payload).is_ok(), "Text event with invalid UTF-8");
                data = Some((MessageKind::Text, payload));
            }
            Event::Binary(payload) => data = Some((MessageKind::Binary, payload)),
            Event::Ping(payload) => {
                assert!(payload.len() <= 125, "ping of {} bytes", payload.len());
                if !self.close_sent {
                    self.expected.push_back(Event::Pong(payload));
                }
            }
            Event::Pong(payload) => assert!(payload.len() <= 125, "pong of {} bytes", payload.len()),
            Event::Close { code, reason } => {
                assert!(code == CloseCode::NO_STATUS || code.is_sendable(), "close code {code}");
                assert!(code != CloseCode::NO_STATUS || reason.is_empty());
                assert!(
                    reason.len() <= 123 && std::str::from_utf8(&reason).is_ok(),
                    "close reason {reason:?}"
                );
                self.end(if code == CloseCode::NO_STATUS { CloseCode::NORMAL } else { code });
            }
            Event::Failed(error) => {
                self.check_error(&error);
                self.end(CloseCode::from(&error));
            }
        }
        if let Some((kind, payload)) = data {
            assert!(payload.len() <= self.max_message, "message of {} bytes", payload.len());
            assert!(!self.close_sent, "data event after this side's Close");
            assert!(self.conn.can_send());
            self.conn.send(kind, &payload, &mut self.out).expect("send while open");
            self.expected.push_back(match kind {
                MessageKind::Text => Event::Text(payload),
                MessageKind::Binary => Event::Binary(payload),
            });
            if self.close_after_data {
                self.start_close(CloseCode::NORMAL, "bye");
            }
        }
        self.conn.poll_transmit(&mut self.out);
        self.deliver();
    }

    fn check_error(&self, error: &Error) {
        match *error {
            Error::Capacity(CapacityError::FrameTooLarge { size, max }) => {
                assert!(max == self.max_frame && size > max as u64, "{error:?}")
            }
            Error::Capacity(CapacityError::MessageTooLarge { size, max }) => {
                assert!(max == self.max_message && size > max as u64, "{error:?}")
            }
            Error::Capacity(CapacityError::TooManyFragments { max }) => {
                assert_eq!(max, self.max_fragments, "{error:?}")
            }
            _ => {}
        }
    }

    /// After Close or Failed: closed for good, with a Close frame queued unless this side
    /// already sent one.
    fn end(&mut self, reply: CloseCode) {
        self.ended = true;
        let c = &self.conn;
        assert!(c.is_closed() && !c.wants_read() && !c.can_send() && !c.is_mid_message());
        if !self.close_sent {
            assert!(self.conn.has_pending(), "no Close frame queued");
            self.expected.push_back(Event::Close { code: reply, reason: Bytes::new() });
        }
    }

    fn start_close(&mut self, code: CloseCode, reason: &'static str) {
        self.conn.close(code, reason, &mut self.out).expect("close while open");
        self.close_sent = true;
        self.expected.push_back(Event::Close { code, reason: Bytes::from_static(reason.as_bytes()) });
        // Nothing more may go out.
        let before = self.out.len();
        assert!(!self.conn.can_send());
        assert_eq!(self.conn.send(MessageKind::Binary, b"x", &mut self.out), Err(SendError::Closed));
        assert_eq!(self.conn.ping(b"x", &mut self.out), Err(SendError::Closed));
        assert_eq!(self.conn.close(code, "", &mut self.out), Err(SendError::Closed));
        assert_eq!(self.out.len(), before);
    }

    /// Hands this side's writes to the peer, which must decode exactly what was expected.
    fn deliver(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.peer_in.extend_from_slice(&self.out);
        self.out.clear();
        while let Some(event) = self.peer.poll_event(&mut self.peer_in) {
            let expected = self.expected.pop_front();
            assert_eq!(Some(&event), expected.as_ref(), "the peer decoded something else than was sent");
        }
        self.peer.poll_transmit(&mut self.peer_out);
        self.peer_out.clear();
    }

    fn finish(mut self) {
        if self.conn.can_send() {
            self.start_close(CloseCode::GOING_AWAY, "");
        }
        self.deliver();
        assert!(self.expected.is_empty(), "never decoded by the peer: {:?}", self.expected);
        assert!(self.peer_in.is_empty(), "{} bytes the peer could not decode", self.peer_in.len());
    }
}

/// Runs a [`Connection`] over the input. Byte 0 chooses: bit 0 the role (client if set), bit 1
/// permessage-deflate, bit 2 its parameters (negotiated by a default server from a fixed
/// offer, or [`DeflateParams::default`] if set), bit 3 tiny limits (100-byte frames, 300-byte
/// messages, 4 fragments; else 64 KiB and 64 fragments), bits 4-6 how the rest is cut into
/// reads, bit 7 whether this side starts the closing handshake after the first message.
///
/// After every read the events are drained; each message is echoed with `send`, and
/// everything written is decoded by a peer that must see exactly the echoes, pongs and closes.
/// Checked: no event after Close/Failed, valid UTF-8 in Text, no message over the limit,
/// errors that name the limits, and an input buffer that never holds more than one frame's
/// worth (`max_frame_size + 14` plus the read) — nothing accumulates past the limits.
pub fn connection(data: &[u8]) {
    let Some((&mode, mut stream)) = data.split_first() else { return };
    let role = if mode & 1 == 0 { Role::Server } else { Role::Client };
    let (max_frame, max_message, max_fragments) = if mode & 8 == 0 {
        (CONN_MAX_MESSAGE, CONN_MAX_MESSAGE, CONN_MAX_FRAGMENTS)
    } else {
        (TINY_MAX_FRAME, TINY_MAX_MESSAGE, TINY_MAX_FRAGMENTS)
    };
    let config = Config::default()
        .max_message_size(max_message)
        .max_frame_size(max_frame)
        .max_fragments(max_fragments);
    let (conn, peer) = if mode & 2 == 0 {
        (Connection::new(role, config, None), Connection::new(opposite(role), Config::default(), None))
    } else {
        let params = if mode & 4 == 0 {
            DeflateConfig::default().negotiate([DEFLATE_OFFER]).expect("the fixed offer is acceptable")
        } else {
            DeflateParams::default()
        };
        // A low threshold: most echoes go out compressed.
        let deflate = DeflateConfig::default().threshold(8);
        (
            Connection::with_deflate(role, config, params, &deflate),
            Connection::with_deflate(opposite(role), Config::default(), params, &deflate),
        )
    };
    assert_eq!((conn.role(), conn.is_compressed()), (role, mode & 2 != 0));
    let mut echo = Echo {
        conn,
        peer,
        max_frame,
        max_message,
        max_fragments,
        close_after_data: mode & 0x80 != 0,
        out: BytesMut::new(),
        peer_in: BytesMut::new(),
        peer_out: BytesMut::new(),
        expected: VecDeque::new(),
        ended: false,
        close_sent: false,
    };

    let chunking = (mode >> 4) & 7;
    let mut input = BytesMut::new();
    let mut reads = 0;
    while !echo.ended && !stream.is_empty() {
        let n = chunk_len(chunking, reads).min(stream.len());
        reads += 1;
        input.extend_from_slice(&stream[..n]);
        stream = &stream[n..];
        assert!(input.len() <= max_frame + MAX_HEADER_LEN + n, "{} bytes buffered", input.len());
        while let Some(event) = echo.conn.poll_event(&mut input) {
            echo.handle(event);
        }
        if echo.ended {
            break;
        }
        // What is left is one unfinished frame: part of a header, or a payload under the limit.
        match echo.conn.bytes_needed(&input) {
            Some(need) => {
                assert!(need > 0 && input.len() + need <= max_frame, "{need} more after {}", input.len())
            }
            None => assert!(input.len() < MAX_HEADER_LEN, "{} bytes left without a frame", input.len()),
        }
    }
    if echo.ended {
        input.extend_from_slice(stream);
        assert_eq!(echo.conn.poll_event(&mut input), None, "event after Close/Failed");
    }
    echo.finish();
}

// ---- permessage-deflate ------------------------------------------------------------------

/// The inflate limit of [`deflate_inflate`].
const INFLATE_MAX: usize = 32 << 10;

/// Negotiated parameters the deflate target picks from.
const FUZZ_PARAMS: [DeflateParams; 4] = [
    DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    },
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    },
    // 8 bits: stored blocks only.
    DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: true,
        server_max_window_bits: 9,
        client_max_window_bits: 8,
    },
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: false,
        server_max_window_bits: 12,
        client_max_window_bits: 10,
    },
];

/// `data` cut into `frames` (1-3) pieces at points scaled from `a` and `b`.
fn split_frames(data: &[u8], frames: usize, a: u8, b: u8) -> Vec<&[u8]> {
    let at = |x: u8| data.len() * usize::from(x) / 255;
    let (lo, hi) = (at(a.min(b)), at(a.max(b)));
    match frames {
        1 => vec![data],
        2 => vec![&data[..lo], &data[lo..]],
        _ => vec![&data[..lo], &data[lo..hi], &data[hi..]],
    }
}

/// Inflates one message of `frames` into a fresh buffer; checks the bounds on the way.
fn inflate_message(state: &mut DeflateState, frames: &[&[u8]], max: usize) -> (BytesMut, Result<(), Error>) {
    let mut out = BytesMut::new();
    // `decompress` keeps the capacity of `out` within `max + 1`; a `Vec` allocates at least 8
    // bytes, which is the only slack allowed.
    let max_capacity = (max + 1).max(8);
    for (i, frame) in frames.iter().enumerate() {
        let result = state.decompress(frame, i + 1 == frames.len(), &mut out, max);
        assert!(out.capacity() <= max_capacity, "output capacity {} for a limit of {max}", out.capacity());
        if let Err(e) = result {
            assert!(out.len() <= max + 1, "{} bytes of output for a limit of {max}", out.len());
            match e {
                Error::Protocol(ProtocolError::BadCompressedData) => {}
                Error::Capacity(CapacityError::MessageTooLarge { size, max: m }) => {
                    assert!(m == max && size > max as u64, "{e:?}")
                }
                _ => panic!("unexpected inflate error {e:?}"),
            }
            assert!(!state.holds_state(), "inflater kept after an error");
            return (out, Err(e));
        }
        assert!(out.len() <= max, "{} bytes of output for a limit of {max}", out.len());
    }
    (out, Ok(()))
}

/// permessage-deflate. Byte 0 chooses: bits 0-1 the number of frames (1-3), bit 2 the role
/// (client if set), bits 3-4 the parameters, bits 5-6 the zlib level (0, 1, 6, 9); bytes 1
/// and 2 where frames are cut; the rest is the data.
///
/// First the data is inflated as a compressed message, twice on one state (32 KiB limit):
/// no panic, output and its capacity never over the limit, only the documented errors. Then
/// the data is compressed and inflated back (the limit exactly its length) as four messages
/// on one pair of states, so that context takeover carries over: equal, and equal to
/// [`compress_shared`] whenever the state says it may be shared.
pub fn deflate_inflate(data: &[u8]) {
    let [mode, a, b, payload @ ..] = data else { return };
    let frames = usize::from(mode & 3) % 3 + 1;
    let role = if mode & 4 == 0 { Role::Server } else { Role::Client };
    let params = FUZZ_PARAMS[usize::from((mode >> 3) & 3)];
    let level = [0, 1, 6, 9][usize::from((mode >> 5) & 3)];
    let config = DeflateConfig::default().level(level);
    // Whether the peer's compressor resets per message, so we keep no inflater between them.
    let peer_resets = match role {
        Role::Server => params.client_no_context_takeover,
        Role::Client => params.server_no_context_takeover,
    };

    let pieces = split_frames(payload, frames, *a, *b);
    let mut state = DeflateState::new(role, params, &config);
    for _ in 0..2 {
        let (_, result) = inflate_message(&mut state, &pieces, INFLATE_MAX);
        if result.is_ok() && peer_resets {
            assert!(!state.holds_state(), "inflater kept without context takeover");
        }
    }

    let mut sender = DeflateState::new(role, params, &config);
    let mut receiver = DeflateState::new(opposite(role), params, &config);
    for message in [payload, payload, &payload[..payload.len() / 2], &[][..]] {
        let mut wire = BytesMut::new();
        sender.compress(message, &mut wire);
        assert!(!wire.is_empty(), "a compressed message is at least one byte");
        if let Some((level, bits)) = sender.shared_compression() {
            let mut shared = BytesMut::new();
            compress_shared(message, level, bits, &mut shared);
            assert_eq!(shared, wire, "compress_shared differs from the state's compressor");
        }
        let (back, result) =
            inflate_message(&mut receiver, &split_frames(&wire, frames, *b, *a), message.len());
        if let Err(e) = result {
            panic!("{} bytes compressed to {} do not inflate back: {e}", message.len(), wire.len());
        }
        assert!(back == message, "round trip of {} bytes changed them", message.len());
    }
}

// ---- UTF-8 -------------------------------------------------------------------------------

/// Incremental UTF-8 validation. Byte 0: its low 3 bits say how many of the following bytes
/// are chunk lengths (each mod 32, cycled over the text; bit 7 set instead feeds one byte at
/// a time); the rest is the text.
///
/// Checked against `std::str::from_utf8`: each feed fails exactly when the text so far can no
/// longer start valid UTF-8 (fail fast), the validator is at a code point boundary exactly
/// when the text so far is valid, and the final verdict equals std's.
pub fn utf8_incremental(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (lens, text) = rest.split_at(usize::from(mode & 7).min(rest.len()));
    let mut lens: Vec<usize> = lens.iter().map(|&b| usize::from(b % 32)).collect();
    if mode & 0x80 != 0 {
        lens = vec![1];
    }
    if lens.iter().all(|&len| len == 0) {
        // Empty feeds, then the whole text.
        lens.push(usize::MAX);
    }

    let std_ok = std::str::from_utf8(text).is_ok();
    assert_eq!(utf8::validate(text).is_ok(), std_ok);
    let mut v = Utf8Validator::new();
    let mut end = 0usize;
    let mut failed = false;
    for &len in lens.iter().cycle() {
        let chunk = &text[end..end.saturating_add(len).min(text.len())];
        end += chunk.len();
        let fed = v.feed(chunk);
        let (valid, valid_prefix) = match std::str::from_utf8(&text[..end]) {
            Ok(_) => (true, true),
            Err(e) => (false, e.error_len().is_none()),
        };
        assert_eq!(fed.is_ok(), valid_prefix, "feed ending at byte {end}");
        if fed.is_err() {
            failed = true;
            break;
        }
        assert_eq!(v.is_complete(), valid, "boundary state at byte {end}");
        if end == text.len() && len != 0 {
            break;
        }
    }
    let ok = !failed && v.finish().is_ok();
    assert_eq!(ok, std_ok);
    assert!(v.is_complete() || failed);
}

// ---- frame headers -----------------------------------------------------------------------

/// Frame header parsing. The result depends on the first 14 bytes only, and every shorter
/// prefix of a parsed header is incomplete; a parsed header re-encodes (with minimal lengths)
/// to bytes that parse to the same header, byte for byte the input when it was minimal. When
/// masked, the bytes after the header are unmasked with the fast path and the reference and
/// must agree, also when split.
pub fn frame_header(data: &[u8]) {
    let result = FrameHeader::parse(data);
    assert_eq!(FrameHeader::parse(&data[..data.len().min(MAX_HEADER_LEN)]), result, "looked past 14 bytes");
    let (h, n) = match result {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() < MAX_HEADER_LEN);
            for cut in 0..data.len() {
                assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None));
            }
            return;
        }
        Err(e) => {
            let expected = match e {
                ProtocolError::ReservedOpcode(op) => op == data[0] & 0x0f && matches!(op, 3..=7 | 0xb..=0xf),
                ProtocolError::ControlFrameTooLong | ProtocolError::FragmentedControlFrame => {
                    data[0] & 0x08 != 0
                }
                ProtocolError::LengthHighBit => {
                    data[1] & 0x7f == 127 && data.get(2).is_some_and(|&b| b >= 0x80)
                }
                _ => false,
            };
            assert!(expected, "{e:?} for {:02x?}", &data[..data.len().min(MAX_HEADER_LEN)]);
            return;
        }
    };
    assert!(matches!(n, 2 | 4 | 6 | 8 | 10 | 14) && n <= data.len() && n >= h.len(), "length {n} of {h:?}");
    assert_eq!(h.mask.is_some(), data[1] & 0x80 != 0);
    assert!(h.payload_len >> 63 == 0);
    if h.opcode.is_control() {
        assert!(h.fin && h.payload_len <= 125, "{h:?}");
    }
    for cut in 0..n {
        assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
    }

    let mut encoded = BytesMut::new();
    h.encode(&mut encoded);
    assert_eq!(encoded.len(), h.len());
    assert!(!h.is_empty());
    assert_eq!(
        FrameHeader::parse(&encoded),
        Ok(Some((h, encoded.len()))),
        "re-encoded {:02x?}",
        &encoded[..]
    );
    if n == h.len() {
        assert_eq!(&encoded[..], &data[..n], "a minimal header re-encodes differently");
    }

    if let Some(key) = h.mask {
        let offset = usize::from(data[0]);
        let mut fast = data[n..].to_vec();
        let mut reference = fast.clone();
        let next = apply_mask(&mut fast, key, offset);
        apply_mask_scalar(&mut reference, key, offset);
        assert_eq!(fast, reference, "masking fast path");
        assert_eq!(next, offset + fast.len());
        let mut pieces = data[n..].to_vec();
        let cut = usize::from(data[1]).min(pieces.len());
        let (front, back) = pieces.split_at_mut(cut);
        let next = apply_mask(front, key, offset);
        apply_mask(back, key, next);
        assert_eq!(pieces, reference, "masking in two pieces, cut at {cut}");
    }
}

/// A masked frame with first byte `first` (FIN, RSV bits and opcode as given, so reserved
/// values can be written too) and the shortest length encoding: what tests send as a client.
pub fn masked_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask_scalar(&mut out[start..], key, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target: its name in `fuzz/` and its entry point.
    type Target = (&'static str, fn(&[u8]));

    const TARGETS: [Target; 6] = [
        ("handshake_request", handshake_request),
        ("handshake_response", handshake_response),
        ("connection", connection),
        ("deflate_inflate", deflate_inflate),
        ("utf8_incremental", utf8_incremental),
        ("frame_header", frame_header),
    ];

    /// The seed corpus in `fuzz/corpus/<target>/seed-*`, when present (it is not packaged).
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut seeds: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")))
            .collect();
        seeds.sort();
        seeds.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    #[test]
    fn seed_corpus_passes() {
        for (name, target) in TARGETS {
            for seed in seeds(name) {
                target(&seed);
            }
        }
    }

    /// A few thousand inputs per target: seeds with bytes flipped, cut and spliced, and noise,
    /// from a fixed xorshift stream. A cheap stand-in for the fuzzer in `cargo test`.
    #[test]
    fn mutated_inputs_pass() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (name, target) in TARGETS {
            let seeds = seeds(name);
            for _ in 0..1500 {
                let mut input = match seeds.len() {
                    0 => Vec::new(),
                    n => seeds[next() as usize % n].clone(),
                };
                for _ in 0..next() % 4 {
                    match next() % 4 {
                        0 if !input.is_empty() => {
                            let i = next() as usize % input.len();
                            input[i] ^= 1 << (next() % 8);
                        }
                        1 if !input.is_empty() => {
                            let i = next() as usize % input.len();
                            input[i] = next() as u8;
                        }
                        2 => input.truncate(next() as usize % (input.len() + 1)),
                        _ => input.extend((0..next() % 16).map(|_| next() as u8)),
                    }
                }
                target(&input);
            }
        }
    }

    #[test]
    fn tiny_inputs_pass() {
        for (_, target) in TARGETS {
            target(&[]);
            for b in 0..=255u8 {
                target(&[b]);
                target(&[b, b]);
                target(&[b, 0x80, 0, 0]);
            }
        }
    }
}

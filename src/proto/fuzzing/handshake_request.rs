//! The `handshake_request` target: a client's opening handshake, parsed and answered.

use super::heads::{
    HEAD_MAX, HEADER_SLOTS, Outcome, PROTOCOLS, borrows_from, check_error_response, check_head,
    check_prefixes, is_tchar,
};
use crate::proto::deflate::DeflateConfig;
use crate::proto::handshake::{
    self, EMPTY_HEADER, HandshakeError, Status, parse_request, parse_response, write_accept,
};

fn request_outcome(buf: &[u8]) -> Outcome {
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    match parse_request(buf, &mut headers, HEAD_MAX) {
        Ok(Status::Partial) => Outcome::Partial,
        Ok(Status::Complete(req)) => Outcome::Complete { len: req.len, headers: req.headers.len() },
        Err(e) => Outcome::Failed(e),
    }
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

//! What the two handshake targets share: limits, the restartable-parse check, the shape of
//! a parsed head, and the check of an error answer.

use crate::proto::handshake::{EMPTY_HEADER, HandshakeError, Header, Status, parse_response};

/// Head size limit for both handshake targets: small, so the fuzzer reaches it.
pub(super) const HEAD_MAX: usize = 1024;

/// Header lines the handshake targets have room for.
pub(super) const HEADER_SLOTS: usize = 16;

/// The key the response target's client sent (RFC 6455 §1.3).
pub(super) const CLIENT_KEY: [u8; 24] = *b"dGhlIHNhbXBsZSBub25jZQ==";

/// The subprotocols the server supports / the client offers.
pub(super) const PROTOCOLS: [&str; 3] = ["chat", "superchat", "v2.chat"];

/// What parsing a (possibly partial) head gave, comparable across prefixes of one input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Partial,
    Complete { len: usize, headers: usize },
    Failed(HandshakeError),
}

/// Parsing is restartable: a prefix of the input must agree with the whole input. A complete
/// head is `Partial` at every shorter cut and the same head at every longer one; an error seen
/// in a prefix is the whole input's error; a `Partial` input has only `Partial` prefixes.
pub(super) fn check_prefixes(data: &[u8], full: Outcome, parse: fn(&[u8]) -> Outcome) {
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
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in a field value: VCHAR, obs-text, SP, HTAB.
pub(super) fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

pub(super) fn is_ows(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Whether `part` borrows from inside `whole`.
pub(super) fn borrows_from(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr_range(), part.as_ptr_range());
    w.start <= p.start && p.end <= w.end
}

/// What every parsed head (request or response) must look like.
pub(super) fn check_head(head: &[u8], headers: &[Header<'_>]) {
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
pub(super) fn check_error_response(error: HandshakeError) {
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
    let connection: &[u8] = if error.status() == 426 { b"Upgrade, close" } else { b"close" };
    assert_eq!(resp.header("connection"), Some(connection));
    assert_eq!(resp.validate(&CLIENT_KEY, &PROTOCOLS), Err(HandshakeError::UnexpectedStatus(error.status())));
}

//! The `handshake_response` target: a server's answer, parsed and validated by a client.

use super::heads::{
    CLIENT_KEY, HEAD_MAX, HEADER_SLOTS, Outcome, PROTOCOLS, check_head, check_prefixes, is_field_byte,
};
use crate::proto::deflate::DeflateConfig;
use crate::proto::handshake::{self, EMPTY_HEADER, HandshakeError, Status, parse_response};

fn response_outcome(buf: &[u8]) -> Outcome {
    let mut headers = [EMPTY_HEADER; HEADER_SLOTS];
    match parse_response(buf, &mut headers, HEAD_MAX) {
        Ok(Status::Partial) => Outcome::Partial,
        Ok(Status::Complete(resp)) => Outcome::Complete { len: resp.len, headers: resp.headers.len() },
        Err(e) => Outcome::Failed(e),
    }
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

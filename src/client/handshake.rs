//! The opening handshake over a blocking `TcpStream` (TLS first, for `wss://`): connect,
//! write the request, read and check the response.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Instant;

use bytes::BytesMut;

use crate::proto::deflate::{DeflateConfig, DeflateParams};
use crate::proto::handshake::{
    ClientRequest, EMPTY_HEADER, HandshakeError, MAX_HEADERS, Status, generate_key, is_field_value, is_token,
    parse_response,
};

use super::error::ClientError;
use super::tls::Stream;
use super::url::WsUrl;

/// Largest response head accepted from a server.
const MAX_RESPONSE_SIZE: usize = 16 * 1024;

/// Headers the handshake writes itself; an extra header may not repeat them.
const RESERVED_HEADERS: [&str; 8] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "content-length",
];

/// What the request offers.
pub(super) struct Offer<'a> {
    pub(super) protocols: &'a [String],
    pub(super) deflate: Option<&'a DeflateConfig>,
    pub(super) headers: &'a [(String, String)],
}

/// What the server accepted, and the bytes it sent after its response head.
pub(super) struct Negotiated {
    pub(super) protocol: Option<String>,
    pub(super) deflate: Option<DeflateParams>,
    pub(super) leftover: BytesMut,
}

/// Checks what [`ClientRequest::write`] would otherwise panic on, and the headers the
/// handshake owns.
pub(super) fn check_offer(offer: &Offer<'_>) -> Result<(), ClientError> {
    if let Some(p) = offer.protocols.iter().find(|p| !is_token(p.as_bytes())) {
        return Err(ClientError::InvalidRequest(format!("subprotocol {p:?} is not a token")));
    }
    for (name, value) in offer.headers {
        if !is_token(name.as_bytes()) {
            return Err(ClientError::InvalidRequest(format!("header name {name:?} is not a token")));
        }
        if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(ClientError::InvalidRequest(format!("header {name} is set by the handshake")));
        }
        if !is_field_value(value.as_bytes()) {
            return Err(ClientError::InvalidRequest(format!("invalid value for header {name}")));
        }
    }
    Ok(())
}

/// Opens a TCP connection to the first address of `url` that answers before `deadline`.
pub(super) fn connect_tcp(url: &WsUrl, deadline: Instant) -> Result<TcpStream, ClientError> {
    let mut last = None;
    for addr in url.socket_addrs()? {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ClientError::Timeout);
        }
        match TcpStream::connect_timeout(&addr, remaining) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(ClientError::Timeout, ClientError::from))
}

/// Runs the handshake for `url` on `stream` (the TLS handshake first), which has no timeouts
/// set on return.
pub(super) fn handshake(
    stream: &mut Stream,
    url: &WsUrl,
    offer: &Offer<'_>,
    deadline: Instant,
) -> Result<Negotiated, ClientError> {
    let key = generate_key(&mut rand::rng());
    let protocols: Vec<&str> = offer.protocols.iter().map(String::as_str).collect();
    let headers: Vec<(&str, &str)> = offer.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let extensions = offer.deflate.map(DeflateConfig::client_offer);
    let host = url.host_header();
    let request = ClientRequest {
        protocols: &protocols,
        extensions: extensions.as_deref(),
        extra_headers: &headers,
        ..ClientRequest::new(&host, url.resource(), key)
    };
    let mut wire = Vec::with_capacity(256);
    request.write(&mut wire);
    set_timeouts(stream.tcp(), deadline)?;
    stream.complete_handshake()?;
    set_timeouts(stream.tcp(), deadline)?;
    stream.write_all(&wire)?;

    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let mut scratch = [EMPTY_HEADER; MAX_HEADERS];
        if let Status::Complete(_) = parse_response(&buf, &mut scratch, MAX_RESPONSE_SIZE)? {
            break;
        }
        set_timeouts(stream.tcp(), deadline)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
    stream.tcp().set_read_timeout(None)?;
    stream.tcp().set_write_timeout(None)?;

    let mut scratch = [EMPTY_HEADER; MAX_HEADERS];
    let response = parse_response(&buf, &mut scratch, MAX_RESPONSE_SIZE)?
        .complete()
        .ok_or(HandshakeError::MalformedResponse)?;
    let accepted = response.validate(&key, &protocols)?;
    let deflate = match offer.deflate {
        Some(config) => config.accept_response(accepted.extensions())?,
        None if accepted.extensions().any(|v| !v.trim_ascii().is_empty()) => {
            return Err(HandshakeError::UnexpectedExtension.into());
        }
        None => None,
    };
    Ok(Negotiated {
        protocol: accepted.protocol().map(str::to_owned),
        deflate,
        leftover: BytesMut::from(&buf[response.len..]),
    })
}

fn set_timeouts(stream: &TcpStream, deadline: Instant) -> Result<(), ClientError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ClientError::Timeout);
    }
    stream.set_read_timeout(Some(remaining))?;
    stream.set_write_timeout(Some(remaining))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(protocols: &[&str], headers: &[(&str, &str)]) -> Result<(), ClientError> {
        let protocols: Vec<String> = protocols.iter().map(|p| (*p).to_owned()).collect();
        let headers: Vec<(String, String)> =
            headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        check_offer(&Offer { protocols: &protocols, deflate: None, headers: &headers })
    }

    #[test]
    fn offers_that_would_inject_are_refused() {
        assert!(check(&["chat", "v2.chat"], &[("Authorization", "Bearer a b"), ("Origin", "x")]).is_ok());
        assert!(check(&["a b"], &[]).is_err());
        assert!(check(&[""], &[]).is_err());
        assert!(check(&[], &[("X-A", "x\r\nEvil: 1")]).is_err());
        assert!(check(&[], &[("Bad Name", "x")]).is_err());
        assert!(check(&[], &[("Sec-WebSocket-Key", "x")]).is_err());
        assert!(check(&[], &[("HOST", "x")]).is_err());
    }
}

//! What can go wrong on the client side.

use std::{fmt, io};

use crate::proto::conn::SendError;
use crate::proto::deflate::NegotiationError;
use crate::proto::handshake::HandshakeError;
use crate::proto::{self, CloseCode};

use super::tls::CertificateReason;
use super::url::UrlError;

/// Why a client operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The transport failed: connection refused or reset, broken pipe, DNS failure.
    Io(io::Error),
    /// The URL is not a usable `ws://` or `wss://` URL.
    Url(UrlError),
    /// `wss://`: the server's certificate was refused. Not an I/O error: the connection worked,
    /// the server is not who the URL names, or cannot be trusted without more configuration
    /// (a self-signed server needs its CA given with
    /// [`ClientBuilder::ca_file`](super::ClientBuilder::ca_file)).
    Certificate {
        /// Why, in a form to match on.
        reason: CertificateReason,
        /// The verifier's own words (the names the certificate holds, its validity dates).
        detail: String,
    },
    /// `wss://`: the TLS session failed otherwise (an alert from the server, no protocol
    /// version or cipher suite in common, a corrupt record).
    Tls(rustls::Error),
    /// `wss://`: the TLS options cannot be used (a CA file that cannot be read or holds no
    /// certificate, a host that is not a valid server name).
    TlsSetup(String),
    /// The request cannot be written: a subprotocol that is not a token, a header name or
    /// value that is invalid, or a header the handshake sets itself.
    InvalidRequest(String),
    /// The server refused the upgrade or answered it wrongly. A refusal carries the HTTP
    /// status ([`HandshakeError::UnexpectedStatus`], also given by [`status`](Self::status)),
    /// e.g. 401, 403, 404 or 429.
    Handshake(HandshakeError),
    /// The server's `Sec-WebSocket-Extensions` answer is not acceptable for our offer.
    Extension(NegotiationError),
    /// The server broke the protocol or a limit; the matching Close frame (1002, 1007 or
    /// 1009) was sent and the connection is over.
    Protocol(proto::Error),
    /// The frame cannot be sent: a control payload over 125 bytes, a close reason over 123
    /// bytes, or a close code that may not go on the wire.
    Send(SendError),
    /// The connection is over: `code` is the server's close code, or
    /// [`CloseCode::ABNORMAL`] (1006) when the transport ended without a Close frame.
    Closed {
        /// The close code.
        code: CloseCode,
        /// The close reason (or a description, for 1006).
        reason: String,
    },
    /// Connecting, the handshake or the closing handshake took longer than allowed.
    Timeout,
    /// A reconnecting client is between connections.
    NotConnected,
}

impl ClientError {
    /// The HTTP status of a refused handshake (any answer other than 101), e.g. 401, 403, 404,
    /// 429 or 503.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Handshake(HandshakeError::UnexpectedStatus(status)) => Some(*status),
            _ => None,
        }
    }

    /// The close code, for [`Closed`](Self::Closed).
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: transport failures, timeouts, protocol errors,
    /// TLS session failures, abnormal closes, and refusals with 408, 429 or a 5xx status. Not:
    /// a normal close (1000), another 4xx refusal (the request itself is wrong or
    /// unauthorized), a refused certificate or unusable TLS options, a bad URL or request, an
    /// unacceptable extension answer, or a send that cannot be framed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io(_) | Self::Timeout | Self::Protocol(_) | Self::NotConnected => true,
            Self::Closed { code, .. } => *code != CloseCode::NORMAL,
            Self::Handshake(HandshakeError::UnexpectedStatus(status)) => {
                matches!(status, 408 | 429 | 500..=599)
            }
            Self::Handshake(_) | Self::Tls(_) => true,
            Self::Url(_)
            | Self::InvalidRequest(_)
            | Self::Extension(_)
            | Self::Send(_)
            | Self::Certificate { .. }
            | Self::TlsSetup(_) => false,
        }
    }

    /// The reason a certificate was refused, for [`Certificate`](Self::Certificate).
    pub fn certificate_reason(&self) -> Option<CertificateReason> {
        match self {
            Self::Certificate { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The error of a failed TLS session: a certificate error has its own kind.
    pub(crate) fn from_tls(error: rustls::Error) -> Self {
        match error {
            rustls::Error::InvalidCertificate(cert) => {
                Self::Certificate { reason: CertificateReason::of(&cert), detail: cert.to_string() }
            }
            other => Self::Tls(other),
        }
    }

    pub(super) fn abnormal(reason: &str) -> Self {
        Self::Closed { code: CloseCode::ABNORMAL, reason: reason.to_owned() }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Url(e) => write!(f, "invalid URL: {e}"),
            Self::Certificate { reason, detail } => {
                write!(f, "server certificate refused ({reason}): {detail}")
            }
            Self::Tls(e) => write!(f, "TLS error: {e}"),
            Self::TlsSetup(what) => write!(f, "TLS setup: {what}"),
            Self::InvalidRequest(what) => write!(f, "invalid request: {what}"),
            Self::Handshake(HandshakeError::UnexpectedStatus(status)) => {
                write!(f, "handshake refused with HTTP status {status}")
            }
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::Extension(e) => write!(f, "extension negotiation failed: {e}"),
            Self::Protocol(e) => write!(f, "{e}"),
            Self::Send(e) => write!(f, "cannot send: {e}"),
            Self::Closed { code, reason } if reason.is_empty() => write!(f, "connection closed ({})", code.0),
            Self::Closed { code, reason } => write!(f, "connection closed ({}: {reason})", code.0),
            Self::Timeout => f.write_str("timed out"),
            Self::NotConnected => f.write_str("not connected"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Url(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::Handshake(e) => Some(e),
            Self::Extension(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Send(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        // rustls reports a failed session as `InvalidData` wrapping its own error.
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Self::from_tls(tls.clone());
        }
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Self::Timeout,
            _ => Self::Io(e),
        }
    }
}

impl From<UrlError> for ClientError {
    fn from(e: UrlError) -> Self {
        Self::Url(e)
    }
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(e)
    }
}

impl From<NegotiationError> for ClientError {
    fn from(e: NegotiationError) -> Self {
        Self::Extension(e)
    }
}

impl From<proto::Error> for ClientError {
    fn from(e: proto::Error) -> Self {
        Self::Protocol(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_retry_policy() {
        let refused = |s| ClientError::Handshake(HandshakeError::UnexpectedStatus(s));
        assert_eq!(refused(403).status(), Some(403));
        assert_eq!(refused(403).to_string(), "handshake refused with HTTP status 403");
        assert!(!refused(401).is_retryable());
        assert!(!refused(404).is_retryable());
        assert!(refused(429).is_retryable());
        assert!(refused(503).is_retryable());
        assert!(ClientError::Timeout.is_retryable());
        assert_eq!(ClientError::Timeout.status(), None);
        let normal = ClientError::Closed { code: CloseCode::NORMAL, reason: "bye".into() };
        assert!(!normal.is_retryable());
        assert_eq!(normal.to_string(), "connection closed (1000: bye)");
        assert_eq!(normal.close_code(), Some(CloseCode::NORMAL));
        assert!(ClientError::abnormal("").is_retryable());
        assert!(!ClientError::Url(UrlError::MissingScheme).is_retryable());
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "t");
        assert!(matches!(ClientError::from(timeout), ClientError::Timeout));
    }

    #[test]
    fn tls_errors_inside_io_errors() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, cert);
        let error = ClientError::from(wrapped);
        assert_eq!(error.certificate_reason(), Some(CertificateReason::UnknownIssuer));
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("unknown issuer"), "{error}");
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let error = ClientError::from(io::Error::new(io::ErrorKind::InvalidData, alert));
        assert!(matches!(error, ClientError::Tls(_)), "{error:?}");
        assert!(error.is_retryable());
        let plain = ClientError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(plain, ClientError::Io(_)));
    }
}

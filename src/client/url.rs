//! `ws://` and `wss://` URLs (RFC 6455 §3).
//!
//! ```text
//! ws-URI  = "ws:" "//" host [ ":" port ] path [ "?" query ]
//! wss-URI = "wss:" "//" host [ ":" port ] path [ "?" query ]
//! ```
//!
//! `wss://` connections go through TLS (default port 443). Fragments are refused: "Fragment identifiers are
//! meaningless in the context of WebSocket URIs and MUST NOT be used on these URIs" (RFC 6455
//! §3), and so is user information (`user:pass@host`), which has no place in a WebSocket
//! handshake (send an `Authorization` header instead).

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::str::FromStr;

/// The port of `ws://` URLs that name none.
pub const DEFAULT_PORT: u16 = 80;

/// The port of `wss://` URLs that name none.
pub const DEFAULT_TLS_PORT: u16 = 443;

/// A parsed `ws[s]://host[:port]/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WsUrl {
    /// `wss://`.
    tls: bool,
    /// Host name or address, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// Whether the URL named the port explicitly.
    explicit_port: bool,
    /// Path and query, starting with `/`.
    resource: String,
}

/// Why a string is not a usable WebSocket URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://` prefix.
    MissingScheme,
    /// A scheme other than `ws` (or `wss`).
    UnsupportedScheme(String),
    /// The authority is empty or the host is malformed.
    InvalidHost,
    /// The port is not a number from 1 to 65535.
    InvalidPort,
    /// `user:pass@` in the authority.
    UserInfo,
    /// A `#fragment` (RFC 6455 §3: fragments "MUST NOT be used").
    Fragment,
    /// A character that may not appear in a request target (space, control, non-ASCII):
    /// percent-encode it.
    InvalidCharacter(char),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingScheme => f.write_str("missing scheme: expected ws://host[:port]/path"),
            Self::UnsupportedScheme(scheme) => {
                write!(f, "unsupported scheme {scheme:?}: expected ws:// or wss://")
            }
            Self::InvalidHost => f.write_str("missing or invalid host"),
            Self::InvalidPort => f.write_str("invalid port"),
            Self::UserInfo => f.write_str("user information in the URL is not supported"),
            Self::Fragment => f.write_str("WebSocket URLs must not have a #fragment"),
            Self::InvalidCharacter(c) => write!(f, "invalid character {c:?} in the URL (percent-encode it)"),
        }
    }
}

impl std::error::Error for UrlError {}

impl WsUrl {
    /// Parses `ws[s]://host[:port][/path][?query]`. The scheme is case-insensitive; a missing
    /// path is `/`; the port defaults to 80 (`wss://`: 443).
    ///
    /// # Errors
    ///
    /// See [`UrlError`].
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let input = input.trim();
        let (scheme, rest) = input.split_once("://").ok_or(UrlError::MissingScheme)?;
        let tls = if scheme.eq_ignore_ascii_case("wss") {
            true
        } else if scheme.eq_ignore_ascii_case("ws") {
            false
        } else {
            return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
        };
        if let Some(c) = rest.chars().find(|&c| !c.is_ascii_graphic()) {
            return Err(UrlError::InvalidCharacter(c));
        }
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_authority(authority)?;
        let resource = if resource.starts_with('/') { resource.to_owned() } else { format!("/{resource}") };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port: port.unwrap_or(if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT }),
            explicit_port: port.is_some(),
            resource,
        })
    }

    /// Whether the URL is `wss://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `"wss"` or `"ws"`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "wss" } else { "ws" }
    }

    /// The host, without brackets for an IPv6 literal.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when the URL names none; `wss://`: 443).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target: path and query, starting with `/`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.resource.split_once('?').map_or(&self.resource, |(path, _)| path)
    }

    /// The query, without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.resource.split_once('?').map(|(_, query)| query)
    }

    /// The `Host` header value: the host (bracketed if IPv6), plus `:port` unless it is the
    /// scheme's default (80, `wss://`: 443).
    pub fn host_header(&self) -> String {
        let mut out = self.bracketed_host();
        if self.port != (if self.tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT }) {
            out.push(':');
            out.push_str(&self.port.to_string());
        }
        out
    }

    /// Resolves the host (DNS for names) to socket addresses, in the resolver's order.
    ///
    /// # Errors
    ///
    /// When resolution fails or yields nothing.
    pub fn socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolved to no address", self.host),
            ));
        }
        Ok(addrs)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() }
    }
}

/// Splits `host[:port]` or `[v6]:port`; the port is `None` when absent.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), UrlError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::InvalidHost)?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::InvalidHost);
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::InvalidHost)?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)));
    if !host_ok {
        return Err(UrlError::InvalidHost);
    }
    let port = match port {
        None => None,
        // "ws://host:/" names no port: the default applies (RFC 3986 §3.2.3).
        Some("") => None,
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(UrlError::InvalidPort),
        },
    };
    Ok((host, port))
}

impl FromStr for WsUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.bracketed_host())?;
        if self.explicit_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parts() {
        let url = WsUrl::parse("ws://example.com:9001/chat?room=1&x=y").unwrap();
        assert_eq!((url.host(), url.port(), url.resource()), ("example.com", 9001, "/chat?room=1&x=y"));
        assert_eq!((url.path(), url.query()), ("/chat", Some("room=1&x=y")));
        assert_eq!(url.host_header(), "example.com:9001");
        assert_eq!(url.to_string(), "ws://example.com:9001/chat?room=1&x=y");
    }

    #[test]
    fn defaults() {
        let url = WsUrl::parse("WS://example.com").unwrap();
        assert_eq!((url.port(), url.resource(), url.query()), (80, "/", None));
        assert_eq!(url.host_header(), "example.com");
        assert_eq!(url.to_string(), "ws://example.com/");
        let url = WsUrl::parse("ws://h?x=1").unwrap();
        assert_eq!((url.path(), url.query()), ("/", Some("x=1")));
        assert_eq!(WsUrl::parse("ws://h:/a").unwrap().port(), 80);
        assert_eq!(WsUrl::parse("ws://h:80/").unwrap().host_header(), "h");
    }

    #[test]
    fn wss() {
        let url = WsUrl::parse("WSS://example.com/chat").unwrap();
        assert!(url.is_tls());
        assert_eq!((url.scheme(), url.port(), url.host_header()), ("wss", 443, "example.com".into()));
        assert_eq!(url.to_string(), "wss://example.com/chat");
        let url = WsUrl::parse("wss://localhost:8443").unwrap();
        assert_eq!((url.port(), url.host_header()), (8443, "localhost:8443".into()));
        assert_eq!(url.to_string(), "wss://localhost:8443/");
        assert_eq!(WsUrl::parse("wss://h:80/").unwrap().host_header(), "h:80");
        assert!(!WsUrl::parse("ws://h/").unwrap().is_tls());
    }

    #[test]
    fn ipv6() {
        let url: WsUrl = "ws://[::1]:8080/x".parse().unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 8080));
        assert_eq!(url.host_header(), "[::1]:8080");
        assert_eq!(url.to_string(), "ws://[::1]:8080/x");
        assert_eq!(url.socket_addrs().unwrap(), ["[::1]:8080".parse().unwrap()]);
        assert_eq!(WsUrl::parse("ws://[::1]/").unwrap().host_header(), "[::1]");
        assert_eq!(WsUrl::parse("ws://[nothost]:1/"), Err(UrlError::InvalidHost));
        assert_eq!(WsUrl::parse("ws://[::1/"), Err(UrlError::InvalidHost));
        assert_eq!(WsUrl::parse("ws://[::1]x/"), Err(UrlError::InvalidHost));
    }

    #[test]
    fn resolves_ipv4() {
        let url = WsUrl::parse("ws://127.0.0.1:9/").unwrap();
        assert_eq!(url.socket_addrs().unwrap(), ["127.0.0.1:9".parse().unwrap()]);
    }

    #[test]
    fn rejections() {
        use UrlError::*;
        assert_eq!(WsUrl::parse("http://example.com/"), Err(UnsupportedScheme("http".into())));
        assert_eq!(WsUrl::parse("example.com/"), Err(MissingScheme));
        assert_eq!(WsUrl::parse("ws:///x"), Err(InvalidHost));
        assert_eq!(WsUrl::parse("ws://h:0/"), Err(InvalidPort));
        assert_eq!(WsUrl::parse("ws://h:65536/"), Err(InvalidPort));
        assert_eq!(WsUrl::parse("ws://h:+1/"), Err(InvalidPort));
        assert_eq!(WsUrl::parse("ws://h:x/"), Err(InvalidPort));
        assert_eq!(WsUrl::parse("ws://u:p@h/"), Err(UserInfo));
        assert_eq!(WsUrl::parse("ws://h/#top"), Err(Fragment));
        assert_eq!(WsUrl::parse("ws://h/a b"), Err(InvalidCharacter(' ')));
        assert_eq!(WsUrl::parse("ws://h/é"), Err(InvalidCharacter('é')));
        assert_eq!(WsUrl::parse("ws://h\"/"), Err(InvalidHost));
    }
}

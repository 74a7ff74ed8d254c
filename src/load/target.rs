//! The targets: `ws://` and `wss://` URLs resolved once, which connection goes to which, and the local
//! addresses to connect from.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::{LoadError, procfs};

/// Connections per local source address before the next one is used (a little under the
/// 28,232 ports of Linux's default ephemeral range).
const PER_SOURCE: usize = 28_000;

/// Where the connections go.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The resolved address.
    pub(crate) addr: SocketAddr,
    /// The `Host` header: the authority as written in the URL.
    pub(crate) host: String,
    /// The request target: path and query.
    pub(crate) path: String,
    /// `wss://`: the name the server's certificate is checked against (and sent as SNI).
    pub(crate) tls: Option<ServerName<'static>>,
    /// Connections per source address, when the target is on 127.0.0.0/8.
    per_source: Option<usize>,
}

impl Target {
    /// Parses `ws[s]://host[:port][/path][?query]` and resolves the host.
    pub(crate) fn resolve(url: &str) -> Result<Self, LoadError> {
        let Split { tls, host, port, authority, path } =
            split(url).map_err(|why| LoadError::Url(format!("{url}: {why}")))?;
        let tls = match tls {
            true => Some(
                crate::client::tls::server_name(&host)
                    .map_err(|why| LoadError::Url(format!("{url}: {why}")))?,
            ),
            false => None,
        };
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|source| LoadError::Resolve { host: host.clone(), source })?
            .collect();
        // Prefer IPv4: servers commonly listen on 0.0.0.0 only.
        let Some(addr) = addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()).copied() else {
            let source = io::Error::new(io::ErrorKind::NotFound, "no address");
            return Err(LoadError::Resolve { host, source });
        };
        let per_source = match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {
                Some(procfs::ephemeral_ports().map_or(PER_SOURCE, |n| n.clamp(1024, PER_SOURCE)))
            }
            _ => None,
        };
        Ok(Self { addr, host: authority, path, tls, per_source })
    }

    /// One blocking TCP connect, so that a wrong port is one clear error rather than a
    /// summary full of refused connections.
    pub(crate) fn probe(&self, timeout: Duration) -> Result<(), LoadError> {
        TcpStream::connect_timeout(&self.addr, timeout)
            .map(drop)
            .map_err(|source| LoadError::Unreachable { addr: self.addr, source })
    }

    /// The local address connection slot `slot` binds to: none for the first 28,000, then
    /// 127.0.0.2, 127.0.0.3 ... for a target on the loopback network (each source address has
    /// its own ephemeral ports).
    pub(crate) fn source(&self, slot: usize) -> Option<IpAddr> {
        let per = self.per_source?;
        let n = u32::try_from(slot / per).ok().filter(|&n| n > 0)?;
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
        let ip = base.checked_add(n).filter(|&ip| ip < u32::from(Ipv4Addr::new(128, 0, 0, 0)))?;
        Some(IpAddr::V4(Ipv4Addr::from(ip)))
    }
}

/// One URL of the run (a node, in a cluster): where connections go.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The URL as given.
    pub(crate) url: String,
    pub(crate) target: Target,
}

/// Which node each connection slot goes to: the publishers (the first slots) round-robin over
/// the publish URLs, the other connections round-robin over the subscribe URLs. A URL given
/// twice is one node that gets two turns of the round-robin.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// Every distinct URL, publish URLs first, in the order given.
    pub(crate) nodes: Vec<Node>,
    /// Node indices the publishers take turns over.
    publish: Vec<usize>,
    /// Node indices the other connections take turns over.
    subscribe: Vec<usize>,
    /// Slots that publish.
    publishers: usize,
}

impl Route {
    /// Resolves every URL; the first `publishers` slots go round-robin over `publish`, the
    /// others over `subscribe` (neither may be empty).
    pub(crate) fn resolve(
        publish: &[String],
        subscribe: &[String],
        publishers: usize,
    ) -> Result<Self, LoadError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut index = |url: &String| -> Result<usize, LoadError> {
            if let Some(i) = nodes.iter().position(|n| n.url == *url) {
                return Ok(i);
            }
            nodes.push(Node { url: url.clone(), target: Target::resolve(url)? });
            Ok(nodes.len() - 1)
        };
        let publish = publish.iter().map(&mut index).collect::<Result<Vec<_>, _>>()?;
        let subscribe = subscribe.iter().map(&mut index).collect::<Result<Vec<_>, _>>()?;
        if publish.is_empty() || subscribe.is_empty() {
            return Err(LoadError::Config("no URL to connect to".into()));
        }
        Ok(Self { nodes, publish, subscribe, publishers })
    }

    /// The node connection slot `slot` goes to.
    pub(crate) fn node(&self, slot: usize) -> usize {
        if slot < self.publishers {
            self.publish[slot % self.publish.len()]
        } else {
            self.subscribe[(slot - self.publishers) % self.subscribe.len()]
        }
    }

    /// Where connection slot `slot` goes.
    pub(crate) fn target(&self, slot: usize) -> &Target {
        &self.nodes[self.node(slot)].target
    }

    /// Publishing and other connections per node, over `slots` slots.
    pub(crate) fn spread(&self, slots: usize) -> Vec<(u64, u64)> {
        let mut counts = vec![(0, 0); self.nodes.len()];
        for slot in 0..slots {
            let count = &mut counts[self.node(slot)];
            if slot < self.publishers {
                count.0 += 1;
            } else {
                count.1 += 1;
            }
        }
        counts
    }
}

/// The parts of a URL.
#[derive(Debug)]
struct Split {
    tls: bool,
    host: String,
    port: u16,
    /// For `Host`: as written.
    authority: String,
    /// The request target.
    path: String,
}

/// Splits a URL into scheme, host, port, authority (for `Host`) and request target.
fn split(url: &str) -> Result<Split, &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected ws://host[:port]/path or wss://");
    };
    let tls = if scheme.eq_ignore_ascii_case("wss") {
        true
    } else if scheme.eq_ignore_ascii_case("ws") {
        false
    } else {
        return Err("the scheme must be ws:// or wss://");
    };
    if rest.contains('#') {
        return Err("fragments are not allowed in WebSocket URLs");
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, resource) = rest.split_at(end);
    if authority.contains('@') {
        return Err("user information is not supported");
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or("unclosed [ in the host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or("invalid port")?,
    };
    let path = match resource {
        "" => "/".to_string(),
        r if r.starts_with('?') => format!("/{r}"),
        r => r.to_string(),
    };
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the path must be visible ASCII (percent-encode the rest)");
    }
    Ok(Split { tls, host: host.to_string(), port, authority: authority.to_string(), path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let s = split("ws://127.0.0.1:8080/echo?x=1").unwrap();
        assert_eq!(
            (s.tls, s.host.as_str(), s.port, s.authority.as_str(), s.path.as_str()),
            (false, "127.0.0.1", 8080, "127.0.0.1:8080", "/echo?x=1")
        );
        let s = split("WS://localhost").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.path.as_str()), ("localhost", 80, "/"));
        let s = split("ws://[::1]:9/").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.authority.as_str()), ("::1", 9, "[::1]:9"));
        let s = split("wss://example.com/ws").unwrap();
        assert_eq!((s.tls, s.port, s.authority.as_str()), (true, 443, "example.com"));
        assert_eq!(split("WSS://h:8443").unwrap().port, 8443);
        assert!(split("http://x/").is_err());
        assert!(split("ws://x:0/").is_err());
        assert!(split("ws://x:99999/").is_err());
        assert!(split("ws:///path").is_err());
        assert!(split("ws://x/#frag").is_err());
        assert!(split("127.0.0.1:8080").is_err());
    }

    #[test]
    fn routes_publishers_and_subscribers() {
        let urls = |list: &[&str]| list.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let (a, b, c) = ("ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws", "ws://127.0.0.1:3/ws");
        // Publishers on the first URL, subscribers over all three.
        let route = Route::resolve(&urls(&[a]), &urls(&[a, b, c]), 2).unwrap();
        assert_eq!(route.nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>(), [a, b, c]);
        let nodes: Vec<usize> = (0..8).map(|slot| route.node(slot)).collect();
        assert_eq!(nodes, [0, 0, 0, 1, 2, 0, 1, 2]);
        assert_eq!(route.target(3).addr.port(), 2);
        assert_eq!(route.spread(8), [(2, 2), (0, 2), (0, 2)]);
        // Publishers spread too; a URL given twice is one node with two turns.
        let route = Route::resolve(&urls(&[b, c]), &urls(&[a, a, b]), 2).unwrap();
        assert_eq!(route.nodes.len(), 3);
        assert_eq!(route.spread(8), [(1, 2), (1, 0), (0, 4)], "nodes b, c, a");
        assert!(Route::resolve(&[], &urls(&[a]), 0).is_err());
        assert!(matches!(Route::resolve(&urls(&[a]), &urls(&["ws://x:0/"]), 0), Err(LoadError::Url(_))));
    }

    #[test]
    fn source_addresses_past_the_port_range() {
        let target = Target {
            addr: "127.0.0.1:8080".parse().unwrap(),
            host: String::new(),
            path: "/".into(),
            tls: None,
            per_source: Some(28_000),
        };
        assert_eq!(target.source(0), None);
        assert_eq!(target.source(27_999), None);
        assert_eq!(target.source(28_000), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(target.source(56_000), Some("127.0.0.3".parse().unwrap()));
        let remote = Target { per_source: None, ..target };
        assert_eq!(remote.source(100_000), None);
    }
}

//! TLS for the tests: certificates made on the spot with rcgen, and a small rustls client
//! over a std `TcpStream` (the WebSocket side is the protocol core, as in [`super::Peer`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hibiki::proto::{CloseCode, Connection, Event, MessageKind};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

/// A self-signed certificate for `localhost` and `127.0.0.1`, with its key, as PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

pub fn cert() -> TestCert {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
    TestCert {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

/// A client that trusts these certificates (and nothing else), offering ALPN `http/1.1`.
pub fn client_config(trusted: &[&TestCert]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A socket that can be told to write one byte per `write` call (each its own segment).
pub struct Sock {
    pub tcp: TcpStream,
    pub drip: bool,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.drip && !buf.is_empty() {
            let n = self.tcp.write(&buf[..1])?;
            std::thread::sleep(Duration::from_micros(200));
            return Ok(n);
        }
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

pub type TlsStream = StreamOwned<ClientConnection, Sock>;

/// Connects and completes the TLS handshake (`drip`: one byte per write, handshake included).
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, drip: bool) -> Result<TlsStream, rustls::Error> {
    let tcp = TcpStream::connect(addr).map_err(|e| rustls::Error::General(format!("connect: {e}")))?;
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name)?;
    let mut stream = StreamOwned::new(conn, Sock { tcp, drip });
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            // Say why, as a client does: the alert rustls queued.
            while stream.conn.wants_write() && stream.conn.write_tls(&mut stream.sock).is_ok() {}
            return Err(match e.into_inner().map(|inner| inner.downcast::<rustls::Error>()) {
                Some(Ok(tls)) => *tls,
                Some(Err(other)) => rustls::Error::General(other.to_string()),
                None => rustls::Error::General("I/O during the handshake".into()),
            });
        }
    }
    Ok(stream)
}

/// The certificate the server presented.
pub fn presented(stream: &TlsStream) -> CertificateDer<'static> {
    stream.conn.peer_certificates().expect("a server certificate")[0].clone().into_owned()
}

/// Sends a request over `https://` and reads the whole answer, which must end with the
/// server's `close_notify` (a cut without it is an error here).
pub fn https(addr: SocketAddr, config: &Arc<ClientConfig>, request: &[u8]) -> String {
    let mut stream = connect(addr, config, false).expect("TLS handshake");
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("the answer, ended by close_notify");
    String::from_utf8_lossy(&out).into_owned()
}

/// A WebSocket peer over `wss://`.
pub struct TlsPeer {
    pub stream: TlsStream,
    pub ws: Connection,
    pub input: BytesMut,
}

impl TlsPeer {
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> Self {
        Self::connect_with(addr, config, path, &[], false)
    }

    pub fn connect_with(
        addr: SocketAddr,
        config: &Arc<ClientConfig>,
        path: &str,
        protocols: &[&str],
        drip: bool,
    ) -> Self {
        let stream = connect(addr, config, drip).expect("TLS handshake");
        Self::upgrade(stream, addr, path, protocols)
    }

    /// The opening handshake over an established TLS stream.
    pub fn upgrade(mut stream: TlsStream, addr: SocketAddr, path: &str, protocols: &[&str]) -> Self {
        let (ws, input) = super::upgrade(&mut stream, addr, path, &[], false, protocols)
            .unwrap_or_else(|refused| panic!("not upgraded: {}", refused.head));
        Self { stream, ws, input }
    }

    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        let mut out = BytesMut::new();
        self.ws.send(kind, payload, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(MessageKind::Text, text.as_bytes());
    }

    /// The next event, reading as needed; `None` at EOF or timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.ws.poll_event(&mut self.input) {
                let mut out = BytesMut::new();
                self.ws.poll_transmit(&mut out);
                if !out.is_empty() {
                    let _ = self.stream.write_all(&out);
                }
                return Some(event);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream.sock.tcp.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next data message.
    pub fn recv(&mut self) -> Event {
        loop {
            match self.next_event(Duration::from_secs(5)) {
                Some(Event::Ping(_) | Event::Pong(_)) => continue,
                Some(event) => return event,
                None => panic!("no message"),
            }
        }
    }

    /// Sends a Close with `code`, and reads until the server's; its code.
    pub fn close(&mut self, code: CloseCode) -> CloseCode {
        let mut out = BytesMut::new();
        self.ws.close(code, "", &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
        loop {
            match self.next_event(Duration::from_secs(5)) {
                Some(Event::Close { code, .. }) => return code,
                Some(_) => continue,
                None => panic!("no close frame"),
            }
        }
    }
}

/// A `/ws` client speaking the JSON app protocol over `wss://`.
pub struct TlsClient {
    pub peer: TlsPeer,
    pub user: String,
}

impl TlsClient {
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Self {
        let peer = TlsPeer::connect_with(addr, config, "/ws", &["hibiki.v1.json"], false);
        let mut client = Self { peer, user: String::new() };
        let welcome = client.expect("welcome");
        client.user = welcome["payload"]["user"].as_str().unwrap().to_owned();
        client
    }

    pub fn send(&mut self, value: Value) {
        self.peer.send_text(&value.to_string());
    }

    /// The next envelope of type `kind`, skipping others.
    pub fn expect(&mut self, kind: &str) -> Value {
        for _ in 0..100 {
            match self.peer.next_event(Duration::from_secs(5)) {
                Some(Event::Text(text)) => {
                    let value: Value = serde_json::from_slice(&text).unwrap();
                    if value["type"] == kind {
                        return value;
                    }
                }
                Some(Event::Ping(_) | Event::Pong(_)) => {}
                other => panic!("waiting for {kind}: {other:?}"),
            }
        }
        panic!("no {kind} envelope");
    }

    pub fn join(&mut self, room: &str) {
        self.send(json!({"type": "join", "id": format!("join-{room}"), "payload": {"room": room}}));
        let ack = self.expect("ack");
        assert_eq!(ack["payload"]["ok"], true, "{ack}");
    }
}

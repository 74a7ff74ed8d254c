//! Helpers for integration tests: start a server on 127.0.0.1:0 and talk to it over raw
//! sockets with the protocol core, so tests can send exactly the bytes they mean.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hibiki::proto::deflate::DeflateConfig;
use hibiki::proto::handshake::client::{ClientRequest, generate_key, parse_response};
use hibiki::proto::handshake::{EMPTY_HEADER, Status};
use hibiki::proto::{CloseCode, Config, Connection, Event, MessageKind, Role};
use hibiki::reactor::{Handler, Running, ServerBuilder};

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn start<H: Handler>(builder: ServerBuilder, handler: H) -> Running<H> {
    builder.bind(local()).threads(1).start(handler).expect("server starts")
}

/// The opening handshake over any connected byte stream (plain or TLS): sends the request
/// (`headers`, the deflate offer, `protocols`), reads and checks the 101 and returns the
/// client-side protocol core with what came after the head; another status is `Refused`.
pub fn upgrade<S: Read + Write>(
    stream: &mut S,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    deflate: bool,
    protocols: &[&str],
) -> Result<(Connection, BytesMut), Refused> {
    let joined = protocols.join(", ");
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !protocols.is_empty() {
        all.push(("Sec-WebSocket-Protocol", &joined));
    }
    let (request, key) = request_bytes(addr, path, &all, deflate);
    stream.write_all(&request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "server closed during the handshake: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [EMPTY_HEADER; 32];
        match parse_response(&buf, &mut headers, 16 * 1024).expect("valid response") {
            Status::Partial => continue,
            Status::Complete(response) => {
                if response.code != 101 {
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    return Err(Refused { status: response.code, head });
                }
                let accepted = response.validate(&key, protocols).expect("valid 101");
                let params =
                    DeflateConfig::default().accept_response(accepted.extensions()).expect("deflate");
                let config = Config::default().max_message_size(64 << 20);
                let ws = match params {
                    Some(p) => Connection::with_deflate(Role::Client, config, p, &DeflateConfig::default()),
                    None => Connection::new(Role::Client, config, None),
                };
                return Ok((ws, BytesMut::from(&buf[response.len..])));
            }
        }
    }
}

/// A test peer: a socket, a client-side protocol core, and its input buffer.
pub struct Peer {
    pub stream: TcpStream,
    pub ws: Connection,
    pub input: BytesMut,
}

/// What the server answered instead of 101.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub head: String,
}

pub fn request_bytes(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    deflate: bool,
) -> (Vec<u8>, [u8; 24]) {
    let key = generate_key(&mut rand::rng());
    let host = addr.to_string();
    let offer = DeflateConfig::default().client_offer();
    let request = ClientRequest {
        extensions: deflate.then_some(offer.as_str()),
        extra_headers: headers,
        ..ClientRequest::new(&host, path, key)
    };
    let mut out = Vec::new();
    request.write(&mut out);
    (out, key)
}

impl Peer {
    pub fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::try_connect(addr, path, &[], false).expect("upgrade")
    }

    pub fn try_connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        deflate: bool,
    ) -> Result<Self, Refused> {
        Self::try_connect_with(addr, path, headers, deflate, &[])
    }

    pub fn try_connect_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        deflate: bool,
        protocols: &[&str],
    ) -> Result<Self, Refused> {
        let stream = TcpStream::connect(addr).expect("connect");
        Self::handshake_on(stream, addr, path, headers, deflate, protocols)
    }

    /// Connects from the local address `source` (e.g. `127.0.3.1`: another client to a
    /// proxy that balances by address).
    pub fn try_connect_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
        path: &str,
        protocols: &[&str],
    ) -> Result<Self, Refused> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).expect("bind the source address");
        socket.connect(&addr.into()).expect("connect");
        Self::handshake_on(socket.into(), addr, path, &[], false, protocols)
    }

    /// The opening handshake on a connected stream.
    pub fn handshake_on(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        deflate: bool,
        protocols: &[&str],
    ) -> Result<Self, Refused> {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (ws, input) = upgrade(&mut stream, addr, path, headers, deflate, protocols)?;
        Ok(Self { stream, ws, input })
    }

    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        let mut out = BytesMut::new();
        self.ws.send(kind, payload, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(MessageKind::Text, text.as_bytes());
    }

    /// Masks `payload` with a fixed key into a frame with the given first byte.
    pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        masked_frame(first, payload, [1, 2, 3, 4])
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
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
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
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

    /// Reads until the server's Close frame; its code.
    pub fn expect_close(&mut self) -> CloseCode {
        loop {
            match self.next_event(Duration::from_secs(5)) {
                Some(Event::Close { code, .. }) => return code,
                Some(Event::Failed(e)) => panic!("client side failure: {e}"),
                Some(_) => continue,
                None => panic!("no close frame before EOF/timeout"),
            }
        }
    }

    /// Whether the server closed the TCP connection within `timeout` (reading and dropping
    /// whatever comes first).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                Err(_) => return true,
            }
        }
        false
    }
}

/// A client frame as the wire carries it: `first` is the first byte as given (FIN, RSV bits and
/// opcode, so reserved values can be sent too), then the mask bit with the shortest length
/// encoding (RFC 6455 §5.2), the key, and the payload XORed with it (§5.3).
pub fn masked_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
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
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Sends a raw HTTP request and reads the whole answer (until the server closes).
pub fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}
pub mod app;
pub mod nginx;
pub mod nodes;
pub mod redis_server;
pub mod tls;
pub mod tls_proxy;

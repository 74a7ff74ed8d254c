//! TLS in the engine: `wss://` and `https://` on the same port (echo, broadcast, the hub,
//! SSE, `/metrics`), certificate reloads with the connections kept, and what is refused
//! before a handshake completes (plain HTTP, a bad ClientHello, a handshake left unfinished),
//! counted as the `tls` rejection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::tls::{TestCert, TlsClient, TlsPeer, cert, client_config, connect, https, presented};
use common::{eventually, local, status_of};
use hibiki::app::{ServeApp, ServeConfig};
use hibiki::proto::{CloseCode, Event, MessageKind};
use hibiki::reactor::{Rejection, Running, Server, ServerBuilder, TlsConfig};
use serde_json::json;

const API_KEY: &str = "api-key";

fn tls_of(cert: &TestCert) -> TlsConfig {
    TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
        .expect("the test certificate loads")
}

fn serve(builder: ServerBuilder, threads: usize) -> Running<ServeApp> {
    let mut config = ServeConfig::default();
    config.api_key = Some(API_KEY.into());
    builder
        .bind(local())
        .threads(threads)
        .tick(Some(Duration::from_millis(50)))
        .start(ServeApp::new(config))
        .expect("server starts")
}

fn tls_server(cert: &TestCert) -> Running<ServeApp> {
    serve(Server::builder().tls(tls_of(cert)), 2)
}

/// A TLS server and a peer on its `/echo` (the server runs while it is held).
fn wss_echo() -> (Running<ServeApp>, TlsPeer) {
    let cert = cert();
    let server = tls_server(&cert);
    let peer = TlsPeer::connect(server.local_addr(), &client_config(&[&cert]), "/echo");
    (server, peer)
}

fn rejected(server: &Running<ServeApp>, why: Rejection) -> u64 {
    server.handle().stats().snapshot().rejected(why)
}

#[test]
fn echo_over_wss_small_and_large_messages() {
    let (_server, mut peer) = wss_echo();
    assert_eq!(peer.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN offers http/1.1");
    for i in 0..100 {
        peer.send_text(&format!("hello {i}"));
        assert_eq!(peer.recv(), Event::Text(format!("hello {i}").into()));
    }
    // Larger than a TLS record and than rustls's send buffer: several records, several writes.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    peer.send(MessageKind::Binary, &big);
    assert_eq!(peer.recv(), Event::Binary(big.into()));
    assert_eq!(peer.close(CloseCode::NORMAL), CloseCode::NORMAL);
    let mut rest = Vec::new();
    assert!(peer.stream.read_to_end(&mut rest).is_ok(), "the server ends with close_notify");
}

#[test]
fn pipelined_messages_of_every_size_come_back_whole_and_in_order() {
    // Frames that end mid-record and mid-read: the unfinished one waits with its connection
    // and goes first when the rest is decrypted.
    let (_server, mut peer) = wss_echo();
    let sizes = [16_384, 7, 16_390, 33_000, 1, 65_536, 4_095, 70_001, 16_383, 200, 131_072, 3];
    let messages: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| ((i * 31 + j) % 253) as u8).collect())
        .collect();
    for message in &messages {
        peer.send(MessageKind::Binary, message);
    }
    for message in &messages {
        assert_eq!(peer.recv(), Event::Binary(message.clone().into()), "{} bytes", message.len());
    }
}

#[test]
fn a_frame_sent_in_small_records_one_read_each_comes_back_whole() {
    // Each read brings a little plaintext after the part of the frame the connection kept.
    let (_server, mut peer) = wss_echo();
    let message: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
    let mut frame = bytes::BytesMut::new();
    peer.ws.send(MessageKind::Binary, &message, &mut frame).unwrap();
    for piece in frame.chunks(999) {
        peer.stream.write_all(piece).unwrap();
        peer.stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(peer.recv(), Event::Binary(message.into()));
}

#[test]
fn broadcast_over_wss_reaches_every_member() {
    let cert = cert();
    let server = tls_server(&cert);
    let client = client_config(&[&cert]);
    let mut peers: Vec<TlsPeer> =
        (0..4).map(|_| TlsPeer::connect(server.local_addr(), &client, "/broadcast")).collect();
    // Every member is in (on either worker) before the message goes out.
    assert!(eventually(Duration::from_secs(5), || server.handle().stats().snapshot().connections == 4));
    peers[0].send_text("to all");
    for peer in &mut peers[1..] {
        assert_eq!(peer.recv(), Event::Text("to all".into()));
    }
}

#[test]
fn the_hub_over_wss_join_and_publish() {
    let cert = cert();
    let server = tls_server(&cert);
    let client = client_config(&[&cert]);
    let mut a = TlsClient::connect(server.local_addr(), &client);
    let mut b = TlsClient::connect(server.local_addr(), &client);
    a.join("chat:tls");
    b.join("chat:tls");
    a.send(json!({"type": "publish", "id": "p1", "payload": {"room": "chat:tls", "data": {"text": "hi"}}}));
    let ack = a.expect("ack");
    assert_eq!(ack["payload"]["ok"], true, "{ack}");
    for client in [&mut a, &mut b] {
        let message = client.expect("message");
        assert_eq!(message["payload"]["data"]["text"], "hi");
        assert_eq!(message["payload"]["seq"], 1);
    }
}

#[test]
fn sse_metrics_and_the_publish_api_over_https() {
    let cert = cert();
    let server = tls_server(&cert);
    let addr = server.local_addr();
    let client = client_config(&[&cert]);
    let page = https(addr, &client, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status_of(&page), 200, "{page}");
    let metrics = https(addr, &client, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status_of(&metrics), 200, "{metrics}");
    assert!(metrics.contains("hibiki_handshakes_rejected_total{cause=\"tls\"} 0"), "{metrics}");

    let mut sse = connect(addr, &client, false).expect("TLS handshake");
    sse.write_all(b"GET /sse?room=news HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut got = String::new();
    let mut chunk = [0u8; 4096];
    while !got.contains("\r\n\r\n") {
        let n = sse.read(&mut chunk).expect("the SSE head");
        assert!(n > 0, "{got}");
        got.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.contains("text/event-stream"), "{got}");
    for i in 1..=2 {
        let body = json!({"room": "news", "data": i}).to_string();
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = https(addr, &client, request.as_bytes());
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
    while !got.contains("id: 2\n") {
        let n = sse.read(&mut chunk).expect("the SSE events");
        assert!(n > 0, "{got}");
        got.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(got.contains("id: 1\n") && got.contains("event: message\ndata: {"), "{got}");
}

#[test]
fn reload_keeps_open_connections_and_new_ones_get_the_new_certificate() {
    let (old, new) = (cert(), cert());
    let tls = tls_of(&old);
    let server = serve(Server::builder().tls(tls.clone()), 1);
    let addr = server.local_addr();
    let client = client_config(&[&old, &new]);
    let mut kept = TlsPeer::connect(addr, &client, "/echo");
    assert_eq!(presented(&kept.stream), old.der);

    tls.replace(tls_of(&new).current());
    assert!(Arc::ptr_eq(&server.tls().expect("serves TLS").current(), &tls.current()));

    let fresh = TlsPeer::connect(addr, &client, "/echo");
    assert_eq!(presented(&fresh.stream), new.der, "a new connection gets the new certificate");
    kept.send_text("still here");
    assert_eq!(kept.recv(), Event::Text("still here".into()), "the open connection lives on");
    assert_eq!(presented(&kept.stream), old.der);
}

#[test]
fn plain_http_to_the_tls_port_gets_a_clear_400_and_is_counted() {
    let cert = cert();
    let server = tls_server(&cert);
    let answer = common::http(server.local_addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");
    assert!(eventually(Duration::from_secs(2), || rejected(&server, Rejection::Tls) == 1));
    // The server still serves TLS.
    let client = client_config(&[&cert]);
    let ok = https(server.local_addr(), &client, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&ok), 200, "{ok}");
}

#[test]
fn a_bad_client_hello_gets_an_alert_and_is_counted() {
    let cert = cert();
    let server = tls_server(&cert);
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A handshake record holding no ClientHello at all.
    stream.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xff, 0x00, 0x00, 0x00]).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert record: {answer:?}");
    assert_eq!(answer.len(), 7, "one alert, then the close: {answer:?}");
    assert!(eventually(Duration::from_secs(2), || rejected(&server, Rejection::Tls) == 1));
}

#[test]
fn a_handshake_left_unfinished_is_closed_by_the_handshake_timeout_and_counted() {
    let cert = cert();
    let server = serve(Server::builder().tls(tls_of(&cert)).handshake_timeout(Duration::from_millis(300)), 1);
    // A real ClientHello, cut in half.
    let client = client_config(&[&cert]);
    let mut hello = Vec::new();
    let mut conn = rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
    conn.write_tls(&mut hello).unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.write_all(&hello[..hello.len() / 2]).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest);
    assert!(closed.is_ok() || rest.is_empty(), "closed: {closed:?}");
    assert!(rest.is_empty(), "nothing was answered: {rest:?}");
    assert!(eventually(Duration::from_secs(2), || rejected(&server, Rejection::Tls) == 1));
    assert_eq!(rejected(&server, Rejection::Timeout), 0, "counted as TLS, not as a slow request");
}

#[test]
fn one_byte_writes_through_the_handshake_and_the_upgrade() {
    let cert = cert();
    let server = tls_server(&cert);
    let client = client_config(&[&cert]);
    let mut peer = TlsPeer::connect_with(server.local_addr(), &client, "/echo", &[], true);
    peer.send_text("dripped");
    assert_eq!(peer.recv(), Event::Text("dripped".into()));
}

#[test]
fn an_untrusting_client_fails_and_the_refusal_is_counted() {
    let (served, other) = (cert(), cert());
    let server = tls_server(&served);
    let client = client_config(&[&other]);
    assert!(connect(server.local_addr(), &client, false).is_err(), "the certificate is not trusted");
    assert!(eventually(Duration::from_secs(2), || rejected(&server, Rejection::Tls) == 1));
}

#[test]
fn the_binary_serves_tls_and_reloads_its_certificate_on_sighup() {
    let (old, new) = (cert(), cert());
    let dir = std::env::temp_dir().join(format!("hibiki-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, &old.cert_pem).unwrap();
    std::fs::write(&key_file, &old.key_pem).unwrap();
    // The key from the TOML file, the certificate from the flag.
    let config = dir.join("hibiki.toml");
    std::fs::write(&config, format!("tls-key = {:?}\n", key_file.display().to_string())).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hibiki"))
        .args(["serve", "--threads", "1", "--listen", &addr.to_string(), "--tls-cert"])
        .arg(&cert_file)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut child = Reap(child);
    let client = client_config(&[&old, &new]);
    assert!(
        eventually(Duration::from_secs(10), || connect(addr, &client, false).is_ok()),
        "the binary serves TLS"
    );
    let mut kept = TlsPeer::connect(addr, &client, "/echo");
    assert_eq!(presented(&kept.stream), old.der);

    std::fs::write(&cert_file, &new.cert_pem).unwrap();
    std::fs::write(&key_file, &new.key_pem).unwrap();
    let hup = Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().expect("kill runs");
    assert!(hup.success());
    let reloaded = eventually(Duration::from_secs(5), || {
        connect(addr, &client, false).is_ok_and(|stream| presented(&stream) == new.der)
    });
    kept.send_text("still here");
    let echoed = kept.recv();
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let status = child.0.wait().expect("the binary stops");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(reloaded, "new connections get the new certificate after SIGHUP");
    assert_eq!(echoed, Event::Text("still here".into()), "the open connection lives on");
    assert!(status.success(), "stopped cleanly: {status}");
}

/// Kills the server when a test fails before it stops it.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

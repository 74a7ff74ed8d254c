//! The client over `wss://`: through a TLS-terminating proxy (tests/common/tls_proxy.rs) in
//! front of an in-process `hibiki serve` app, with certificates made in the test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls_proxy::{Certs, TempDir, TlsProxy, Validity};
use hibiki::app::ServeApp;
use hibiki::client::{
    AppClient, Backoff, CertificateReason, Client, ClientBuilder, ClientError, Incoming, ReconnectingClient,
    rustls,
};
use hibiki::proto::CloseCode;
use hibiki::reactor::{Running, Server};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn start_server() -> Running<ServeApp> {
    Server::builder().bind("127.0.0.1:0".parse().unwrap()).threads(1).start(ServeApp::default()).unwrap()
}

/// A server, a proxy in front of it with a CA-signed certificate for localhost and
/// 127.0.0.1, and the CA file to trust.
struct Setup {
    server: Running<ServeApp>,
    proxy: TlsProxy,
    ca: std::path::PathBuf,
    _dir: TempDir,
}

fn setup(certs: &Certs) -> Setup {
    let server = start_server();
    let proxy = TlsProxy::start(server.local_addr(), certs);
    let dir = TempDir::new("client-tls");
    let ca = certs.write_ca(&dir.0);
    Setup { server, proxy, ca, _dir: dir }
}

fn trusted() -> Certs {
    Certs::signed(&["localhost", "127.0.0.1"], Validity::Current)
}

#[test]
fn echoes_over_wss_with_a_ca_file() -> TestResult {
    let s = setup(&trusted());
    let port = s.proxy.addr().port();
    for host in ["localhost", "127.0.0.1"] {
        let mut client = ClientBuilder::new().ca_file(&s.ca).connect(&format!("wss://{host}:{port}/echo"))?;
        assert!(client.is_tls());
        client.send_text("hello")?;
        assert_eq!(client.recv()?, Incoming::Text("hello".into()));
        // Larger than a TLS record, and compressed.
        let big: String = (0..200 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        client.send_text(&big)?;
        assert_eq!(client.recv()?, Incoming::Text(big));
        client.send_binary(&[1, 2, 3])?;
        assert_eq!(client.recv()?, Incoming::Binary(Bytes::from_static(&[1, 2, 3])));
        client.ping(b"p")?;
        assert_eq!(client.recv()?, Incoming::Pong(Bytes::from_static(b"p")));
        assert_eq!(client.recv_timeout(Duration::from_millis(50))?, None);
        client.close(CloseCode::NORMAL, "bye")?;
        assert!(client.is_closed());
    }
    assert_eq!(s.proxy.handshakes(), 2);
    s.server.shutdown();
    Ok(())
}

#[test]
fn a_self_signed_certificate_is_trusted_through_its_own_file() -> TestResult {
    let s = setup(&Certs::self_signed(&["localhost"]));
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    let mut client = ClientBuilder::new().ca_file(&s.ca).connect(&url)?;
    client.send_text("self-signed")?;
    assert_eq!(client.recv()?, Incoming::Text("self-signed".into()));
    // Without the file, the webpki roots alone do not know it.
    let err = ClientBuilder::new().connect(&url).unwrap_err();
    assert_eq!(err.certificate_reason(), Some(CertificateReason::UnknownIssuer), "{err:?}");
    s.server.shutdown();
    Ok(())
}

#[test]
fn a_custom_rustls_config_is_used_as_it_is() -> TestResult {
    let certs = trusted();
    let s = setup(&certs);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.chain[1].clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    let mut client = ClientBuilder::new().tls_config(Arc::new(config)).connect(&url)?;
    client.send_text("custom")?;
    assert_eq!(client.recv()?, Incoming::Text("custom".into()));
    s.server.shutdown();
    Ok(())
}

#[test]
fn joins_and_publishes_over_wss() -> TestResult {
    let s = setup(&trusted());
    let url = format!("wss://localhost:{}/ws", s.proxy.addr().port());
    let builder = ClientBuilder::new().ca_file(&s.ca);
    let mut a = AppClient::new(builder.connect(&url)?);
    let mut b = AppClient::new(builder.connect(&url)?);
    a.request("join", json!({"room": "chat:tls"}))?;
    b.request("join", json!({"room": "chat:tls"}))?;
    let ack = a.request("publish", json!({"room": "chat:tls", "data": "over tls"}))?;
    assert_eq!(ack["seq"], 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        if let Some(envelope) = b.next(Duration::from_millis(200))? {
            if envelope["type"] == "message" {
                got = Some(envelope);
            }
        }
    }
    assert_eq!(got.expect("b gets the message")["payload"]["data"], "over tls");
    s.server.shutdown();
    Ok(())
}

#[test]
fn a_wrong_host_name_is_refused_as_a_certificate_error() {
    let s = setup(&Certs::signed(&["example.com"], Validity::Current));
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    let err = ClientBuilder::new().ca_file(&s.ca).connect(&url).unwrap_err();
    assert_eq!(err.certificate_reason(), Some(CertificateReason::WrongHostName), "{err:?}");
    assert!(matches!(err, ClientError::Certificate { .. }));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("not valid for the host name") && text.contains("example.com"), "{text}");
    // An IP address is checked against the certificate's addresses.
    let url = format!("wss://127.0.0.1:{}/echo", s.proxy.addr().port());
    let err = ClientBuilder::new().ca_file(&s.ca).connect(&url).unwrap_err();
    assert_eq!(err.certificate_reason(), Some(CertificateReason::WrongHostName), "{err:?}");
    s.server.shutdown();
}

#[test]
fn an_expired_certificate_is_refused_as_a_certificate_error() {
    let s = setup(&Certs::signed(&["localhost"], Validity::Expired));
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    let err = ClientBuilder::new().ca_file(&s.ca).connect(&url).unwrap_err();
    assert_eq!(err.certificate_reason(), Some(CertificateReason::Expired), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");
    s.server.shutdown();
}

#[test]
fn an_untrusted_certificate_is_refused_as_a_certificate_error() {
    let s = setup(&trusted());
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    // No CA file: only the webpki roots.
    let err = Client::connect(&url).unwrap_err();
    assert_eq!(err.certificate_reason(), Some(CertificateReason::UnknownIssuer), "{err:?}");
    // Another CA's file does not help either.
    let other = TempDir::new("other-ca");
    let other_ca = Certs::signed(&["localhost"], Validity::Current).write_ca(&other.0);
    let err = ClientBuilder::new().ca_file(&other_ca).connect(&url).unwrap_err();
    assert_eq!(err.certificate_reason(), Some(CertificateReason::UnknownIssuer), "{err:?}");
    s.server.shutdown();
}

#[test]
fn tls_setup_errors_and_a_plain_server_behind_wss() {
    let s = setup(&trusted());
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    let err = ClientBuilder::new().ca_file("/nonexistent/ca.pem").connect(&url).unwrap_err();
    assert!(matches!(&err, ClientError::TlsSetup(why) if why.contains("/nonexistent/ca.pem")), "{err:?}");
    assert!(!err.is_retryable());
    // wss:// to a port that speaks plain WebSocket: a TLS error, not a certificate one.
    let plain = format!("wss://localhost:{}/echo", s.server.local_addr().port());
    let err = ClientBuilder::new().ca_file(&s.ca).connect(&plain).unwrap_err();
    assert!(err.certificate_reason().is_none(), "{err:?}");
    assert!(matches!(err, ClientError::Tls(_) | ClientError::Io(_)), "{err:?}");
    s.server.shutdown();
}

#[test]
fn the_reconnecting_client_reconnects_over_wss() -> TestResult {
    let certs = trusted();
    let s = setup(&certs);
    let upstream = s.server.local_addr();
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connects);
    let mut client = ReconnectingClient::builder()
        .client(ClientBuilder::new().ca_file(&s.ca))
        .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(200)).max_attempts(None))
        .on_connect(move |conn| {
            assert!(conn.is_tls());
            let n = counted.fetch_add(1, Ordering::SeqCst);
            conn.send_text(&format!("hello #{n}"))
        })
        .connect(&format!("wss://localhost:{}/echo", s.proxy.addr().port()))?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("hello #0".into())));

    // The server behind the proxy goes away (1001), then comes back on the same port.
    s.server.shutdown();
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.is_connected() && Instant::now() < deadline {
        let _ = client.recv_timeout(Duration::from_millis(50))?;
    }
    assert!(!client.is_connected(), "the loss is noticed");
    let server = Server::builder().bind(upstream).threads(1).start(ServeApp::default())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        got = client.recv_timeout(Duration::from_millis(100))?;
    }
    assert_eq!(got, Some(Incoming::Text("hello #1".into())));
    assert!(client.reconnects() >= 1);
    client.send_text("again")?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("again".into())));
    client.close(CloseCode::NORMAL, "done")?;
    assert!(s.proxy.handshakes() >= 2);
    server.shutdown();
    Ok(())
}

//! The project's own ends over TLS: `hibiki::client` and `hibiki load` against the engine's
//! `wss://` (no proxy in between), with a certificate made in the test.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::tls_proxy::{Certs, TempDir, Validity};
use hibiki::app::ServeApp;
use hibiki::client::{ClientBuilder, ClientError, Incoming};
use hibiki::load::{LoadConfig, Scenario, run_scenario};
use hibiki::proto::CloseCode;
use hibiki::reactor::{Rejection, Running, Server, TlsConfig};

struct Setup {
    server: Running<ServeApp>,
    ca: std::path::PathBuf,
    _dir: TempDir,
}

fn setup() -> Setup {
    let certs = Certs::signed(&["localhost", "127.0.0.1"], Validity::Current);
    let tls = TlsConfig::from_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
        .expect("the certificate loads");
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .threads(1)
        .tls(tls)
        .start(ServeApp::default())
        .expect("server starts");
    let dir = TempDir::new("tls-e2e");
    let ca = certs.write_ca(&dir.0);
    Setup { server, ca, _dir: dir }
}

#[test]
fn the_client_speaks_wss_to_the_engine() -> Result<(), ClientError> {
    let s = setup();
    let url = format!("wss://localhost:{}/echo", s.server.local_addr().port());
    let mut client = ClientBuilder::new().ca_file(&s.ca).connect(&url)?;
    assert!(client.is_tls());
    client.send_text("hello")?;
    assert_eq!(client.recv()?, Incoming::Text("hello".into()));
    // Past a TLS record and compressed (the engine negotiates permessage-deflate).
    let big: String = (0..200 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    client.send_text(&big)?;
    assert_eq!(client.recv()?, Incoming::Text(big));
    client.send_binary(&[1, 2, 3])?;
    assert_eq!(client.recv()?, Incoming::Binary(Bytes::from_static(&[1, 2, 3])));
    client.close(CloseCode::NORMAL, "bye")?;
    assert!(client.is_closed());

    // Without the CA the engine's certificate is refused as a certificate error, and the
    // engine counts the handshake the client gave up as a TLS rejection.
    let err = ClientBuilder::new().connect(&url).unwrap_err();
    assert!(matches!(err, ClientError::Certificate { .. }), "{err:?}");
    let refused = || s.server.handle().stats().snapshot().rejected(Rejection::Tls);
    assert!(common::eventually(Duration::from_secs(5), || refused() == 1), "tls rejections: {}", refused());
    s.server.shutdown();
    Ok(())
}

#[test]
fn the_load_tool_measures_the_engine_over_wss() {
    let s = setup();
    let port = s.server.local_addr().port();
    let mut config = LoadConfig::new(Scenario::Echo, format!("wss://localhost:{port}/echo"));
    config.duration = Duration::from_secs(1);
    config.warmup = Duration::from_millis(200);
    config.connections = 8;
    config.in_flight = 16;
    config.ca_files = vec![s.ca.clone()];
    let summary = run_scenario(&config).expect("run");
    let c = &summary.connections;
    assert_eq!((c.attempted, c.opened, c.failed, c.open_at_end), (8, 8, 0, 8), "{summary:#?}");
    let m = summary.messages.as_ref().unwrap();
    assert!(m.received > 0, "{summary:#?}");
    assert_eq!((m.errors, m.unanswered), (0, 0), "{summary:#?}");

    let mut connect = LoadConfig::new(Scenario::Connect, format!("wss://localhost:{port}/echo"));
    connect.duration = Duration::from_secs(1);
    connect.warmup = Duration::from_millis(200);
    connect.concurrency = 4;
    connect.ca_files = vec![s.ca.clone()];
    let summary = run_scenario(&connect).expect("run");
    assert_eq!(summary.connections.failed, 0, "{summary:#?}");
    let k = summary.connect.as_ref().unwrap();
    assert!(k.tls && k.handshakes > 0, "{summary:#?}");
    s.server.shutdown();
}

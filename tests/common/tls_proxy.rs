//! A small TLS-terminating proxy for tests of `wss://` clients: it accepts TLS on 127.0.0.1:0
//! with a certificate made here (rcgen) and forwards the plaintext to a plain server.
//!
//! Per connection two threads share the rustls `ServerConnection` under a lock: one reads the
//! client's TCP bytes, decrypts them and writes the plaintext upstream (answering the TLS
//! handshake as it goes); the other reads upstream and encrypts to the client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::ServerConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate for a server, and the CA that signed it.
pub struct Certs {
    /// The server's chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The PEM of the CA to trust (for a self-signed certificate: the certificate itself).
    pub ca_pem: String,
    /// The PEM of the leaf and of its key (for servers that load files).
    pub cert_pem: String,
    pub key_pem: String,
}

/// Validity of a test certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// 2020 to 4000.
    Current,
    /// 2000 to 2001.
    Expired,
}

impl Certs {
    /// A self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[&str]) -> Self {
        let key = KeyPair::generate().expect("key");
        let params = leaf_params(names, Validity::Current);
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let pem = cert.pem();
        Self::from_parts(vec![cert.der().clone()], &key, pem.clone(), pem)
    }

    /// A certificate for `names` signed by a test CA made for it.
    pub fn signed(names: &[&str], validity: Validity) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: a verifier that finds another test CA by name would report a bad
        // signature rather than an unknown issuer.
        static NEXT_CA: AtomicU64 = AtomicU64::new(0);
        let n = NEXT_CA.fetch_add(1, Ordering::Relaxed);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("hibiki test CA {}-{n}", std::process::id()));
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, &ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(names, validity).signed_by(&key, &issuer).expect("certificate");
        Self::from_parts(vec![cert.der().clone(), ca.der().clone()], &key, ca.pem(), cert.pem())
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
        ca_pem: String,
        cert_pem: String,
    ) -> Self {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Self { chain, key: der, ca_pem, cert_pem, key_pem: key.serialize_pem() }
    }

    /// Writes the CA's PEM to a fresh file in `dir` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("create the directory");
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }
}

fn leaf_params(names: &[&str], validity: Validity) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate params");
    params.distinguished_name.push(DnType::CommonName, "hibiki test server");
    let (from, to) = match validity {
        Validity::Current => (date_time_ymd(2020, 1, 1), date_time_ymd(4000, 1, 1)),
        Validity::Expired => (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1)),
    };
    params.not_before = from;
    params.not_after = to;
    params
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hibiki-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The proxy: TLS on [`addr`](Self::addr), plaintext to the upstream address.
pub struct TlsProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    handshakes: Arc<AtomicU64>,
}

impl TlsProxy {
    /// Listens on 127.0.0.1:0 with `certs`, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, certs: &Certs) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs.chain.clone(), certs.key.clone_key())
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let handshakes = Arc::new(AtomicU64::new(0));
        let (stop2, accepted2, handshakes2) = (stop.clone(), accepted.clone(), handshakes.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                accepted2.fetch_add(1, Ordering::Relaxed);
                let (config, handshakes) = (config.clone(), handshakes2.clone());
                thread::spawn(move || {
                    let _ = serve(client, upstream, config, &handshakes);
                });
            }
        });
        Self { addr, stop, accepted, handshakes }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    handshakes: &AtomicU64,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    let tls = Arc::new(Mutex::new(ServerConnection::new(config).map_err(io::Error::other)?));
    let (client_out, server_in, client_down) =
        (client.try_clone()?, server.try_clone()?, client.try_clone()?);
    let tls2 = tls.clone();
    let downstream = thread::spawn(move || {
        // Upstream to the client, encrypted.
        let _ = pump_down(server_in, client_out, &tls2);
        let _ = client_down.shutdown(Shutdown::Both);
    });
    let up = pump_up(client, &server, &tls, handshakes);
    let _ = server.shutdown(Shutdown::Both);
    let _ = downstream.join();
    up
}

/// The client's bytes: decrypted to `server`; TLS answers (the handshake) back to the client.
fn pump_up(
    mut client: TcpStream,
    mut server: &TcpStream,
    tls: &Mutex<ServerConnection>,
    handshakes: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::new();
    let mut counted = false;
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        plain.clear();
        let mut conn = tls.lock().unwrap();
        let mut src = &buf[..n];
        let mut failed = None;
        while !src.is_empty() {
            conn.read_tls(&mut src)?;
            if let Err(e) = conn.process_new_packets() {
                failed = Some(e);
                break;
            }
            let _ = conn.reader().read_to_end(&mut plain);
        }
        while conn.wants_write() {
            conn.write_tls(&mut client)?;
        }
        if !counted && !conn.is_handshaking() {
            counted = true;
            handshakes.fetch_add(1, Ordering::Relaxed);
        }
        drop(conn);
        if let Some(e) = failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if !plain.is_empty() {
            server.write_all(&plain)?;
        }
    }
}

/// The server's bytes, encrypted to the client; a `close_notify` when the server hangs up.
fn pump_down(mut server: TcpStream, mut client: TcpStream, tls: &Mutex<ServerConnection>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = server.read(&mut buf)?;
        let mut conn = tls.lock().unwrap();
        if n == 0 {
            conn.send_close_notify();
        } else {
            conn.writer().write_all(&buf[..n])?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut client)?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

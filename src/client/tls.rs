//! `wss://`: the rustls configuration of the client, the stream it reads and writes through,
//! and what a certificate error says.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::error::ClientError;

/// The ALPN protocol offered: a WebSocket handshake is an HTTP/1.1 request.
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why the server's certificate was refused (from the verifier's
/// [`rustls::CertificateError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertificateReason {
    /// The chain does not end at a trusted root: a self-signed or private-CA certificate
    /// (give its CA with [`ClientBuilder::ca_file`](super::ClientBuilder::ca_file)).
    UnknownIssuer,
    /// The certificate's `notAfter` has passed.
    Expired,
    /// The certificate's `notBefore` is still to come.
    NotYetValid,
    /// The certificate does not name the host of the URL.
    WrongHostName,
    /// The certificate was revoked.
    Revoked,
    /// A signature in the chain is wrong or made with an unsupported algorithm.
    BadSignature,
    /// The certificate is not for server authentication.
    WrongPurpose,
    /// The certificate cannot be parsed.
    BadEncoding,
    /// Another reason: see the detail.
    Other,
}

impl CertificateReason {
    pub(crate) fn of(error: &rustls::CertificateError) -> Self {
        use rustls::CertificateError as E;
        match error {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::Expired | E::ExpiredContext { .. } => Self::Expired,
            E::NotValidYet | E::NotValidYetContext { .. } => Self::NotYetValid,
            E::NotValidForName | E::NotValidForNameContext { .. } => Self::WrongHostName,
            E::Revoked => Self::Revoked,
            E::BadSignature
            | E::UnsupportedSignatureAlgorithmContext { .. }
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Self::BadSignature,
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => Self::WrongPurpose,
            E::BadEncoding => Self::BadEncoding,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for CertificateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownIssuer => "unknown issuer",
            Self::Expired => "expired",
            Self::NotYetValid => "not valid yet",
            Self::WrongHostName => "not valid for the host name",
            Self::Revoked => "revoked",
            Self::BadSignature => "bad signature",
            Self::WrongPurpose => "not for server authentication",
            Self::BadEncoding => "badly encoded",
            Self::Other => "refused",
        })
    }
}

/// The TLS options of a [`ClientBuilder`](super::ClientBuilder): extra trusted CAs or a whole
/// rustls configuration, and the configuration built from them once.
#[derive(Clone, Default)]
pub(super) struct TlsOptions {
    ca_files: Vec<PathBuf>,
    custom: Option<Arc<ClientConfig>>,
    /// Built on the first `wss://` connect; replaced whenever the options change.
    built: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_files", &self.ca_files)
            .field("custom", &self.custom.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsOptions {
    pub(super) fn add_ca_file(&mut self, path: PathBuf) {
        self.ca_files.push(path);
        self.built = Arc::default();
    }

    pub(super) fn set_config(&mut self, config: Arc<ClientConfig>) {
        self.custom = Some(config);
        self.built = Arc::default();
    }

    /// The configuration for a connection: the custom one, or the webpki roots plus the CA
    /// files (read once).
    pub(super) fn config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        if let Some(custom) = &self.custom {
            return Ok(custom.clone());
        }
        if let Some(built) = self.built.get() {
            return Ok(built.clone());
        }
        let config = client_config(&self.ca_files).map_err(ClientError::TlsSetup)?;
        Ok(self.built.get_or_init(|| config).clone())
    }
}

/// The certificates of a PEM file (at least one).
///
/// # Errors
///
/// A message naming the file when it cannot be read, is not PEM, or holds no certificate.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The webpki roots plus the certificates of `ca_files`.
///
/// # Errors
///
/// A message naming the file that cannot be used.
pub(crate) fn root_store(ca_files: &[PathBuf]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for path in ca_files {
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// A config builder on the ring provider with the safe default protocol versions, offering
/// the cipher suites in the order browsers do (Chrome, Firefox): AES-128-GCM with SHA-256
/// first. The server picks from this order, and on a CPU with AES and SHA instructions it is
/// the cheapest of the suites, at the same security (ring's default order puts AES-256-GCM
/// with SHA-384 first, whose SHA-512 core has no instructions on x86).
pub(crate) fn config_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(browser_order_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
}

/// The ring provider with its cipher suites in browsers' order.
fn browser_order_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |suite: S| match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    };
    // A stable sort: suites of one rank keep ring's order.
    provider.cipher_suites.sort_by_key(|suite| rank(suite.suite()));
    provider
}

/// The client configuration: ring, webpki roots plus `ca_files`, ALPN `http/1.1`.
///
/// # Errors
///
/// As [`root_store`].
pub(crate) fn client_config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, String> {
    let mut config = config_builder().with_root_certificates(root_store(ca_files)?).with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The server name to send (SNI) and verify: a DNS name, or an IP address (verified against
/// the certificate's IP addresses; no SNI is sent for it).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// The transport of a client connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Wraps `tcp` in a TLS client connection to `host` (no I/O yet).
    pub(super) fn tls(tcp: TcpStream, config: Arc<ClientConfig>, host: &str) -> Result<Self, ClientError> {
        let name = server_name(host).map_err(ClientError::TlsSetup)?;
        let conn = ClientConnection::new(config, name).map_err(ClientError::from_tls)?;
        Ok(Self::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// Runs the TLS handshake to its end (nothing for plain TCP), within the socket's timeouts.
    pub(super) fn complete_handshake(&mut self) -> Result<(), ClientError> {
        if let Self::Tls(tls) = self {
            while tls.conn.is_handshaking() {
                match tls.conn.complete_io(&mut tls.sock) {
                    Ok((0, 0)) if tls.conn.is_handshaking() => {
                        return Err(ClientError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during the TLS handshake",
                        )));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The TCP socket underneath.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }

    /// Whether this is a TLS stream.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Ends the connection: a TLS `close_notify` first (best effort), then the TCP shutdown.
    pub(super) fn shutdown(&mut self) {
        if let Self::Tls(tls) = self {
            if !tls.conn.is_handshaking() {
                tls.conn.send_close_notify();
                let _ = tls.conn.write_tls(&mut tls.sock);
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.write_all(buf),
            Self::Tls(tls) => {
                tls.write_all(buf)?;
                // rustls may keep records queued; they must be on the wire before we wait.
                tls.flush()
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_of_certificate_errors() {
        use rustls::CertificateError as E;
        assert_eq!(CertificateReason::of(&E::UnknownIssuer), CertificateReason::UnknownIssuer);
        assert_eq!(CertificateReason::of(&E::Expired), CertificateReason::Expired);
        assert_eq!(CertificateReason::of(&E::NotValidForName), CertificateReason::WrongHostName);
        assert_eq!(CertificateReason::of(&E::NotValidYet), CertificateReason::NotYetValid);
        assert_eq!(CertificateReason::WrongHostName.to_string(), "not valid for the host name");
    }

    #[test]
    fn offers_the_cipher_suites_in_browsers_order() {
        use rustls::CipherSuite as S;
        let ring = rustls::crypto::ring::default_provider();
        let offered: Vec<S> = browser_order_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            offered[..3],
            [S::TLS13_AES_128_GCM_SHA256, S::TLS13_AES_256_GCM_SHA384, S::TLS13_CHACHA20_POLY1305_SHA256]
        );
        // The same suites as ring's, none lost or added.
        let mut all: Vec<u16> = ring.cipher_suites.iter().map(|s| u16::from(s.suite())).collect();
        let mut ours: Vec<u16> = offered.iter().map(|&s| u16::from(s)).collect();
        all.sort_unstable();
        ours.sort_unstable();
        assert_eq!(all, ours);
    }

    #[test]
    fn server_names() {
        assert!(server_name("example.com").is_ok());
        assert!(matches!(server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let missing = read_certificates(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
        let dir = std::env::temp_dir().join(format!("hibiki-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(read_certificates(&empty).unwrap_err().contains("no PEM certificate"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(client_config(&[]).is_ok());
    }
}

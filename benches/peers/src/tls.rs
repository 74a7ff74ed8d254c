//! The TLS side of the `wss://` variants of the peer servers: a `tokio-rustls` acceptor on the
//! ring provider, from PEM files (the same certificate and key `hibiki serve --tls-cert
//! --tls-key` is given), ALPN `http/1.1`.

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The acceptor for the certificate chain in `cert` and the private key in `key` (PEM).
///
/// # Errors
///
/// When a file cannot be read or parsed, or the key does not fit the certificate.
pub fn acceptor(cert: &str, key: &str) -> io::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| io::Error::other(format!("{cert}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| io::Error::other(format!("{key}: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// `[ADDR [CERT KEY]]` from the command line: the address (or `default`), and the acceptor
/// when a certificate and key are given.
///
/// # Errors
///
/// As [`acceptor`]; a certificate without a key.
pub fn args(default: &str) -> io::Result<(std::net::SocketAddr, Option<TlsAcceptor>)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().map_or(default, String::as_str).parse().map_err(io::Error::other)?;
    let tls = match (args.get(1), args.get(2)) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err(io::Error::other("give both CERT and KEY")),
    };
    Ok((addr, tls))
}

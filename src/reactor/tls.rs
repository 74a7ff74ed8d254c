//! TLS in the reactor, on rustls: the certificate a server presents (reloadable), and the
//! per-connection state that the worker reads and writes through.

use std::fmt;
use std::io::{self, BufRead, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::BytesMut;
use mio::net::TcpStream;
use rustls::ServerConnection;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The protocol the server offers in ALPN: HTTP/1.1, which WebSocket upgrades ride on.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The certificate a server presents, shared by its workers and replaceable while it runs:
/// connections accepted after [`TlsConfig::reload`] (or [`TlsConfig::replace`]) get the new
/// one, connections already open keep theirs. Clones share the same certificate, so an
/// application keeps one clone to reload and hands another to [`ServerBuilder::tls`].
///
/// ```no_run
/// use hibiki::reactor::{Server, TlsConfig};
///
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let server = Server::builder().tls(tls.clone()).start(hibiki::app::ServeApp::default())?;
/// // Later, e.g. on SIGHUP, after the files were renewed:
/// tls.reload()?;
/// # server.shutdown();
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// [`ServerBuilder::tls`]: super::ServerBuilder::tls
#[derive(Clone)]
pub struct TlsConfig {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    files: Option<Arc<(PathBuf, PathBuf)>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("files", &self.files.as_deref()).finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1
    /// or SEC1) from files; [`TlsConfig::reload`] reads the same files again.
    ///
    /// # Errors
    ///
    /// When a file cannot be read, holds no certificate or key, or the key does not fit.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let config = config_from_files(&cert, &key)?;
        Ok(Self { current: Arc::new(RwLock::new(config)), files: Some(Arc::new((cert, key))) })
    }

    /// A certificate chain and key given as PEM text.
    ///
    /// # Errors
    ///
    /// When the text holds no certificate or key, or the key does not fit the certificate.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> io::Result<Self> {
        Ok(Self::from_rustls(config_from_pem(cert, key)?))
    }

    /// A rustls configuration made by the application (its own resolver, versions, client
    /// authentication...). Its `alpn_protocols` are used as they are: include `http/1.1`
    /// ([`ALPN_HTTP_1_1`]) for clients that insist on ALPN.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        Self { current: Arc::new(RwLock::new(config)), files: None }
    }

    /// Reads the files given to [`TlsConfig::from_pem_files`] again and presents the new
    /// certificate to the connections accepted from now on. On an error the current one stays.
    ///
    /// # Errors
    ///
    /// When this configuration did not come from files, or reading them failed.
    pub fn reload(&self) -> io::Result<()> {
        let Some(files) = &self.files else {
            return Err(io::Error::other("this TLS configuration was not read from files"));
        };
        let config = config_from_files(&files.0, &files.1)?;
        self.replace(config);
        Ok(())
    }

    /// Presents `config` to the connections accepted from now on.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The certificate and key files, when it was read from files.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.files.as_deref().map(|(c, k)| (c.as_path(), k.as_path()))
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn config_from_files(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    config_from_pem(&read(cert)?, &read(key)?)
        .map_err(|e| io::Error::new(e.kind(), format!("{} / {}: {e}", cert.display(), key.display())))
}

fn config_from_pem(cert: &[u8], key: &[u8]) -> io::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("no certificate in the PEM text".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Ciphertext rustls may hold for a connection before it refuses more plaintext: two of the
/// worker's reads.
const CIPHERTEXT_LIMIT: usize = 2 * super::worker::READ_SIZE;

/// From this much plaintext at once, the copy out of rustls is placed ([`place_apart`]):
/// below it, the copy is too short for the aliasing to cost what the placing does.
const APART_MIN: usize = 4096;

/// Makes room in the empty `plain` for `before` bytes and then `len` bytes copied from `src`,
/// starting it so that those land half a page away from `src` modulo 4 KiB. rustls hands out
/// a record's plaintext in a buffer of its own; a copy whose destination lies a few hundred
/// bytes past its source modulo a page (4 KiB aliasing: each load waits on an earlier store to
/// the same page offset) runs at a fraction of the speed, and full 16 KiB records keep
/// whatever distance the first one had. Costs at most a page of the worker's buffer.
fn place_apart(plain: &mut BytesMut, before: usize, src: *const u8, len: usize) {
    const PAGE: usize = 4096;
    plain.reserve(before + len + PAGE);
    let at = (plain.as_ptr() as usize).wrapping_add(before);
    let distance = at.wrapping_sub(src as usize) & (PAGE - 1);
    let gap = (PAGE / 2).wrapping_sub(distance) & (PAGE - 1);
    plain.resize(gap, 0);
    bytes::Buf::advance(plain, gap);
}

/// A connection's TLS state: boxed in [`Conn`](super::conn::Conn), so a plain connection
/// pays one pointer for it.
pub(crate) struct Tls {
    pub(crate) session: ServerConnection,
    /// Bytes arrived from the peer so far are none: the first one tells a TLS record from a
    /// plain HTTP request.
    pub(crate) fresh: bool,
    /// Our `close_notify` is queued.
    pub(crate) notified: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("handshaking", &self.session.is_handshaking()).finish_non_exhaustive()
    }
}

/// What feeding ciphertext to a connection gave.
pub(crate) enum Fed {
    /// Plaintext (if any) appended; go on.
    Ok,
    /// The peer sent `close_notify`: what came before it is appended.
    Closed,
    /// Not TLS at all: the first byte is that of a plain HTTP request.
    PlainHttp,
    /// rustls refused what came (a bad ClientHello, a bad record): its alert is queued.
    Failed(rustls::Error),
}

impl Tls {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut session = ServerConnection::new(config).map_err(io::Error::other)?;
        // rustls holds at most 64 KiB of ciphertext by default: the replies to one 64 KiB read
        // (a little more once framed and sealed) would not fit, and the rest would wait in the
        // connection's queue for a second write. Room for two reads' worth keeps them in one
        // write. Past it, frames wait in the connection's queue, which the outbound limits
        // count.
        session.set_buffer_limit(Some(CIPHERTEXT_LIMIT));
        Ok(Self { session, fresh: true, notified: false })
    }

    /// Decrypts `cipher` (all of it), appending the plaintext to `plain`. When `plain` is
    /// empty and some plaintext comes, `prefix` (the unfinished frame before it) goes in first
    /// and the caller drops its copy; when `plain` stays empty, `prefix` was not used.
    pub(crate) fn feed(&mut self, mut cipher: &[u8], prefix: &[u8], plain: &mut BytesMut) -> Fed {
        if self.fresh && !cipher.is_empty() {
            self.fresh = false;
            // A TLS connection opens with a handshake record (content type 22); a request
            // line opens with a method's capital letter.
            if cipher[0].is_ascii_uppercase() {
                return Fed::PlainHttp;
            }
        }
        let mut closed = false;
        while !cipher.is_empty() {
            if let Err(e) = self.session.read_tls(&mut cipher) {
                return Fed::Failed(rustls::Error::General(e.to_string()));
            }
            match self.session.process_new_packets() {
                Ok(state) => {
                    let ready = state.plaintext_bytes_to_read();
                    if ready > 0 {
                        let mut reader = self.session.reader();
                        // Grown once to fit, not chunk by chunk.
                        if plain.is_empty() {
                            match reader.fill_buf() {
                                Ok(first) if ready >= APART_MIN => {
                                    place_apart(plain, prefix.len(), first.as_ptr(), ready);
                                }
                                _ => plain.reserve(prefix.len() + ready),
                            }
                            plain.extend_from_slice(prefix);
                        } else {
                            plain.reserve(ready);
                        }
                        loop {
                            let chunk = match reader.fill_buf() {
                                Ok(chunk) if !chunk.is_empty() => chunk,
                                _ => break,
                            };
                            let n = chunk.len();
                            plain.extend_from_slice(chunk);
                            reader.consume(n);
                        }
                    }
                    closed |= state.peer_has_closed();
                }
                Err(e) => return Fed::Failed(e),
            }
        }
        if closed { Fed::Closed } else { Fed::Ok }
    }

    /// Takes what rustls has queued to send (an alert after a failure), as plain bytes.
    pub(crate) fn take_pending(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.session.wants_write() {
            if self.session.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    /// Writes the ciphertext rustls holds to the socket. `Ok(false)`: it would block.
    pub(crate) fn write_out(&mut self, stream: &mut TcpStream, written: &mut usize) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypts what of `iov` rustls takes (up to its buffer limit); returns the byte count.
    pub(crate) fn encrypt(&mut self, iov: &[IoSlice<'_>]) -> usize {
        self.session.writer().write_vectored(iov).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_lands_half_a_page_from_its_source_after_what_comes_before() {
        let source = vec![7u8; 40_000];
        for offset in [0, 1, 16, 511, 2048, 4095] {
            for prefix_len in [0, 6, 10_000] {
                let prefix: Vec<u8> = (0..prefix_len).map(|i| i as u8).collect();
                let src = source[offset..].as_ptr();
                let mut plain = BytesMut::new();
                place_apart(&mut plain, prefix.len(), src, 30_000);
                assert!(plain.is_empty(), "nothing but room");
                plain.extend_from_slice(&prefix);
                let at = plain.as_ptr() as usize + plain.len();
                assert_eq!(
                    at.wrapping_sub(src as usize) & 4095,
                    2048,
                    "offset {offset}, prefix {prefix_len}"
                );
                let capacity = plain.capacity();
                plain.extend_from_slice(&source[offset..offset + 30_000]);
                assert_eq!(plain.capacity(), capacity, "room was made for all of it");
            }
        }
    }
}

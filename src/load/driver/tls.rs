//! `wss://` connections of the driver: socket bytes through rustls, plaintext on to the same
//! handshake and frame parsing as a plain connection.
//!
//! In: one `read` of up to 64 KiB from the socket into the thread's `tls_in`, fed to rustls
//! record by record; after each, the plaintext is drained into `rbuf` and handled as a plain
//! read would be. Out: the plaintext a turn queued in `out` is handed to rustls (which
//! encrypts it, or holds it until the TLS handshake is done), then its records are written.
//! rustls's buffers are unlimited: the workload bounds what is in flight, as for `out`.

use std::io::{self, Read as _, Write as _};

use rustls::ClientConnection;

use super::super::report::FailureCause;
use super::super::tls::cause;
use super::{Driver, State, Workload, classify};

impl<W: Workload> Driver<'_, W> {
    /// A TLS session for slot `slot`, if its target is `wss://`.
    pub(super) fn tls_session(&self, slot: usize) -> Result<Option<Box<ClientConnection>>, FailureCause> {
        let (Some(config), Some(name)) = (&self.plan.tls, &self.plan.route.target(slot).tls) else {
            return Ok(None);
        };
        let mut conn = ClientConnection::new(config.clone(), name.clone()).map_err(|e| cause(&e))?;
        conn.set_buffer_limit(None);
        Ok(Some(Box::new(conn)))
    }

    /// [`read`](Self::read) for a TLS connection: until the socket is drained (the same short
    /// read rule), each read decrypted and handled.
    pub(super) fn read_tls(&mut self, key: usize, closed: bool) {
        loop {
            let Some(conn) = self.conns.slab.get_mut(key) else { return };
            let n = match conn.stream.read(&mut self.tls_in) {
                Ok(0) => return self.on_eof(key),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.on_read_error(key, &e),
            };
            if !self.decrypt(key, n) {
                return;
            }
            if n < self.tls_in.len() && !(closed || cfg!(not(target_os = "linux"))) {
                return;
            }
        }
    }

    /// Feeds `tls_in[..n]` to the session and handles the plaintext; false once the connection
    /// is gone (failed, or ended by the server's `close_notify`).
    fn decrypt(&mut self, key: usize, n: usize) -> bool {
        let mut at = 0;
        while at < n {
            let now = self.shared.clock.now();
            let Some(conn) = self.conns.slab.get_mut(key) else { return false };
            let Some(tls) = conn.tls.as_mut() else { return false };
            let mut src = &self.tls_in[at..n];
            match tls.read_tls(&mut src) {
                Ok(0) => return true,
                Ok(taken) => at += taken,
                Err(e) => {
                    self.fail(key, FailureCause::Tls(e.to_string()), now);
                    return false;
                }
            }
            if let Err(e) = tls.process_new_packets() {
                // The alert that says why, then the failure.
                let _ = tls.write_tls(&mut conn.stream);
                self.fail(key, cause(&e), now);
                return false;
            }
            if tls.wants_write() {
                // Handshake messages (or a key update): out at the end of the turn.
                self.conns.mark(key);
            }
            loop {
                let Some(conn) = self.conns.slab.get_mut(key) else { return false };
                let Some(tls) = conn.tls.as_mut() else { return false };
                let m = match tls.reader().read(&mut self.rbuf) {
                    // The server's close_notify: the end of the stream.
                    Ok(0) => {
                        self.on_eof(key);
                        return false;
                    }
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.on_read_error(key, &e);
                        return false;
                    }
                };
                let now = self.shared.clock.now();
                match conn.state {
                    State::Handshaking => self.on_response(key, m, now),
                    State::Open | State::Closing => self.on_bytes(key, m, now),
                    State::Connecting => {}
                }
            }
        }
        true
    }

    /// [`flush`](Self::flush) for a TLS connection: the queued plaintext into the session,
    /// then its records to the socket until they are all out or the socket is full.
    pub(super) fn flush_tls(&mut self, key: usize, now: u64) {
        let Some(conn) = self.conns.slab.get_mut(key) else { return };
        if conn.state == State::Connecting {
            return;
        }
        let Some(tls) = conn.tls.as_mut() else { return };
        if !conn.out.is_empty() {
            // Cannot fail: the buffer limit is off.
            let _ = tls.writer().write_all(&conn.out);
            if self.plan.lean {
                conn.out = bytes::BytesMut::new();
            } else {
                conn.out.clear();
            }
        }
        while !conn.blocked && tls.wants_write() {
            match tls.write_tls(&mut conn.stream) {
                Ok(0) => return self.fail(key, FailureCause::Reset, now),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return if conn.state == State::Closing {
                        self.finish(key, now)
                    } else {
                        self.fail(key, classify(&e), now)
                    };
                }
            }
        }
    }
}

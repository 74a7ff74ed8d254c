//! One Redis connection: its address (parsed from a `redis://` URL by the `redis` crate),
//! connecting with a timeout, the handshake (`AUTH`, `SELECT`, `CLIENT SETNAME`), and the
//! two halves: commands are packed by the `redis` crate and written by one thread, replies
//! are parsed by the crate's [`redis::Parser`] on another, so a connection pipelines
//! without waiting for answers, and a reader blocked on a silent server never holds a lock.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, Value};

/// Where a Redis server is and how to log in.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    host: String,
    port: u16,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

impl Target {
    /// Reads a `redis://[user[:password]@]host[:port][/db]` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let info = url.into_connection_info().map_err(|e| format!("{url}: {e}"))?;
        let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            return Err(format!("{url}: only redis:// (plain TCP) is supported"));
        };
        let settings = info.redis_settings();
        Ok(Self {
            host,
            port,
            db: settings.db(),
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }

    /// `host:port`.
    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn socket_addr(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
    }
}

/// The reading half of a connection.
pub(crate) struct Reader {
    stream: TcpStream,
    parser: redis::Parser,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("peer", &self.stream.peer_addr().ok()).finish()
    }
}

impl Reader {
    /// The next reply or push message; an error when the connection failed or the server
    /// sent something that is not RESP (the connection is then unusable).
    pub(crate) fn next(&mut self) -> Result<Value, String> {
        self.parser.parse_value(&self.stream).map_err(|e| e.to_string())
    }
}

/// Connects and logs in; `name` is shown by `CLIENT LIST`. Every step is bounded by
/// `timeout`; the returned halves block without a timeout (the writer has `timeout` for
/// writes: a server that stopped reading fails the write instead of hanging).
pub(crate) fn connect(target: &Target, name: &str, timeout: Duration) -> Result<(TcpStream, Reader), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", target.addr());
    let addr = target.socket_addr().map_err(|e| fail(&e))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(&e))?;
    stream.set_nodelay(true).map_err(|e| fail(&e))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| fail(&e))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| fail(&e))?;
    let mut hello = redis::pipe();
    if let Some(password) = &target.password {
        match &target.username {
            Some(user) => hello.cmd("AUTH").arg(user).arg(password),
            None => hello.cmd("AUTH").arg(password),
        };
    }
    if target.db != 0 {
        hello.cmd("SELECT").arg(target.db);
    }
    hello.cmd("CLIENT").arg("SETNAME").arg(name);
    let mut writer = stream.try_clone().map_err(|e| fail(&e))?;
    writer.write_all(&hello.get_packed_pipeline()).map_err(|e| fail(&e))?;
    let mut reader = Reader { stream, parser: redis::Parser::new() };
    for _ in 0..hello.len() {
        match reader.next().map_err(|e| fail(&e))? {
            Value::ServerError(e) => return Err(fail(&e)),
            Value::Okay | Value::SimpleString(_) => {}
            other => return Err(fail(&format!("unexpected handshake reply {other:?}"))),
        }
    }
    reader.stream.set_read_timeout(None).map_err(|e| fail(&e))?;
    Ok((writer, reader))
}

/// Closes both halves of a connection (wakes its reader).
pub(crate) fn close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

/// A short description of a reply, for errors.
pub(crate) fn describe(value: &Value) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

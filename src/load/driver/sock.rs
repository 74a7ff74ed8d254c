//! Sockets for the driver: a non-blocking connect from a chosen source address, and the
//! failure cause of an I/O error.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::load::report::FailureCause;

/// Starts a non-blocking TCP connect to `addr` (with `TCP_NODELAY`), from `source` if given
/// (bound with `SO_REUSEADDR`, port chosen by the kernel).
pub(super) fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Whether a non-blocking connect is under way (EINPROGRESS, which std has no stable kind for).
fn in_progress(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    const EINPROGRESS: i32 = 115;
    #[cfg(not(target_os = "linux"))]
    const EINPROGRESS: i32 = 36;
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS)
}

/// The failure cause of an I/O error.
pub(crate) fn classify(e: &io::Error) -> FailureCause {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => FailureCause::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => FailureCause::Reset,
        K::TimedOut => FailureCause::ConnectTimeout,
        K::AddrNotAvailable | K::AddrInUse => FailureCause::NoLocalPort,
        kind => match e.raw_os_error() {
            // ENFILE, EMFILE.
            Some(23 | 24) => FailureCause::TooManyFiles,
            _ => FailureCause::Io(kind.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_from_another_loopback_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let _stream = connect(listener.local_addr().unwrap(), Some(source)).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
    }

    #[test]
    fn classifies_errors() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&refused), FailureCause::Refused);
        assert_eq!(classify(&io::Error::from(io::ErrorKind::BrokenPipe)), FailureCause::Reset);
        assert_eq!(classify(&io::Error::from_raw_os_error(24)), FailureCause::TooManyFiles);
        assert!(in_progress(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}

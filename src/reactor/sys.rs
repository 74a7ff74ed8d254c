//! The OS specifics of the reactor, in one place.
//!
//! Required here: [`listeners`] (one listening socket per worker, `SO_REUSEPORT` where the
//! OS has it) and [`read_buf`] (read from a socket into a `BytesMut`'s spare capacity without
//! zeroing it first). Everything else goes through mio.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};

use bytes::{BufMut, BytesMut};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// One listener per worker on `addr`. With `SO_REUSEPORT` the kernel balances new
/// connections over them; port 0 is resolved by the first and reused by the rest. A port
/// another process listens on is refused (`AddrInUse`), even if that process set
/// `SO_REUSEPORT` too: the kernel would otherwise split the connections between the two.
pub(crate) fn listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<StdListener>> {
    if addr.port() != 0 {
        // Without SO_REUSEPORT this bind fails if anyone listens there (SO_REUSEADDR only
        // lets it past sockets in TIME_WAIT); it is closed again before the real ones.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let first = bind(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind(addr)?);
    }
    Ok(all)
}

/// A non-blocking listener with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Reads once from `stream` into the spare capacity of `buf` (reserving `want` bytes first)
/// without initialising it; returns the byte count (0 at end of stream) and whether the read
/// filled all the spare capacity (if not, the socket's receive queue was empty after it).
#[allow(unsafe_code)] // the crate's only unsafe block: see the SAFETY note
pub(crate) fn read_buf(
    stream: &mio::net::TcpStream,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<(usize, bool)> {
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    let room = spare.len();
    let n = SockRef::from(stream).recv(spare)?;
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity (the kernel wrote
    // them; socket2 returns how many), and `n <= spare.len()`.
    unsafe { buf.advance_mut(n) };
    Ok((n, n == room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_even_with_reuse_port() {
        let held = listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = held[0].local_addr().unwrap();
        assert_eq!(held[1].local_addr().unwrap(), addr, "the second worker shares the port");
        let err = listeners(addr, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(held);
        assert_eq!(listeners(addr, 1).unwrap()[0].local_addr().unwrap(), addr, "free again");
    }
}

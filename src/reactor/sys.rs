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
/// connections over them; port 0 is resolved by the first and reused by the rest.
pub(crate) fn listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<StdListener>> {
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

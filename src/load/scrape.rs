//! The server's Prometheus `/metrics`, read with one plain HTTP/1.1 GET (tick: late ticks).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response read.
const MAX_RESPONSE: usize = 4 << 20;

/// The body of `GET /metrics` on `addr`, or `None` if the server does not answer it with 200
/// within `timeout`.
pub(crate) fn fetch(addr: SocketAddr, host: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_nodelay(true).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if complete(&response) || response.len() > MAX_RESPONSE {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_ascii_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// Whether the response has its head and the `Content-Length` bytes of body.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

/// The value of an unlabelled sample `name` in a Prometheus text body.
pub(crate) fn value(body: &str, name: &str) -> Option<u64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        let number = rest.split_ascii_whitespace().next()?;
        number.parse::<u64>().ok().or_else(|| number.parse::<f64>().ok().map(|v| v as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples() {
        let body = "# HELP hibiki_ticks_total x\nhibiki_ticks_total 600\nhibiki_late_ticks_total 3\n";
        assert_eq!(value(body, "hibiki_ticks_total"), Some(600));
        assert_eq!(value(body, "hibiki_late_ticks_total"), Some(3));
        assert_eq!(value(body, "hibiki_late"), None);
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
    }

    #[test]
    fn a_server_without_metrics_is_unknown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        });
        assert_eq!(fetch(addr, "x", Duration::from_secs(2)), None);
        server.join().unwrap();
    }
}

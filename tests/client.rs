//! The client against a real `hibiki` server in-process, and against small fake servers for
//! what a well-behaved server never does (go silent, refuse, drop).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hibiki::app::ServeApp;
use hibiki::client::{Backoff, Client, ClientBuilder, ClientError, Incoming, ReconnectingClient, UrlError};
use hibiki::proto::CloseCode;
use hibiki::proto::handshake::{EMPTY_HEADER, MAX_HEADERS, Status, parse_request, write_accept, write_error};
use hibiki::reactor::{Running, Server};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn start_server() -> Running<ServeApp> {
    Server::builder().bind("127.0.0.1:0".parse().unwrap()).threads(1).start(ServeApp::default()).unwrap()
}

fn url(server: &Running<ServeApp>, path: &str) -> String {
    format!("ws://{}{path}", server.local_addr())
}

/// 100 KiB of text that compresses (repetitive) and of binary that does not (pseudo-random).
fn big_payloads() -> (String, Vec<u8>) {
    let text: String = (0..100 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let binary = (0..100 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (text, binary)
}

fn echo_round_trips(client: &mut Client) -> TestResult {
    client.send_text("hello")?;
    assert_eq!(client.recv()?, Incoming::Text("hello".into()));
    client.send_binary(&[0, 1, 2, 255])?;
    assert_eq!(client.recv()?, Incoming::Binary(Bytes::from_static(&[0, 1, 2, 255])));
    client.send_text("")?;
    assert_eq!(client.recv()?, Incoming::Text(String::new()));
    let (text, binary) = big_payloads();
    client.send_text(&text)?;
    client.send_binary(&binary)?;
    assert_eq!(client.recv()?, Incoming::Text(text));
    assert_eq!(client.recv()?, Incoming::Binary(Bytes::from(binary)));
    Ok(())
}

#[test]
fn echo_with_deflate() -> TestResult {
    let server = start_server();
    let mut client = Client::connect(&url(&server, "/echo"))?;
    assert!(client.is_deflate());
    assert_eq!(client.protocol(), None);
    assert_eq!(client.peer_addr(), server.local_addr());
    assert!(client.local_addr().ip().is_loopback());
    echo_round_trips(&mut client)?;
    client.close(CloseCode::NORMAL, "")?;
    server.shutdown();
    Ok(())
}

#[test]
fn echo_without_deflate() -> TestResult {
    let server = start_server();
    let mut client = ClientBuilder::new().deflate(false).connect(&url(&server, "/echo"))?;
    assert!(!client.is_deflate());
    echo_round_trips(&mut client)?;
    client.close(CloseCode::NORMAL, "")?;
    server.shutdown();
    Ok(())
}

#[test]
fn ping_pong_and_recv_timeout() -> TestResult {
    let server = start_server();
    let mut client = Client::connect(&url(&server, "/echo"))?;
    let started = Instant::now();
    assert_eq!(client.recv_timeout(Duration::from_millis(100))?, None);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(client.recv_timeout(Duration::ZERO)?, None);
    client.ping(b"are you there")?;
    let pong = client.recv_timeout(Duration::from_secs(5))?;
    assert_eq!(pong, Some(Incoming::Pong(Bytes::from_static(b"are you there"))));
    assert!(matches!(client.ping(&[0; 126]), Err(ClientError::Send(_))));
    // Still usable after the refused ping.
    client.send_text("after")?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("after".into())));
    // A zero timeout takes what already arrived, without waiting.
    client.send_text("arrived")?;
    thread::sleep(Duration::from_millis(100));
    assert_eq!(client.recv_timeout(Duration::ZERO)?, Some(Incoming::Text("arrived".into())));
    assert_eq!(client.recv_timeout(Duration::ZERO)?, None);
    server.shutdown();
    Ok(())
}

#[test]
fn close_handshake_with_code() -> TestResult {
    let server = start_server();
    let mut client = Client::connect(&url(&server, "/echo"))?;
    client.close(CloseCode(4001), "going home")?;
    assert!(client.is_closed());
    // The server echoed our code.
    let err = client.send_text("late").unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode(4001)), "{err}");
    assert!(matches!(client.recv(), Err(ClientError::Closed { .. })));
    // Closing again is a no-op; an unsendable code is refused before anything is sent.
    client.close(CloseCode::NORMAL, "")?;
    let mut other = Client::connect(&url(&server, "/echo"))?;
    assert!(matches!(other.close(CloseCode::ABNORMAL, ""), Err(ClientError::Send(_))));
    assert!(!other.is_closed());
    other.close(CloseCode::NORMAL, "")?;
    server.shutdown();
    Ok(())
}

#[test]
fn server_initiated_close() -> TestResult {
    let server = start_server();
    let mut client = Client::connect(&url(&server, "/echo"))?;
    server.shutdown();
    let incoming = client.recv_timeout(Duration::from_secs(5))?;
    assert!(matches!(incoming, Some(Incoming::Close { code: CloseCode::GOING_AWAY, .. })), "{incoming:?}");
    assert!(client.is_closed());
    assert_eq!(client.recv().unwrap_err().close_code(), Some(CloseCode::GOING_AWAY));
    Ok(())
}

#[test]
fn broadcast_between_two_clients() -> TestResult {
    let server = start_server();
    let mut a = Client::connect(&url(&server, "/broadcast"))?;
    let mut b = Client::connect(&url(&server, "/broadcast"))?;
    // Once `a` hears `b`, both are members.
    b.send_text("b is here")?;
    assert_eq!(a.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("b is here".into())));
    assert_eq!(b.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("b is here".into())));
    a.send_binary(b"from a")?;
    let expected = Some(Incoming::Binary(Bytes::from_static(b"from a")));
    assert_eq!(b.recv_timeout(Duration::from_secs(5))?, expected);
    assert_eq!(a.recv_timeout(Duration::from_secs(5))?, expected);
    a.close(CloseCode::NORMAL, "")?;
    b.close(CloseCode::NORMAL, "")?;
    server.shutdown();
    Ok(())
}

#[test]
fn refusals_carry_the_status() {
    let server = start_server();
    let err = Client::connect(&url(&server, "/nowhere")).unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(!err.is_retryable());
    server.shutdown();

    let err = Client::connect("http://127.0.0.1/").unwrap_err();
    assert!(matches!(err, ClientError::Url(UrlError::UnsupportedScheme(_))), "{err}");
    assert!(err.to_string().contains("wss://"));
    let err = ClientBuilder::new().header("Bad\r\nHeader", "x").connect("ws://127.0.0.1:9/").unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
}

#[test]
fn connection_refused_is_an_io_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Client::connect(&format!("ws://127.0.0.1:{port}/")).unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err}");
    assert!(err.is_retryable());
}

// ---- fake servers ----

/// What a fake server does with a connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Drop the connection before answering.
    Drop,
    /// Answer with this HTTP status.
    Refuse(u16),
    /// Complete the handshake, then read and discard forever (never answers pings).
    Silent,
    /// Complete the handshake, then echo frames back unmasked: enough for text and pings.
    Greet(&'static [u8]),
    /// Complete the handshake and send a Close 1000 in the same write, then wait for the reply.
    CloseNormal,
}

struct FakeServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// A fake server that treats connection `i` as `plan(i)`.
fn fake_server(plan: impl Fn(usize) -> Fake + Send + 'static) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (Arc::clone(&accepted), Arc::clone(&requests));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let i = count.fetch_add(1, Ordering::SeqCst);
            let action = plan(i);
            let log = Arc::clone(&log);
            thread::spawn(move || serve_fake(stream, action, &log));
        }
    });
    FakeServer { addr, accepted, requests }
}

fn serve_fake(mut stream: TcpStream, action: Fake, log: &Mutex<Vec<String>>) {
    if let Fake::Drop = action {
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut out = Vec::new();
    loop {
        let Ok(n) = stream.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        match parse_request(&buf, &mut headers, 8192) {
            Ok(Status::Partial) => continue,
            Ok(Status::Complete(request)) => {
                log.lock().unwrap().push(String::from_utf8_lossy(&buf[..request.len]).into_owned());
                let Ok(upgrade) = request.upgrade() else { return };
                match action {
                    Fake::Refuse(status) => write_error(status, &[], "no\n", &mut out),
                    _ => {
                        let protocol = upgrade.select_protocol(&["chat.v2"]);
                        write_accept(upgrade.key(), protocol, None, &mut out);
                    }
                }
                break;
            }
            Err(_) => return,
        }
    }
    match action {
        Fake::Greet(text) => {
            // A text frame in the same write as the 101: the client must keep these bytes.
            out.extend_from_slice(&[0x81, text.len() as u8]);
            out.extend_from_slice(text);
        }
        Fake::CloseNormal => out.extend_from_slice(&[0x88, 0x04, 0x03, 0xe8, b'o', b'k']),
        _ => {}
    }
    if stream.write_all(&out).is_err() {
        return;
    }
    // Keep the connection open (and read what comes) until the client hangs up; answer a
    // ping only for Greet.
    let mut frames = Vec::new();
    loop {
        let Ok(n) = stream.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        frames.extend_from_slice(&chunk[..n]);
        if let Fake::Greet(_) = action {
            while let Some((opcode, payload, used)) = unmask_frame(&frames) {
                frames.drain(..used);
                let reply = match opcode {
                    0x9 => 0xA,
                    0x1 | 0x2 => opcode,
                    _ => continue,
                };
                let mut frame = vec![0x80 | reply, payload.len() as u8];
                frame.extend_from_slice(&payload);
                let _ = stream.write_all(&frame);
            }
        }
        if let Fake::CloseNormal = action {
            // The client's reply arrived: hang up, as the server should.
            if frames.len() >= 2 {
                return;
            }
        }
    }
}

/// A whole small (< 126 bytes) masked client frame at the front of `buf`.
fn unmask_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 6 {
        return None;
    }
    let len = usize::from(buf[1] & 0x7f);
    assert!(len < 126, "fake server handles small frames only");
    if buf.len() < 6 + len {
        return None;
    }
    let key = &buf[2..6];
    let payload = buf[6..6 + len].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
    Some((buf[0] & 0x0f, payload, 6 + len))
}

fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(20), Duration::from_millis(100)).max_attempts(Some(5))
}

#[test]
fn bytes_after_the_response_head_are_the_first_frame() -> TestResult {
    let fake = fake_server(|_| Fake::Greet(b"welcome"));
    let mut client = ClientBuilder::new()
        .protocol("chat.v1")
        .protocol("chat.v2")
        .header("Authorization", "Bearer t0ken")
        .deflate(false)
        .connect(&format!("ws://{}/room?id=7", fake.addr))?;
    assert_eq!(client.protocol(), Some("chat.v2"));
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("welcome".into())));
    let request = fake.requests.lock().unwrap()[0].clone();
    assert!(request.starts_with("GET /room?id=7 HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("\r\nAuthorization: Bearer t0ken\r\n"), "{request}");
    assert!(request.contains("\r\nSec-WebSocket-Protocol: chat.v1, chat.v2\r\n"), "{request}");
    assert!(!request.contains("Sec-WebSocket-Extensions"), "{request}");
    client.ping(b"p")?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Pong(Bytes::from_static(b"p"))));
    Ok(())
}

#[test]
fn refusal_with_401_is_not_retried() {
    let fake = fake_server(|_| Fake::Refuse(401));
    let err = Client::connect(&format!("ws://{}/", fake.addr)).unwrap_err();
    assert_eq!(err.status(), Some(401));
    let err = ReconnectingClient::builder()
        .backoff(fast_backoff())
        .connect(&format!("ws://{}/", fake.addr))
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 2, "one attempt each, no retry");
}

#[test]
fn failed_connects_are_retried_with_backoff() -> TestResult {
    // The first two connections are dropped mid-handshake, then a 503, then it works.
    let fake = fake_server(|i| match i {
        0 | 1 => Fake::Drop,
        2 => Fake::Refuse(503),
        _ => Fake::Greet(b"finally"),
    });
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&failures);
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connects);
    let mut client = ReconnectingClient::builder()
        .client(ClientBuilder::new().deflate(false))
        .backoff(fast_backoff())
        .on_connect(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .on_disconnect(move |e| seen.lock().unwrap().push(e.to_string()))
        .connect(&format!("ws://{}/", fake.addr))?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("finally".into())));
    assert_eq!(failures.lock().unwrap().len(), 3, "{:?}", failures.lock().unwrap());
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    assert_eq!(client.reconnects(), 0, "the first connection is not a reconnect");
    Ok(())
}

#[test]
fn gives_up_after_max_attempts() {
    let fake = fake_server(|_| Fake::Drop);
    let started = Instant::now();
    let err = ReconnectingClient::builder()
        .backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(40)).max_attempts(Some(3)))
        .connect(&format!("ws://{}/", fake.addr))
        .unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err}");
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 4, "the first try and 3 retries");
    assert!(started.elapsed() >= Duration::from_millis(5 + 10 + 20));
}

#[test]
fn reconnects_after_the_server_goes_away() -> TestResult {
    let server = start_server();
    let addr = server.local_addr();
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connects);
    let mut client = ReconnectingClient::builder()
        .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(200)).max_attempts(None))
        .on_connect(move |conn| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            conn.send_text(&format!("hello #{n}"))
        })
        .connect(&format!("ws://{addr}/echo"))?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("hello #0".into())));

    // The server stops (closing with 1001), then comes back on the same port.
    server.shutdown();
    assert_eq!(client.recv_timeout(Duration::from_millis(300))?, None);
    assert!(!client.is_connected());
    assert!(matches!(client.send_text("lost"), Err(ClientError::NotConnected)));
    let server = Server::builder().bind(addr).threads(1).start(ServeApp::default())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        got = client.recv_timeout(Duration::from_millis(100))?;
    }
    assert_eq!(got, Some(Incoming::Text("hello #1".into())));
    assert_eq!(client.reconnects(), 1);
    client.send_text("again")?;
    assert_eq!(client.recv_timeout(Duration::from_secs(5))?, Some(Incoming::Text("again".into())));

    // A local close ends it for good.
    client.close(CloseCode::NORMAL, "bye")?;
    assert!(client.is_closed());
    assert!(matches!(client.recv_timeout(Duration::from_millis(50)), Err(ClientError::Closed { .. })));
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    server.shutdown();
    Ok(())
}

#[test]
fn reconnects_after_the_tcp_connection_drops() -> TestResult {
    // Connection 0 is greeted, then the server drops the TCP connection without a Close
    // frame; connection 1 is greeted and kept.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let i = count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                if i == 0 {
                    // Handshake, greet, then drop the TCP connection without a Close frame.
                    let mut stream = stream;
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
                    if let Ok(Status::Complete(request)) = parse_request(&buf[..n], &mut headers, 8192) {
                        let key = request.upgrade().map(|u| u.key().to_vec()).unwrap_or_default();
                        write_accept(&key, None, None, &mut out);
                        out.extend_from_slice(&[0x81, 0x05]);
                        out.extend_from_slice(b"first");
                        let _ = stream.write_all(&out);
                    }
                    thread::sleep(Duration::from_millis(50));
                } else {
                    serve_fake(stream, Fake::Greet(b"second"), &Mutex::new(Vec::new()));
                }
            });
        }
    });
    let lost = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lost);
    let mut client = ReconnectingClient::builder()
        .client(ClientBuilder::new().deflate(false))
        .backoff(fast_backoff())
        .on_disconnect(move |e| seen.lock().unwrap().push(e.close_code()))
        .connect(&format!("ws://{addr}/"))?;
    let mut texts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while texts.len() < 2 && Instant::now() < deadline {
        if let Some(Incoming::Text(text)) = client.recv_timeout(Duration::from_millis(100))? {
            texts.push(text);
        }
    }
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(client.reconnects(), 1);
    assert_eq!(*lost.lock().unwrap(), [Some(CloseCode::ABNORMAL)]);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    Ok(())
}

#[test]
fn heartbeat_detects_a_silent_server() -> TestResult {
    let fake = fake_server(|_| Fake::Silent);
    let lost = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lost);
    let mut client = ReconnectingClient::builder()
        .backoff(fast_backoff())
        .ping_interval(Some(Duration::from_millis(100)))
        .ping_timeout(Duration::from_millis(150))
        .on_disconnect(move |e| seen.lock().unwrap().push(matches!(e, ClientError::Timeout)))
        .connect(&format!("ws://{}/", fake.addr))?;
    let started = Instant::now();
    while client.reconnects() == 0 && started.elapsed() < Duration::from_secs(5) {
        assert_eq!(client.recv_timeout(Duration::from_millis(50))?, None);
    }
    let elapsed = started.elapsed();
    assert_eq!(client.reconnects(), 1);
    // 100 ms of silence, then 150 ms without an answer, then a short backoff.
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(*lost.lock().unwrap(), [true]);
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 2);
    Ok(())
}

#[test]
fn heartbeat_keeps_a_live_connection() -> TestResult {
    let fake = fake_server(|_| Fake::Greet(b"hi"));
    let mut client = ReconnectingClient::builder()
        .client(ClientBuilder::new().deflate(false))
        .ping_interval(Some(Duration::from_millis(50)))
        .ping_timeout(Duration::from_millis(200))
        .connect(&format!("ws://{}/", fake.addr))?;
    assert_eq!(client.recv_timeout(Duration::from_secs(2))?, Some(Incoming::Text("hi".into())));
    // Several heartbeats go out and are answered; their pongs are not handed out.
    assert_eq!(client.recv_timeout(Duration::from_millis(600))?, None);
    assert_eq!(client.reconnects(), 0);
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 1);
    // A user ping's pong is handed out.
    client.ping(b"mine")?;
    assert_eq!(
        client.recv_timeout(Duration::from_secs(2))?,
        Some(Incoming::Pong(Bytes::from_static(b"mine")))
    );
    Ok(())
}

#[test]
fn no_reconnect_after_a_normal_close() -> TestResult {
    let fake = fake_server(|_| Fake::CloseNormal);
    let mut client =
        ReconnectingClient::builder().backoff(fast_backoff()).connect(&format!("ws://{}/", fake.addr))?;
    let incoming = client.recv_timeout(Duration::from_secs(5))?;
    assert_eq!(incoming, Some(Incoming::Close { code: CloseCode::NORMAL, reason: "ok".into() }));
    assert!(client.is_closed());
    let err = client.recv_timeout(Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::NORMAL));
    assert!(matches!(client.send_text("x"), Err(ClientError::Closed { .. })));
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.reconnects(), 0);
    Ok(())
}

#[test]
fn clients_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
    assert_send::<ReconnectingClient>();
    assert_send::<ClientError>();
}

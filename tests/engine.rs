//! The engine over real sockets: each row of the limits table that the reactor owns, and the
//! classic transport bugs. Every test runs its own server on 127.0.0.1:0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{Peer, eventually, http, start, status_of};
use hibiki::app::ServeApp;
use hibiki::proto::{CloseCode, Event, MessageKind};
use hibiki::reactor::{Rejection, Running, Server};

const SEC: Duration = Duration::from_secs(1);

#[test]
fn echo_text_and_binary() {
    let server = start(Server::builder(), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    peer.send_text("hello");
    assert_eq!(peer.recv(), Event::Text(Bytes::from("hello")));
    peer.send(MessageKind::Binary, &[0, 1, 2, 255]);
    assert_eq!(peer.recv(), Event::Binary(Bytes::from_static(&[0, 1, 2, 255])));
    let mut out = bytes::BytesMut::new();
    peer.ws.close(CloseCode::NORMAL, "bye", &mut out).unwrap();
    peer.send_raw(&out);
    assert_eq!(peer.expect_close(), CloseCode::NORMAL);
    assert!(peer.closed_within(SEC), "the server closes TCP after the close handshake");
    let handle = server.handle();
    assert!(eventually(SEC, || handle.stats().snapshot().close_codes[0] == 1));
}

#[test]
fn healthz_and_unknown_paths() {
    let server = start(Server::builder(), ServeApp::default());
    let addr = server.local_addr();
    assert_eq!(status_of(&http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
    assert_eq!(status_of(&http(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")), 404);
    let refused = Peer::try_connect(addr, "/nope", &[], false).err().expect("refused");
    assert_eq!(refused.status, 404);
}

#[test]
fn message_over_the_limit_closes_1009() {
    let server = start(Server::builder().max_message_size(1000), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    // Only the header of a 10 MB frame: refused from the header, nothing buffered.
    let header = &Peer::frame(0x82, &[0u8; 1001])[..8];
    let mut big = header.to_vec();
    big[1] = 0x80 | 127;
    big.truncate(2);
    big.extend_from_slice(&10_000_000u64.to_be_bytes());
    big.extend_from_slice(&[1, 2, 3, 4]);
    peer.send_raw(&big);
    assert_eq!(peer.expect_close(), CloseCode::MESSAGE_TOO_BIG);
    // Fragments adding up past the limit.
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    peer.send_raw(&[Peer::frame(0x02, &[0; 600]), Peer::frame(0x80, &[0; 600])].concat());
    assert_eq!(peer.expect_close(), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn too_many_fragments_close_1009() {
    let server = start(Server::builder().max_fragments(8), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    let mut bytes = Peer::frame(0x01, b"a");
    for _ in 0..10 {
        bytes.extend(Peer::frame(0x00, b"a"));
    }
    peer.send_raw(&bytes);
    assert_eq!(peer.expect_close(), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn invalid_utf8_closes_1007() {
    let server = start(Server::builder(), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    peer.send_raw(&Peer::frame(0x81, &[0xce, 0xba, 0xff]));
    assert_eq!(peer.expect_close(), CloseCode::INVALID_PAYLOAD);
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    peer.send_raw(&Peer::frame(0x88, &[0x03, 0xe8, 0xc0, 0x80]));
    assert_eq!(peer.expect_close(), CloseCode::INVALID_PAYLOAD, "close reason");
}

#[test]
fn protocol_errors_close_1002() {
    let server = start(Server::builder(), ServeApp::default());
    let unmasked = vec![0x81, 0x02, b'h', b'i'];
    let cases: Vec<Vec<u8>> = vec![
        Peer::frame(0xc1, b"rsv1 without deflate"),
        Peer::frame(0xa1, b"rsv2"),
        Peer::frame(0x83, b"opcode 3"),
        Peer::frame(0x8b, b"opcode 11"),
        unmasked,
        Peer::frame(0x09, b"fragmented ping"),
        Peer::frame(0x80, b"continuation first"),
        Peer::frame(0x88, &[0x03]),
        Peer::frame(0x88, &[0x03, 0xed]),
    ];
    for bytes in cases {
        let mut peer = Peer::connect(server.local_addr(), "/echo");
        peer.send_raw(&bytes);
        assert_eq!(peer.expect_close(), CloseCode::PROTOCOL_ERROR, "{bytes:02x?}");
        assert!(peer.closed_within(SEC));
    }
}

#[test]
fn deflate_bomb_closes_1009_without_inflating_it() {
    let server = start(Server::builder().max_message_size(64 * 1024), ServeApp::default());
    let mut peer = Peer::try_connect(server.local_addr(), "/echo", &[], true).unwrap();
    assert!(peer.ws.is_compressed(), "deflate negotiated");
    // 8 MB of zeros compress to a few KB, well under the frame limit.
    peer.send(MessageKind::Binary, &vec![0u8; 8 << 20]);
    assert_eq!(peer.expect_close(), CloseCode::MESSAGE_TOO_BIG);
    // A compressed message under the limit still works on a new connection.
    let mut peer = Peer::try_connect(server.local_addr(), "/echo", &[], true).unwrap();
    let text = "compress me ".repeat(2000);
    peer.send_text(&text);
    assert_eq!(peer.recv(), Event::Text(Bytes::from(text)));
}

#[test]
fn slow_handshake_times_out() {
    let server = start(Server::builder().handshake_timeout(Duration::from_millis(200)), ServeApp::default());
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 64];
    let started = std::time::Instant::now();
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(2));
    let handle = server.handle();
    assert!(eventually(SEC, || handle.stats().snapshot().rejected(Rejection::Timeout) == 1));
}

#[test]
fn a_head_trickled_a_byte_at_a_time_is_cut_off_a_handshake_timeout_after_the_accept() {
    let timeout = Duration::from_millis(500);
    let server = start(Server::builder().handshake_timeout(timeout), ServeApp::default());
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    let connected = std::time::Instant::now();
    stream.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 64];
    // A byte every 100 ms keeps the connection busy, never finishing the head.
    let cut_off = loop {
        assert!(connected.elapsed() < 5 * SEC, "still connected after 5 s");
        if stream.write_all(b"a").is_err() {
            break connected.elapsed();
        }
        match stream.read(&mut buf) {
            Ok(0) => break connected.elapsed(),
            Ok(n) => panic!("answered: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break connected.elapsed(),
        }
    };
    assert!(cut_off >= timeout - Duration::from_millis(50), "cut off early: {cut_off:?}");
    assert!(cut_off < 4 * timeout, "trickling bytes kept it alive: {cut_off:?}");
    let handle = server.handle();
    assert!(
        eventually(SEC, || handle.stats().snapshot().rejected(Rejection::Timeout) == 1),
        "counted as a timeout"
    );
}

#[test]
fn oversized_headers_get_431() {
    let server = start(Server::builder(), ServeApp::default());
    let mut request = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 10_000));
    request.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status_of(&http(server.local_addr(), &request)), 431);
}

#[test]
fn forbidden_origin_gets_403() {
    let server =
        start(Server::builder().allowed_origins(vec!["https://good.example".into()]), ServeApp::default());
    let addr = server.local_addr();
    let refused =
        Peer::try_connect(addr, "/echo", &[("Origin", "https://evil.example")], false).err().unwrap();
    assert_eq!(refused.status, 403);
    assert!(Peer::try_connect(addr, "/echo", &[("Origin", "https://good.example")], false).is_ok());
}

#[test]
fn per_ip_cap_gets_429_before_the_upgrade() {
    let server = start(Server::builder().max_connections_per_ip(2), ServeApp::default());
    let addr = server.local_addr();
    let _a = Peer::connect(addr, "/echo");
    let _b = Peer::connect(addr, "/echo");
    let refused = Peer::try_connect(addr, "/echo", &[], false).err().expect("third is refused");
    assert_eq!(refused.status, 429);
    drop(_a);
    let handle = server.handle();
    assert!(eventually(2 * SEC, || Peer::try_connect(addr, "/echo", &[], false).is_ok()));
    assert!(handle.stats().snapshot().rejected(Rejection::PerIp) >= 1);
}

#[test]
fn server_full_gets_503() {
    let server = start(Server::builder().max_connections(1), ServeApp::default());
    let _a = Peer::connect(server.local_addr(), "/echo");
    let refused = Peer::try_connect(server.local_addr(), "/echo", &[], false).err().unwrap();
    assert_eq!(refused.status, 503);
}

#[test]
fn slow_consumer_is_closed_1008_and_memory_stays_bounded() {
    let server = start(
        Server::builder().soft_outbound_limit(64 * 1024).hard_outbound_limit(1 << 20),
        ServeApp::default(),
    );
    let addr = server.local_addr();
    // A subscriber that never reads, and a publisher that floods while a thread drains its
    // own copy of the broadcast.
    let slow = Peer::connect(addr, "/broadcast");
    let mut publisher = Peer::connect(addr, "/broadcast");
    let mut drain = publisher.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
    });
    let payload = vec![7u8; 16 * 1024];
    let handle = server.handle();
    for _ in 0..4000 {
        publisher.send(MessageKind::Binary, &payload);
        if handle.stats().snapshot().slow_consumer_closes > 0 {
            break;
        }
    }
    assert!(eventually(5 * SEC, || handle.stats().snapshot().slow_consumer_closes == 1));
    assert!(eventually(5 * SEC, || handle.stats().snapshot().close_codes[6] == 1), "counted as 1008");
    drop(slow);
    // Everyone else is unaffected.
    let mut fresh = Peer::connect(addr, "/broadcast");
    assert!(eventually(SEC, || handle.stats().snapshot().connections == 2));
    publisher.send_text("still here");
    assert_eq!(fresh.recv(), Event::Text(Bytes::from("still here")));
}

#[test]
fn silent_peer_is_closed_after_the_heartbeat_timeout() {
    let server = start(
        Server::builder()
            .ping_interval(Some(Duration::from_millis(100)))
            .ping_timeout(Duration::from_millis(200)),
        ServeApp::default(),
    );
    let peer = Peer::connect(server.local_addr(), "/echo");
    // Do not read: the ping is never answered.
    let handle = server.handle();
    assert!(eventually(3 * SEC, || handle.stats().snapshot().heartbeat_timeouts == 1));
    let snapshot = handle.stats().snapshot();
    assert_eq!(snapshot.abnormal, 1);
    assert_eq!(snapshot.connections, 0);
    drop(peer);
    // A peer that answers pings stays.
    let mut alive = Peer::connect(server.local_addr(), "/echo");
    for _ in 0..5 {
        assert!(matches!(alive.next_event(SEC), Some(Event::Ping(_))), "pinged");
    }
    assert_eq!(handle.stats().snapshot().heartbeat_timeouts, 1);
}

#[test]
fn graceful_shutdown_sends_1001_and_stops() {
    let server = start(Server::builder(), ServeApp::default());
    let mut a = Peer::connect(server.local_addr(), "/echo");
    let mut b = Peer::connect(server.local_addr(), "/broadcast");
    let addr = server.local_addr();
    let stopper = std::thread::spawn(move || server.shutdown());
    assert_eq!(a.expect_close(), CloseCode::GOING_AWAY);
    assert_eq!(b.expect_close(), CloseCode::GOING_AWAY);
    stopper.join().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn handshake_and_first_frame_in_one_packet() {
    let server = start(Server::builder(), ServeApp::default());
    let addr = server.local_addr();
    let (mut bytes, _) = common::request_bytes(addr, "/echo", &[], false);
    bytes.extend(Peer::frame(0x81, b"early"));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&bytes).unwrap();
    stream.set_read_timeout(Some(5 * SEC)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(7).any(|w| w == b"\x81\x05early") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn frame_written_one_byte_at_a_time() {
    let server = start(Server::builder(), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    for byte in Peer::frame(0x81, "slow κόσμε".as_bytes()) {
        peer.send_raw(&[byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(peer.recv(), Event::Text(Bytes::from("slow κόσμε")));
}

#[test]
fn fifty_frames_in_one_write_are_answered_in_order() {
    let server = start(Server::builder(), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    let bytes: Vec<u8> = (0..50).flat_map(|i| Peer::frame(0x81, format!("m{i}").as_bytes())).collect();
    peer.send_raw(&bytes);
    for i in 0..50 {
        assert_eq!(peer.recv(), Event::Text(Bytes::from(format!("m{i}"))));
    }
}

#[test]
fn message_larger_than_the_socket_buffers_both_ways() {
    let server = start(Server::builder().max_message_size(16 << 20), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    let payload: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = peer.stream.try_clone().unwrap();
    let mut out = bytes::BytesMut::new();
    peer.ws.send(MessageKind::Binary, &payload, &mut out).unwrap();
    // Write from another thread while this one reads the echo.
    let sender = std::thread::spawn(move || writer.write_all(&out).unwrap());
    let Some(Event::Binary(echo)) = peer.next_event(20 * SEC) else { panic!("no echo") };
    sender.join().unwrap();
    assert_eq!(echo.len(), payload.len());
    assert!(echo[..] == payload[..]);
}

#[test]
fn broadcast_reaches_every_member_once() {
    let server = start(Server::builder().threads(2), ServeApp::default());
    let mut members = broadcast_members(&server, 6);
    members[0].send_text("to all");
    for member in &mut members {
        assert_eq!(member.recv(), Event::Text(Bytes::from("to all")));
    }
    for member in &mut members {
        assert!(member.next_event(Duration::from_millis(100)).is_none(), "exactly once");
    }
}

/// `n` members of `/broadcast`, every one registered before it returns.
fn broadcast_members(server: &Running<ServeApp>, n: usize) -> Vec<Peer> {
    let members: Vec<Peer> = (0..n).map(|_| Peer::connect(server.local_addr(), "/broadcast")).collect();
    let handle = server.handle();
    assert!(eventually(Duration::from_secs(10), || handle.stats().snapshot().connections == n as u64));
    members
}

#[test]
fn a_fan_out_written_over_several_turns_reaches_every_member_in_order_once() {
    // 600 members on one worker: a sweep takes more than one turn (a slice is a quarter of
    // those waiting, at least 256). The publisher sends 8, waits for its own copies (which
    // come at once, with the read), and sends the next 8, so its publishes arrive while the
    // others are still being written; nobody else reads until the end.
    let server = start(Server::builder().threads(1), ServeApp::default());
    let mut members = broadcast_members(&server, 600);
    let publisher = 599;
    let expect = |member: &mut Peer, n: usize, m: usize| {
        let event = member.next_event(Duration::from_secs(10));
        assert_eq!(event, Some(Event::Text(Bytes::from(format!("m{n}")))), "member {m}, message {n}");
    };
    for round in 0..5 {
        for i in 0..8 {
            members[publisher].send_text(&format!("m{}", round * 8 + i));
        }
        for i in 0..8 {
            expect(&mut members[publisher], round * 8 + i, publisher);
        }
    }
    for (m, member) in members.iter_mut().enumerate().take(publisher) {
        for n in 0..40 {
            expect(member, n, m);
        }
    }
    for member in &mut members[..10] {
        assert!(member.next_event(Duration::from_millis(50)).is_none(), "exactly once");
    }
}

#[test]
fn a_handshake_storm_is_paced_and_open_connections_keep_their_pace() {
    let server = start(Server::builder().handshake_rate(50), ServeApp::default());
    let addr = server.local_addr();
    let mut open = Peer::connect(addr, "/echo");
    // 100 clients connect at once (a restart's reconnect storm), each sending its request.
    let storm: Vec<std::thread::JoinHandle<()>> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                let _ = Peer::try_connect(addr, "/echo", &[], false);
            })
        })
        .collect();
    // The open connection is answered promptly throughout.
    let started = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sent = std::time::Instant::now();
        open.send_text(&format!("tick {i}"));
        assert_eq!(open.recv(), Event::Text(Bytes::from(format!("tick {i}"))));
        worst = worst.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(25));
    }
    for t in storm {
        t.join().unwrap();
    }
    let handle = server.handle();
    assert!(worst < Duration::from_millis(200), "an open connection waited {worst:?}");
    // 100 handshakes at 50 per second (plus the first second's burst) take over a second.
    assert!(started.elapsed() >= Duration::from_millis(900), "not paced: {:?}", started.elapsed());
    assert_eq!(handle.stats().snapshot().connections_total, 101);
}

/// After a close handshake the peer sends nothing more (RFC 6455 §5.5.1), so the server closes
/// the TCP connection at once (§7.1.1) instead of half-closing and waiting for the peer's FIN:
/// bytes the client writes afterwards meet a reset. A server that lingered would read and drop
/// them, and the writes would all succeed.
#[test]
fn after_the_close_handshake_the_server_closes_the_socket_at_once() {
    let server = start(Server::builder().threads(1), ServeApp::default());
    let mut peer = Peer::connect(server.local_addr(), "/echo");
    let mut out = bytes::BytesMut::new();
    peer.ws.close(CloseCode::NORMAL, "", &mut out).unwrap();
    peer.send_raw(&out);
    assert_eq!(peer.expect_close(), CloseCode::NORMAL);
    assert!(peer.closed_within(Duration::from_secs(1)), "the server's FIN");
    // The client keeps its socket open and writes: the first write reaches a closed socket and
    // draws a reset, a later one fails.
    let failed = eventually(Duration::from_secs(1), || {
        let wrote = peer.stream.write(b"after the close").is_err();
        std::thread::sleep(Duration::from_millis(20));
        wrote
    });
    assert!(failed, "writes after the close handshake were accepted: the server still holds the socket");
    server.shutdown();
}

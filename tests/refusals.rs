//! Every refusal the engine and `hibiki serve` give before an upgrade, over real sockets: the
//! status, the headers that come with it, and the counter it moves. One row per line of the
//! README's "Refusals" table; each row runs its own server on 127.0.0.1:0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Peer, eventually, http, status_of};
use hibiki::app::{ServeApp, ServeConfig};
use hibiki::reactor::{REJECTIONS, Rejection, Running, Server, ServerBuilder, StatsSnapshot};

const SEC: Duration = Duration::from_secs(1);
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A WebSocket opening handshake for `path` (RFC 6455 §4.1), with header lines replaced:
/// each `(name, line)` swaps the line of that header for `line`, or removes it when `line` is
/// empty; a name the request lacks appends `line`.
fn handshake(path: &str, edits: &[(&str, &str)]) -> Vec<u8> {
    let mut lines = vec![
        ("Host", "Host: x".to_string()),
        ("Upgrade", "Upgrade: websocket".to_string()),
        ("Connection", "Connection: Upgrade".to_string()),
        ("Sec-WebSocket-Key", format!("Sec-WebSocket-Key: {KEY}")),
        ("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13".to_string()),
    ];
    for (name, line) in edits {
        match lines.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = line.to_string(),
            None => lines.push((name, line.to_string())),
        }
    }
    let mut out = format!("GET {path} HTTP/1.1\r\n");
    for (_, line) in lines.iter().filter(|(_, l)| !l.is_empty()) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The value of header `name` in a response head (case-insensitive name), if present.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn jwt_app() -> ServeApp {
    let mut config = ServeConfig::default();
    config.jwt_secret = Some("refusal-secret".into());
    config.api_key = Some("api-key".into());
    ServeApp::new(config)
}

struct Row {
    /// What is sent, as the README's table says it.
    name: &'static str,
    /// Settings beyond the defaults (`threads(1)` and the address are set for every row).
    builder: fn(ServerBuilder) -> ServerBuilder,
    /// WebSocket connections to `/echo` held open before the request.
    hold: usize,
    request: Vec<u8>,
    /// 0: closed without an answer.
    status: u16,
    /// Headers the answer must carry, with their values.
    headers: &'static [(&'static str, &'static str)],
    counted: Rejection,
}

fn same(builder: ServerBuilder) -> ServerBuilder {
    builder
}

fn rows() -> Vec<Row> {
    let version = |v: &str| handshake("/echo", &[("Sec-WebSocket-Version", v)]);
    let upgrade_required: &[(&str, &str)] =
        &[("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket"), ("Connection", "Upgrade, close")];
    let post = [b"POST".as_slice(), &handshake("/echo", &[])[3..]].concat();
    let http10 = String::from_utf8(handshake("/echo", &[])).unwrap().replacen("HTTP/1.1", "HTTP/1.0", 1);
    let mut oversized = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 10_000));
    oversized.extend_from_slice(b"\r\n\r\n");
    let row = |name, status, headers, counted, request| Row {
        name,
        builder: same,
        hold: 0,
        request,
        status,
        headers,
        counted,
    };
    vec![
        row("WebSocket handshake with POST", 405, &[("Allow", "GET")], Rejection::Method, post),
        row("WebSocket handshake over HTTP/1.0", 400, &[], Rejection::BadRequest, http10.into_bytes()),
        row(
            "Sec-WebSocket-Key without Upgrade: websocket",
            400,
            &[],
            Rejection::BadRequest,
            handshake("/echo", &[("Upgrade", "")]),
        ),
        row(
            "Upgrade: h2c with Sec-WebSocket-Key",
            400,
            &[],
            Rejection::BadRequest,
            handshake("/echo", &[("Upgrade", "Upgrade: h2c")]),
        ),
        row(
            "Upgrade: websocket without Connection: Upgrade",
            400,
            &[],
            Rejection::BadRequest,
            handshake("/echo", &[("Connection", "Connection: keep-alive")]),
        ),
        row(
            "Sec-WebSocket-Version: 8",
            426,
            upgrade_required,
            Rejection::UpgradeRequired,
            version("Sec-WebSocket-Version: 8"),
        ),
        row(
            "Sec-WebSocket-Version: 99",
            426,
            upgrade_required,
            Rejection::UpgradeRequired,
            version("Sec-WebSocket-Version: 99"),
        ),
        row("no Sec-WebSocket-Version", 426, upgrade_required, Rejection::UpgradeRequired, version("")),
        row(
            "no Sec-WebSocket-Key",
            400,
            &[],
            Rejection::BadRequest,
            handshake("/echo", &[("Sec-WebSocket-Key", "")]),
        ),
        row(
            "Sec-WebSocket-Key of 15 bytes",
            400,
            &[],
            Rejection::BadRequest,
            handshake("/echo", &[("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j")]),
        ),
        row(
            "malformed WebSocket handshake to an unknown path",
            400,
            &[],
            Rejection::BadRequest,
            handshake("/no-such-path", &[("Sec-WebSocket-Key", "")]),
        ),
        row(
            "plain GET of a WebSocket-only path (/echo)",
            426,
            upgrade_required,
            Rejection::UpgradeRequired,
            b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        row(
            "plain GET of /broadcast",
            426,
            upgrade_required,
            Rejection::UpgradeRequired,
            b"GET /broadcast HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        row(
            "plain GET of /ws",
            426,
            upgrade_required,
            Rejection::UpgradeRequired,
            b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        row(
            "WebSocket handshake to an unknown path",
            404,
            &[],
            Rejection::NotFound,
            handshake("/no-such-path", &[]),
        ),
        row(
            "plain GET of an unknown path",
            404,
            &[],
            Rejection::NotFound,
            b"GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        row("request head over 8 KiB", 431, &[], Rejection::TooLarge, oversized),
        row(
            "Content-Length that is not a number",
            400,
            &[],
            Rejection::BadRequest,
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n".to_vec(),
        ),
        row(
            "body over 64 KiB",
            413,
            &[],
            Rejection::TooLarge,
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec(),
        ),
        row(
            "GET /api/publish",
            405,
            &[("Allow", "POST")],
            Rejection::Method,
            b"GET /api/publish HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        Row {
            builder: |b| b.allowed_origins(vec!["https://good.example".into()]),
            ..row(
                "Origin not in --allowed-origin",
                403,
                &[],
                Rejection::Origin,
                handshake("/echo", &[("Origin", "Origin: https://evil.example")]),
            )
        },
        Row {
            builder: |b| b.max_connections_per_ip(1),
            hold: 1,
            ..row(
                "past --max-connections-per-ip",
                429,
                &[("Retry-After", "1")],
                Rejection::PerIp,
                handshake("/echo", &[]),
            )
        },
        Row {
            builder: |b| b.max_connections(1),
            hold: 1,
            ..row(
                "past --max-connections",
                503,
                &[("Retry-After", "1")],
                Rejection::Full,
                handshake("/echo", &[]),
            )
        },
        Row {
            builder: |b| b.handshake_timeout(Duration::from_millis(200)),
            ..row(
                "no complete head within --handshake-timeout",
                0,
                &[],
                Rejection::Timeout,
                b"GET /echo HTTP/1.1\r\nHost: x\r\n".to_vec(),
            )
        },
    ]
}

/// How each cause's counter moved from `before` to `after`.
fn moved(before: &StatsSnapshot, after: &StatsSnapshot) -> Vec<(&'static str, u64)> {
    REJECTIONS
        .iter()
        .filter(|(why, _)| after.rejected(*why) != before.rejected(*why))
        .map(|(why, label)| (*label, after.rejected(*why) - before.rejected(*why)))
        .collect()
}

fn label(why: Rejection) -> &'static str {
    REJECTIONS.iter().find(|(w, _)| *w == why).map(|(_, l)| *l).unwrap()
}

fn check(row: &Row, server: &Running<impl hibiki::reactor::Handler>) {
    let addr = server.local_addr();
    let _held: Vec<Peer> = (0..row.hold).map(|_| Peer::connect(addr, "/echo")).collect();
    let handle = server.handle();
    let before = handle.stats().snapshot();
    let answer = http(addr, &row.request);
    let name = row.name;
    if row.status == 0 {
        assert!(answer.is_empty(), "{name}: answered {answer:?}");
    } else {
        assert_eq!(status_of(&answer), row.status, "{name}: {answer}");
        assert_eq!(header(&answer, "Content-Length").map(|_| ()), Some(()), "{name}: {answer}");
    }
    for (header_name, value) in row.headers {
        assert_eq!(header(&answer, header_name), Some(*value), "{name}: {header_name} in {answer}");
    }
    let expected = vec![(label(row.counted), 1)];
    let counted = eventually(SEC, || moved(&before, &handle.stats().snapshot()) == expected);
    assert!(counted, "{name}: counted {:?}, not {expected:?}", moved(&before, &handle.stats().snapshot()));
}

#[test]
fn every_refusal_has_its_status_headers_and_counter() {
    for row in rows() {
        let builder = (row.builder)(Server::builder().bind(common::local()).threads(1));
        let server = builder.start(jwt_app()).unwrap();
        check(&row, &server);
    }
}

#[test]
fn a_bad_token_gets_401_with_a_bearer_challenge() {
    let unauthorized = |name, request| Row {
        name,
        builder: same,
        hold: 0,
        request,
        status: 401,
        headers: &[("WWW-Authenticate", "Bearer")],
        counted: Rejection::Unauthorized,
    };
    let bad_api_key = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\
        Content-Length: 2\r\n\r\n{}";
    for row in [
        unauthorized("/ws without a token (--jwt-secret)", handshake("/ws", &[])),
        unauthorized(
            "/ws with a bad token",
            handshake("/ws", &[("Authorization", "Authorization: Bearer not.a.token")]),
        ),
        unauthorized("/sse without a token", b"GET /sse?room=news HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        unauthorized("POST /api/publish with a bad API key", bad_api_key.to_vec()),
    ] {
        let server = Server::builder().bind(common::local()).threads(1).start(jwt_app()).unwrap();
        check(&row, &server);
    }
}

#[test]
fn metrics_count_refusals_by_what_they_are() {
    let server = Server::builder().bind(common::local()).threads(1).start(ServeApp::default()).unwrap();
    let addr = server.local_addr();
    assert_eq!(status_of(&http(addr, b"GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n")), 404);
    assert_eq!(status_of(&http(addr, b"GET /also-missing HTTP/1.1\r\nHost: x\r\n\r\n")), 404);
    assert_eq!(status_of(&http(addr, &handshake("/echo", &[("Sec-WebSocket-Version", "")]))), 426);
    let post = [b"PUT".as_slice(), &handshake("/echo", &[])[3..]].concat();
    assert_eq!(status_of(&http(addr, &post)), 405);
    let metrics = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    for line in [
        "hibiki_handshakes_rejected_total{cause=\"not_found\"} 2",
        "hibiki_handshakes_rejected_total{cause=\"upgrade_required\"} 1",
        "hibiki_handshakes_rejected_total{cause=\"method\"} 1",
        "hibiki_handshakes_rejected_total{cause=\"bad_request\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line} in\n{metrics}");
    }
}

#[test]
fn the_handshake_rate_delays_accepts_and_refuses_none() {
    // 2 handshakes per second (one second's worth of tokens at start): 6 clients connecting at
    // once are all upgraded, the last ones about two seconds later, none refused.
    let server =
        Server::builder().bind(common::local()).threads(1).handshake_rate(2).start(ServeApp::default());
    let server = server.unwrap();
    let addr = server.local_addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(10 * SEC)).unwrap();
                stream.write_all(&handshake("/echo", &[])).unwrap();
                let mut buf = [0u8; 12];
                stream.read_exact(&mut buf).unwrap();
                (buf, started.elapsed())
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for (status, _) in &answers {
        assert_eq!(&status[..], b"HTTP/1.1 101", "every client is upgraded");
    }
    let last = answers.iter().map(|(_, at)| *at).max().unwrap();
    assert!(last >= Duration::from_millis(1500), "not paced: the last answer came after {last:?}");
    let snapshot = server.handle().stats().snapshot();
    assert_eq!(snapshot.rejections.iter().sum::<u64>(), 0, "nothing refused: {:?}", snapshot.rejections);
}

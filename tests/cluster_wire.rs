//! The bridge against Redis servers that misbehave: a fake one speaking bad RESP (garbage,
//! replies of the wrong type, errors, a reply cut off, silence) and a proxy that silently
//! stops passing a pub/sub connection's messages. Nothing panics, every call is answered,
//! and a pub/sub connection that stopped receiving is found and repaired within 3 s.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::{Client, SEC};
use common::nodes;
use common::redis_server::{prefix, shared};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Garbage,
    WrongTypes,
    Errors,
    CutOff,
    Silent,
}

/// A fake Redis on a free port that answers the handshake, then misbehaves as `mode` says.
fn fake_redis(mode: Mode) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_fake(stream, mode));
        }
    });
    port
}

fn serve_fake(stream: TcpStream, mode: Mode) {
    let mut writer = stream.try_clone().unwrap();
    let mut parser = redis::Parser::new();
    while let Ok(request) = parser.parse_value(&stream) {
        let redis::Value::Array(args) = request else { return };
        let name = match args.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_uppercase(),
            _ => return,
        };
        let reply: &[u8] = match (name.as_str(), mode) {
            ("CLIENT" | "SELECT" | "AUTH", _) => b"+OK\r\n",
            (_, Mode::Garbage) => b"?? this is not RESP\r\n",
            (_, Mode::WrongTypes) => b":7\r\n",
            (_, Mode::Errors) => b"-ERR nope\r\n",
            (_, Mode::CutOff) => {
                let _ = writer.write_all(b"$100\r\nabc");
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            (_, Mode::Silent) => b"",
        };
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

static BRIDGE_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_bridge_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("hibiki-redis")) {
                BRIDGE_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

#[test]
fn bad_replies_timeouts_and_cut_connections_fail_calls_and_panic_nothing() {
    count_bridge_panics();
    for mode in [Mode::Garbage, Mode::WrongTypes, Mode::Errors, Mode::CutOff, Mode::Silent] {
        let port = fake_redis(mode);
        let urls = [format!("redis://127.0.0.1:{port}/")];
        let server = hibiki::reactor::Server::builder()
            .bind(common::local())
            .threads(1)
            .start(hibiki::app::ServeApp::new(nodes::config(&urls, "t:fake:", "a")))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut client = Client::connect(&server, &[]);
        for (kind, payload) in [
            ("join", json!({"room": "chat:f"})),
            ("publish", json!({"room": "chat:f", "data": 1})),
            ("resume", json!({"room": "chat:g", "after": 2})),
        ] {
            let sent = Instant::now();
            let ack = client.request(kind, kind, payload);
            assert_eq!(ack["ok"], false, "{mode:?} {kind}: {ack}");
            assert_eq!(ack["error"]["code"], "unavailable", "{mode:?} {kind}: {ack}");
            assert!(sent.elapsed() < 2 * SEC, "{mode:?} {kind} answered in {:?}", sent.elapsed());
        }
        let (status, body) = nodes::health(server.local_addr());
        assert_eq!(status, 503, "{mode:?}: {body}");
        let mut echo = common::Peer::connect(server.local_addr(), "/echo");
        echo.send_text("ok");
        assert!(matches!(echo.recv(), hibiki::proto::Event::Text(t) if &t[..] == b"ok"), "{mode:?}");
    }
    assert_eq!(BRIDGE_PANICS.load(Ordering::SeqCst), 0, "a bridge thread panicked");
}

/// A TCP proxy to Redis that can silently stop passing what Redis sends to the pub/sub
/// connections open at that moment (a half-dead connection: nothing arrives, nothing fails).
struct Proxy {
    port: u16,
    pubsub: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Proxy {
    fn start(to: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pubsub: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let list = Arc::clone(&pubsub);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                let frozen = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (list, flag) = (Arc::clone(&list), Arc::clone(&frozen));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    let mut marked = false;
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        if !marked && buf[..n].windows(9).any(|w| w == b"SUBSCRIBE") {
                            marked = true;
                            list.lock().unwrap().push(Arc::clone(&flag));
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n @ 1..) = s_in.read(&mut buf) {
                        if frozen.load(Ordering::SeqCst) {
                            continue;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, pubsub }
    }

    /// From now on nothing Redis sends reaches the pub/sub connections open now.
    fn freeze_pubsub(&self) -> usize {
        let list = self.pubsub.lock().unwrap();
        for flag in list.iter() {
            flag.store(true, Ordering::SeqCst);
        }
        list.len()
    }
}

#[test]
fn a_pub_sub_connection_that_silently_stopped_is_found_and_caught_up_within_3_s() {
    let url = shared();
    let port: u16 = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Proxy::start(port);
    let prefix = prefix("probe");
    let a = nodes::start(nodes::config(&[format!("redis://127.0.0.1:{}/", proxy.port)], &prefix, "a"));
    let b = nodes::start(nodes::config(&[url], &prefix, "b"));
    let mut member = Client::connect(&a, &[]);
    member.join("chat:probe");
    let mut publisher = Client::connect(&b, &[]);
    for i in 1..=3 {
        publisher.request("publish", &format!("p{i}"), json!({"room": "chat:probe", "data": i}));
    }
    for i in 1..=3 {
        assert_eq!(member.expect("message")["payload"]["seq"], i);
    }
    assert_eq!(proxy.freeze_pubsub(), 1, "node a's pub/sub connection");
    let frozen = Instant::now();
    for i in 4..=8 {
        let ack = publisher.request("publish", &format!("p{i}"), json!({"room": "chat:probe", "data": i}));
        assert_eq!(ack["ok"], true);
    }
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let Some(m) = member.next(4 * SEC) else { panic!("stopped at {seqs:?}") };
        if m["type"] == "message" {
            seqs.push(m["payload"]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, [4, 5, 6, 7, 8], "caught up in order, each once");
    assert!(frozen.elapsed() < 3 * SEC, "repaired in {:?}", frozen.elapsed());
    assert!(member.quiet("message", Duration::from_millis(300)));
}

//! Deferred HTTP answers (`Decision::Defer`) over real sockets: answered later from another
//! thread and from `on_command`, timed out with 504, a peer that leaves first, and a shutdown
//! while waiting.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use common::{eventually, http, status_of};
use hibiki::reactor::{
    ConnId, Ctx, Decision, Handler, HttpRequest, HttpResponse, Message, Rejection, Running, Server,
    ServerBuilder, WorkerCtx,
};

const SEC: Duration = Duration::from_secs(1);

/// Defers `/later` and hands its id (and the body it came with) to the test; answers
/// `/now` at once.
struct Later {
    deferred: Mutex<Sender<(ConnId, Vec<u8>)>>,
}

/// Answer this deferred request from the worker, and report whether it was taken.
struct Answer(ConnId, Sender<bool>);

impl Handler for Later {
    type Session = ();
    type Local = ();
    type Command = Answer;

    fn local(&self, _worker: usize) {}

    fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<()> {
        match request.head.path() {
            "/later" => {
                let _ = self.deferred.lock().unwrap().send((request.id, request.body.to_vec()));
                Decision::Defer
            }
            _ => Decision::Respond(HttpResponse::text(200, "now\n")),
        }
    }

    fn on_message(&self, _ctx: &mut Ctx<'_, Self>, _message: Message) {}

    fn on_command(&self, ctx: &mut WorkerCtx<'_, Self>, Answer(id, taken): Answer) {
        let _ = taken.send(ctx.respond(id, HttpResponse::text(200, "from on_command\n")));
    }
}

fn start(builder: ServerBuilder) -> (Running<Later>, Receiver<(ConnId, Vec<u8>)>) {
    let (sender, deferred) = channel();
    let server = builder.bind(common::local()).threads(1).start(Later { deferred: Mutex::new(sender) });
    (server.unwrap(), deferred)
}

/// A client that sent `request` and has not been answered yet.
fn pending(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    stream
}

/// Whether nothing arrives on `stream` within `wait`.
fn silent_for(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

fn answer_of(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(5 * SEC)).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks the connection's worker to answer `id`; whether the answer was taken.
fn answer_on_worker(server: &Running<Later>, id: ConnId) -> bool {
    let (taken, result) = channel();
    assert!(server.handle().post(id.worker(), Answer(id, taken)));
    result.recv_timeout(5 * SEC).expect("on_command ran")
}

#[test]
fn answered_later_from_another_thread() {
    let (server, deferred) = start(Server::builder());
    let body = b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let mut client = pending(server.local_addr(), body);
    let (id, got) = deferred.recv_timeout(5 * SEC).unwrap();
    assert_eq!(got, b"hello", "the handler saw the body");
    assert!(silent_for(&mut client, Duration::from_millis(200)), "nothing before the answer");
    // Other requests are served meanwhile.
    assert_eq!(status_of(&http(server.local_addr(), b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
    let handle = server.handle();
    let answerer = std::thread::spawn(move || {
        handle.respond(id, HttpResponse::with_type(201, "application/json", "{}"))
    });
    assert!(answerer.join().unwrap(), "posted to the worker");
    let answer = answer_of(client);
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n{}"), "{answer}");
    // Answered already: a second answer is ignored.
    assert!(!answer_on_worker(&server, id));
}

#[test]
fn answered_later_from_on_command() {
    let (server, deferred) = start(Server::builder());
    let client = pending(server.local_addr(), b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    let (id, _) = deferred.recv_timeout(5 * SEC).unwrap();
    assert!(answer_on_worker(&server, id), "the worker took the answer");
    let answer = answer_of(client);
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("from on_command\n"), "{answer}");
    assert!(!answer_on_worker(&server, id), "already answered");
    // An id that never deferred is refused too.
    let client = pending(server.local_addr(), b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    let (other, _) = deferred.recv_timeout(5 * SEC).unwrap();
    assert_ne!(other, id);
    assert!(answer_on_worker(&server, other));
    assert_eq!(status_of(&answer_of(client)), 200);
}

#[test]
fn no_answer_in_time_is_504_and_counted() {
    let timeout = Duration::from_millis(300);
    let (server, deferred) = start(Server::builder().defer_timeout(timeout));
    let started = Instant::now();
    let client = pending(server.local_addr(), b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    let (id, _) = deferred.recv_timeout(5 * SEC).unwrap();
    let answer = answer_of(client);
    assert!(answer.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"), "{answer}");
    assert!(started.elapsed() >= timeout - Duration::from_millis(30), "early: {:?}", started.elapsed());
    let handle = server.handle();
    assert!(eventually(SEC, || handle.stats().snapshot().rejected(Rejection::DeferTimeout) == 1));
    assert!(!answer_on_worker(&server, id), "too late");
}

#[test]
fn a_peer_that_leaves_frees_its_connection() {
    // One connection at most: the next request is served only once the first is freed.
    let (server, deferred) = start(Server::builder().max_connections(1));
    let addr = server.local_addr();
    let client = pending(addr, b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    let (id, _) = deferred.recv_timeout(5 * SEC).unwrap();
    assert_eq!(status_of(&http(addr, b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")), 503, "the slot is taken");
    drop(client);
    let now = || status_of(&http(addr, b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")) == 200;
    assert!(eventually(2 * SEC, now), "the slot came back");
    assert!(!answer_on_worker(&server, id), "its answer has nowhere to go");
    assert!(server.handle().respond(id, HttpResponse::text(200, "late\n")), "dropped by the worker");
    assert!(eventually(SEC, now), "and the server carries on");
}

#[test]
fn a_shutdown_answers_what_waits_with_503() {
    let (server, deferred) = start(Server::builder());
    let client = pending(server.local_addr(), b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    deferred.recv_timeout(5 * SEC).unwrap();
    let stopper = std::thread::spawn(move || server.shutdown());
    let answer = answer_of(client);
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    stopper.join().unwrap();
}

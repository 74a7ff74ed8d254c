//! Plain HTTP on a worker: the request head and body, the decision, the answer, and the
//! switch to a WebSocket or a stream.

use bytes::{Buf, Bytes};

use super::conn::{Input, Life, Phase, Refusal, stamp};
use super::stats::Rejection;
use super::worker::Worker;
use super::{Decision, Handler, HttpRequest, HttpResponse, RETRY_AFTER_SECS};
use crate::proto::Connection;
use crate::proto::handshake::request::parse_request;
use crate::proto::handshake::{EMPTY_HEADER, HandshakeError, MAX_HEADERS, Status, response};

impl<H: Handler> Worker<H> {
    pub(super) fn on_request_bytes(&mut self, key: usize) {
        let max = self.core.config.max_request_size;
        let input = self.core.conns[key].input.take();
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let outcome = match parse_request(&input, &mut headers, max) {
            Ok(Status::Partial) => None,
            Err(e) => Some(Err(e)),
            Ok(Status::Complete(request)) => match body_len(&request) {
                Err(()) => Some(Ok(Outcome::Respond(
                    HttpResponse::text(400, "bad Content-Length\n"),
                    Some(Rejection::BadRequest),
                ))),
                Ok(n) if n > self.core.config.max_body_size => Some(Ok(Outcome::Respond(
                    HttpResponse::text(413, "body too large\n"),
                    Some(Rejection::TooLarge),
                ))),
                Ok(n) if input.len() < request.len + n => None,
                Ok(n) => Some(Ok(self.decide(key, &request, &input[request.len..request.len + n]))),
            },
        };
        self.core.conns[key].input = input.into();
        match outcome {
            None => {}
            Some(Err(e)) => self.reject(key, e),
            Some(Ok(Outcome::Respond(response, why))) => {
                if let Some(why) = why {
                    self.core.stats().rejected(why);
                }
                self.core.respond(key, &response);
            }
            Some(Ok(Outcome::Reject(e))) => self.reject(key, e),
            Some(Ok(Outcome::Upgrade { session, head_len, response, ws })) => {
                self.open(key, session, head_len, response, ws);
            }
            Some(Ok(Outcome::Stream { session, head })) => self.open_stream(key, session, &head),
            Some(Ok(Outcome::Defer)) => {
                let conn = &mut self.core.conns[key];
                conn.phase = Phase::Deferred { since: stamp(self.core.tick) };
                conn.input = Input::default();
                self.core.reschedule(key);
            }
        }
    }

    /// Answers a request the handshake checks refused, with the error's status and headers.
    fn reject(&mut self, key: usize, error: HandshakeError) {
        if let Some(why) = Rejection::for_status(error.status()) {
            self.core.stats().rejected(why);
        }
        let mut out = Vec::new();
        error.write_response(&mut out);
        self.core.respond_raw(key, &out);
    }

    /// Looks at a complete request head and decides, in this order: a refusal decided at
    /// accept (429, 503), a malformed WebSocket attempt (400, 405, 426), a forbidden `Origin`
    /// (403), then the handler. Touches nothing but counters.
    fn decide(
        &self,
        key: usize,
        request: &crate::proto::handshake::request::Request<'_, '_>,
        body: &[u8],
    ) -> Outcome<H::Session> {
        let conn = &self.core.conns[key];
        let config = &self.core.config;
        if let Life::Refusing(refusal) = conn.life {
            let (status, body, why) = match refusal {
                Refusal::PerIp => (429, "too many connections from this address\n", Rejection::PerIp),
                Refusal::Full => (503, "server full\n", Rejection::Full),
            };
            // RFC 6585 §4 (429): "MAY include a Retry-After header indicating how long to wait
            // before making a new request"; RFC 9110 §15.6.4 (503): "The server MAY send a
            // Retry-After header field".
            let response =
                HttpResponse::text(status, body).header("Retry-After", &RETRY_AFTER_SECS.to_string());
            return Outcome::Respond(response, Some(why));
        }
        let upgrade = match request.upgrade_attempt() {
            None => None,
            Some(Ok(up)) => Some(up),
            Some(Err(e)) => return Outcome::Reject(e),
        };
        if let Some(up) = &upgrade {
            if !config.allowed_origins.is_empty() {
                let allowed = up.origin().is_some_and(|o| config.allowed_origins.iter().any(|a| a == o));
                if !allowed {
                    return Outcome::Respond(
                        HttpResponse::text(403, "origin not allowed\n"),
                        Some(Rejection::Origin),
                    );
                }
            }
        }
        let stats = &self.core.stats;
        let id = self.core.id_of(key);
        let http = HttpRequest { head: request, upgrade, body, peer: conn.peer.addr(), stats, id };
        match self.handler.on_request(&http) {
            Decision::Stream { session, head } => Outcome::Stream { session, head },
            Decision::Defer => Outcome::Defer,
            Decision::Respond(response) => {
                let why = Rejection::for_status(response.status);
                Outcome::Respond(response, why)
            }
            Decision::Upgrade { session, protocol } => {
                let Some(up) = upgrade else {
                    // The handler upgrades a plain request: refused as what it lacks.
                    return Outcome::Reject(request.upgrade().err().unwrap_or(HandshakeError::NotUpgrade));
                };
                let negotiated = config
                    .deflate
                    .as_ref()
                    .and_then(|d| d.negotiate_response(up.extensions()).map(|p| (p, d)));
                let params = negotiated.as_ref().map(|((p, _), d)| (*p, *d));
                let extension = negotiated.as_ref().map(|((_, header), _)| header.as_str());
                let mut response = Vec::with_capacity(256);
                response::write_accept(up.key(), protocol, extension, &mut response);
                let limits = config.limits.clone();
                let ws = match params {
                    Some((p, d)) => Connection::with_deflate(crate::proto::Role::Server, limits, p, d),
                    None => Connection::new(crate::proto::Role::Server, limits, None),
                };
                Outcome::Upgrade { session, head_len: request.len, response, ws }
            }
        }
    }

    fn open_stream(&mut self, key: usize, session: H::Session, head: &HttpResponse) {
        let mut out = Vec::with_capacity(256);
        write_head(head, None, &mut out);
        out.extend_from_slice(&head.body);
        let conn = &mut self.core.conns[key];
        conn.phase = Phase::Stream;
        conn.input = Input::default();
        conn.out.push(Bytes::from(out));
        self.sessions[key] = Some(session);
        self.core.stats().opened();
        self.core.mark_dirty(key);
        let id = self.core.id_of(key);
        self.with_ctx(key, id, |handler, ctx| handler.on_open(ctx));
    }

    fn open(&mut self, key: usize, session: H::Session, head_len: usize, response: Vec<u8>, ws: Connection) {
        if let Some((owner, _)) = self.core.cork_for(key) {
            self.drop_abnormal(owner);
        }
        self.core.cork.extend_from_slice(&response);
        let conn = &mut self.core.conns[key];
        conn.input.advance(head_len);
        conn.phase = Phase::Open(ws);
        conn.last_message = stamp(self.core.tick);
        self.sessions[key] = Some(session);
        self.core.stats().opened();
        self.core.reschedule(key);
        let id = self.core.id_of(key);
        self.with_ctx(key, id, |handler, ctx| handler.on_open(ctx));
        // The first frames may have come with the request.
        if self.core.conns.get(key).is_some_and(|c| !c.input.is_empty()) {
            let mut input = self.core.conns[key].input.take();
            self.on_frames(key, &mut input);
            if let Some(conn) = self.core.conns.get_mut(key) {
                conn.input = input.into();
            }
        }
    }
}

/// Writes a status line and headers; `Content-Length` when the length is known, else the
/// answer is a stream (closed by either side).
pub(crate) fn write_head(response: &HttpResponse, length: Option<usize>, out: &mut Vec<u8>) {
    let reason = response::reason_phrase(response.status);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", response.status, reason).as_bytes());
    for (name, value) in &response.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match length {
        Some(n) => {
            let upgrade = response.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
            let connection = response::connection_close(upgrade);
            out.extend_from_slice(
                format!("Content-Length: {n}\r\nConnection: {connection}\r\n\r\n").as_bytes(),
            )
        }
        None => out.extend_from_slice(b"Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n"),
    }
}

/// The declared body length of a request (0 without `Content-Length`).
fn body_len(request: &crate::proto::handshake::request::Request<'_, '_>) -> Result<usize, ()> {
    match request.header("content-length") {
        None => Ok(0),
        Some(value) => std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok()).ok_or(()),
    }
}

enum Outcome<S> {
    Stream { session: S, head: HttpResponse },
    Respond(HttpResponse, Option<Rejection>),
    Reject(HandshakeError),
    Defer,
    Upgrade { session: S, head_len: usize, response: Vec<u8>, ws: Connection },
}

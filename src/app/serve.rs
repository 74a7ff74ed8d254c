//! The handler behind `hibiki serve`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::auth::{Auth, query_param};
use super::envelope::{Encoding, JSON_PROTOCOL, MSGPACK_PROTOCOL};
use super::metrics;
use crate::hub::broadcast::Broadcast;
use crate::hub::{Hub, HubConfig, HubLocal, Session, Stores};
use crate::proto::CloseCode;
use crate::proto::frame::{OpCode, encode_frame_bytes};
use crate::reactor::{
    ConnId, Ctx, Decision, Handle, Handler, HttpRequest, HttpResponse, Message, MessageKind, WorkerCtx,
};

/// What `hibiki serve` runs, besides the transport settings.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Rooms, history and ticks.
    pub hub: HubConfig,
    /// HS256 secret: with it, `/ws` and `/sse` need a token (401 otherwise).
    pub jwt_secret: Option<String>,
    /// Key for `POST /api/publish` (`Authorization: Bearer <key>`); without it the API is off.
    pub api_key: Option<String>,
}

/// A connection's route and state.
#[derive(Debug)]
pub enum Route {
    /// `/echo`.
    Echo,
    /// `/broadcast`.
    Broadcast,
    /// `/ws`: the app protocol.
    Hub(Box<Session>),
    /// `/sse?room=...`: a Server-Sent Events stream of one room.
    Sse {
        /// The room.
        room: String,
        /// History to replay first.
        last_event_id: Option<u64>,
    },
}

/// The `hibiki serve` handler.
#[derive(Debug)]
pub struct ServeApp {
    hub: Hub,
    auth: Auth,
    api_key: Option<String>,
}

impl Default for ServeApp {
    fn default() -> Self {
        Self::new(ServeConfig::default())
    }
}

/// Per-worker state: `/broadcast` members and the hub's rooms on this worker.
#[derive(Debug)]
pub struct ServeLocal {
    members: Vec<ConnId>,
    hub: HubLocal,
}

/// What one worker tells another.
#[derive(Clone, Debug)]
pub enum AppCommand {
    /// A `/broadcast` frame, encoded once.
    Fanout(Bytes),
    /// A room message or event.
    Deliver(Arc<Broadcast>),
}

impl ServeApp {
    /// The app with these settings.
    pub fn new(config: ServeConfig) -> Self {
        let stores = Stores::memory(&config.hub);
        Self::with_stores(config, stores)
    }

    /// The app with room state kept in `stores` (a broker, history and presence of one's own).
    pub fn with_stores(config: ServeConfig, stores: Stores) -> Self {
        Self {
            hub: Hub::with_stores(config.hub, stores),
            auth: Auth::new(config.jwt_secret.as_deref()),
            api_key: config.api_key,
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn fan_out(ctx: &mut WorkerCtx<'_, Self>, frame: &Bytes) {
        let (local, mut out) = ctx.split();
        for &member in &local.members {
            out.send_frame_to(member, frame);
        }
    }

    fn publish_api(&self, request: &HttpRequest<'_, '_, '_>) -> HttpResponse {
        let Some(key) = &self.api_key else {
            return HttpResponse::text(403, "the publish API is off: start with --api-key\n");
        };
        if request.head.method != "POST" {
            return HttpResponse {
                headers: vec![("Allow".into(), "POST".into())],
                ..HttpResponse::text(405, "POST only\n")
            };
        }
        if request.head.bearer_token() != Some(key.as_str()) {
            return unauthorized("bad or missing API key\n");
        }
        let Ok(body) = serde_json::from_slice::<Value>(request.body) else {
            return HttpResponse::text(400, "body must be JSON: {\"room\": ..., \"data\": ...}\n");
        };
        let Some(room) = body.get("room").and_then(Value::as_str).filter(|r| !r.is_empty()) else {
            return HttpResponse::text(400, "body.room must be a non-empty string\n");
        };
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        let seq = self.hub.publish(room, data, &Arc::from("server"), None, true, false, None, None);
        HttpResponse::with_type(200, "application/json", json!({"room": room, "seq": seq}).to_string())
    }

    fn upgrade_hub(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Route> {
        let Some(upgrade) = &request.upgrade else {
            return Decision::Respond(HttpResponse::upgrade_required());
        };
        let identity = match self.auth.authenticate(request.head) {
            Ok(identity) => identity,
            Err(e) => return Decision::Respond(unauthorized(&format!("{e}\n"))),
        };
        let (encoding, protocol) = match upgrade.select_protocol(&[MSGPACK_PROTOCOL, JSON_PROTOCOL]) {
            Some(MSGPACK_PROTOCOL) => (Encoding::MsgPack, Some(MSGPACK_PROTOCOL)),
            Some(p) => (Encoding::Json, Some(p)),
            None => (Encoding::Json, None),
        };
        Decision::Upgrade { session: Route::Hub(Box::new(Session::new(identity, encoding))), protocol }
    }

    fn open_sse(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Route> {
        let identity = match self.auth.authenticate(request.head) {
            Ok(identity) => identity,
            Err(e) => return Decision::Respond(unauthorized(&format!("{e}\n"))),
        };
        let Some(room) = request.head.query().and_then(|q| query_param(q, "room")).filter(|r| !r.is_empty())
        else {
            return Decision::Respond(HttpResponse::text(400, "missing ?room=\n"));
        };
        if !identity.may_join(&room) {
            return Decision::Respond(HttpResponse::text(403, "not allowed in this room\n"));
        }
        let last_event_id = request
            .head
            .header("last-event-id")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok());
        let head = HttpResponse::with_type(200, "text/event-stream", Bytes::new());
        Decision::Stream { session: Route::Sse { room, last_event_id }, head }
    }
}

/// A 401 from a token check: "A server generating a 401 (Unauthorized) response MUST send a
/// WWW-Authenticate header field containing at least one challenge applicable to the target
/// resource" (RFC 9110 §11.6.1); the tokens are bearer tokens (RFC 6750 §3).
fn unauthorized(body: &str) -> HttpResponse {
    HttpResponse::text(401, body).header("WWW-Authenticate", "Bearer")
}

impl Handler for ServeApp {
    type Session = Route;
    type Local = ServeLocal;
    type Command = AppCommand;

    fn local(&self, worker: usize) -> ServeLocal {
        ServeLocal { members: Vec::new(), hub: HubLocal::new(worker) }
    }

    fn on_start(&self, handle: &Handle<AppCommand>) {
        let handle = handle.clone();
        self.hub.set_poster(handle.workers(), move |worker, message| {
            handle.post(worker, AppCommand::Deliver(message));
        });
    }

    fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Route> {
        match request.head.path() {
            "/echo" if request.upgrade.is_some() => {
                Decision::Upgrade { session: Route::Echo, protocol: None }
            }
            "/broadcast" if request.upgrade.is_some() => {
                Decision::Upgrade { session: Route::Broadcast, protocol: None }
            }
            "/echo" | "/broadcast" => Decision::Respond(HttpResponse::upgrade_required()),
            "/ws" => self.upgrade_hub(request),
            "/sse" => self.open_sse(request),
            "/api/publish" => Decision::Respond(self.publish_api(request)),
            "/healthz" => Decision::Respond(HttpResponse::text(200, "ok\n")),
            "/metrics" => Decision::Respond(HttpResponse::with_type(
                200,
                "text/plain; version=0.0.4",
                metrics::render(&request.stats.snapshot(), &self.hub),
            )),
            _ => Decision::Respond(HttpResponse::text(404, "not found\n")),
        }
    }

    fn on_open(&self, ctx: &mut Ctx<'_, Self>) {
        let id = ctx.id();
        let (route, local, mut out) = ctx.split_session();
        match route {
            Route::Broadcast => local.members.push(id),
            Route::Echo => {}
            Route::Hub(session) => self.hub.on_open(&mut local.hub, &mut out, id, session),
            Route::Sse { room, last_event_id } => {
                self.hub.sse_open(&mut local.hub, &mut out, id, room, *last_event_id);
            }
        }
    }

    fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message) {
        let id = ctx.id();
        match ctx.session() {
            Route::Echo => {
                ctx.send(message.kind, &message.data);
            }
            Route::Broadcast => {
                let opcode = match message.kind {
                    MessageKind::Text => OpCode::Text,
                    MessageKind::Binary => OpCode::Binary,
                };
                let frame = encode_frame_bytes(opcode, &message.data);
                let worker = ctx.worker();
                if ctx.handle().workers() > 1 {
                    ctx.handle().post_others(worker, &AppCommand::Fanout(frame.clone()));
                }
                Self::fan_out(ctx, &frame);
            }
            Route::Hub(_) => {
                let (route, local, mut out) = ctx.split_session();
                if let Route::Hub(session) = route {
                    self.hub.on_message(&mut local.hub, &mut out, id, session, &message);
                }
            }
            Route::Sse { .. } => {}
        }
    }

    fn on_close(&self, ctx: &mut Ctx<'_, Self>, _code: CloseCode, _reason: &str) {
        let id = ctx.id();
        let (route, local) = ctx.parts();
        match route {
            Route::Broadcast => {
                if let Some(i) = local.members.iter().position(|&m| m == id) {
                    local.members.swap_remove(i);
                }
            }
            Route::Echo => {}
            Route::Hub(session) => self.hub.on_close(&mut local.hub, id, session),
            Route::Sse { room, .. } => self.hub.sse_close(&mut local.hub, id, room),
        }
    }

    fn on_command(&self, ctx: &mut WorkerCtx<'_, Self>, command: AppCommand) {
        match command {
            AppCommand::Fanout(frame) => Self::fan_out(ctx, &frame),
            AppCommand::Deliver(message) => {
                let (local, mut out) = ctx.split();
                self.hub.deliver(&mut local.hub, &mut out, &message);
            }
        }
    }

    fn on_tick(&self, ctx: &mut WorkerCtx<'_, Self>) {
        let now = ctx.now();
        let last_work = ctx.last_tick_work();
        let (local, mut out) = ctx.split();
        self.hub.on_tick(&mut local.hub, &mut out, now, last_work);
    }
}

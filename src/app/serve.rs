//! The handler behind `hibiki serve`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::auth::{Auth, query_param};
use super::metrics;
use super::static_files;
use super::stats_room::{self, StatsFeed};
use crate::cluster::ClusterConfig;
use crate::hub::envelope::{Encoding, JSON_PROTOCOL, MSGPACK_PROTOCOL};
use crate::hub::store::Position;
use crate::hub::{
    ErrorCode, Hub, HubConfig, HubError, HubLocal, Publish, Reply, Session, Stores, Ticket, ToWorker, Waiter,
};
use crate::proto::CloseCode;
use crate::proto::frame::{OpCode, encode_frame_bytes};
use crate::reactor::{
    ConnId, Ctx, Decision, Handle, Handler, HttpRequest, HttpResponse, Message, MessageKind, WorkerCtx,
};

/// What `hibiki serve` runs, besides the transport settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Rooms, history and ticks.
    pub hub: HubConfig,
    /// HS256 secret: with it, `/ws` and `/sse` need a token (401 otherwise).
    pub jwt_secret: Option<String>,
    /// Key for `POST /api/publish` (`Authorization: Bearer <key>`); without it the API is off.
    pub api_key: Option<String>,
    /// Room state in Redis, shared by every node with the same settings; none: in memory.
    pub cluster: Option<ClusterConfig>,
    /// How often the server's counters are published to the stats room
    /// ([`STATS_ROOM`](super::STATS_ROOM)); `None`: never. Default 1 s.
    pub stats_period: Option<Duration>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            hub: HubConfig::default(),
            jwt_secret: None,
            api_key: None,
            stats_period: Some(Duration::from_secs(1)),
            cluster: None,
        }
    }
}

/// A connection's route and state.
#[derive(Debug)]
pub enum Route {
    /// `/echo`.
    Echo,
    /// `/broadcast`.
    Broadcast,
    /// `/ws`: the app protocol (the session moves into the hub when the connection opens).
    Hub(Option<Box<Session>>),
    /// `/sse?room=...`: a Server-Sent Events stream of one room (boxed: the route lives in
    /// every connection's slot, and streams are the rare kind).
    Sse(Box<SseRoute>),
}

/// What an SSE connection streams.
#[derive(Debug)]
pub struct SseRoute {
    /// The room.
    pub room: String,
    /// History to replay first.
    pub last_event_id: Option<u64>,
}

/// 503 with `Retry-After`: room state is out of reach for now.
fn unavailable(why: &str) -> HttpResponse {
    let mut response = HttpResponse::text(503, format!("{why}\n"));
    response.headers.push(("Retry-After".into(), "1".into()));
    response
}

/// The `hibiki serve` handler.
#[derive(Debug)]
pub struct ServeApp {
    hub: Hub,
    auth: Auth,
    api_key: Option<String>,
    stats_period: Option<Duration>,
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
    stats: StatsFeed,
}

/// What one worker tells another.
#[derive(Clone, Debug)]
pub enum AppCommand {
    /// A `/broadcast` frame, encoded once.
    Fanout(Bytes),
    /// What the room stores hand a worker: a publication or a later answer.
    Store(ToWorker),
    /// Publish the counters to the stats room (sent to worker 0 once a period).
    PublishStats,
}

impl ServeApp {
    /// The app with these settings: room state in Redis when `config.cluster` says so, in
    /// memory otherwise.
    pub fn new(config: ServeConfig) -> Self {
        let stores = match &config.cluster {
            Some(cluster) => crate::cluster::stores(cluster, &config.hub),
            None => Stores::memory(&config.hub),
        };
        Self::with_stores(config, stores)
    }

    /// The app with room state kept in `stores` (a broker, history and presence of one's own).
    pub fn with_stores(config: ServeConfig, stores: Stores) -> Self {
        Self {
            hub: Hub::with_stores(config.hub, stores),
            auth: Auth::new(config.jwt_secret.as_deref()),
            api_key: config.api_key,
            stats_period: config.stats_period,
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

    /// `POST /api/publish`: answered when the broker confirmed the publish — at once in
    /// memory, later (a deferred answer) for a remote broker.
    fn publish_api(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Route> {
        match self.publish_request(request) {
            Ok(decision) => decision,
            Err(response) => Decision::Respond(response),
        }
    }

    fn publish_request(&self, request: &HttpRequest<'_, '_, '_>) -> Result<Decision<Route>, HttpResponse> {
        let Some(key) = &self.api_key else {
            return Err(HttpResponse::text(403, "the publish API is off: start with --api-key\n"));
        };
        if request.head.method != "POST" {
            return Err(HttpResponse::text(405, "POST only\n").header("Allow", "POST"));
        }
        if request.head.bearer_token() != Some(key.as_str()) {
            return Err(unauthorized("bad or missing API key\n"));
        }
        let Ok(mut body) = serde_json::from_slice::<Value>(request.body) else {
            return Err(HttpResponse::text(400, "body must be JSON: {\"room\": ..., \"data\": ...}\n"));
        };
        let data = body.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let Some(room) = body.get("room").and_then(Value::as_str).filter(|r| !r.is_empty()) else {
            return Err(HttpResponse::text(400, "body.room must be a non-empty string\n"));
        };
        let from: Arc<str> = Arc::from("server");
        let ticket = Ticket { worker: request.worker(), waiter: Waiter::Http(request.id) };
        Ok(match self.hub.publish(Publish::new(room, &from, data), ticket) {
            Reply::Now(result) => Decision::Respond(Self::published(result)),
            Reply::Later => Decision::Defer,
        })
    }

    /// The answer to `POST /api/publish`, once the broker answered.
    fn published(result: Result<Position, HubError>) -> HttpResponse {
        match result {
            Ok(position) => HttpResponse::with_type(
                200,
                "application/json",
                json!({"seq": position.seq, "epoch": position.epoch.as_str()}).to_string(),
            ),
            Err(e) if e.code == ErrorCode::Unavailable => unavailable(&e.message),
            Err(e) => HttpResponse::text(409, format!("{}\n", e.message)),
        }
    }

    fn upgrade_hub(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Route> {
        let Some(upgrade) = &request.upgrade else {
            return Decision::Respond(HttpResponse::upgrade_required());
        };
        let identity = match self.auth.authenticate(request.head) {
            Ok(identity) => identity,
            Err(e) => return Decision::Respond(unauthorized(&format!("{e}\n"))),
        };
        // The first protocol in the client's list that the server knows wins.
        let offered =
            upgrade.protocols().find_map(|p| [JSON_PROTOCOL, MSGPACK_PROTOCOL].into_iter().find(|k| *k == p));
        let (encoding, protocol) = match offered {
            Some(MSGPACK_PROTOCOL) => (Encoding::MsgPack, Some(MSGPACK_PROTOCOL)),
            Some(p) => (Encoding::Json, Some(p)),
            None => (Encoding::Json, None),
        };
        Decision::Upgrade { session: Route::Hub(Some(Box::new(Session::new(identity, encoding)))), protocol }
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
        Decision::Stream { session: Route::Sse(Box::new(SseRoute { room, last_event_id })), head }
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
        let period = self.stats_period.unwrap_or(Duration::from_secs(1));
        ServeLocal { members: Vec::new(), hub: HubLocal::new(worker), stats: StatsFeed::new(period) }
    }

    fn on_start(&self, handle: &Handle<AppCommand>) {
        if let Some(period) = self.stats_period.filter(|p| !p.is_zero()) {
            stats_room::spawn(handle.clone(), period);
        }
        let handle = handle.clone();
        let workers = handle.workers();
        self.hub.start(
            workers,
            Arc::new(move |worker, what| {
                handle.post(worker, AppCommand::Store(what));
            }),
        );
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
            "/api/publish" => self.publish_api(request),
            "/healthz" => Decision::Respond(match self.hub.health() {
                Ok(()) => HttpResponse::text(200, "ok\n"),
                Err(why) => unavailable(&format!("degraded: {why}")),
            }),
            "/metrics" => Decision::Respond(HttpResponse::with_type(
                200,
                "text/plain; version=0.0.4",
                metrics::render(&request.stats.snapshot(), &self.hub),
            )),
            path => Decision::Respond(
                static_files::respond(request.head.method, path)
                    .unwrap_or_else(|| HttpResponse::text(404, "not found\n")),
            ),
        }
    }

    fn on_open(&self, ctx: &mut Ctx<'_, Self>) {
        let id = ctx.id();
        let (route, local, mut out) = ctx.split_session();
        match route {
            Route::Broadcast => local.members.push(id),
            Route::Echo => {}
            Route::Hub(session) => {
                if let Some(session) = session.take() {
                    self.hub.on_open(&mut local.hub, &mut out, id, *session);
                }
            }
            Route::Sse(sse) => {
                self.hub.sse_open(&mut local.hub, &mut out, id, &sse.room, sse.last_event_id);
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
                let (local, mut out) = ctx.split();
                self.hub.on_message(&mut local.hub, &mut out, id, &message);
            }
            Route::Sse(_) => {}
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
            Route::Hub(_) => self.hub.on_close(&mut local.hub, id),
            Route::Sse(sse) => self.hub.sse_close(&mut local.hub, id, &sse.room),
        }
    }

    fn on_command(&self, ctx: &mut WorkerCtx<'_, Self>, command: AppCommand) {
        match command {
            AppCommand::Fanout(frame) => Self::fan_out(ctx, &frame),
            AppCommand::Store(what) => {
                let (local, mut out) = ctx.split();
                if let Some((conn, result)) = self.hub.on_store(&mut local.hub, &mut out, what) {
                    ctx.respond(conn, Self::published(result));
                }
            }
            AppCommand::PublishStats => {
                let (now, snapshot) = (ctx.now(), ctx.handle().stats().snapshot());
                let message = ctx.local().stats.message(now, snapshot, &self.hub);
                // To this node's members only, on every worker: each node shows itself.
                let worker = ctx.worker();
                ctx.handle().post_others(worker, &AppCommand::Store(ToWorker::Deliver(Arc::clone(&message))));
                let (local, mut out) = ctx.split();
                let _ = self.hub.on_store(&mut local.hub, &mut out, ToWorker::Deliver(message));
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

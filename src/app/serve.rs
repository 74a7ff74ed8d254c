//! The handler behind `hibiki serve`.

use bytes::Bytes;

use crate::proto::frame::{OpCode, encode_frame_bytes};
use crate::reactor::{ConnId, Ctx, Decision, Handler, HttpRequest, HttpResponse, Message, MessageKind, WorkerCtx};

/// Which endpoint a connection is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/echo`.
    Echo,
    /// `/broadcast`.
    Broadcast,
}

/// The `hibiki serve` handler.
#[derive(Debug, Default)]
pub struct ServeApp;

/// Per-worker state: the `/broadcast` members of this worker.
#[derive(Debug, Default)]
pub struct ServeLocal {
    members: Vec<ConnId>,
}

/// A frame encoded once, for the `/broadcast` members of other workers.
#[derive(Clone, Debug)]
pub struct Fanout(Bytes);

impl ServeLocal {
    fn fan_out(ctx: &mut WorkerCtx<'_, ServeApp>, frame: &Bytes) {
        let members = std::mem::take(&mut ctx.local().members);
        for &member in &members {
            ctx.send_frame_to(member, frame);
        }
        ctx.local().members = members;
    }
}

impl Handler for ServeApp {
    type Session = Route;
    type Local = ServeLocal;
    type Command = Fanout;

    fn local(&self, _worker: usize) -> ServeLocal {
        ServeLocal::default()
    }

    fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<Route> {
        let route = match request.head.path() {
            "/echo" => Route::Echo,
            "/broadcast" => Route::Broadcast,
            "/healthz" => return Decision::Respond(HttpResponse::text(200, "ok\n")),
            _ => return Decision::Respond(HttpResponse::text(404, "not found\n")),
        };
        if !request.upgrade {
            return Decision::Respond(HttpResponse::text(426, "this endpoint speaks WebSocket\n"));
        }
        Decision::Upgrade { session: route, protocol: None }
    }

    fn on_open(&self, ctx: &mut Ctx<'_, Self>) {
        if *ctx.session() == Route::Broadcast {
            let id = ctx.id();
            ctx.local().members.push(id);
        }
    }

    fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message) {
        match *ctx.session() {
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
                    ctx.handle().post_others(worker, &Fanout(frame.clone()));
                }
                ServeLocal::fan_out(ctx, &frame);
            }
        }
    }

    fn on_close(&self, ctx: &mut Ctx<'_, Self>, _code: crate::proto::CloseCode, _reason: &str) {
        if *ctx.session() == Route::Broadcast {
            let id = ctx.id();
            let members = &mut ctx.local().members;
            if let Some(i) = members.iter().position(|&m| m == id) {
                members.swap_remove(i);
            }
        }
    }

    fn on_command(&self, ctx: &mut WorkerCtx<'_, Self>, command: Fanout) {
        ServeLocal::fan_out(ctx, &command.0);
    }
}

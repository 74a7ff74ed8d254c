//! A chat room in a page of code: every message is sent to everyone, with the sender's name,
//! encoded once for all recipients; workers reach each other through the handle.
//!
//! ```sh
//! cargo run --release --example chat -- 127.0.0.1:9002
//! # then connect to ws://127.0.0.1:9002/?name=ann with any WebSocket client
//! ```

use bytes::Bytes;
use hibiki::proto::CloseCode;
use hibiki::proto::frame::{OpCode, encode_frame_bytes};
use hibiki::reactor::{
    ConnId, Ctx, Decision, Handler, HttpRequest, HttpResponse, Message, Server, WorkerCtx,
};

struct Chat;

/// The members connected to one worker.
#[derive(Default)]
struct Members(Vec<ConnId>);

fn deliver(ctx: &mut WorkerCtx<'_, Chat>, frame: &Bytes) {
    let (members, mut out) = ctx.split();
    for &member in &members.0 {
        // A reference count, not a copy, per member.
        out.send_frame_to(member, frame);
    }
}

impl Handler for Chat {
    type Session = String;
    type Local = Members;
    type Command = Bytes;

    fn local(&self, _worker: usize) -> Members {
        Members::default()
    }

    fn on_request(&self, request: &HttpRequest<'_, '_, '_>) -> Decision<String> {
        if request.upgrade.is_none() {
            return Decision::Respond(HttpResponse::upgrade_required());
        }
        let name = request
            .head
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
            .filter(|n| !n.is_empty() && n.len() <= 32)
            .unwrap_or("anonymous");
        Decision::Upgrade { session: name.to_owned(), protocol: None }
    }

    fn on_open(&self, ctx: &mut Ctx<'_, Self>) {
        let id = ctx.id();
        ctx.local().0.push(id);
    }

    fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message) {
        let Some(text) = message.as_text() else { return };
        let line = format!("{}: {}", ctx.session(), text);
        let frame = encode_frame_bytes(OpCode::Text, line.as_bytes());
        let me = ctx.worker();
        ctx.handle().post_others(me, &frame);
        deliver(ctx, &frame);
    }

    fn on_close(&self, ctx: &mut Ctx<'_, Self>, _code: CloseCode, _reason: &str) {
        let id = ctx.id();
        ctx.local().0.retain(|&m| m != id);
    }

    fn on_command(&self, ctx: &mut WorkerCtx<'_, Self>, frame: Bytes) {
        deliver(ctx, &frame);
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".into());
    let server = Server::builder().bind(addr.parse().expect("an address like 127.0.0.1:9002")).start(Chat)?;
    println!("chat on ws://{}/?name=you", server.local_addr());
    server.wait();
    Ok(())
}

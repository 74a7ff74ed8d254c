//! The smallest server: echo every message back.
//!
//! ```sh
//! cargo run --release --example echo -- 127.0.0.1:9001
//! ```

use hibiki::reactor::{Ctx, Handler, Message, Server};

struct Echo;

impl Handler for Echo {
    type Session = ();
    type Local = ();
    type Command = ();

    fn local(&self, _worker: usize) {}

    fn on_request(
        &self,
        request: &hibiki::reactor::HttpRequest<'_, '_, '_>,
    ) -> hibiki::reactor::Decision<()> {
        if request.upgrade.is_some() {
            hibiki::reactor::Decision::Upgrade { session: (), protocol: None }
        } else {
            hibiki::reactor::Decision::Respond(hibiki::reactor::HttpResponse::upgrade_required())
        }
    }

    fn on_message(&self, ctx: &mut Ctx<'_, Self>, message: Message) {
        // Replies to the connection being served are corked: one write per read.
        ctx.send(message.kind, &message.data);
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let server = Server::builder().bind(addr.parse().expect("an address like 127.0.0.1:9001")).start(Echo)?;
    println!("echo server on ws://{}", server.local_addr());
    server.wait();
    Ok(())
}

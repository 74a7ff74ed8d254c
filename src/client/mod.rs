//! The WebSocket client: a blocking connection over `std::net::TcpStream`, a reconnecting
//! wrapper with heartbeats, and the pure pieces they are built from.
//!
//! - [`Client`] / [`ClientBuilder`]: one connection, driven by the caller's thread. The
//!   [`proto`](crate::proto) core does the framing; the client reads, writes and answers pings.
//! - [`ReconnectingClient`]: reconnects with [`Backoff`] after an abnormal close, a failed
//!   connect or a missed heartbeat, and calls an `on_connect` hook to re-join and resume.
//! - [`WsUrl`]: `ws://host[:port]/path?query` (`wss://` is refused: no TLS here).
//! - [`Backoff`] and [`AckTracker`]: pure policy (time and randomness passed in).
//!
//! # Example
//!
//! ```
//! use hibiki::app::ServeApp;
//! use hibiki::client::{Client, Incoming};
//! use hibiki::proto::CloseCode;
//! use hibiki::reactor::Server;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder().bind("127.0.0.1:0".parse()?).threads(1).start(ServeApp::default())?;
//! let url = format!("ws://{}/echo", server.local_addr());
//!
//! let mut client = Client::connect(&url)?;
//! client.send_text("hello")?;
//! assert_eq!(client.recv()?, Incoming::Text("hello".into()));
//! client.close(CloseCode::NORMAL, "done")?;
//! # server.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! A client that stays connected, with a heartbeat and a hook that re-joins after every
//! (re)connection:
//!
//! ```no_run
//! use std::time::Duration;
//! use hibiki::client::{ClientBuilder, Incoming, ReconnectingClient};
//!
//! let mut client = ReconnectingClient::builder()
//!     .client(ClientBuilder::new().header("Authorization", "Bearer secret"))
//!     .ping_interval(Some(Duration::from_secs(30)))
//!     .on_connect(|conn| conn.send_text(r#"{"type":"join","payload":{"room":"lobby"}}"#))
//!     .connect("ws://127.0.0.1:8080/app")?;
//! loop {
//!     match client.recv_timeout(Duration::from_secs(1))? {
//!         Some(Incoming::Text(text)) => println!("{text}"),
//!         Some(Incoming::Close { .. }) => break,
//!         _ => {}
//!     }
//! }
//! # Ok::<(), hibiki::client::ClientError>(())
//! ```

mod ack;
mod app;
mod backoff;
mod blocking;
mod error;
mod handshake;
mod reconnect;
mod url;

pub use ack::{AckTracker, Expired};
pub use app::{AckError, AppClient};
pub use backoff::Backoff;
pub use blocking::{Client, ClientBuilder, Incoming};
pub use error::ClientError;
pub use reconnect::{ReconnectBuilder, ReconnectingClient};
pub use url::{DEFAULT_PORT, UrlError, WsUrl};

pub use crate::proto::{CloseCode, MessageKind};

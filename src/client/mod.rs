//! The WebSocket client: a blocking connection over `std::net::TcpStream` (through TLS for
//! `wss://`), a reconnecting wrapper with heartbeats, and the pure pieces they are built from.
//!
//! - [`Client`] / [`ClientBuilder`]: one connection, driven by the caller's thread. The
//!   [`proto`](crate::proto) core does the framing; the client reads, writes and answers pings.
//! - [`ReconnectingClient`]: reconnects with [`Backoff`] after an abnormal close, a failed
//!   connect or a missed heartbeat, and calls an `on_connect` hook to re-join and resume.
//! - [`WsUrl`]: `ws://` and `wss://` URLs.
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
//!
//! # TLS (`wss://`)
//!
//! A `wss://` URL connects through [rustls](https://docs.rs/rustls) (the ring provider, TLS 1.2
//! and 1.3). The server's certificate is verified against the webpki roots (Mozilla's list) for
//! the host of the URL, which is also sent as SNI (not for an IP address, which the
//! certificate must then name); ALPN offers `http/1.1`. [`ClientBuilder`] takes:
//!
//! - [`ca_file`](ClientBuilder::ca_file): a PEM file of extra CA certificates to trust (a
//!   development server's self-signed certificate, a private CA);
//! - [`tls_config`](ClientBuilder::tls_config): a whole [`rustls::ClientConfig`] of your own
//!   (other roots, client certificates, a custom verifier), used as it is.
//!
//! A refused certificate is [`ClientError::Certificate`] with a [`CertificateReason`]
//! (unknown issuer, expired, wrong host name...), distinct from I/O errors and not retried by
//! the [`ReconnectingClient`]; other TLS failures are [`ClientError::Tls`]. The reconnecting
//! client and the [`AppClient`] work the same over `wss://`.
//!
//! ```no_run
//! use hibiki::client::{CertificateReason, ClientBuilder, ClientError};
//!
//! match ClientBuilder::new().connect("wss://localhost:8443/echo") {
//!     Ok(_client) => {}
//!     Err(ClientError::Certificate { reason: CertificateReason::UnknownIssuer, .. }) => {
//!         // Self-signed: trust it explicitly.
//!         let _client = ClientBuilder::new().ca_file("cert.pem").connect("wss://localhost:8443/echo")?;
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok::<(), ClientError>(())
//! ```

mod ack;
mod app;
mod backoff;
mod blocking;
mod error;
mod handshake;
mod reconnect;
pub(crate) mod tls;
mod url;

pub use ack::{AckTracker, Expired};
pub use app::{AckError, AppClient};
pub use backoff::Backoff;
pub use blocking::{Client, ClientBuilder, Incoming};
pub use error::ClientError;
pub use reconnect::{ReconnectBuilder, ReconnectingClient};
pub use tls::CertificateReason;
pub use url::{DEFAULT_PORT, DEFAULT_TLS_PORT, UrlError, WsUrl};

/// The TLS library of `wss://` connections, for [`ClientBuilder::tls_config`].
pub use rustls;

pub use crate::proto::{CloseCode, MessageKind};

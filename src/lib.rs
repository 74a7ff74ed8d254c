//! # hibiki
//!
//! A real-time messaging engine: a hand-written RFC 6455 WebSocket core with RFC 7692
//! permessage-deflate, on a mio event loop per core, with the server (`hibiki serve`) and a
//! load tool (`hibiki load`) built on it.
//!
//! ```text
//!  bin     hibiki serve | hibiki load
//!  app     what each path does (echo, broadcast, rooms)
//!  io      reactor: mio Poll per worker, accept, corked writes, writev queues, timers, limits
//!          client: connect, reconnect with backoff and jitter, heartbeats
//!  proto   sans-IO: handshake · frame · mask · utf8 · deflate · close · connection
//! ```
//!
//! ## The protocol core does no I/O
//!
//! [`proto`] is bytes in, events and bytes out: no sockets, threads or clocks. You read from
//! your transport into a `BytesMut`, lend it to [`proto::Connection::poll_event`], act on
//! the events, and write what the connection appended to your output buffer:
//!
//! ```
//! use bytes::BytesMut;
//! use hibiki::proto::{Config, Connection, Event, MessageKind, Role};
//!
//! let mut server = Connection::new(Role::Server, Config::default(), None);
//! let mut client = Connection::new(Role::Client, Config::default(), None);
//!
//! // The client frames (and masks) a message...
//! let mut wire = BytesMut::new();
//! client.send(MessageKind::Text, b"hello", &mut wire).unwrap();
//! // ...the server takes it out of its input buffer, unmasked in place, without a copy...
//! let Some(Event::Text(text)) = server.poll_event(&mut wire) else { panic!() };
//! assert_eq!(&text[..], b"hello");
//! // ...and answers.
//! let mut reply = BytesMut::new();
//! server.send(MessageKind::Text, &text, &mut reply).unwrap();
//! assert_eq!(client.poll_event(&mut reply), Some(Event::Text(text)));
//! ```
//!
//! ## Embedding the server
//!
//! [`reactor`] runs a [`reactor::Handler`] on one event loop per core; see its docs for a
//! complete echo server.
//!
//! ```no_run
//! use hibiki::app::ServeApp;
//! use hibiki::reactor::Server;
//!
//! // What `hibiki serve` runs: /echo, /broadcast, /healthz.
//! let server = Server::builder().bind("127.0.0.1:8080".parse().unwrap()).start(ServeApp::default())?;
//! server.wait();
//! # Ok::<(), std::io::Error>(())
//! ```
#![doc(test(attr(deny(warnings))))]
#![deny(unsafe_code)]

pub mod app;
pub mod client;
pub mod cluster;
pub mod hub;
pub mod load;
pub mod proto;
pub mod reactor;

//! # hibiki
//!
//! A real-time messaging engine: a hand-written RFC 6455 WebSocket core with RFC 7692
//! permessage-deflate, on a mio event loop per core, with the server (`hibiki serve`) and a
//! load tool (`hibiki load`) built on it.
//!
//! ```text
//!  bin     hibiki serve | hibiki load
//!  app     what each path does (echo, broadcast, /ws, SSE, publish API, metrics), JWT
//!  hub     rooms, acks, presence, history and resume, tick batching, envelopes, room access
//!          store seam: Broker + PresenceStore, answers now (in memory) or later (remote)
//!  io      reactor: mio Poll per worker, accept, TLS, corked writes, writev queues, timers, limits
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
//!
//! With TLS (`https://`, `wss://` on the same engine), give the builder a certificate:
//! `.tls(hibiki::reactor::TlsConfig::from_pem_files("cert.pem", "key.pem")?)`; the
//! [`reactor`] docs ("TLS") show reloading it.
//!
//! ## Room state behind a seam
//!
//! [`hub`] keeps rooms through [`hub::store`]: a [`hub::Broker`] numbers, stores and fans out
//! each room's messages as one operation and answers positions — a seq and an epoch, the
//! room's numbering era — and a [`hub::PresenceStore`] knows who is in a room. Every call
//! answers now ([`hub::Reply::Now`], the in-memory default, at no extra cost) or later
//! ([`hub::Reply::Later`]: the answer comes back to the asking worker through its channel), and
//! may fail ([`hub::StoreError`]): the client then gets a failed ack `unavailable`, never an
//! `ok`. [`hub`]'s module docs walk one publish from the socket to every recipient.
//!
//! ```
//! use hibiki::app::{ServeApp, ServeConfig};
//! use hibiki::hub::Stores;
//!
//! // Stores of one's own: here the in-memory ones, as `hibiki serve` uses by default.
//! let config = ServeConfig::default();
//! let stores = Stores::memory(&config.hub);
//! let app = ServeApp::with_stores(config, stores);
//! # let _ = app;
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

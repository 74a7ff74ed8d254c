//! A message for many: encoded at most once per variant (JSON, MessagePack, each plain or
//! compressed, and SSE), on first use, whichever worker gets there first. Recipients share
//! the resulting `Bytes`; nothing is copied or encoded per member.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::envelope::{self, Encoding, Outgoing};
use crate::proto::deflate::compress_shared;
use crate::proto::frame::{FrameHeader, OpCode, encode_frame_bytes};
use crate::reactor::ConnId;

/// Messages shorter than this go to deflate connections uncompressed too.
const COMPRESS_THRESHOLD: usize = 1024;

static ENCODES: AtomicU64 = AtomicU64::new(0);

/// How many envelopes were encoded since start (what the encode-once test counts).
pub fn encode_count() -> u64 {
    ENCODES.load(Ordering::Relaxed)
}

/// The forms a recipient may need.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A WebSocket frame in this encoding, compressed when the connection negotiated deflate.
    Ws(Encoding, bool),
    /// A Server-Sent Event.
    Sse,
}

impl Variant {
    fn slot(self) -> usize {
        match self {
            Self::Ws(encoding, deflate) => encoding.index() * 2 + usize::from(deflate),
            Self::Sse => 4,
        }
    }
}

/// A message or room event on its way to the members of a room.
#[derive(Debug)]
pub struct Broadcast {
    /// The room.
    pub room: std::sync::Arc<str>,
    /// Its number in the room (0 for events outside the numbered stream: presence, typing).
    pub seq: u64,
    /// The envelope type (`message`, `user_joined`, ...).
    pub kind: &'static str,
    /// The envelope payload.
    pub payload: Value,
    /// When it was published (ms since the epoch).
    pub ts: u64,
    /// A connection left out (the sender, for `echo: false`, typing and presence).
    pub exclude: Option<ConnId>,
    /// May be dropped for a slow consumer.
    pub volatile: bool,
    /// Latest-state key: a newer message with the same key replaces this one if unsent.
    pub key: Option<std::sync::Arc<str>>,
    bodies: [OnceLock<Bytes>; 2],
    frames: [OnceLock<Bytes>; 5],
}

impl Broadcast {
    /// A message or event.
    pub fn new(room: std::sync::Arc<str>, seq: u64, kind: &'static str, payload: Value, ts: u64) -> Self {
        Self {
            room,
            seq,
            kind,
            payload,
            ts,
            exclude: None,
            volatile: false,
            key: None,
            bodies: Default::default(),
            frames: Default::default(),
        }
    }

    /// The encoded envelope (no frame header).
    pub fn body(&self, encoding: Encoding) -> &Bytes {
        self.bodies[encoding.index()].get_or_init(|| {
            ENCODES.fetch_add(1, Ordering::Relaxed);
            let envelope = Outgoing { kind: self.kind, id: None, payload: &self.payload, ts: self.ts };
            Bytes::from(envelope::encode(encoding, &envelope))
        })
    }

    /// The bytes to queue for a recipient that needs `variant`.
    pub fn frame(&self, variant: Variant) -> &Bytes {
        self.frames[variant.slot()].get_or_init(|| match variant {
            Variant::Ws(encoding, deflate) => ws_frame(encoding, self.body(encoding), deflate),
            Variant::Sse => {
                let data = serde_json::to_string(&self.payload).unwrap_or_default();
                let mut out = String::with_capacity(data.len() + 48);
                if self.seq > 0 {
                    out.push_str(&format!("id: {}\n", self.seq));
                }
                out.push_str(&format!("event: {}\ndata: {data}\n\n", self.kind));
                Bytes::from(out)
            }
        })
    }
}

/// A WebSocket frame around an encoded envelope: compressed once for every deflate
/// connection (they all reset their context per message: `server_no_context_takeover`).
pub fn ws_frame(encoding: Encoding, body: &[u8], deflate: bool) -> Bytes {
    let opcode = match encoding {
        Encoding::Json => OpCode::Text,
        Encoding::MsgPack => OpCode::Binary,
    };
    if !deflate || body.len() < COMPRESS_THRESHOLD {
        return encode_frame_bytes(opcode, body);
    }
    let mut compressed = BytesMut::new();
    compress_shared(body, 1, 15, &mut compressed);
    let header = FrameHeader { rsv1: true, ..FrameHeader::new(opcode, compressed.len() as u64) };
    let mut out = BytesMut::with_capacity(header.len() + compressed.len());
    header.encode(&mut out);
    out.put_slice(&compressed);
    out.freeze()
}

/// Encodes a `batch` envelope around already-encoded envelopes, without decoding them.
pub fn batch_body(encoding: Encoding, items: &[&Bytes], ts: u64) -> Vec<u8> {
    let size: usize = items.iter().map(|b| b.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 48);
    match encoding {
        Encoding::Json => {
            out.extend_from_slice(b"{\"type\":\"batch\",\"payload\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(item);
            }
            out.extend_from_slice(format!("],\"ts\":{ts}}}").as_bytes());
        }
        Encoding::MsgPack => {
            // fixmap(3) {"type": "batch", "payload": [..], "ts": u64}
            out.push(0x83);
            out.extend_from_slice(b"\xa4type\xa5batch\xa7payload");
            match items.len() {
                n @ 0..=15 => out.push(0x90 | n as u8),
                n @ 16..=0xffff => {
                    out.push(0xdc);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    out.push(0xdd);
                    out.extend_from_slice(&(n as u32).to_be_bytes());
                }
            }
            for item in items {
                out.extend_from_slice(item);
            }
            out.extend_from_slice(b"\xa2ts\xcf");
            out.extend_from_slice(&ts.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_decode_in_both_encodings() {
        let a = Broadcast::new("game:1".into(), 1, "message", json!({"room": "game:1", "seq": 1}), 10);
        let b = Broadcast::new("game:1".into(), 2, "message", json!({"room": "game:1", "seq": 2}), 11);
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let body = batch_body(encoding, &[a.body(encoding), b.body(encoding)], 99);
            let value: Value = match encoding {
                Encoding::Json => serde_json::from_slice(&body).unwrap(),
                Encoding::MsgPack => rmp_serde::from_slice(&body).unwrap(),
            };
            assert_eq!(value["type"], "batch");
            assert_eq!(value["ts"], 99);
            assert_eq!(value["payload"][1]["payload"]["seq"], 2);
        }
    }

    #[test]
    fn each_variant_is_encoded_once() {
        let m = Broadcast::new("r".into(), 3, "message", json!({"data": "x".repeat(2000)}), 1);
        let first = m.frame(Variant::Ws(Encoding::Json, true)).clone();
        let again = m.frame(Variant::Ws(Encoding::Json, true));
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes, not a second encoding");
        assert!(first.len() < 1000, "compressed");
        assert_eq!(first[0], 0xc1, "FIN + RSV1 + text");
        assert!(m.frame(Variant::Sse).starts_with(b"id: 3\nevent: message\ndata: {"));
    }
}

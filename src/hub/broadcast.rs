//! A publication on its way to the members of a room on this node: encoded at most once per
//! variant (JSON, MessagePack, each plain or compressed, and SSE), on first use, whichever
//! worker gets there first. Recipients share the resulting `Bytes`; nothing is copied or
//! encoded per member.

use std::ops::Deref;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::envelope::{self, Encoding, Outgoing};
use super::store::{Kind, NodeId, Publication};
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

/// A [`Publication`] with this node's encode caches. It dereferences to the publication.
#[derive(Debug)]
pub struct Broadcast {
    publication: Publication,
    /// The connection of this node left out, if the publication names one here.
    exclude: Option<u64>,
    bodies: [OnceLock<Bytes>; 2],
    frames: [OnceLock<Bytes>; 5],
}

impl Deref for Broadcast {
    type Target = Publication;

    fn deref(&self) -> &Publication {
        &self.publication
    }
}

/// The envelope payload of a publication, serialized straight from its fields.
struct Payload<'a>(&'a Publication);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("room", &*p.room)?;
        match p.kind {
            Kind::Message => {
                map.serialize_entry("seq", &p.seq)?;
                map.serialize_entry("from", &*p.from)?;
                map.serialize_entry("data", &p.data)?;
                map.serialize_entry("ts", &p.ts)?;
            }
            Kind::UserJoined => {
                map.serialize_entry("user", &*p.from)?;
                map.serialize_entry("name", &p.data)?;
            }
            Kind::UserLeft | Kind::UserTyping => map.serialize_entry("user", &*p.from)?,
            Kind::MessagesRead => {
                map.serialize_entry("user", &*p.from)?;
                map.serialize_entry("seq", &p.data)?;
            }
        }
        map.end()
    }
}

impl Broadcast {
    /// Wraps a publication for delivery on `node` (the node whose connection `exclude` may name).
    pub fn new(publication: Publication, node: Option<&NodeId>) -> Self {
        let exclude = match (&publication.exclude, node) {
            (Some(origin), Some(node)) if origin.node == *node => Some(origin.conn),
            _ => None,
        };
        Self { publication, exclude, bodies: Default::default(), frames: Default::default() }
    }

    /// The publication.
    pub fn publication(&self) -> &Publication {
        &self.publication
    }

    /// Whether `conn` (of this node) is left out.
    pub fn excludes(&self, conn: ConnId) -> bool {
        self.exclude == Some(conn.as_u64())
    }

    /// The encoded envelope (no frame header).
    pub fn body(&self, encoding: Encoding) -> &Bytes {
        self.bodies[encoding.index()].get_or_init(|| {
            ENCODES.fetch_add(1, Ordering::Relaxed);
            let p = &self.publication;
            let envelope = Outgoing { kind: p.kind.as_str(), id: None, payload: Payload(p), ts: p.ts };
            Bytes::from(envelope::encode(encoding, &envelope))
        })
    }

    /// The bytes to queue for a recipient that needs `variant`.
    pub fn frame(&self, variant: Variant) -> &Bytes {
        self.frames[variant.slot()].get_or_init(|| match variant {
            Variant::Ws(encoding, deflate) => ws_frame(encoding, self.body(encoding), deflate),
            Variant::Sse => {
                let p = &self.publication;
                let data = serde_json::to_string(&Payload(p)).unwrap_or_default();
                let mut out = String::with_capacity(data.len() + 48);
                if p.seq > 0 {
                    out.push_str(&format!("id: {}\n", p.seq));
                }
                out.push_str(&format!("event: {}\ndata: {data}\n\n", p.kind.as_str()));
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
    use serde_json::{Value, json};

    use super::*;
    use crate::hub::store::Origin;

    fn message(seq: u64, data: Value) -> Broadcast {
        let publication =
            Publication { seq, ..Publication::new("game:1".into(), Kind::Message, "ann".into(), data, 10) };
        Broadcast::new(publication, None)
    }

    #[test]
    fn batches_decode_in_both_encodings() {
        let (a, b) = (message(1, json!(1)), message(2, json!(2)));
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
        let m = message(3, json!({"data": "x".repeat(2000)}));
        let first = m.frame(Variant::Ws(Encoding::Json, true)).clone();
        let again = m.frame(Variant::Ws(Encoding::Json, true));
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes, not a second encoding");
        assert!(first.len() < 1000, "compressed");
        assert_eq!(first[0], 0xc1, "FIN + RSV1 + text");
        assert!(m.frame(Variant::Sse).starts_with(b"id: 3\nevent: message\ndata: {"));
    }

    #[test]
    fn payloads_carry_the_fields_of_their_kind() {
        let body = |p: Publication| {
            let b = Broadcast::new(p, None);
            serde_json::from_slice::<Value>(b.body(Encoding::Json)).unwrap()
        };
        let m = body(Publication {
            seq: 4,
            ..Publication::new("r".into(), Kind::Message, "ann".into(), json!("hi"), 9)
        });
        assert_eq!(
            m,
            json!({"type": "message", "payload": {"room": "r", "seq": 4, "from": "ann", "data": "hi", "ts": 9}, "ts": 9})
        );
        let joined = body(Publication::new("r".into(), Kind::UserJoined, "bob".into(), json!("Bob"), 1));
        assert_eq!(joined["payload"], json!({"room": "r", "user": "bob", "name": "Bob"}));
        let read = body(Publication::new("r".into(), Kind::MessagesRead, "bob".into(), json!(3), 1));
        assert_eq!(
            (read["type"].clone(), read["payload"]["seq"].clone()),
            (json!("messages_read"), json!(3))
        );
    }

    #[test]
    fn a_connection_is_left_out_only_on_its_own_node() {
        let here = NodeId::from("here");
        let conn = ConnId::new(0, 3, 1);
        let origin = Origin { node: here.clone(), conn: conn.as_u64() };
        let p = Publication {
            exclude: Some(origin),
            ..Publication::new("r".into(), Kind::UserTyping, "a".into(), Value::Null, 0)
        };
        assert!(Broadcast::new(p.clone(), Some(&here)).excludes(conn));
        assert!(
            !Broadcast::new(p, Some(&NodeId::from("there"))).excludes(conn),
            "the same number elsewhere is a stranger"
        );
    }
}

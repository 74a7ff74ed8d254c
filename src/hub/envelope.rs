//! Envelopes of the app protocol, in JSON (`hibiki.v1.json`, text frames) or MessagePack
//! (`hibiki.v1.msgpack`, binary frames).
//!
//! Every message is `{"type": "...", "id": "...", "payload": {...}, "ts": epoch_ms}`; `id` is
//! optional and, when a client sends one, answered by exactly one `ack`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::proto::MessageKind;

/// The JSON subprotocol.
pub const JSON_PROTOCOL: &str = "hibiki.v1.json";
/// The MessagePack subprotocol.
pub const MSGPACK_PROTOCOL: &str = "hibiki.v1.msgpack";

/// How a connection's envelopes are encoded, chosen by subprotocol (JSON when none).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON in text frames.
    Json,
    /// MessagePack (named fields) in binary frames.
    MsgPack,
}

impl Encoding {
    /// The frame type this encoding travels in.
    pub fn kind(self) -> MessageKind {
        match self {
            Self::Json => MessageKind::Text,
            Self::MsgPack => MessageKind::Binary,
        }
    }

    /// Index for per-encoding tables.
    pub fn index(self) -> usize {
        match self {
            Self::Json => 0,
            Self::MsgPack => 1,
        }
    }
}

/// A client's message id: any JSON string or number (or their MessagePack equivalents),
/// echoed back exactly as it came (`-1`, `1.5` and `1000.0` included).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageId {
    /// A numeric id.
    Number(serde_json::Number),
    /// A string id.
    Text(String),
}

impl From<u64> for MessageId {
    fn from(n: u64) -> Self {
        Self::Number(n.into())
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

/// What a client sent, before its payload is interpreted.
#[derive(Debug)]
pub struct Incoming {
    /// The message type.
    pub kind: String,
    /// The client's id, if it wants an ack.
    pub id: Option<MessageId>,
    /// The payload (`null` when absent).
    pub payload: Value,
}

/// An envelope as read, before its fields are checked: whatever `type` and `id` hold.
#[derive(Deserialize)]
struct Loose {
    #[serde(rename = "type", default)]
    kind: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    payload: Value,
}

/// Why an envelope could not be read, with its id when one could be read (then the client
/// gets a failed `ack` rather than an `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What is wrong, fit for the client.
    pub message: String,
    /// The envelope's id, when it had a valid one.
    pub id: Option<MessageId>,
}

impl DecodeError {
    fn new(message: String) -> Self {
        Self { message, id: None }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Reads an envelope in the connection's encoding. A frame of the other type is an error too.
///
/// # Errors
///
/// [`DecodeError`] with a message fit for the client: not an envelope (not a map, or not
/// JSON / MessagePack at all), an `id` that is neither a string nor a number, or (with the id
/// kept) a missing or non-string `type`.
pub fn decode(encoding: Encoding, kind: MessageKind, data: &[u8]) -> Result<Incoming, DecodeError> {
    if kind != encoding.kind() {
        return Err(DecodeError::new(format!("expected a {:?} frame for this subprotocol", encoding.kind())));
    }
    let loose: Loose = match encoding {
        Encoding::Json => {
            serde_json::from_slice(data).map_err(|e| DecodeError::new(format!("bad JSON envelope: {e}")))?
        }
        Encoding::MsgPack => rmp_serde::from_slice(data)
            .map_err(|e| DecodeError::new(format!("bad MessagePack envelope: {e}")))?,
    };
    let id = match loose.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(MessageId::Text(s)),
        Some(Value::Number(n)) => Some(MessageId::Number(n)),
        Some(_) => return Err(DecodeError::new("id must be a string or a number".into())),
    };
    match loose.kind {
        Some(Value::String(kind)) => Ok(Incoming { kind, id, payload: loose.payload }),
        _ => Err(DecodeError { message: "type must be a string".into(), id }),
    }
}

/// A 64-bit fingerprint of a message's type and payload, the same for equal values whatever
/// their encoding (map keys are sorted): a retry under an id must carry the same message.
pub fn fingerprint(kind: &str, payload: &Value) -> u64 {
    let mut hash = Fnv::default();
    hash.bytes(kind.as_bytes());
    hash.value(payload);
    hash.0
}

/// FNV-1a, 64 bits: stable across builds and machines, unlike `std`'s hasher.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        // The length first, so that adjacent strings cannot run into each other.
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn tagged(&mut self, tag: u8, bytes: [u8; 8]) {
        self.bytes(&[tag]);
        self.bytes(&bytes);
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.bytes(b"n"),
            Value::Bool(b) => self.bytes(if *b { b"t" } else { b"f" }),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => self.tagged(b'u', u.to_le_bytes()),
                (None, Some(i), _) => self.tagged(b'i', i.to_le_bytes()),
                (None, None, f) => self.tagged(b'f', f.unwrap_or(f64::NAN).to_bits().to_le_bytes()),
            },
            Value::String(s) => {
                self.bytes(b"s");
                self.bytes(s.as_bytes());
            }
            Value::Array(items) => {
                self.bytes(b"[");
                self.bytes(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| self.value(v));
            }
            Value::Object(map) => {
                self.bytes(b"{");
                self.bytes(&(map.len() as u64).to_le_bytes());
                for (k, v) in map {
                    self.bytes(k.as_bytes());
                    self.value(v);
                }
            }
        }
    }
}

/// An envelope to send.
#[derive(Debug, Serialize)]
pub struct Outgoing<'a, P: Serialize> {
    /// The message type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The id this answers, for acks and errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a MessageId>,
    /// The payload.
    pub payload: P,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Encodes an envelope.
pub fn encode<P: Serialize>(encoding: Encoding, envelope: &Outgoing<'_, P>) -> Vec<u8> {
    match encoding {
        // Serializing these types cannot fail (string keys, no non-finite floats from serde_json::Value).
        Encoding::Json => serde_json::to_vec(envelope).unwrap_or_default(),
        Encoding::MsgPack => rmp_serde::to_vec_named(envelope).unwrap_or_default(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_msgpack_round_trip() {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let id = MessageId::Text("m1".into());
            let bytes = encode(
                encoding,
                &Outgoing {
                    kind: "publish",
                    id: Some(&id),
                    payload: json!({"room": "chat:1", "data": {"text": "hi", "n": 3}}),
                    ts: 5,
                },
            );
            let incoming = decode(encoding, encoding.kind(), &bytes).unwrap();
            assert_eq!(incoming.kind, "publish");
            assert_eq!(incoming.id, Some(id));
            assert_eq!(incoming.payload["data"]["n"], 3);
        }
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        assert!(decode(Encoding::Json, MessageKind::Text, b"{").is_err());
        assert!(decode(Encoding::Json, MessageKind::Text, b"{\"payload\":{}}").is_err(), "type is required");
        assert!(decode(Encoding::Json, MessageKind::Binary, b"{}").is_err(), "wrong frame type");
        assert!(decode(Encoding::MsgPack, MessageKind::Binary, &[0xc1]).is_err());
        let numeric = decode(Encoding::Json, MessageKind::Text, br#"{"type":"ping","id":7}"#).unwrap();
        assert_eq!(numeric.id, Some(MessageId::from(7)));
        let untyped = decode(Encoding::Json, MessageKind::Text, br#"{"id":"a","payload":{}}"#).unwrap_err();
        assert_eq!(untyped.id, Some(MessageId::from("a")), "the id is kept for the failed ack");
        let bad_type = decode(Encoding::Json, MessageKind::Text, br#"{"type":7,"id":-2}"#).unwrap_err();
        assert_eq!(bad_type.id.map(|id| serde_json::to_string(&id).unwrap()).as_deref(), Some("-2"));
        let bad_id = decode(Encoding::Json, MessageKind::Text, br#"{"type":"ping","id":{}}"#).unwrap_err();
        assert_eq!(bad_id.id, None);
    }

    #[test]
    fn any_string_or_number_is_an_id_echoed_exactly() {
        for raw in
            ["-1", "1.5", "1000.0", "0", "18446744073709551615", "-9223372036854775808", "\"x\"", "1e3"]
        {
            let text = format!(r#"{{"type":"ping","id":{raw}}}"#);
            let id = decode(Encoding::Json, MessageKind::Text, text.as_bytes()).unwrap().id.unwrap();
            let echoed = serde_json::to_string(&id).unwrap();
            let expected = if raw == "1e3" { "1000.0" } else { raw };
            assert_eq!(echoed, expected, "{raw}");
            // And through MessagePack, as a number of the same kind.
            let packed = rmp_serde::to_vec_named(&json!({"type": "ping", "id": id})).unwrap();
            let back = decode(Encoding::MsgPack, MessageKind::Binary, &packed).unwrap().id.unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), expected);
        }
    }

    #[test]
    fn fingerprints_tell_payloads_apart_but_not_encodings() {
        let a = json!({"room": "r", "data": {"text": "hi", "n": [1, 2.5, -3]}});
        let packed = rmp_serde::to_vec_named(&a).unwrap();
        let b: Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(fingerprint("publish", &a), fingerprint("publish", &b));
        assert_ne!(fingerprint("publish", &a), fingerprint("direct", &a));
        assert_ne!(
            fingerprint("publish", &json!({"d": "ab", "e": ""})),
            fingerprint("publish", &json!({"d": "a", "e": "b"}))
        );
        assert_ne!(fingerprint("publish", &json!(1)), fingerprint("publish", &json!(1.0)));
        assert_ne!(fingerprint("publish", &json!({"data": 1})), fingerprint("publish", &json!({"data": 2})));
    }
}

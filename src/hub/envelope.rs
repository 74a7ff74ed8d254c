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

/// A client's message id: a string or a number, echoed back as it came.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageId {
    /// A numeric id.
    Number(u64),
    /// A string id.
    Text(String),
}

/// What a client sent, before its payload is interpreted.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    /// The message type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The client's id, if it wants an ack.
    #[serde(default)]
    pub id: Option<MessageId>,
    /// The payload.
    #[serde(default)]
    pub payload: Value,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Reads an envelope in the connection's encoding. A frame of the other type is an error too.
///
/// # Errors
///
/// [`DecodeError`] with a message fit for the client.
pub fn decode(encoding: Encoding, kind: MessageKind, data: &[u8]) -> Result<Incoming, DecodeError> {
    if kind != encoding.kind() {
        return Err(DecodeError(format!("expected a {:?} frame for this subprotocol", encoding.kind())));
    }
    match encoding {
        Encoding::Json => {
            serde_json::from_slice(data).map_err(|e| DecodeError(format!("bad JSON envelope: {e}")))
        }
        Encoding::MsgPack => {
            rmp_serde::from_slice(data).map_err(|e| DecodeError(format!("bad MessagePack envelope: {e}")))
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
        assert_eq!(numeric.id, Some(MessageId::Number(7)));
    }
}

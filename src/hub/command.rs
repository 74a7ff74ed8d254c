//! Client messages as typed commands: each payload checked once, into borrowed fields.

use serde_json::Value;

use super::commands::{ErrorCode, HubError};
use super::store::Epoch;

/// A client message, its payload checked.
#[derive(Debug, PartialEq)]
pub(super) enum Command<'a> {
    Join { room: &'a str },
    Leave { room: &'a str },
    Publish { room: &'a str, data: Value, volatile: bool, key: Option<&'a str>, echo: bool },
    Direct { user: &'a str, data: Value },
    Typing { room: &'a str },
    Read { room: &'a str, seq: u64 },
    Resume { room: &'a str, after: u64, epoch: Option<Epoch> },
    Ping,
}

fn str_field<'a>(payload: &'a Value, name: &str) -> Result<&'a str, HubError> {
    payload.get(name).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 256).ok_or_else(|| {
        HubError::new(ErrorCode::BadRequest, format!("payload.{name} must be a non-empty string"))
    })
}

fn seq_field(payload: &Value, name: &str) -> Result<u64, HubError> {
    payload
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| HubError::new(ErrorCode::BadRequest, format!("payload.{name} must be a number")))
}

fn flag(payload: &Value, name: &str, default: bool) -> Result<bool, HubError> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(HubError::new(ErrorCode::BadRequest, format!("payload.{name} must be true or false"))),
    }
}

impl<'a> Command<'a> {
    /// Reads a command; `data` is the payload's `data`, already taken out of it (so it is
    /// moved into the message, never copied).
    pub(super) fn parse(kind: &str, payload: &'a Value, data: Value) -> Result<Self, HubError> {
        let p = payload;
        Ok(match kind {
            "join" => Self::Join { room: str_field(p, "room")? },
            "leave" => Self::Leave { room: str_field(p, "room")? },
            "publish" => Self::Publish {
                room: str_field(p, "room")?,
                data,
                volatile: flag(p, "volatile", false)?,
                key: match p.get("key") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(str_field(p, "key")?),
                },
                echo: flag(p, "echo", true)?,
            },
            "direct" => Self::Direct { user: str_field(p, "user")?, data },
            "typing" => Self::Typing { room: str_field(p, "room")? },
            "read" => Self::Read { room: str_field(p, "room")?, seq: seq_field(p, "seq")? },
            "resume" => Self::Resume {
                room: str_field(p, "room")?,
                after: seq_field(p, "after")?,
                epoch: match p.get("epoch") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(Epoch::from(str_field(p, "epoch")?)),
                },
            },
            "ping" => Self::Ping,
            other => {
                return Err(HubError::new(ErrorCode::UnknownType, format!("unknown message type {other:?}")));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_are_checked_once_into_typed_commands() {
        let p = json!({"room": "chat:1", "echo": false, "key": "pos"});
        assert_eq!(
            Command::parse("publish", &p, json!(3)),
            Ok(Command::Publish {
                room: "chat:1",
                data: json!(3),
                volatile: false,
                key: Some("pos"),
                echo: false
            })
        );
        let p = json!({"room": "r", "after": 4, "epoch": "e1"});
        assert_eq!(
            Command::parse("resume", &p, Value::Null),
            Ok(Command::Resume { room: "r", after: 4, epoch: Some(Epoch::from("e1")) })
        );
        let code = |kind: &str, p: Value| Command::parse(kind, &p, Value::Null).unwrap_err().code;
        assert_eq!(code("join", json!({"room": ""})), ErrorCode::BadRequest);
        assert_eq!(code("join", json!("chat:1")), ErrorCode::BadRequest, "a payload of the wrong shape");
        assert_eq!(code("publish", json!({"room": "r", "echo": "no"})), ErrorCode::BadRequest);
        assert_eq!(code("read", json!({"room": "r", "seq": -1})), ErrorCode::BadRequest);
        assert_eq!(code("dance", json!({})), ErrorCode::UnknownType);
    }
}

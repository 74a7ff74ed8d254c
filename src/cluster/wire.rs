//! What travels through Redis: publications as MessagePack (their serde form, fields by
//! name), a pub/sub message as `SEQ:EPOCH:PAYLOAD` (one numbered; the publish script writes
//! the head), `*COUNT:FIRST:EPOCH:` then `LEN:PAYLOAD` per message (several numbered, seqs
//! `FIRST`, `FIRST + 1`, ...) or `0:NODE:PAYLOAD` (unnumbered, from that node life), and
//! readers of replies that answer an error for any shape they did not expect — never a
//! panic.

use std::sync::Arc;

use redis::Value;

use crate::hub::store::{Epoch, Publication};

/// A publication's payload (numbered ones go without seq and epoch: the script adds them).
pub(crate) fn encode(publication: &Publication) -> Vec<u8> {
    // Plain data throughout: encoding it cannot fail.
    rmp_serde::to_vec_named(publication).unwrap_or_default()
}

/// A payload back into a publication, numbered `seq` of `epoch` when given.
pub(crate) fn decode(payload: &[u8], seq: u64, epoch: Option<Epoch>) -> Result<Publication, String> {
    let mut publication: Publication =
        rmp_serde::from_slice(payload).map_err(|e| format!("undecodable publication: {e}"))?;
    publication.seq = seq;
    publication.epoch = epoch;
    Ok(publication)
}

/// A pub/sub message of a room.
#[derive(Debug, PartialEq)]
pub(crate) enum Head<'a> {
    /// A numbered message.
    Numbered { seq: u64, epoch: &'a str },
    /// `count` numbered messages (at least two), seqs `first`, `first + 1`, ...: the payload
    /// is their [`parts`].
    Batch { first: u64, count: usize, epoch: &'a str },
    /// An unnumbered one, from this node life.
    From(&'a str),
}

/// The head of an unnumbered pub/sub message from `owner`.
pub(crate) fn unnumbered(owner: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(owner.len() + payload.len() + 3);
    out.extend_from_slice(b"0:");
    out.extend_from_slice(owner.as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out
}

/// Splits a pub/sub message into its head and payload.
pub(crate) fn split(message: &[u8]) -> Result<(Head<'_>, &[u8]), String> {
    let bad = || {
        format!("malformed message head: {:?}", String::from_utf8_lossy(&message[..message.len().min(40)]))
    };
    if let Some(rest) = message.strip_prefix(b"*") {
        let (count, rest) = number(rest).ok_or_else(bad)?;
        let (first, rest) = number(rest).ok_or_else(bad)?;
        let colon = rest.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let epoch = std::str::from_utf8(&rest[..colon]).map_err(|_| bad())?;
        if count < 2 || first == 0 || epoch.is_empty() {
            return Err(bad());
        }
        let count = usize::try_from(count).map_err(|_| bad())?;
        return Ok((Head::Batch { first, count, epoch }, &rest[colon + 1..]));
    }
    let colon = message.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let seq: u64 =
        std::str::from_utf8(&message[..colon]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let rest = &message[colon + 1..];
    let colon = rest.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let second = std::str::from_utf8(&rest[..colon]).map_err(|_| bad())?;
    let payload = &rest[colon + 1..];
    if second.is_empty() {
        return Err(bad());
    }
    Ok(match seq {
        0 => (Head::From(second), payload),
        seq => (Head::Numbered { seq, epoch: second }, payload),
    })
}

/// A decimal number and what follows its colon.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let colon = bytes.iter().position(|&b| b == b':')?;
    let digits = &bytes[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, &bytes[colon + 1..]))
}

/// The `count` payloads of a batch's body (`LEN:PAYLOAD` each, nothing after the last).
pub(crate) fn parts(body: &[u8], count: usize) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::with_capacity(count.min(1024));
    let mut rest = body;
    while !rest.is_empty() {
        let (len, after) = number(rest).ok_or_else(|| format!("malformed batch part {}", out.len() + 1))?;
        let len = usize::try_from(len).ok().filter(|&len| len <= after.len());
        let len = len.ok_or_else(|| format!("batch part {} is cut off", out.len() + 1))?;
        out.push(&after[..len]);
        rest = &after[len..];
    }
    if out.len() != count {
        return Err(format!("a batch of {count} messages has {}", out.len()));
    }
    Ok(out)
}

/// An integer reply.
pub(crate) fn int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => {
            std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| unexpected(value))
        }
        Value::SimpleString(s) => s.parse().map_err(|_| unexpected(value)),
        _ => Err(unexpected(value)),
    }
}

/// A non-negative integer reply.
pub(crate) fn uint(value: &Value) -> Result<u64, String> {
    u64::try_from(int(value)?).map_err(|_| unexpected(value))
}

/// A string reply.
pub(crate) fn text(value: &Value) -> Result<&str, String> {
    match value {
        Value::BulkString(b) => std::str::from_utf8(b).map_err(|_| unexpected(value)),
        Value::SimpleString(s) => Ok(s),
        _ => Err(unexpected(value)),
    }
}

/// A binary string reply.
pub(crate) fn bytes(value: &Value) -> Result<&[u8], String> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        _ => Err(unexpected(value)),
    }
}

/// An array reply of at least `min` items.
pub(crate) fn array(value: &Value, min: usize) -> Result<&[Value], String> {
    match value {
        Value::Array(items) | Value::Set(items) if items.len() >= min => Ok(items),
        Value::Nil if min == 0 => Ok(&[]),
        _ => Err(unexpected(value)),
    }
}

/// The error for a reply of the wrong shape.
pub(crate) fn unexpected(value: &Value) -> String {
    format!("unexpected reply {}", super::conn::describe(value))
}

/// Stream entries (`XRANGE`: `[[id, [field, value, ...]], ...]`) as publications of `epoch`.
pub(crate) fn entries(value: &Value, epoch: &Epoch) -> Result<Vec<Publication>, String> {
    let mut out = Vec::new();
    for entry in array(value, 0)? {
        let [id, fields] = array(entry, 2)? else { return Err(unexpected(entry)) };
        let id = text(id)?;
        let seq: u64 = id
            .strip_prefix("0-")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad entry id {id:?}"))?;
        let fields = array(fields, 2)?;
        let payload = fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && bytes(&kv[0]).is_ok_and(|k| k == b"d"))
            .map(|kv| bytes(&kv[1]))
            .ok_or_else(|| format!("entry {id} has no payload"))??;
        out.push(decode(payload, seq, Some(epoch.clone()))?);
    }
    Ok(out)
}

/// An epoch from a reply.
pub(crate) fn epoch(value: &Value) -> Result<Epoch, String> {
    let e = text(value)?;
    if e.is_empty() {
        return Err("empty epoch".into());
    }
    Ok(Epoch::from(e))
}

/// A room name as the hub keeps it.
pub(crate) fn room(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hub::store::{Kind, NodeId, Origin};

    #[test]
    fn publications_round_trip_with_their_number_from_the_head() {
        let p = Publication {
            exclude: Some(Origin { node: NodeId::from("n1"), conn: 7 }),
            key: Some("pos".into()),
            ..Publication::new("chat:1".into(), Kind::Message, "ann".into(), json!({"x": [1, 2.5, "y"]}), 9)
        };
        let payload = encode(&p);
        let back = decode(&payload, 4, Some(Epoch::from("e1"))).unwrap();
        assert_eq!(back, Publication { seq: 4, epoch: Some(Epoch::from("e1")), ..p });
        let mut message = b"12:e1:".to_vec();
        message.extend_from_slice(&payload);
        let (head, rest) = split(&message).unwrap();
        assert_eq!(head, Head::Numbered { seq: 12, epoch: "e1" });
        assert_eq!(rest, &payload[..]);
        let message = unnumbered("n1.life", &payload);
        assert_eq!(split(&message).unwrap(), (Head::From("n1.life"), &payload[..]));
    }

    #[test]
    fn a_batch_splits_into_its_messages_with_consecutive_seqs() {
        let (a, b) = (b"first".to_vec(), b"a:b:1:2".to_vec());
        let mut message = b"*2:7:e1:".to_vec();
        for part in [&a, &b] {
            message.extend_from_slice(format!("{}:", part.len()).as_bytes());
            message.extend_from_slice(part);
        }
        let (head, body) = split(&message).unwrap();
        assert_eq!(head, Head::Batch { first: 7, count: 2, epoch: "e1" });
        assert_eq!(parts(body, 2).unwrap(), [&a[..], &b[..]]);
        assert!(parts(body, 3).is_err(), "fewer than said");
        assert!(parts(body, 1).is_err(), "more than said");
        assert!(parts(&body[..body.len() - 1], 2).is_err(), "the last one cut off");
        assert!(parts(b"x:abc", 1).is_err());
        assert_eq!(parts(b"0:", 1).unwrap(), [&b""[..]]);
        for bad in [&b"*"[..], b"*2:", b"*2:7:", b"*1:7:e:", b"*2:0:e:", b"*x:7:e:", b"*2:7::", b"*-2:7:e:"] {
            assert!(split(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_heads_and_payloads_are_errors() {
        for bad in [&b""[..], b"x:e:p", b"1", b"1:", b"1::p", b"-1:e:p", b"\xff:e:"] {
            assert!(split(bad).is_err(), "{bad:?}");
        }
        assert!(decode(b"\xc1garbage", 1, None).is_err());
        assert!(decode(b"", 1, None).is_err());
    }

    #[test]
    fn replies_of_the_wrong_shape_are_errors() {
        assert_eq!(int(&Value::Int(3)), Ok(3));
        assert_eq!(int(&Value::BulkString(b"42".to_vec())), Ok(42));
        assert!(int(&Value::Nil).is_err());
        assert!(uint(&Value::Int(-1)).is_err());
        assert!(array(&Value::Int(1), 0).is_err());
        assert!(array(&Value::Array(vec![]), 1).is_err());
        assert!(text(&Value::BulkString(vec![0xff])).is_err());
        let e = Epoch::from("e");
        assert!(entries(&Value::Array(vec![Value::Int(1)]), &e).is_err());
        let entry = |id: &str, payload: Vec<u8>| {
            Value::Array(vec![
                Value::BulkString(id.into()),
                Value::Array(vec![Value::BulkString(b"d".to_vec()), Value::BulkString(payload)]),
            ])
        };
        let good = encode(&Publication::new("r".into(), Kind::Message, "a".into(), json!(1), 0));
        let got = entries(&Value::Array(vec![entry("0-5", good.clone())]), &e).unwrap();
        assert_eq!((got[0].seq, got[0].epoch.clone()), (5, Some(e.clone())));
        assert!(entries(&Value::Array(vec![entry("5-0", good)]), &e).is_err(), "not a seq id");
        assert!(entries(&Value::Array(vec![entry("0-1", b"zz".to_vec())]), &e).is_err());
    }
}

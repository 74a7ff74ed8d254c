//! Shared HTTP/1.1 head parsing for requests and responses: line splitting, header lines,
//! token lists, case-insensitive lookups. Everything borrows from the caller's buffer.

use super::Header;

/// Why a head could not be parsed (the caller maps it to its side's error).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// Not HTTP/1.1 syntax.
    Malformed,
    /// Over the size limit, or more header lines than the array holds.
    TooLarge,
}

/// A complete head: its start line, how many headers were filled, and its length in bytes
/// (including the blank line).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head<S> {
    pub(super) start: S,
    pub(super) count: usize,
    pub(super) len: usize,
}

/// `tchar` (RFC 9110 §5.6.2): "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" /
/// "_" / "`" / "|" / "~" / DIGIT / ALPHA.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `token = 1*tchar` (RFC 9110 §5.6.2): what header names and subprotocols must be.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A byte allowed inside a field value or a reason phrase: VCHAR, obs-text, SP, HTAB.
pub(super) fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// Whether every byte may appear in a header field value (no CR, LF or other controls).
pub fn is_field_value(s: &[u8]) -> bool {
    s.iter().all(|&b| is_field_byte(b))
}

/// Visible ASCII (VCHAR, 0x21-0x7E).
pub(super) fn is_vchar(b: u8) -> bool {
    matches!(b, b'!'..=b'~')
}

/// `OWS = *( SP / HTAB )`.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Removes leading and trailing SP/HTAB.
pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), trimmed, empty ones skipped
/// ("a recipient MUST parse and ignore a reasonable number of empty list elements").
pub(super) fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

/// The values of every header named `name` (ASCII case-insensitive), in order.
pub(super) fn values<'b, 'h, 'n>(
    headers: &'h [Header<'b>],
    name: &'n str,
) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h, 'n> {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The value of the first header named `name`.
pub(super) fn first<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    values(headers, name).next()
}

/// The value of the only header named `name`: `Err(())` when it appears more than once.
pub(super) fn single<'b>(headers: &[Header<'b>], name: &str) -> Result<Option<&'b [u8]>, ()> {
    let mut all = values(headers, name);
    let value = all.next();
    match all.next() {
        None => Ok(value),
        Some(_) => Err(()),
    }
}

/// The elements of every `name` header's comma-separated list, in order.
pub(super) fn list_elements<'b, 'h, 'n>(
    headers: &'h [Header<'b>],
    name: &'n str,
) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h, 'n> {
    values(headers, name).flat_map(split_list)
}

/// Whether some `name` header lists `token` (ASCII case-insensitive).
pub(super) fn list_contains(headers: &[Header<'_>], name: &str, token: &str) -> bool {
    list_elements(headers, name).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// `HTTP-version = "HTTP/" DIGIT "." DIGIT`, major version 1 only: the minor version.
pub(super) fn http1_minor(version: &[u8]) -> Option<u8> {
    match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => Some(minor - b'0'),
        _ => None,
    }
}

/// Whether bytes seen so far in an unfinished line could still belong to a valid head: field
/// bytes only, with at most a CR as the very last byte.
fn plausible_tail(tail: &[u8]) -> bool {
    let body = tail.strip_suffix(b"\r").unwrap_or(tail);
    body.iter().all(|&b| is_field_byte(b))
}

/// Parses a header line `field-name ":" OWS field-value OWS` (RFC 9112 §5).
fn header_line(line: &[u8]) -> Option<Header<'_>> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, rest) = (&line[..colon], &line[colon + 1..]);
    // A token cannot hold SP/HTAB, so this also rejects whitespace before the colon and a
    // leading SP/HTAB (obs-fold continuation line).
    if !is_token(name) {
        return None;
    }
    let value = trim_ows(rest);
    if !value.iter().all(|&b| is_field_byte(b)) {
        return None;
    }
    let name = core::str::from_utf8(name).ok()?;
    Some(Header { name, value })
}

/// Parses a message head: a start line (checked by `start` as soon as it is complete), header
/// lines into `headers`, and the blank line.
///
/// `Ok(None)` means more bytes are needed. The whole head, blank line included, must fit in
/// `max_size` bytes; a head that provably does not (the first `max_size` bytes hold no end)
/// is `TooLarge` without waiting for the rest. Lines must end with CRLF.
pub(super) fn parse_head<'b, S>(
    buf: &'b [u8],
    headers: &mut [Header<'b>],
    max_size: usize,
    start: impl FnOnce(&'b [u8]) -> Option<S>,
) -> Result<Option<Head<S>>, HeadError> {
    // Never look past the limit: work is bounded by `max_size`, whatever the buffer holds.
    let window = &buf[..buf.len().min(max_size)];
    let incomplete = |tail: &[u8]| {
        if !plausible_tail(tail) {
            Err(HeadError::Malformed)
        } else if buf.len() >= max_size {
            // The window is full and holds no end of head: the head is over the limit.
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        }
    };

    let mut lines = Lines { buf: window, pos: 0 };
    let Some(first) = lines.next()? else {
        return incomplete(&window[lines.pos..]);
    };
    let start = start(first).ok_or(HeadError::Malformed)?;

    let mut count = 0;
    loop {
        let Some(line) = lines.next()? else {
            return incomplete(&window[lines.pos..]);
        };
        if line.is_empty() {
            return Ok(Some(Head { start, count, len: lines.pos }));
        }
        let header = header_line(line).ok_or(HeadError::Malformed)?;
        let slot = headers.get_mut(count).ok_or(HeadError::TooLarge)?;
        *slot = header;
        count += 1;
    }
}

/// CRLF-terminated lines of a window.
struct Lines<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Lines<'b> {
    /// The next complete line without its CRLF, `None` if the window ends first.
    fn next(&mut self) -> Result<Option<&'b [u8]>, HeadError> {
        let rest = &self.buf[self.pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = rest[..lf].strip_suffix(b"\r").ok_or(HeadError::Malformed)?;
        self.pos += lf + 1;
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::super::EMPTY_HEADER;
    use super::*;

    fn start(line: &[u8]) -> Option<&[u8]> {
        Some(line)
    }

    #[test]
    fn tokens_and_lists() {
        assert!(is_token(b"Sec-WebSocket-Key"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        let v: Vec<&[u8]> = split_list(b" keep-alive ,, Upgrade ,").collect();
        assert_eq!(v, [&b"keep-alive"[..], b"Upgrade"]);
        let hs = [
            Header { name: "Connection", value: b"keep-alive" },
            Header { name: "connection", value: b"x, UPGRADE" },
        ];
        assert!(list_contains(&hs, "CONNECTION", "upgrade"));
        assert!(!list_contains(&hs, "Upgrade", "websocket"));
        assert_eq!(first(&hs, "connection"), Some(&b"keep-alive"[..]));
        assert_eq!(single(&hs, "connection"), Err(()));
        assert_eq!(single(&hs, "host"), Ok(None));
        assert_eq!(http1_minor(b"HTTP/1.1"), Some(1));
        assert_eq!(http1_minor(b"HTTP/2.0"), None);
        assert_eq!(http1_minor(b"HTTP/1.1 "), None);
    }

    #[test]
    fn head_lines() {
        let mut hs = [EMPTY_HEADER; 4];
        let buf = b"X\r\nA: 1\r\nB:\t 2 x \r\n\r\nrest";
        let head = parse_head(buf, &mut hs, 100, start).unwrap().unwrap();
        assert_eq!((head.start, head.count, head.len), (&b"X"[..], 2, buf.len() - 4));
        assert_eq!(hs[1], Header { name: "B", value: b"2 x" });
        for bad in [
            &b"X\nA: 1\r\n\r\n"[..],
            b"X\r\nA : 1\r\n\r\n",
            b"X\r\n A: 1\r\n\r\n",
            b"X\r\nA: 1\r\n  folded\r\n\r\n",
            b"X\r\nA: 1\r2\r\n\r\n",
            b"X\r\n: 1\r\n\r\n",
            b"X\r\nA 1\r\n\r\n",
            b"X\r\nA: \x00\r\n\r\n",
            b"X\r\nA: 1\r\n\n",
            b"\x16\x03\x01",
            b"X\r\nA: 1\r\x01",
        ] {
            assert_eq!(parse_head(bad, &mut hs, 100, start).unwrap_err(), HeadError::Malformed);
        }
        assert_eq!(parse_head(b"X\r\nA: 1\r", &mut hs, 100, start).unwrap(), None);
        // Over the limit, finished or not.
        assert_eq!(parse_head(buf, &mut hs, 10, start).unwrap_err(), HeadError::TooLarge);
        assert_eq!(parse_head(b"X\r\nA: 1", &mut hs, 7, start).unwrap_err(), HeadError::TooLarge);
        // Exactly at the limit is fine.
        assert!(parse_head(&buf[..buf.len() - 4], &mut hs, buf.len() - 4, start).is_ok());
        // More headers than slots.
        let mut one = [EMPTY_HEADER; 1];
        assert_eq!(parse_head(buf, &mut one, 100, start).unwrap_err(), HeadError::TooLarge);
    }
}

//! Extension negotiation (RFC 7692 §5, §7.1) and the `Sec-WebSocket-Extensions` grammar
//! (RFC 6455 §9.1, with RFC 7230 tokens and quoted strings).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use super::{DeflateConfig, DeflateParams, MAX_WINDOW_BITS, PERMESSAGE_DEFLATE, clamp_bits};

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// Why a client must fail the connection over the server's `Sec-WebSocket-Extensions`.
///
/// RFC 7692 §7: "A client MUST _Fail the WebSocket Connection_ if the peer server accepted an
/// extension negotiation offer for this extension with an extension negotiation response
/// meeting any of the following conditions: [...] an extension parameter not defined for use
/// in a response [...] an extension parameter with an invalid value [...] multiple extension
/// parameters with the same name [...] The client does not support the configuration that
/// the response represents."
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The header does not parse as an extension list.
    Malformed,
    /// An extension other than permessage-deflate, which the client did not offer
    /// (RFC 6455 §4.1).
    UnexpectedExtension,
    /// permessage-deflate accepted more than once.
    DuplicateExtension,
    /// A parameter RFC 7692 does not define.
    UnknownParameter,
    /// The same parameter twice.
    DuplicateParameter,
    /// A parameter with a value where none is allowed, without one where one is required, or
    /// with window bits other than a plain decimal 8 to 15.
    InvalidValue,
    /// A response that does not honour the offer: `server_no_context_takeover` or
    /// `server_max_window_bits` requested and missing, or window bits above those requested.
    NotHonoured,
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed Sec-WebSocket-Extensions header",
            Self::UnexpectedExtension => "extension not offered",
            Self::DuplicateExtension => "permessage-deflate accepted twice",
            Self::UnknownParameter => "unknown permessage-deflate parameter",
            Self::DuplicateParameter => "duplicate permessage-deflate parameter",
            Self::InvalidValue => "invalid permessage-deflate parameter value",
            Self::NotHonoured => "permessage-deflate response does not honour the offer",
        })
    }
}

impl std::error::Error for NegotiationError {}

impl DeflateConfig {
    /// Server: picks the first acceptable permessage-deflate offer among the values of every
    /// `Sec-WebSocket-Extensions` request header, in order, and returns the parameters to
    /// answer with ([`DeflateParams::to_header_value`]); `None` if there is none.
    ///
    /// Other extensions are skipped, as are malformed list elements. RFC 7692 §7: "A server
    /// MUST decline an extension negotiation offer for this extension if any of the following
    /// conditions are met: The negotiation offer contains an extension parameter not defined
    /// for use in an offer. [...] an extension parameter with an invalid value. [...] multiple
    /// extension parameters with the same name. The server doesn't support the offered
    /// configuration." The one configuration declined as unsupported is
    /// `server_max_window_bits=8`: zlib cannot compress raw deflate with a 256-byte window, and
    /// the answer may not exceed the offer (§7.1.2.1).
    ///
    /// The answer: `server_no_context_takeover` if offered (§7.1.1.1: the server "MUST
    /// include" it) or configured; `client_no_context_takeover` if offered or configured
    /// (§7.1.1.2: the server MAY include it); `server_max_window_bits` the smaller of the
    /// offer and the configuration; `client_max_window_bits` the smaller of the offer's value
    /// and the configuration when the parameter was offered, else 15 (§7.1.2.2: without it in
    /// the offer the response "MUST NOT include" it).
    pub fn negotiate<'a>(&self, header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<DeflateParams> {
        self.select(header_values).map(|(params, _)| params)
    }

    /// [`negotiate`](Self::negotiate), with the exact response header value.
    ///
    /// It differs from [`DeflateParams::to_header_value`] in one case only: an offer of
    /// `server_max_window_bits=15` is answered with `server_max_window_bits=15`, as RFC 7692
    /// §7.1.2.1 says ("A server accepts an extension negotiation offer with this parameter by
    /// including the "server_max_window_bits" extension parameter in the extension
    /// negotiation response"), where `to_header_value` omits the default.
    pub fn negotiate_response<'a>(
        &self,
        header_values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<(DeflateParams, String)> {
        let (params, echo_server_bits) = self.select(header_values)?;
        Some((params, params.header_value(echo_server_bits)))
    }

    /// The first acceptable offer, and whether it had `server_max_window_bits`.
    fn select<'a>(&self, header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<(DeflateParams, bool)> {
        header_values.into_iter().find_map(|value| {
            parse_list(value).into_iter().flatten().find_map(|ext| {
                let offer = ext
                    .name
                    .eq_ignore_ascii_case(PERMESSAGE_DEFLATE.as_bytes())
                    .then(|| read_params(&ext.params))?;
                self.accept_offer(offer.ok()?)
            })
        })
    }

    fn accept_offer(&self, offer: RawParams) -> Option<(DeflateParams, bool)> {
        let server_bits = clamp_bits(self.server_max_window_bits);
        let client_bits = clamp_bits(self.client_max_window_bits);
        if offer.server_max_window_bits == Some(8) {
            return None;
        }
        let params = DeflateParams {
            server_no_context_takeover: offer.server_no_context_takeover || self.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover || self.client_no_context_takeover,
            server_max_window_bits: offer.server_max_window_bits.map_or(server_bits, |b| b.min(server_bits)),
            client_max_window_bits: match offer.client_max_window_bits {
                None => MAX_WINDOW_BITS,
                Some(None) => client_bits,
                Some(Some(b)) => b.min(client_bits),
            },
        };
        Some((params, offer.server_max_window_bits.is_some()))
    }

    /// Client: the `Sec-WebSocket-Extensions` value to offer, e.g.
    /// `permessage-deflate; server_no_context_takeover; client_max_window_bits`.
    ///
    /// It always offers `client_max_window_bits` (we can compress with any window the server
    /// names), with our limit as value when below 15, and asks for `server_max_window_bits`
    /// when the configured one is below 15.
    pub fn client_offer(&self) -> String {
        let mut offer = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            write_param(&mut offer, SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            write_param(&mut offer, CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        let server_bits = clamp_bits(self.server_max_window_bits);
        if server_bits < MAX_WINDOW_BITS {
            write_param(&mut offer, SERVER_MAX_WINDOW_BITS, Some(server_bits));
        }
        let client_bits = clamp_bits(self.client_max_window_bits);
        write_param(
            &mut offer,
            CLIENT_MAX_WINDOW_BITS,
            (client_bits < MAX_WINDOW_BITS).then_some(client_bits),
        );
        offer
    }

    /// Client: checks the values of every `Sec-WebSocket-Extensions` response header against
    /// [`client_offer`](Self::client_offer). `Ok(None)`: no extension (send uncompressed);
    /// `Ok(Some(params))`: permessage-deflate accepted; `Err`: the client must fail the
    /// connection.
    ///
    /// The response may hold one permessage-deflate and nothing else, with parameters each at
    /// most once and valid; `client_max_window_bits` needs a value (8..=15, at most ours), and
    /// `server_no_context_takeover` and `server_max_window_bits`, when we asked for them, must
    /// be there, the latter at most our value. `server_no_context_takeover` unasked is fine
    /// (§7.1.1.1: the server MAY include it), and so is `client_no_context_takeover` (§7.1.1.2:
    /// the server MAY include it, and the client then resets its compressor per message); one
    /// we offered ourselves applies whether or not it is echoed.
    pub fn accept_response<'a>(
        &self,
        header_values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<DeflateParams>, NegotiationError> {
        let mut accepted = None;
        for value in header_values {
            for ext in parse_list(value) {
                let ext = ext.ok_or(NegotiationError::Malformed)?;
                if !ext.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE.as_bytes()) {
                    return Err(NegotiationError::UnexpectedExtension);
                }
                if accepted.is_some() {
                    return Err(NegotiationError::DuplicateExtension);
                }
                accepted = Some(self.check_response(read_params(&ext.params)?)?);
            }
        }
        Ok(accepted)
    }

    fn check_response(&self, response: RawParams) -> Result<DeflateParams, NegotiationError> {
        let asked_server_bits = clamp_bits(self.server_max_window_bits);
        let client_bits = clamp_bits(self.client_max_window_bits);
        if self.server_no_context_takeover && !response.server_no_context_takeover {
            return Err(NegotiationError::NotHonoured);
        }
        let server_max_window_bits = match response.server_max_window_bits {
            Some(b) if b > asked_server_bits => return Err(NegotiationError::NotHonoured),
            Some(b) => b,
            None if asked_server_bits < MAX_WINDOW_BITS => return Err(NegotiationError::NotHonoured),
            None => MAX_WINDOW_BITS,
        };
        let client_max_window_bits = match response.client_max_window_bits {
            None => client_bits,
            Some(None) => return Err(NegotiationError::InvalidValue),
            Some(Some(b)) if b > client_bits => return Err(NegotiationError::NotHonoured),
            Some(Some(b)) => b,
        };
        Ok(DeflateParams {
            server_no_context_takeover: response.server_no_context_takeover,
            client_no_context_takeover: response.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        })
    }
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value a server answers with, e.g.
    /// `permessage-deflate; server_no_context_takeover; client_max_window_bits=10`.
    ///
    /// Window bits of 15 are left out, the default both ways (RFC 7692 §7.1.2.2: "Absence of
    /// this extension parameter in an extension negotiation response indicates that the
    /// server can receive messages compressed using an LZ77 sliding window of up to 32,768
    /// bytes"). So `client_max_window_bits` appears only below 15, which
    /// [`DeflateConfig::negotiate`] yields only when the client offered it. See
    /// [`DeflateConfig::negotiate_response`] for echoing an offered `server_max_window_bits=15`.
    pub fn to_header_value(&self) -> String {
        self.header_value(false)
    }

    fn header_value(&self, echo_server_bits: bool) -> String {
        let mut value = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            write_param(&mut value, SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            write_param(&mut value, CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if echo_server_bits || self.server_max_window_bits < MAX_WINDOW_BITS {
            write_param(&mut value, SERVER_MAX_WINDOW_BITS, Some(self.server_max_window_bits));
        }
        if self.client_max_window_bits < MAX_WINDOW_BITS {
            write_param(&mut value, CLIENT_MAX_WINDOW_BITS, Some(self.client_max_window_bits));
        }
        value
    }
}

fn write_param(out: &mut String, name: &str, value: Option<u8>) {
    out.push_str("; ");
    out.push_str(name);
    if let Some(v) = value {
        let _ = write!(out, "={v}");
    }
}

/// The permessage-deflate parameters of one offer or response, syntactically valid.
#[derive(Default)]
struct RawParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Reads permessage-deflate parameters: names case-insensitive, each at most once, the
/// context takeover ones without a value, `server_max_window_bits` with one.
fn read_params(params: &[Param<'_>]) -> Result<RawParams, NegotiationError> {
    let mut r = RawParams::default();
    let mut seen = [false; 4];
    for (name, value) in params {
        let names = [
            SERVER_NO_CONTEXT_TAKEOVER,
            CLIENT_NO_CONTEXT_TAKEOVER,
            SERVER_MAX_WINDOW_BITS,
            CLIENT_MAX_WINDOW_BITS,
        ];
        let i = names
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            .ok_or(NegotiationError::UnknownParameter)?;
        if std::mem::replace(&mut seen[i], true) {
            return Err(NegotiationError::DuplicateParameter);
        }
        let value = value.as_deref();
        let bits = |v: Option<&[u8]>| v.and_then(parse_window_bits).ok_or(NegotiationError::InvalidValue);
        // RFC 7692 §7.1.1: the context takeover parameters have no value.
        if i < 2 && value.is_some() {
            return Err(NegotiationError::InvalidValue);
        }
        match i {
            0 => r.server_no_context_takeover = true,
            1 => r.client_no_context_takeover = true,
            2 => r.server_max_window_bits = Some(bits(value)?),
            _ => r.client_max_window_bits = Some(value.map(|v| bits(Some(v))).transpose()?),
        }
    }
    Ok(r)
}

/// RFC 7692 §7.1.2.1: "a decimal integer value without leading zeroes between 8 to 15,
/// inclusive".
fn parse_window_bits(v: &[u8]) -> Option<u8> {
    match *v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A parameter name and its value, unquoted.
type Param<'a> = (&'a [u8], Option<Cow<'a, [u8]>>);

/// One element of an extension list.
struct Extension<'a> {
    name: &'a [u8],
    params: Vec<Param<'a>>,
}

/// Splits a `Sec-WebSocket-Extensions` value into its elements, in order; `None` for a
/// malformed element, after which parsing resumes at the next comma outside quotes.
///
/// RFC 6455 §9.1: `extension-list = 1#extension`, `extension = extension-token *( ";"
/// extension-param )`, `extension-param = token [ "=" (token | quoted-string) ]`. Empty list
/// elements are allowed (RFC 7230 §7), and so is whitespace around `;` and `=`.
fn parse_list(value: &[u8]) -> Vec<Option<Extension<'_>>> {
    let mut c = Cursor { s: value, i: 0 };
    let mut list = Vec::new();
    loop {
        c.skip_ws();
        match c.peek() {
            None => return list,
            Some(b',') => c.i += 1,
            Some(_) => {
                let start = c.i;
                let ext = c.extension();
                if ext.is_none() {
                    c.i = start;
                    c.skip_element();
                }
                list.push(ext);
            }
        }
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// RFC 7230 §3.2.6: `token = 1*tchar`.
    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// RFC 7230 §3.2.6: `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE`, at a quote.
    fn quoted(&mut self) -> Option<Cow<'a, [u8]>> {
        let s = self.s;
        self.i += 1;
        let start = self.i;
        let mut unescaped: Option<Vec<u8>> = None;
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => return Some(unescaped.map_or(Cow::Borrowed(&s[start..self.i - 1]), Cow::Owned)),
                b'\\' => {
                    let e = self.peek().filter(|&e| e == b'\t' || (e >= b' ' && e != 0x7f))?;
                    unescaped.get_or_insert_with(|| s[start..self.i - 1].to_vec()).push(e);
                    self.i += 1;
                }
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => {
                    if let Some(v) = &mut unescaped {
                        v.push(b);
                    }
                }
                _ => return None,
            }
        }
    }

    /// `name *( ";" param [ "=" value ] )`, stopping at a comma or the end.
    fn extension(&mut self) -> Option<Extension<'a>> {
        let name = self.token()?;
        let mut params = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(b',') => return Some(Extension { name, params }),
                Some(b';') => {
                    self.i += 1;
                    self.skip_ws();
                    let param = self.token()?;
                    self.skip_ws();
                    let value = if self.peek() == Some(b'=') {
                        self.i += 1;
                        self.skip_ws();
                        Some(if self.peek() == Some(b'"') {
                            self.quoted()?
                        } else {
                            Cow::Borrowed(self.token()?)
                        })
                    } else {
                        None
                    };
                    params.push((param, value));
                }
                Some(_) => return None,
            }
        }
    }

    /// Moves to the next comma outside a quoted string, or the end.
    fn skip_element(&mut self) {
        let mut quoted = false;
        while let Some(b) = self.peek() {
            match (quoted, b) {
                (false, b',') => return,
                (_, b'"') => quoted = !quoted,
                (true, b'\\') => self.i += 1,
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// `parse_list`, each element rendered as `name;param=value;...`.
#[cfg(test)]
pub(super) fn parse_list_for_tests(value: &[u8]) -> Vec<Option<String>> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    parse_list(value)
        .into_iter()
        .map(|ext| {
            ext.map(|ext| {
                let mut s = text(ext.name);
                for (name, value) in &ext.params {
                    s.push(';');
                    s.push_str(&text(name));
                    if let Some(v) = value {
                        s.push('=');
                        s.push_str(&text(v));
                    }
                }
                s
            })
        })
        .collect()
}

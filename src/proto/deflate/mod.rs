//! permessage-deflate (RFC 7692).
//!
//! - [`DeflateConfig`] says what this endpoint negotiates; [`DeflateConfig::negotiate`] (server)
//!   and [`DeflateConfig::client_offer`] / [`DeflateConfig::accept_response`] (client) turn it
//!   into the [`DeflateParams`] both ends agreed on (RFC 7692 §5-§7).
//! - [`DeflateState`] compresses and inflates one connection's messages (§7.2).
//! - [`compress_shared`] compresses a broadcast once for every connection whose compressor
//!   resets per message.
//!
//! Memory: a compressor is about 256 KiB of zlib state at window 15, an inflater about 40 KiB.
//! Without context takeover nothing stays in the connection between messages: every
//! connection on a thread shares one compressor per (level, window) and one inflater, reset
//! per message. With context takeover the connection owns a boxed compressor or inflater,
//! created with its first message.
//!
//! Inflating always uses a 32 KiB window, which decodes data compressed with any smaller one
//! (RFC 7692 §7.1.2.1: the window bits "limit" the sender's window). zlib cannot compress with
//! an 8-bit raw window, so the server declines offers that insist on one, and a client told to
//! use one sends stored (uncompressed) deflate blocks, which need no window at all.

mod negotiate;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Role;
use super::error::{CapacityError, Error, ProtocolError};

pub use negotiate::NegotiationError;

/// The extension token.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The empty stored block a sync flush ends with. RFC 7692 §7.2.1: the sender removes it from
/// each message; §7.2.2: the receiver appends it again before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest LZ77 window, 32 KiB (RFC 7692 §7.1.2: the default when no bits are negotiated).
const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window zlib can compress raw deflate with.
const MIN_ZLIB_WINDOW_BITS: u8 = 9;

/// The largest output step: one zlib call gets at most this much room.
const CHUNK: usize = 64 * 1024;

/// What this endpoint is willing to negotiate, and how it compresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Server: answer with `server_no_context_takeover` even when the client did not ask
    /// (RFC 7692 §7.1.1.1 allows it). Default `true`: the server's compressor is then reset per
    /// message, so one compressor per thread serves every connection and a broadcast is
    /// compressed once for all. Client: offer it.
    pub server_no_context_takeover: bool,
    /// Client: offer `client_no_context_takeover`. Server: answer with it even when the client
    /// did not offer it (RFC 7692 §7.1.1.2: "A server MAY include the
    /// "client_no_context_takeover" extension parameter in an extension negotiation
    /// response"), so that no inflater stays in the connection between messages. A client
    /// that offers it is always answered with it. Default `false`.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (bits, 9..=15) the server may compress with. Default 15. A server
    /// answers with the smaller of this and the client's `server_max_window_bits`; a client
    /// asks for it when below 15. Values outside 9..=15 are clamped.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (bits, 9..=15) the client may compress with. Default 15. A server
    /// answers with it when the client offered `client_max_window_bits` (a client that did not
    /// offer the parameter may use 15 regardless); a client offers it as its limit when below
    /// 15. Values outside 9..=15 are clamped.
    pub client_max_window_bits: u8,
    /// Messages shorter than this go out uncompressed. Default 1 KiB.
    pub threshold: usize,
    /// zlib level 0-9. Default 1 (fast: real-time traffic prefers latency to ratio).
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            threshold: 1024,
            level: 1,
        }
    }
}

impl DeflateConfig {
    /// Sets [`server_no_context_takeover`](Self::server_no_context_takeover).
    #[must_use]
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`client_no_context_takeover`](Self::client_no_context_takeover).
    #[must_use]
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`server_max_window_bits`](Self::server_max_window_bits), clamped to 9..=15.
    #[must_use]
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = clamp_bits(bits);
        self
    }

    /// Sets [`client_max_window_bits`](Self::client_max_window_bits), clamped to 9..=15.
    #[must_use]
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = clamp_bits(bits);
        self
    }

    /// Sets [`threshold`](Self::threshold).
    #[must_use]
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Sets [`level`](Self::level), clamped to 0..=9.
    #[must_use]
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }
}

fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_ZLIB_WINDOW_BITS, MAX_WINDOW_BITS)
}

/// Parameters agreed by both ends for one connection.
///
/// The default is a bare `permessage-deflate`: context takeover both ways, 15-bit windows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server compresses with at most this window (bits).
    pub server_max_window_bits: u8,
    /// The client compresses with at most this window (bits).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// Per-connection compression state.
///
/// Holds no zlib state while idle unless context takeover keeps a compressor or inflater
/// alive between messages (see [`holds_state`](Self::holds_state)).
#[derive(Debug)]
pub struct DeflateState {
    /// zlib level of our compressor.
    level: u32,
    /// Window bits of our compressor.
    window_bits: u8,
    /// Our compressor resets per message (no context takeover in our direction).
    compress_reset: bool,
    /// The peer's compressor resets per message (no context takeover in its direction).
    inflate_reset: bool,
    threshold: usize,
    /// Our compressor, with context takeover.
    deflater: Option<Box<Compress>>,
    /// The peer's stream: kept with context takeover, else only during a fragmented message.
    inflater: Option<Box<Decompress>>,
    /// A compressed message has begun and its last frame has not arrived.
    in_message: bool,
    /// The peer's deflate stream ended (a block with BFINAL set) in the current message.
    stream_ended: bool,
}

impl DeflateState {
    /// State for one connection; allocates nothing until a message needs it.
    ///
    /// A server compresses with the `server_*` parameters and inflates what the client
    /// compressed with the `client_*` ones; a client the reverse.
    pub fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        let (own_reset, own_bits, peer_reset) = match role {
            Role::Server => (
                params.server_no_context_takeover,
                params.server_max_window_bits,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.client_no_context_takeover,
                params.client_max_window_bits,
                params.server_no_context_takeover,
            ),
        };
        let (level, window_bits) = zlib_settings(config.level, own_bits);
        Self {
            level,
            window_bits,
            compress_reset: own_reset,
            inflate_reset: peer_reset,
            threshold: config.threshold,
            deflater: None,
            inflater: None,
            in_message: false,
            stream_ended: false,
        }
    }

    /// Whether a message of `len` bytes goes out compressed (at or above the threshold).
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Compresses one whole message, appending the payload (the 00 00 ff ff tail removed) to `out`.
    ///
    /// RFC 7692 §7.2.1: "Compress all the octets of the payload of the message using DEFLATE.
    /// If the resulting data does not end with an empty DEFLATE block with no compression
    /// (the "BTYPE" bits are set to 00), append an empty DEFLATE block with no compression to
    /// the tail end. Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end." An
    /// empty message becomes the single byte `00` (§7.2.3.6).
    pub fn compress(&mut self, payload: &[u8], out: &mut BytesMut) {
        if self.compress_reset {
            with_shared_deflater(self.level, self.window_bits, |c| deflate_message(c, payload, out));
        } else {
            let (level, bits) = (self.level, self.window_bits);
            let c = self.deflater.get_or_insert_with(|| Box::new(new_deflater(level, bits)));
            deflate_message(c, payload, out);
        }
    }

    /// Inflates one frame's payload of a compressed message, appending to `out`; `fin` marks the
    /// message's last frame. Fails with `CapacityError::MessageTooLarge` before `out` grows past
    /// `max` bytes, and with `ProtocolError::BadCompressedData` on corrupt input.
    ///
    /// `max` bounds `out.len()` (so `out` should hold only the message): inflating goes in
    /// steps of at most 64 KiB and zlib never gets room for more than one byte past `max`, so a
    /// decompression bomb costs at most `max + 1` bytes of output, and `out` is grown so that
    /// its capacity does not run past `max + 1` either (unless it already did).
    /// RFC 7692 §7.2.2: the 00 00 ff ff tail is appended after the last frame.
    /// Data after a block with BFINAL set is ignored (§7.2.3.4); the peer's next message then
    /// starts a fresh stream, without the previous window.
    ///
    /// After an error the connection must fail; the state is reset.
    pub fn decompress(
        &mut self,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<(), Error> {
        let first = !self.in_message;
        if first && std::mem::take(&mut self.stream_ended) {
            if let Some(d) = &mut self.inflater {
                d.reset(false);
            }
        }
        let result = if first && fin && self.inflate_reset {
            // A whole message in one frame: nothing to keep, so the thread's inflater does.
            with_shared_inflater(|d| inflate_frame(d, payload, true, out, max, &mut false))
        } else {
            let d = self.inflater.get_or_insert_with(|| Box::new(new_inflater()));
            inflate_frame(d, payload, fin, out, max, &mut self.stream_ended)
        };
        self.in_message = result.is_ok() && !fin;
        if result.is_err() || (fin && self.inflate_reset) {
            self.inflater = None;
            self.stream_ended = false;
        }
        result
    }

    /// Whether this connection holds zlib state (a compressor or an inflater) right now.
    pub fn holds_state(&self) -> bool {
        self.deflater.is_some() || self.inflater.is_some()
    }

    /// `Some((level, window_bits))` when this connection's compressed messages are exactly
    /// [`compress_shared`]`(payload, level, window_bits, ..)`: no context takeover in our
    /// direction, so a broadcast compressed once can be sent as is. `None` with context
    /// takeover.
    pub fn shared_compression(&self) -> Option<(u32, u8)> {
        self.compress_reset.then_some((self.level, self.window_bits))
    }
}

/// Compresses one whole message with no context takeover, appending the payload (tail
/// removed, as [`DeflateState::compress`]) to `out`.
///
/// Uses the thread's shared compressor for (`level`, `window_bits`), reset first, so the
/// output is the same bytes `DeflateState::compress` produces for every connection whose
/// [`DeflateState::shared_compression`] is `Some((level, window_bits))`; any connection whose
/// compressor resets per message and whose negotiated window is at least `window_bits` may
/// send it. `level` is clamped to 0..=9 and `window_bits` to 15; below 9 bits the message is
/// sent as stored blocks (zlib cannot compress raw deflate with a 256-byte window).
pub fn compress_shared(payload: &[u8], level: u32, window_bits: u8, out: &mut BytesMut) {
    let (level, bits) = zlib_settings(level, window_bits);
    with_shared_deflater(level, bits, |c| deflate_message(c, payload, out));
}

/// The zlib (level, window bits) that honour a window limit of `bits`: below 9 bits, level 0,
/// whose stored blocks refer to no earlier data.
fn zlib_settings(level: u32, bits: u8) -> (u32, u8) {
    if bits < MIN_ZLIB_WINDOW_BITS {
        (0, MIN_ZLIB_WINDOW_BITS)
    } else {
        (level.min(9), bits.min(MAX_WINDOW_BITS))
    }
}

fn new_deflater(level: u32, bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, bits)
}

fn new_inflater() -> Decompress {
    Decompress::new_with_window_bits(false, MAX_WINDOW_BITS)
}

thread_local! {
    /// This thread's compressors for messages without context takeover, by (level, bits).
    static DEFLATERS: RefCell<Vec<(u32, u8, Compress)>> = const { RefCell::new(Vec::new()) };
    /// This thread's inflater for whole single-frame messages without context takeover.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's compressor for (`level`, `bits`), freshly reset. Falls back to a
/// temporary compressor while the thread-local is being torn down.
fn with_shared_deflater<R>(level: u32, bits: u8, f: impl FnOnce(&mut Compress) -> R) -> R {
    let mut f = Some(f);
    let shared = DEFLATERS.try_with(|cell| {
        let mut cache = cell.try_borrow_mut().ok()?;
        let i = match cache.iter().position(|&(l, b, _)| (l, b) == (level, bits)) {
            Some(i) => i,
            None => {
                cache.push((level, bits, new_deflater(level, bits)));
                cache.len() - 1
            }
        };
        let c = &mut cache[i].2;
        c.reset();
        f.take().map(|f| f(c))
    });
    match (shared, f) {
        (Ok(Some(r)), _) => r,
        (_, Some(f)) => f(&mut new_deflater(level, bits)),
        (_, None) => unreachable!("the closure ran, so it returned"),
    }
}

/// Runs `f` with this thread's inflater, freshly reset (or a temporary one, as above).
fn with_shared_inflater<R>(f: impl FnOnce(&mut Decompress) -> R) -> R {
    let mut f = Some(f);
    let shared = INFLATER.try_with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        let d = slot.get_or_insert_with(new_inflater);
        d.reset(false);
        f.take().map(|f| f(d))
    });
    match (shared, f) {
        (Ok(Some(r)), _) => r,
        (_, Some(f)) => f(&mut new_inflater()),
        (_, None) => unreachable!("the closure ran, so it returned"),
    }
}

/// Deflates `payload` with a sync flush and appends it to `out`, minus the tail.
fn deflate_message(c: &mut Compress, payload: &[u8], out: &mut BytesMut) {
    let start = out.len();
    let mut input = payload;
    let mut chunk = (payload.len() / 2).clamp(64, CHUNK);
    loop {
        let len = out.len();
        out.resize(len + chunk, 0);
        let (in0, out0) = (c.total_in(), c.total_out());
        let status = c.compress(input, &mut out[len..], FlushCompress::Sync);
        let written = (c.total_out() - out0) as usize;
        out.truncate(len + written);
        input = &input[(c.total_in() - in0) as usize..];
        // zlib fails only on a misused stream, never on data.
        match status.expect("raw deflate of a reset or live stream cannot fail") {
            // "If deflate returns with avail_out == 0, this function must be called again":
            // with room left over, the input is consumed and the flush complete. BufError:
            // nothing left to do (a repeated flush with no input).
            Status::BufError => break,
            _ if written < chunk => break,
            _ => chunk = (chunk * 2).min(CHUNK),
        }
    }
    debug_assert!(input.is_empty());
    if out[start..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    if out.len() == start {
        // An empty message right after another flush: zlib writes nothing. Send the header
        // byte of an empty stored block, which the receiver's appended tail completes.
        out.put_u8(0);
    }
}

/// Inflates one frame, and at `fin` the tail; `ended` records a block with BFINAL set, after
/// which input is ignored.
fn inflate_frame(
    d: &mut Decompress,
    payload: &[u8],
    fin: bool,
    out: &mut BytesMut,
    max: usize,
    ended: &mut bool,
) -> Result<(), Error> {
    if !*ended {
        *ended = inflate_slice(d, payload, out, max)?;
    }
    if fin && !*ended {
        *ended = inflate_slice(d, &TAIL, out, max)?;
    }
    Ok(())
}

/// Inflates `input` into `out`, never letting `out.len()` pass `max + 1`. Returns whether the
/// deflate stream ended.
fn inflate_slice(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut BytesMut,
    max: usize,
) -> Result<bool, Error> {
    let mut hint = input.len().saturating_mul(4).clamp(1024, CHUNK);
    loop {
        // One byte past `max` is how we learn that the message is too large.
        let chunk = hint.min(max.saturating_sub(out.len()).saturating_add(1));
        reserve_bounded(out, chunk, max.saturating_add(1));
        let len = out.len();
        out.resize(len + chunk, 0);
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d.decompress(input, &mut out[len..], FlushDecompress::Sync);
        let written = (d.total_out() - out0) as usize;
        out.truncate(len + written);
        input = &input[(d.total_in() - in0) as usize..];
        let status = status.map_err(|_| ProtocolError::BadCompressedData)?;
        if out.len() > max {
            return Err(CapacityError::MessageTooLarge { size: out.len() as u64, max }.into());
        }
        match status {
            Status::StreamEnd => return Ok(true),
            // Room left over: all input consumed and all output written.
            _ if written < chunk => return Ok(false),
            _ => hint = (hint * 2).min(CHUNK),
        }
    }
}

/// Makes room for `want` more bytes in `out` without letting its capacity grow past `limit`
/// (`out.len() + want <= limit`), which `BytesMut::reserve` alone does not promise (it
/// doubles).
fn reserve_bounded(out: &mut BytesMut, want: usize, limit: usize) {
    if out.capacity() - out.len() >= want || out.try_reclaim(want) {
        return;
    }
    if out.capacity().saturating_mul(2) <= limit {
        out.reserve(want);
        return;
    }
    let needed = out.len() + want;
    let mut grown = BytesMut::with_capacity(out.capacity().saturating_mul(2).min(limit).max(needed));
    grown.extend_from_slice(out);
    *out = grown;
}

//! permessage-deflate (RFC 7692).
//!
//! API SKELETON: the bodies are being written; signatures are fixed.

use bytes::BytesMut;

use super::Role;
use super::error::Error;

/// The extension token.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What this endpoint is willing to negotiate, and how it compresses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Server: answer with `server_no_context_takeover` even when the client did not ask
    /// (RFC 7692 §7.1.1.1 allows it). Default `true`: the server's compressor is then reset per
    /// message, so one compressor per thread serves every connection and a broadcast is
    /// compressed once for all. Client: offer it.
    pub server_no_context_takeover: bool,
    /// Client: offer `client_no_context_takeover`. Server: accept an offer of it (always) and
    /// ask for it when offered... default `false`.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (bits, 9..=15) the server may compress with. Default 15.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (bits, 9..=15) the client may compress with. Default 15.
    pub client_max_window_bits: u8,
    /// Messages shorter than this go out uncompressed. Default 1 KiB.
    pub threshold: usize,
    /// zlib level 0-9. Default 1 (fast: real-time traffic prefers latency to ratio).
    pub level: u32,
}

/// Parameters agreed by both ends for one connection.
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

/// Per-connection compression state.
#[derive(Debug)]
pub struct DeflateState {
    _role: Role,
}

impl DeflateState {
    /// State for one connection; allocates nothing until a message needs it.
    pub fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        let _ = (params, config);
        Self { _role: role }
    }

    /// Whether a message of `len` bytes goes out compressed (at or above the threshold).
    pub fn should_compress(&self, len: usize) -> bool {
        let _ = len;
        false
    }

    /// Compresses one whole message, appending the payload (the 00 00 ff ff tail removed) to `out`.
    pub fn compress(&mut self, payload: &[u8], out: &mut BytesMut) {
        let _ = (payload, out);
    }

    /// Inflates one frame's payload of a compressed message, appending to `out`; `fin` marks the
    /// message's last frame. Fails with `CapacityError::MessageTooLarge` before `out` grows past
    /// `max` bytes, and with `ProtocolError::BadCompressedData` on corrupt input.
    pub fn decompress(&mut self, payload: &[u8], fin: bool, out: &mut BytesMut, max: usize) -> Result<(), Error> {
        let _ = (payload, fin, out, max);
        Ok(())
    }
}

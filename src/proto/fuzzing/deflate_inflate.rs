//! The `deflate_inflate` target: permessage-deflate inflation of arbitrary data, and round
//! trips over several messages.

use bytes::BytesMut;

use super::opposite;
use crate::proto::Role;
use crate::proto::deflate::{DeflateConfig, DeflateParams, DeflateState, compress_shared};
use crate::proto::error::{CapacityError, Error, ProtocolError};

/// The inflate limit of [`deflate_inflate`].
const INFLATE_MAX: usize = 32 << 10;

/// Negotiated parameters the deflate target picks from.
const FUZZ_PARAMS: [DeflateParams; 4] = [
    DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    },
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    },
    // 8 bits: stored blocks only.
    DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: true,
        server_max_window_bits: 9,
        client_max_window_bits: 8,
    },
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: false,
        server_max_window_bits: 12,
        client_max_window_bits: 10,
    },
];

/// `data` cut into `frames` (1-3) pieces at points scaled from `a` and `b`.
fn split_frames(data: &[u8], frames: usize, a: u8, b: u8) -> Vec<&[u8]> {
    let at = |x: u8| data.len() * usize::from(x) / 255;
    let (lo, hi) = (at(a.min(b)), at(a.max(b)));
    match frames {
        1 => vec![data],
        2 => vec![&data[..lo], &data[lo..]],
        _ => vec![&data[..lo], &data[lo..hi], &data[hi..]],
    }
}

/// Inflates one message of `frames` into a fresh buffer; checks the bounds on the way.
fn inflate_message(state: &mut DeflateState, frames: &[&[u8]], max: usize) -> (BytesMut, Result<(), Error>) {
    let mut out = BytesMut::new();
    // `decompress` keeps the capacity of `out` within `max + 1`; a `Vec` allocates at least 8
    // bytes, which is the only slack allowed.
    let max_capacity = (max + 1).max(8);
    for (i, frame) in frames.iter().enumerate() {
        let result = state.decompress(frame, i + 1 == frames.len(), &mut out, max);
        assert!(out.capacity() <= max_capacity, "output capacity {} for a limit of {max}", out.capacity());
        if let Err(e) = result {
            assert!(out.len() <= max + 1, "{} bytes of output for a limit of {max}", out.len());
            match e {
                Error::Protocol(ProtocolError::BadCompressedData) => {}
                Error::Capacity(CapacityError::MessageTooLarge { size, max: m }) => {
                    assert!(m == max && size > max as u64, "{e:?}")
                }
                _ => panic!("unexpected inflate error {e:?}"),
            }
            assert!(!state.holds_state(), "inflater kept after an error");
            return (out, Err(e));
        }
        assert!(out.len() <= max, "{} bytes of output for a limit of {max}", out.len());
    }
    (out, Ok(()))
}

/// permessage-deflate. Byte 0 chooses: bits 0-1 the number of frames (1-3), bit 2 the role
/// (client if set), bits 3-4 the parameters, bits 5-6 the zlib level (0, 1, 6, 9); bytes 1
/// and 2 where frames are cut; the rest is the data.
///
/// First the data is inflated as a compressed message, twice on one state (32 KiB limit):
/// no panic, output and its capacity never over the limit, only the documented errors. Then
/// the data is compressed and inflated back (the limit exactly its length) as four messages
/// on one pair of states, so that context takeover carries over: equal, and equal to
/// [`compress_shared`] whenever the state says it may be shared.
pub fn deflate_inflate(data: &[u8]) {
    let [mode, a, b, payload @ ..] = data else { return };
    let frames = usize::from(mode & 3) % 3 + 1;
    let role = if mode & 4 == 0 { Role::Server } else { Role::Client };
    let params = FUZZ_PARAMS[usize::from((mode >> 3) & 3)];
    let level = [0, 1, 6, 9][usize::from((mode >> 5) & 3)];
    let config = DeflateConfig::default().level(level);
    // Whether the peer's compressor resets per message, so we keep no inflater between them.
    let peer_resets = match role {
        Role::Server => params.client_no_context_takeover,
        Role::Client => params.server_no_context_takeover,
    };

    let pieces = split_frames(payload, frames, *a, *b);
    let mut state = DeflateState::new(role, params, &config);
    for _ in 0..2 {
        let (_, result) = inflate_message(&mut state, &pieces, INFLATE_MAX);
        if result.is_ok() && peer_resets {
            assert!(!state.holds_state(), "inflater kept without context takeover");
        }
    }

    let mut sender = DeflateState::new(role, params, &config);
    let mut receiver = DeflateState::new(opposite(role), params, &config);
    for message in [payload, payload, &payload[..payload.len() / 2], &[][..]] {
        let mut wire = BytesMut::new();
        sender.compress(message, &mut wire);
        assert!(!wire.is_empty(), "a compressed message is at least one byte");
        if let Some((level, bits)) = sender.shared_compression() {
            let mut shared = BytesMut::new();
            compress_shared(message, level, bits, &mut shared);
            assert_eq!(shared, wire, "compress_shared differs from the state's compressor");
        }
        let (back, result) =
            inflate_message(&mut receiver, &split_frames(&wire, frames, *b, *a), message.len());
        if let Err(e) = result {
            panic!("{} bytes compressed to {} do not inflate back: {e}", message.len(), wire.len());
        }
        assert!(back == message, "round trip of {} bytes changed them", message.len());
    }
}

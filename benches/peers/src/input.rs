//! Deterministic benchmark inputs: client-to-server (masked) frames as raw wire bytes.
//!
//! The frames are written here byte by byte, not with hibiki's own encoder, so that a bug in
//! hibiki's header code cannot make its own benchmark input agree with itself.

/// A small, fast, deterministic PRNG (xorshift64*), good enough for benchmark payloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is mapped to a fixed constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A buffer of masked, final binary frames, as a client sends them.
#[derive(Clone, Debug)]
pub struct MaskedFrames {
    /// The frames, back to back, exactly as they arrive on the wire.
    pub wire: Vec<u8>,
    /// How many frames `wire` holds.
    pub frames: usize,
    /// Payload bytes of one frame.
    pub payload_len: usize,
    /// [`checksum`] of every frame's unmasked payload, in order.
    pub checksum: u64,
}

/// Order-sensitive checksum (FNV-1a, 64-bit) over `bytes`, continuing from `state`
/// (start with [`CHECKSUM_INIT`]).
pub fn checksum(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Starting state of [`checksum`].
pub const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Cheap per-frame work every decoder is charged with in the timed loops: its length plus its
/// first and last bytes, so each payload is actually looked at.
#[inline]
pub fn touch(payload: &[u8]) -> usize {
    payload.len()
        + payload.first().map_or(0, |&b| usize::from(b))
        + payload.last().map_or(0, |&b| usize::from(b))
}

/// Appends one masked, final binary frame carrying `payload` (unmasked) to `wire`.
pub fn push_masked_binary(wire: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
    wire.push(0x82); // FIN + binary
    let len = payload.len();
    if len < 126 {
        wire.push(0x80 | len as u8);
    } else if len <= 0xffff {
        wire.push(0x80 | 126);
        wire.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        wire.push(0x80 | 127);
        wire.extend_from_slice(&(len as u64).to_be_bytes());
    }
    wire.extend_from_slice(&key);
    wire.extend(payload.iter().enumerate().map(|(i, &b)| b ^ key[i % 4]));
}

/// At least `min_total` payload bytes (and at least one frame) of `payload_len`-byte masked
/// binary frames, each with its own random payload and masking key.
pub fn masked_binary_frames(payload_len: usize, min_total: usize, seed: u64) -> MaskedFrames {
    let frames = min_total.div_ceil(payload_len.max(1)).max(1);
    let mut rng = Rng::new(seed);
    let mut wire = Vec::with_capacity(frames * (payload_len + 14));
    let mut payload = vec![0u8; payload_len];
    let mut sum = CHECKSUM_INIT;
    for _ in 0..frames {
        rng.fill(&mut payload);
        let key = (rng.next_u64() as u32).to_le_bytes();
        push_masked_binary(&mut wire, &payload, key);
        sum = checksum(sum, &payload);
    }
    MaskedFrames { wire, frames, payload_len, checksum: sum }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_masked_hello() {
        let mut wire = Vec::new();
        push_masked_binary(&mut wire, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(wire, [0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn lengths_use_the_shortest_encoding() {
        for (len, header) in [(125, 6), (126, 8), (65535, 8), (65536, 14)] {
            let input = masked_binary_frames(len, 1, 7);
            assert_eq!((input.frames, input.wire.len()), (1, len + header), "len {len}");
        }
    }
}

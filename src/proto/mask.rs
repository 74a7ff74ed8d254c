//! In-place XOR masking (RFC 6455 §5.3).
//!
//! "Octet i of the transformed data is the XOR of octet i of the original data with octet at
//! index i modulo 4 of the masking key." The fast path XORs 16 bytes at a time through
//! `u128`, which the compiler turns into SIMD loads and stores on any alignment without
//! `unsafe`; [`apply_mask_scalar`] is the byte-wise reference it is tested against.

/// XORs `buf` with `key` in place, starting at position `offset` of the key cycle.
///
/// `offset` is the number of payload bytes already unmasked before `buf` (only `offset % 4`
/// matters), so a payload that arrives over several reads is unmasked piece by piece.
/// Returns the offset to pass for the next piece.
///
/// # Examples
///
/// ```
/// use hibiki::proto::mask::apply_mask;
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut masked = [0x7f, 0x9f, 0x4d, 0x51, 0x58]; // "Hello", RFC 6455 §5.7
/// let next = apply_mask(&mut masked[..2], key, 0);
/// apply_mask(&mut masked[2..], key, next);
/// assert_eq!(&masked, b"Hello");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let shift = offset % 4;
    let end = offset.wrapping_add(buf.len());
    if buf.len() < 32 {
        apply_mask_scalar(buf, key, shift);
        return end;
    }
    let rotated = u32::from_ne_bytes(key).rotate_right((shift * 8) as u32);
    let rotated = if cfg!(target_endian = "little") {
        rotated
    } else {
        u32::from_ne_bytes(key).rotate_left((shift * 8) as u32)
    };
    let word = u128::from(rotated);
    let wide = word | (word << 32) | (word << 64) | (word << 96);
    let mut chunks = buf.chunks_exact_mut(16);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(chunk);
        let value = u128::from_ne_bytes(bytes) ^ wide;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // 16 is a multiple of 4: the key position is unchanged at the remainder.
    apply_mask_scalar(chunks.into_remainder(), key, shift);
    end
}

/// The byte-at-a-time reference implementation of [`apply_mask`].
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_length_and_offset_matches_the_reference() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..8 {
            for len in 0..200 {
                for offset in 0..4 {
                    let mut fast = data[start..start + len].to_vec();
                    let mut slow = fast.clone();
                    apply_mask(&mut fast, key, offset);
                    apply_mask_scalar(&mut slow, key, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn rfc_6455_masked_hello() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    proptest! {
        #[test]
        fn fast_equals_scalar(data in proptest::collection::vec(any::<u8>(), 0..2048),
                              key in any::<[u8; 4]>(), offset in 0usize..16, skip in 0usize..16) {
            let skip = skip.min(data.len());
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast[skip..], key, offset);
            apply_mask_scalar(&mut slow[skip..], key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn split_masking_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..512),
                                      key in any::<[u8; 4]>(), cut in 0usize..512) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut parts = data.clone();
            let next = apply_mask(&mut parts[..cut], key, 0);
            apply_mask(&mut parts[cut..], key, next);
            prop_assert_eq!(&whole, &parts);
            apply_mask(&mut whole, key, 0);
            prop_assert_eq!(whole, data);
        }
    }
}

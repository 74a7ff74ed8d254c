//! In-place XOR masking (RFC 6455 §5.3).
//!
//! "Octet i of the transformed data is the XOR of octet i of the original data with octet at
//! index i modulo 4 of the masking key." The fast path XORs 32-byte chunks against the key
//! pattern pre-rotated to the payload's offset, written byte-wise so that the compiler
//! vectorizes it on any alignment (a `u128` XOR, by contrast, is split into two 64-bit scalar
//! XORs); on x86-64 with AVX2, detected at run time, the same loop is compiled for 32-byte
//! registers. [`apply_mask_scalar`] is the byte-wise reference both are tested against.
//!
//! This is the core's only `unsafe`: calling the AVX2 copy after detecting AVX2.

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
    let end = offset.wrapping_add(buf.len());
    if buf.len() < 32 {
        apply_mask_scalar(buf, key, offset % 4);
        return end;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: `mask_avx2` only needs AVX2, which the CPU was just found to have.
        unsafe {
            mask_avx2(buf, key, offset);
        }
        return end;
    }
    mask_wide(buf, key, offset);
    end
}

/// [`mask_wide`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    mask_wide(buf, key, offset);
}

/// XORs 32-byte chunks with the key pattern rotated to `offset`.
#[inline(always)]
fn mask_wide(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let shift = offset % 4;
    let pattern: [u8; 32] = std::array::from_fn(|i| key[(shift + i) % 4]);
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for (byte, k) in chunk.iter_mut().zip(pattern.iter()) {
            *byte ^= *k;
        }
    }
    // 32 is a multiple of 4: the pattern still lines up for the remainder.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(pattern.iter()) {
        *byte ^= *k;
    }
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

//! The `frame_header` target: frame header parsing, re-encoding and unmasking.

use bytes::BytesMut;

use crate::proto::error::ProtocolError;
use crate::proto::frame::{FrameHeader, MAX_HEADER_LEN};
use crate::proto::mask::{apply_mask, apply_mask_scalar};

/// Frame header parsing. The result depends on the first 14 bytes only, and every shorter
/// prefix of a parsed header is incomplete; a parsed header re-encodes (with minimal lengths)
/// to bytes that parse to the same header, byte for byte the input when it was minimal. When
/// masked, the bytes after the header are unmasked with the fast path and the reference and
/// must agree, also when split.
pub fn frame_header(data: &[u8]) {
    let result = FrameHeader::parse(data);
    assert_eq!(FrameHeader::parse(&data[..data.len().min(MAX_HEADER_LEN)]), result, "looked past 14 bytes");
    let (h, n) = match result {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() < MAX_HEADER_LEN);
            for cut in 0..data.len() {
                assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None));
            }
            return;
        }
        Err(e) => {
            let expected = match e {
                ProtocolError::ReservedOpcode(op) => op == data[0] & 0x0f && matches!(op, 3..=7 | 0xb..=0xf),
                ProtocolError::ControlFrameTooLong | ProtocolError::FragmentedControlFrame => {
                    data[0] & 0x08 != 0
                }
                ProtocolError::LengthHighBit => {
                    data[1] & 0x7f == 127 && data.get(2).is_some_and(|&b| b >= 0x80)
                }
                _ => false,
            };
            assert!(expected, "{e:?} for {:02x?}", &data[..data.len().min(MAX_HEADER_LEN)]);
            return;
        }
    };
    assert!(matches!(n, 2 | 4 | 6 | 8 | 10 | 14) && n <= data.len() && n >= h.len(), "length {n} of {h:?}");
    assert_eq!(h.mask.is_some(), data[1] & 0x80 != 0);
    assert!(h.payload_len >> 63 == 0);
    if h.opcode.is_control() {
        assert!(h.fin && h.payload_len <= 125, "{h:?}");
    }
    for cut in 0..n {
        assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
    }

    let mut encoded = BytesMut::new();
    h.encode(&mut encoded);
    assert_eq!(encoded.len(), h.len());
    assert!(!h.is_empty());
    assert_eq!(
        FrameHeader::parse(&encoded),
        Ok(Some((h, encoded.len()))),
        "re-encoded {:02x?}",
        &encoded[..]
    );
    if n == h.len() {
        assert_eq!(&encoded[..], &data[..n], "a minimal header re-encodes differently");
    }

    if let Some(key) = h.mask {
        let offset = usize::from(data[0]);
        let mut fast = data[n..].to_vec();
        let mut reference = fast.clone();
        let next = apply_mask(&mut fast, key, offset);
        apply_mask_scalar(&mut reference, key, offset);
        assert_eq!(fast, reference, "masking fast path");
        assert_eq!(next, offset + fast.len());
        let mut pieces = data[n..].to_vec();
        let cut = usize::from(data[1]).min(pieces.len());
        let (front, back) = pieces.split_at_mut(cut);
        let next = apply_mask(front, key, offset);
        apply_mask(back, key, next);
        assert_eq!(pieces, reference, "masking in two pieces, cut at {cut}");
    }
}

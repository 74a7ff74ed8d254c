//! Frame header parse and format.

use bytes::{BufMut, Bytes, BytesMut};

use super::opcode::OpCode;
use crate::proto::error::ProtocolError;

/// The longest a frame header can be: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;

/// A parsed frame header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, "this message is compressed" (first frame only).
    pub rsv1: bool,
    /// RSV2: no extension here defines it.
    pub rsv2: bool,
    /// RSV3: no extension here defines it.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A final, unmasked frame header without RSV bits.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        Self { fin: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: None, payload_len }
    }

    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not hold the whole header yet (nothing is consumed;
    /// call again with more bytes), else the header and its length in bytes.
    ///
    /// Checks what the header alone shows: reserved opcodes, control frames longer than 125
    /// bytes or without FIN, and a 64-bit length with its high bit set. RSV bits and masking
    /// depend on the negotiation and the role, so the connection checks those.
    ///
    /// # Errors
    ///
    /// The [`ProtocolError`] the header shows.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::try_from(b0 & 0x0f)?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            // "All control frames MUST have a payload length of 125 bytes or less and MUST NOT
            // be fragmented." (RFC 6455 §5.5)
            if len7 > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        }
        let (payload_len, mut pos) = match len7 {
            126 => {
                let Some(ext) = buf.get(2..4) else { return Ok(None) };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else { return Ok(None) };
                let mut word = [0u8; 8];
                word.copy_from_slice(ext);
                let len = u64::from_be_bytes(word);
                // "the most significant bit MUST be 0" (RFC 6455 §5.2)
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthHighBit);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else { return Ok(None) };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = Self {
            fin,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, pos)))
    }

    /// The encoded length of this header.
    #[inline]
    pub fn len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Always false: a header is at least two bytes. (Pairs with [`len`](Self::len).)
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Formats the header into `out`, using the shortest length encoding.
    #[inline]
    pub fn encode(&self, out: &mut impl BufMut) {
        let b0 = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut head = [0u8; MAX_HEADER_LEN];
        head[0] = b0;
        let mut n = 2;
        match self.payload_len {
            len @ 0..=125 => head[1] = mask_bit | len as u8,
            len @ 126..=0xffff => {
                head[1] = mask_bit | 126;
                head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                n = 4;
            }
            len => {
                head[1] = mask_bit | 127;
                head[2..10].copy_from_slice(&len.to_be_bytes());
                n = 10;
            }
        }
        if let Some(key) = self.mask {
            head[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        out.put_slice(&head[..n]);
    }
}

/// Appends a final, unmasked frame (header and payload) to `out`: what a server sends.
#[inline]
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
    let header = FrameHeader::new(opcode, payload.len() as u64);
    out.reserve(header.len() + payload.len());
    header.encode(out);
    out.extend_from_slice(payload);
}

/// A final, unmasked frame as one shared buffer: encode a broadcast once, clone the `Bytes`
/// (a reference count, not a copy) into every recipient's queue.
pub fn encode_frame_bytes(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    encode_frame(opcode, payload, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn rfc_6455_5_7_headers() {
        // A single-frame unmasked text message "Hello".
        let (h, n) = parse_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!((h.fin, h.opcode, h.mask, h.payload_len, n), (true, OpCode::Text, None, 5, 2));
        // A single-frame masked text message "Hello".
        let (h, n) = parse_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f]);
        assert_eq!((h.mask, h.payload_len, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6));
        // Fragmented "Hel" + "lo".
        let (h, _) = parse_all(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert_eq!((h.fin, h.opcode, h.payload_len), (false, OpCode::Text, 3));
        let (h, _) = parse_all(&[0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!((h.fin, h.opcode, h.payload_len), (true, OpCode::Continuation, 2));
        // Unmasked ping "Hello", masked pong "Hello".
        let (h, _) = parse_all(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!((h.opcode, h.payload_len), (OpCode::Ping, 5));
        let (h, _) = parse_all(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!((h.opcode, h.payload_len, h.mask.is_some()), (OpCode::Pong, 5, true));
        // 256 bytes binary in a single unmasked frame: 0x82 0x7E 0x0100.
        let (h, n) = parse_all(&[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        // 64 KiB binary in a single unmasked frame: 0x82 0x7F 0x0000000000010000.
        let (h, n) = parse_all(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 65536, 10));
    }

    #[test]
    fn rfc_headers_encode_to_the_same_bytes() {
        let mut out = BytesMut::new();
        encode_frame(OpCode::Text, b"Hello", &mut out);
        assert_eq!(&out[..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let mut out = BytesMut::new();
        FrameHeader::new(OpCode::Binary, 256).encode(&mut out);
        assert_eq!(&out[..], &[0x82, 0x7e, 0x01, 0x00]);
        let mut out = BytesMut::new();
        FrameHeader::new(OpCode::Binary, 65536).encode(&mut out);
        assert_eq!(&out[..], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut out = BytesMut::new();
        let header =
            FrameHeader { mask: Some([0x37, 0xfa, 0x21, 0x3d]), ..FrameHeader::new(OpCode::Text, 5) };
        header.encode(&mut out);
        assert_eq!(&out[..], &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(FrameHeader::parse(&full).unwrap().unwrap().1, 14);
    }

    #[test]
    fn header_errors() {
        assert_eq!(FrameHeader::parse(&[0x83, 0x00]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(FrameHeader::parse(&[0x8b, 0x00]), Err(ProtocolError::ReservedOpcode(0xb)));
        assert_eq!(FrameHeader::parse(&[0x89, 0x7e]), Err(ProtocolError::ControlFrameTooLong));
        assert_eq!(FrameHeader::parse(&[0x09, 0x00]), Err(ProtocolError::FragmentedControlFrame));
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthHighBit)
        );
    }

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_parse(op in opcode(), fin in any::<bool>(), rsv in any::<(bool, bool, bool)>(),
                             mask in any::<Option<[u8; 4]>>(), len in prop_oneof![0u64..200, 65500u64..65600, any::<u64>()]) {
            let (fin, len) = if op.is_control() { (true, len % 126) } else { (fin, len >> 1) };
            let header = FrameHeader { fin, rsv1: rsv.0, rsv2: rsv.1, rsv3: rsv.2, opcode: op, mask, payload_len: len };
            let mut out = BytesMut::new();
            header.encode(&mut out);
            prop_assert_eq!(out.len(), header.len());
            prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((header, out.len()))));
        }
    }
}

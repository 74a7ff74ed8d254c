//! Incremental UTF-8 validation for text that arrives in pieces.
//!
//! A text message may be split over fragments and each fragment over reads, and a code point
//! may straddle any of those cuts. [`Utf8Validator`] keeps at most three bytes of an unfinished
//! code point and fails as soon as the bytes seen can no longer begin valid UTF-8, which is what
//! Autobahn's 6.4.x cases ("fail fast") check. Whole chunks go through `simdutf8`.

/// Validates a byte stream as UTF-8, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes seen so far can never be valid UTF-8.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub const fn new() -> Self {
        Self { pending: [0; 4], pending_len: 0 }
    }

    /// Feeds the next chunk.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] as soon as the stream so far is no prefix of any valid UTF-8 text.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]);
            let take = (need - have).min(chunk.len());
            self.pending[have..have + take].copy_from_slice(&chunk[..take]);
            let total = have + take;
            match std::str::from_utf8(&self.pending[..total]) {
                Ok(_) => {
                    self.pending_len = 0;
                    chunk = &chunk[take..];
                }
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; the chunk was too short to finish it.
                    self.pending_len = total as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        if simdutf8::basic::from_utf8(chunk).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] when it ends inside a code point.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.pending_len != 0;
        self.pending_len = 0;
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }

    /// Whether the stream so far ends on a code point boundary.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }
}

/// Validates one complete buffer.
pub fn validate(bytes: &[u8]) -> Result<(), InvalidUtf8> {
    simdutf8::basic::from_utf8(bytes).map(|_| ()).map_err(|_| InvalidUtf8)
}

fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn incremental(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn every_split_of_multibyte_text() {
        let text = "κόσμε 𝄞 héllo wörld €".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(incremental(text, &[a, b]), Ok(()), "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn fails_fast_inside_a_code_point() {
        // Autobahn 6.4.1: "κόσμε" then 0xf4 0x90 (over U+10FFFF) must fail before the rest.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        v.feed(&[0xf4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        // A surrogate half is refused at its second byte.
        let mut v = Utf8Validator::new();
        v.feed(&[0xed]).unwrap();
        assert_eq!(v.feed(&[0xa0]), Err(InvalidUtf8));
        // An unfinished code point at the end is invalid.
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                           cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(incremental(&bytes, &cuts).is_ok(), expected);
        }

        #[test]
        fn agrees_with_std_on_mostly_valid_text(s in "\\PC{0,40}", flip in any::<(usize, u8)>(),
                                                 cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut bytes = s.into_bytes();
            if !bytes.is_empty() && flip.1 % 2 == 0 {
                let i = flip.0 % bytes.len();
                bytes[i] = flip.1;
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(incremental(&bytes, &cuts).is_ok(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn byte_at_a_time_fails_where_std_does(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            // Fail-fast: the first failing byte is the one where the prefix stops being valid.
            let mut v = Utf8Validator::new();
            for i in 0..bytes.len() {
                let ok = v.feed(&bytes[i..i + 1]).is_ok();
                let prefix_ok = match std::str::from_utf8(&bytes[..=i]) {
                    Ok(_) => true,
                    Err(e) => e.error_len().is_none(),
                };
                prop_assert_eq!(ok, prefix_ok, "at byte {}", i);
                if !ok { break; }
            }
        }
    }
}

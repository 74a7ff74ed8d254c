//! The `utf8_incremental` target: the incremental UTF-8 validator against the standard
//! library.

use crate::proto::utf8::{self, Utf8Validator};

/// Incremental UTF-8 validation. Byte 0: its low 3 bits say how many of the following bytes
/// are chunk lengths (each mod 32, cycled over the text; bit 7 set instead feeds one byte at
/// a time); the rest is the text.
///
/// Checked against `std::str::from_utf8`: each feed fails exactly when the text so far can no
/// longer start valid UTF-8 (fail fast), the validator is at a code point boundary exactly
/// when the text so far is valid, and the final verdict equals std's.
pub fn utf8_incremental(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (lens, text) = rest.split_at(usize::from(mode & 7).min(rest.len()));
    let mut lens: Vec<usize> = lens.iter().map(|&b| usize::from(b % 32)).collect();
    if mode & 0x80 != 0 {
        lens = vec![1];
    }
    if lens.iter().all(|&len| len == 0) {
        // Empty feeds, then the whole text.
        lens.push(usize::MAX);
    }

    let std_ok = std::str::from_utf8(text).is_ok();
    assert_eq!(utf8::validate(text).is_ok(), std_ok);
    let mut v = Utf8Validator::new();
    let mut end = 0usize;
    let mut failed = false;
    for &len in lens.iter().cycle() {
        let chunk = &text[end..end.saturating_add(len).min(text.len())];
        end += chunk.len();
        let fed = v.feed(chunk);
        let (valid, valid_prefix) = match std::str::from_utf8(&text[..end]) {
            Ok(_) => (true, true),
            Err(e) => (false, e.error_len().is_none()),
        };
        assert_eq!(fed.is_ok(), valid_prefix, "feed ending at byte {end}");
        if fed.is_err() {
            failed = true;
            break;
        }
        assert_eq!(v.is_complete(), valid, "boundary state at byte {end}");
        if end == text.len() && len != 0 {
            break;
        }
    }
    let ok = !failed && v.finish().is_ok();
    assert_eq!(ok, std_ok);
    assert!(v.is_complete() || failed);
}

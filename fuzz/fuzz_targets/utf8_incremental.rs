#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hibiki::proto::fuzzing::utf8_incremental(data));

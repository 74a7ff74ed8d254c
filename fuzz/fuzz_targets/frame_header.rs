#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hibiki::proto::fuzzing::frame_header(data));

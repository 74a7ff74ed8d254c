#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hibiki::proto::fuzzing::handshake_request(data));

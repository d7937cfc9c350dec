//! Fuzz target `roundtrip`: the body lives in `mqttx_codec::fuzzing::roundtrip`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqttx_codec::fuzzing::roundtrip(data));

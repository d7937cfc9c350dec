//! Fuzz target `decode_packet`: the body lives in `mqttx_codec::fuzzing::decode_packet`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqttx_codec::fuzzing::decode_packet(data));

//! Fuzz target `decoder_stream`: the body lives in `mqttx_codec::fuzzing::decoder_stream`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqttx_codec::fuzzing::decoder_stream(data));

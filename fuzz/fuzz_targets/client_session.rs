//! Fuzz target `client_session`: the body lives in `mqttx_client::fuzzing::client_session`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqttx_client::fuzzing::client_session(data));

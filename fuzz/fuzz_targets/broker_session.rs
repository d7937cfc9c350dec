//! Fuzz target `broker_session`: the body lives in `mqttx_broker::fuzzing::broker_session`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqttx_broker::fuzzing::broker_session(data));

//! Fuzz target `router_ops`: the body lives in `mqttx_router::fuzzing::router_ops`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mqttx_router::fuzzing::router_ops(data));

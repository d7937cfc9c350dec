//! Shared fixtures for the mqttx benchmarks; the benches themselves live in `benches/benches/`.

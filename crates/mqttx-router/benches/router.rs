//! Criterion benchmarks for mqttx-router (placeholder, filled in below).

fn main() {}

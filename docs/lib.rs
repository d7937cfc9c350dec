//! The guides of `docs/`, compiled. Each guide is the documentation of a private module here,
//! so `cargo test -p mqttx-docs` compiles every Rust block of every guide as a doctest, and
//! runs those not marked `no_run` (the ones that need a broker on a fixed port are `no_run`;
//! the examples those guides point to are exercised by `tests/`). A guide whose code no
//! longer compiles fails the test suite.

#[doc = include_str!("codec.md")]
mod codec {}

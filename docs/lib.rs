//! The guides of `docs/`, compiled. Each guide is the documentation of a private module here,
//! so `cargo test -p mqttx-docs` compiles every Rust block of every guide as a doctest, and
//! runs those not marked `no_run` (the ones that need a broker on a fixed port are `no_run`).
//! `client.md` has no code and is not included.
//! Blocks that quote an example are `ignore`d here and checked against the example's source
//! by `tests/quotes.rs`; `tests/examples.rs` runs those examples. A guide whose code no longer
//! compiles, runs or matches fails the test suite.

// Quoted blocks are fragments of an example (an `impl` cut after its first method), which
// rustdoc would flag as invalid Rust; `tests/quotes.rs` checks them against the example, and
// every other Rust block is compiled as a doctest.
#![allow(rustdoc::invalid_rust_codeblocks)]

#[doc = include_str!("broker.md")]
mod broker {}

#[doc = include_str!("codec.md")]
mod codec {}

#[doc = include_str!("getting-started.md")]
mod getting_started {}

#[doc = include_str!("security.md")]
mod security {}

#[doc = include_str!("coming-from-rumqttc.md")]
mod coming_from_rumqttc {}

#[doc = include_str!("transports.md")]
mod transports {}

#[doc = include_str!("telemetry.md")]
mod telemetry {}

// The top-level README's code, held to the same standard. Its links to directories (`(docs)`,
// `(xtask)`…) are repository paths, which rustdoc would take for item paths.
#[allow(rustdoc::broken_intra_doc_links)]
#[doc = include_str!("../README.md")]
mod readme {}

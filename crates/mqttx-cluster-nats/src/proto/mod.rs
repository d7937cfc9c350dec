//! The sans-IO parts of clustering: no sockets, no clock, no async (`cargo xtask tidy` checks
//! it): the topic ↔ subject mapping ([`subject`]) and a node's reference-counted interest with
//! its one-copy-per-node rule ([`interest`]).

pub mod interest;
pub mod subject;

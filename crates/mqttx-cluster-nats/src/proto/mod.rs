//! The sans-IO parts of clustering: no sockets, no clock, no async (`cargo xtask tidy` checks
//! it). For now only the topic ↔ subject mapping, [`subject`].

pub mod subject;

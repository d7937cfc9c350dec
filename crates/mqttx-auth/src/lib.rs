//! mqttx-auth: access control for the mqttx broker, built on its public [`Handler`] hooks so
//! that an application can use, wrap or replace every piece.
//!
//! - [`password`]: password files in Mosquitto's format (`$7$` PBKDF2-SHA512 and `$6$`
//!   SHA-512 entries read, `$7$` written, so `mosquitto_passwd` files work unchanged), plus
//!   SCRAM-SHA-256 verifier entries.
//! - [`acl`]: ordered allow/deny rules for publish and subscribe with `%u`/`%c`
//!   substitution, and Mosquitto's `acl_file` format, with line-numbered errors.
//! - [`scram`]: SCRAM-SHA-256 (RFC 5802, RFC 7677), sans-IO, server and client side, for
//!   MQTT 5.0 enhanced authentication.
//! - [`limits`]: token buckets with the time passed in, and a bounded table of them.
//! - `Security` (feature `broker`, on by default): the [`Handler`] that puts it together in
//!   front of the application's own handler: password check, anonymous on/off, SCRAM,
//!   TLS identity as user name, ACLs, connection limits and rates, message and byte rates,
//!   subscription and retained-size quotas, reload without disconnecting anyone.
//! - `ScramAuthenticator` (feature `client`): SCRAM-SHA-256 for `mqttx-client`.
//!
//! Dependencies: the RustCrypto crates `sha2`, `hmac` and `pbkdf2` (the field's standard
//! pure-Rust implementations of the hashes the Mosquitto and SCRAM formats fix), `base64`
//! for those formats' encoding, and `getrandom` for salts and nonces from the operating
//! system. No cryptography is written here beyond composing them as the RFCs say.
//!
//! [`Handler`]: mqttx_broker::Handler

pub mod acl;
#[cfg(feature = "broker")]
mod broker;
#[cfg(feature = "client")]
mod client;
pub mod limits;
pub mod password;
pub mod scram;

#[cfg(feature = "broker")]
pub use broker::{
    ListenerSecurity, Security, SecurityConfig, SecurityError, SecuritySession, SecurityStats,
};
#[cfg(feature = "client")]
pub use client::ScramAuthenticator;
pub use password::{PasswordError, PasswordFile, PasswordHash};
pub use scram::ScramCredentials;

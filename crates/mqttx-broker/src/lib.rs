//! mqttx-broker is a standards-conformant MQTT 3.1, 3.1.1 and 5.0 broker that you can run as
//! it is (`mqttx broker`) or compose into an application through the [`Handler`] trait.
//!
//! It is two layers. [`proto`] is the sans-IO session core: one connection as a state machine
//! that takes bytes and the current time and gives bytes, events and a timeout; it reads no
//! clock, touches no socket and imports no runtime, so its tests need neither. The tokio shell
//! ([`Broker`], [`Server`]) owns the sockets, one timer per connection, the shared subscription
//! router (`mqttx-router`), the retained messages and the client registry, and calls the
//! [`Handler`]. The broker accepts any `AsyncRead + AsyncWrite + Unpin + Send` stream through
//! [`Broker::serve`]; [`Server`] binds any number of [`Listener`]s of four kinds: TCP
//! (`mqttx-transport-tcp`), TLS (`mqttx-transport-tls`, rustls), WebSocket and secure
//! WebSocket (`mqttx-transport-ws`). A client certificate verified by a mutual-TLS listener
//! reaches [`Handler::on_connect`] as [`ConnectRequest::peer_identity`].
//!
//! Sessions: Clean Start / Clean Session 1 sessions end with their connection; a session with
//! a Session Expiry Interval (MQTT 5.0) or Clean Session 0 (MQTT 3.1.x, never expiring unless
//! [`Config::max_session_expiry`] says so) is kept in a [`SessionStore`] while its client is
//! away ([`MemoryStore`] by default; [`Builder::session_store`] sets another): its
//! subscriptions still route, QoS 1 and 2 messages queue for it (bounded), and on its return
//! CONNACK says Session Present and unacknowledged messages are resent with DUP.
//!
//! A Will waits for its Will Delay Interval or the end of its session, whichever comes first,
//! and is cancelled if the client resumes the session in time.
//!
//! Topic Aliases work both ways: the broker accepts up to 100 from each client, and uses up to
//! 100 toward a client that allows them (least recently used replaced).
//!
//! Message Expiry applies to retained messages, offline queues and the queues of connected
//! clients: expired messages are dropped (and counted), the others carry the time they have
//! left.
//!
//! What it is not, yet: no durable session store ships (the [`SessionStore`] trait is where
//! one plugs in; restoring sessions at start-up is still to come).
//!
//! # Layout
//!
//! - [`Broker`], [`Builder`], [`Server`]: the shell; [`Config`]: every limit, finite by default;
//!   [`Listener`], [`ListenerKind`]: where and how it accepts connections.
//!   [`Broker`] is also the application's handle: [`Broker::publish`], [`Broker::publish_to`],
//!   [`Broker::disconnect_client`] (and [`Broker::disconnect_client_with`], with a
//!   [`ServerDisconnect`]'s properties), [`Broker::send_to`] (the application's own messages
//!   to one connection, answered by [`Handler::on_message`]), [`Broker::clients`],
//!   [`Broker::shutdown`].
//! - [`Handler`] with [`PublishDecision`], [`SubscribeDecision`], [`ConnectRefusal`],
//!   [`MessageAction`], [`AuthDecision`] (MQTT 5.0 enhanced authentication and
//!   re-authentication); the [`AllowAll`] handler.
//! - [`SessionStore`], [`StoredSession`], [`MemoryStore`]: where absent clients' sessions are
//!   kept.
//! - [`proto`]: [`proto::Session`] and its [`proto::Event`]s; [`proto::Outbound`], a PUBLISH
//!   encoded once and shared by every subscriber that receives it unchanged.
//!
//! # Getting started
//!
//! A broker on a free loopback port, with a handler that refuses clients without a user name:
//!
//! ```no_run
//! use mqttx_broker::codec::ReasonCode;
//! use mqttx_broker::{Broker, Config, ConnectRefusal, ConnectRequest, Handler};
//!
//! struct NeedsUser;
//!
//! impl Handler for NeedsUser {
//!     type Session = ();
//!
//!     async fn on_connect(&self, req: &ConnectRequest) -> Result<(), ConnectRefusal> {
//!         req.username
//!             .as_ref()
//!             .map(|_| ())
//!             .ok_or(ConnectRefusal::new(ReasonCode::BAD_USER_NAME_OR_PASSWORD))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mut config = Config::default();
//! config.bind = "127.0.0.1:0".parse().unwrap();
//! let server = Broker::builder().config(config).handler(NeedsUser).bind().await?;
//! println!("listening on {}", server.local_addr()?);
//! // Runs until Ctrl-C, then disconnects every client (0x8B) and returns.
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! The session core runs without any runtime:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use mqttx_broker::Config;
//! use mqttx_broker::proto::{Event, Session};
//!
//! let start = Instant::now();
//! let mut session = Session::new(start, &Config::default(), "assigned-1".into());
//! // An MQTT 3.1.1 CONNECT with client id "c", clean session, keep alive 60 s.
//! session.handle_bytes(start, &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'c']);
//! let Some(Event::Connect(req)) = session.poll_event() else { unreachable!() };
//! assert_eq!(req.client_id, "c");
//! session.accept_connect(start);
//! let mut out = Vec::new();
//! session.poll_transmit(&mut out);
//! assert_eq!(out, [0x20, 0x02, 0x00, 0x00]); // CONNACK, accepted
//! // Keep alive 60 s: the connection is closed after 90 s of silence.
//! assert_eq!(session.poll_timeout(), Some(start + Duration::from_secs(90)));
//! ```
//!
//! # Cancel safety
//!
//! [`Server::run_until`] may be dropped; connections already accepted keep running on their
//! own tasks until they end or [`Broker::shutdown`] is called. The future of
//! [`Broker::serve`] owns its stream: dropping it closes the connection without a Will.
//!
//! # Flow control and memory
//!
//! Every connection has a bounded outbound queue ([`Config::max_queued_messages`],
//! [`Config::max_queued_bytes`]). When it is full, new messages are dropped and counted
//! ([`proto::SessionStats`], [`Broker::dropped_messages`]), whatever their QoS: what was
//! queued is kept and never evicted, and memory stays bounded however slow the subscriber.
//! QoS 1 and 2 messages wait in that queue for the client's Receive Maximum window. A
//! persistent session's offline queue holds at most [`Config::max_queued_messages`] QoS 1
//! and 2 messages, and at most [`Config::max_stored_sessions`] sessions are kept. Incoming
//! packets are limited by [`Config::max_packet_size`], checked on the declared length before
//! the body is buffered; a client that does not read its acknowledgements is no longer read
//! from.
//!
//! # Logs and tracing
//!
//! The shell (never [`proto`]) emits [`tracing`](https://docs.rs/tracing) events in a
//! `mqtt_connection` span per connection (fields `peer`, `listener`, and `client_id` once the
//! CONNECT is accepted): `connect start`, `connect stop`, `connect exception` (refused, or
//! closed before CONNACK), `disconnect` (with the [`CloseReason`] and how long the client was
//! connected), `subscribe` and `unsubscribe` (one per filter) at DEBUG, and `publish` (topic,
//! QoS, retain, payload length, outcome, time spent in the hook and routing) at TRACE. Durations
//! are `Duration`s; payload bytes are never logged. A publish is timed only when a subscriber
//! wants its event, so the per-message cost without one is a level check. docs/telemetry.md
//! lists every field.
//!
//! # Crate features
//!
//! - `serde` (off by default): `Deserialize` for [`Config`], so it can be read from a
//!   configuration file (the `mqttx` binary reads TOML).
//! - `metrics` (off by default): `Broker::record_metrics` hands the broker's counts to the
//!   [`metrics`](https://docs.rs/metrics) facade, the Rust ecosystem's standard metrics API,
//!   so any recorder can export them (the `mqttx` binary serves them to Prometheus). The
//!   broker counts in its own relaxed atomics either way (they feed `$SYS/broker/...`), and
//!   recording reads them, so the feature adds nothing per message. Names, types and labels
//!   are listed in docs/telemetry.md.

mod cluster;
mod config;
mod durable;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod handler;
mod journal;
mod listen;
pub mod proto;
mod shell;
mod stats;
mod store;

pub use cluster::{ClaimError, Cluster, ClusterFuture, ClusterNode, ClusterWill};
pub use config::{Config, Listener, ListenerKind};
pub use durable::{ForeignSession, journal_client, recover_session};
pub use handler::{
    AllowAll, AppMessage, AuthDecision, ClientInfo, ConnectRefusal, Handler, MessageAction,
    PublishDecision, SubscribeDecision,
};
pub use journal::{
    Entry, Journal, JournalOp, MAX_KEY_LEN, MemoryJournal, Table, Tables, apply_ops,
};
pub use listen::{CertificateReloader, Server};
/// The identity of a client authenticated by its TLS certificate (see
/// [`ConnectRequest::peer_identity`]).
pub use mqttx_transport_tls::PeerIdentity;
pub use proto::{AuthRequest, CloseReason, ConnectRequest, Delivered, Message, ServerDisconnect};
pub use shell::{Broker, Builder, ConnectionInfo, Recovery};
pub use store::{MemoryStore, QueueLimits, SessionStore, StoreFuture, StoredSession};

/// The wire codec this broker speaks, re-exported for its types ([`codec::ReasonCode`],
/// [`codec::QoS`], [`codec::ProtocolVersion`]).
pub use mqttx_codec as codec;
/// The subscription router, re-exported for its types ([`router::TopicName`],
/// [`router::TopicFilter`]).
pub use mqttx_router as router;

/// A fixed instant for the session-core tests: read once here, outside `proto`, which never
/// reads a clock; tests then move time only by adding durations to it.
#[cfg(test)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}

//! mqttx-client is an async MQTT 3.1.1 and 5.0 client for tokio: a cheap, cloneable
//! [`Client`] handle, a driver task that owns the connection, and a sans-IO session core
//! ([`proto::ClientSession`]) that makes every protocol decision.
//!
//! It reconnects with exponential backoff, restores subscriptions after a reconnect without a
//! session, resends unacknowledged messages in order after one with a session, lets you await
//! the acknowledgement of each publish, and never deadlocks when you publish from inside your
//! event handling; with a [`SessionStore`] (in memory or [`FileStore`]) its unacknowledged
//! messages and subscriptions survive a process restart. It is not a broker (see
//! `mqttx-broker`) and brings no TLS or WebSocket code: any `AsyncRead + AsyncWrite` stream
//! plugs in through a [`Connector`], and any closure that opens one is a `Connector`, which is
//! how the TLS, WebSocket and HTTP-proxy connectors of `mqttx-transport-tls`,
//! `mqttx-transport-ws` and `mqttx-transport-tcp` are used (`docs/transports.md`).
//!
//! # Layout
//!
//! - [`Client`], [`Events`], [`PublishHandle`]: the tokio shell (`shell.rs`).
//! - [`ConnectOptions`], [`Backoff`], [`Connector`], [`TcpConnector`]: how to connect.
//! - [`SessionStore`], [`MemoryStore`], [`FileStore`]: the session state across restarts.
//! - [`payload`]: typed payloads (features `json` and `protobuf`).
//! - [`proto`]: the session core, usable without any runtime.
//! - [`codec`]: the re-exported wire types (`Publish`, `QoS`, `ReasonCode`…).
//!
//! The crate's `examples/` directory has runnable programs for a loopback broker: `pubsub`
//! (subscribe, publish, await the PUBACK), `echo` (publishing from inside event handling),
//! `request` (MQTT 5.0 request/response) and `session` (a persistent session with a
//! [`FileStore`]).
//!
//! # Getting started
//!
//! ```no_run
//! use mqttx_client::codec::QoS;
//! use mqttx_client::{Client, ConnectOptions, Event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mqttx_client::Error> {
//! let (client, mut events) = Client::connect(ConnectOptions::new("127.0.0.1", 1883, "demo")).await?;
//! let granted = client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! assert_eq!(granted, Ok(QoS::AtLeastOnce));
//! let ack = client.publish("sensors/room1", "21.5", QoS::AtLeastOnce, false).await?;
//! println!("PUBACK reason {}", ack.await?);
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(msg) = event {
//!         println!("{}: {:?}", msg.topic, msg.payload);
//!         // Publishing from here cannot deadlock: it only queues.
//!         let _ = client.publish("echo", msg.payload.into_owned(), QoS::AtMostOnce, false).await;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Request/response (MQTT 5.0) and a persistent session whose state survives a restart of
//! the process, in the broker (Clean Start 0 and a Session Expiry Interval) and on our side
//! (a [`FileStore`]):
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mqttx_client::codec::QoS;
//! use mqttx_client::{Client, ConnectOptions, FileStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mqttx_client::Error> {
//! let mut options = ConnectOptions::new("127.0.0.1", 1883, "gateway-7");
//! options.session.clean_start = false;
//! options.session.session_expiry_interval = 3600;
//! options.store = Some(Arc::new(FileStore::new("/var/lib/gateway-7/mqtt")));
//! let (client, _events) = Client::connect(options).await?;
//! // Unacknowledged and queued messages and the subscriptions are saved before each call
//! // returns, and resent or restored by the next process with the same client identifier.
//! client.subscribe("gateway-7/commands/#", QoS::AtLeastOnce).await?;
//! let answer = client.request("services/time", "now?", Duration::from_secs(5)).await?;
//! println!("{}", String::from_utf8_lossy(&answer.payload));
//! # Ok(())
//! # }
//! ```
//!
//! The session core without a runtime, bytes in and bytes out:
//!
//! ```
//! use std::time::Instant;
//! use mqttx_client::proto::{ClientSession, Event, SessionOptions};
//!
//! let now = Instant::now();
//! let mut session = ClientSession::new();
//! session.connect(now, SessionOptions::new("doc"));
//! let mut out = Vec::new();
//! while session.poll_transmit(&mut out) {}
//! assert_eq!(out[0], 0x10); // CONNECT
//! // CONNACK, MQTT 5.0: no session, success, no properties.
//! session.handle_bytes(now, &[0x20, 0x03, 0x00, 0x00, 0x00]).unwrap();
//! assert!(matches!(session.poll_event(), Some(Event::Connected { session_present: false, .. })));
//! ```
//!
//! # Channels and deadlock freedom
//!
//! `publish` puts the message straight into the session, which the handles and the driver
//! share behind a lock held only for short synchronous sections (never across an `.await`),
//! and wakes the driver: a burst of publishes costs no channel round trip each and goes out
//! in one write. The other calls (`subscribe`, `unsubscribe`, `request`, `ack`,
//! `disconnect`) send commands over a bounded channel (capacity 256), and the driver never
//! waits on anything but its `select!`: it always takes commands and writes what the session
//! queued. So every call returns as soon as its packet is queued, whether or not anyone reads
//! events, also when called from the task that reads them. The one wait: a QoS 0 `publish`
//! while 256 KiB are still unwritten waits for the transport to take them (QoS 1 and 2 are
//! bounded by [`SessionOptions::max_queued`](proto::SessionOptions::max_queued) instead).
//!
//! Events go to a bounded channel ([`ConnectOptions::event_capacity`], default 1 024)
//! plus an internal buffer of the same size; when both are full the driver stops reading
//! the socket (backpressure to the broker) until events are read again, and keeps serving
//! commands. Awaiting a [`PublishHandle`] or a subscribe result needs the socket to be read,
//! so do not await them while holding thousands of unread events. Dropping [`Events`]
//! discards further events. [`Events`] is also a `futures_core::Stream`.
//!
//! # Cancel safety
//!
//! Every async method of [`Client`] is cancel safe in the sense that dropping its future
//! leaves the client usable. A `publish` dropped before it returned did not queue the
//! message (it queues in one synchronous step at its end); once it returned, dropping the
//! [`PublishHandle`] does not cancel the publish. [`Events::recv`] is cancel safe (a `tokio::sync::mpsc` receive).
//!
//! # Logs and tracing
//!
//! The driver emits [`tracing`](https://docs.rs/tracing) events in a `mqtt_client` span
//! (field `client_id`): `connect start`, `connect stop` and `connect exception` (with the
//! elapsed time as a `Duration`), `disconnect` (how long the connection lasted), `subscribe
//! start`/`subscribe stop` at DEBUG; `publish start`, `publish stop` (at the acknowledgement
//! for QoS 1 and 2) and `message received` at TRACE, `publish exception` at DEBUG. Topics and
//! payload lengths are logged, payload bytes never. Without a subscriber that wants them
//! nothing is formatted or timed. `docs/telemetry.md` lists every field.
//!
//! # Crate features
//!
//! Both off by default:
//!
//! - `json`: `Client::publish_json` and `payload::PayloadExt::decode_json`, with serde and
//!   serde_json, the Rust ecosystem's standard for JSON.
//! - `protobuf`: `Client::publish_protobuf` and `payload::PayloadExt::decode_protobuf`, with
//!   prost, the protobuf implementation of the tokio project.
//!
//! # Dependencies
//!
//! tokio (the runtime the shell runs on), mqttx-codec and mqttx-transport-tcp, and
//! futures-core for the `Stream` trait that [`Events`] implements (the trait the async
//! ecosystem shares; no code beyond it), and tracing, the structured-logging facade of the
//! tokio project that the broker and most async Rust libraries log through. The features above
//! add their libraries.

pub mod payload;
pub mod proto;
mod shell;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

/// The start instant of the `proto` unit tests (read here: `proto` never reads a clock).
#[cfg(test)]
fn test_start() -> std::time::Instant {
    std::time::Instant::now()
}

/// The wire types of `mqttx-codec` used in this crate's API.
pub mod codec {
    pub use mqttx_codec::{
        PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode, SubscribeFilter,
        SubscriptionOptions, UserProperty, Will,
    };
}

pub use shell::{
    Authenticator, Backoff, Client, ConnectOptions, Connector, Error, Event, Events, FileStore,
    MemoryStore, PublishHandle, SessionStore, TcpConnector,
};

//! mqttx-cluster-nats: groundwork for running several `mqttx broker` nodes as one MQTT service
//! on NATS with JetStream (issue #11, `docs/clustering.md`).
//!
//! It is not a cluster yet: the broker has no cluster seam to plug it into. What it has is the
//! part every later piece builds on, the mapping between MQTT topics and NATS subjects
//! ([`proto::subject`]), which is pure (no I/O, no clock, no async) and tested against the router's
//! own matching.
//!
//! # Layout
//!
//! - [`proto::subject`]: [`Namespace`], which maps a [`TopicName`](mqttx_router::TopicName) to a
//!   NATS subject and back, and a [`TopicFilter`](mqttx_router::TopicFilter) (shared or not)
//!   to the subjects to subscribe to and a queue group; [`encode_token`] and
//!   [`decode_token`] for any other string that must become one subject token or key.
//!
//! # Getting started
//!
//! ```
//! use mqttx_cluster_nats::Namespace;
//! use mqttx_router::{TopicFilter, TopicName};
//!
//! let ns = Namespace::new("mqttx.t")?;
//! let subject = ns.subject(&TopicName::new("sensors/kitchen 1/temp")?)?;
//! assert_eq!(subject, "mqttx.t.sensors.kitchen=201.temp");
//! assert_eq!(ns.topic(&subject)?.as_str(), "sensors/kitchen 1/temp");
//!
//! // `a/#` matches `a` itself, so it needs two NATS subscriptions.
//! let sub = ns.filter(&TopicFilter::new("sensors/#")?)?;
//! assert_eq!(sub.subjects().collect::<Vec<_>>(), ["mqttx.t.sensors.>", "mqttx.t.sensors"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Why async-nats
//!
//! The cluster runs on NATS with JetStream rather than a protocol of its own, and async-nats is
//! the NATS project's own Rust client, on tokio like the broker, with JetStream streams,
//! consumers and key-value buckets. It is built without its default features but `kv` (which
//! brings `jetstream`), `ring` (rustls's provider, as elsewhere in the workspace) and
//! `server_2_10` (API of nats-server 2.10, such as consumers with several filter subjects,
//! which `a/#` needs); websockets, the object store, the service API and nkeys are left out.
//! Nothing of it is used by the library yet: the tests (`tests/nats.rs`) drive a real
//! nats-server with it, and the cluster seam will be built on it.
//!
//! # Crate features
//!
//! None.

#![forbid(unsafe_code)]

mod owner;
pub mod proto;

pub use owner::Ownership;

pub use proto::subject::{
    DEFAULT_MAX_LEN, EMPTY_LEVEL, FilterSubjects, MapError, Namespace, NamespaceError,
    SubjectError, decode_token, encode_token,
};

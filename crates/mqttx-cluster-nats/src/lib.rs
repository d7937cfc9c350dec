//! mqttx-cluster-nats: several `mqttx broker` nodes as one MQTT service, on NATS with JetStream
//! (issue #11, `docs/clustering.md`).
//!
//! [`NatsCluster`] implements the broker's [`Cluster`](mqttx_broker::Cluster) seam: QoS 0
//! messages cross nodes on core NATS, QoS 1 and 2 messages are stored in a JetStream stream
//! before their publisher is acknowledged, retained messages live in a key-value bucket
//! mirrored on every node, shared subscriptions are NATS queue groups, and each client's
//! session has one owning node, fenced by compare-and-set in a key-value bucket
//! ([`Ownership`]), which hands the session over when its client reconnects elsewhere.
//!
//! # Layout
//!
//! - [`proto::subject`]: [`Namespace`], which maps a [`TopicName`](mqttx_router::TopicName) to a
//!   NATS subject and back, and a [`TopicFilter`](mqttx_router::TopicFilter) (shared or not)
//!   to the subjects to subscribe to and a queue group; [`encode_token`] and
//!   [`decode_token`] for any other string that must become one subject token or key.
//! - [`proto::interest`]: a node's reference-counted interest per distinct filter and the rule
//!   that delivers one copy of a message per node (pure, like `subject`).
//! - `node.rs`: [`NatsCluster`] and [`NatsClusterOptions`], on tokio and async-nats.
//! - `owner.rs`: [`Ownership`], session owners and takeovers.
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
//!
//! # Crate features
//!
//! None.

#![forbid(unsafe_code)]

mod journal;
mod node;
mod owner;
pub mod proto;

pub use journal::{NatsJournal, purge_node, read_node};
pub use node::{ClusterError, NatsCluster, NatsClusterOptions};
pub use owner::Ownership;

pub use proto::subject::{
    DEFAULT_MAX_LEN, EMPTY_LEVEL, FilterSubjects, MapError, Namespace, NamespaceError,
    SubjectError, decode_token, encode_token,
};

//! mqttx-router: the subscription index and retained-message index of an MQTT broker.
//!
//! It is a pure data structure. mqttx-router contains no networking code, no clock, no locks
//! and no async: it does not know what a connection is. Callers refer to subscribers by an
//! opaque [`SubscriberId`] of their choosing, pass the publisher's id when they route a message,
//! and decide themselves how to share the router between tasks. It depends on std only.
//!
//! # Layout
//!
//! - [`TopicName`] and [`TopicFilter`]: validating newtypes for MQTT 5.0 §4.7 and §4.8.2 (shared
//!   subscriptions are parsed, never taken for normal filters), with typed errors that name the
//!   spec rule and map to a reason code.
//! - [`Router`]: subscribe, unsubscribe, unsubscribe-all, and matching a topic to
//!   [`Deliveries`] through a trie; per-subscription [`SubscribeOptions`]; shared subscription
//!   groups with a [`ShareStrategy`].
//! - [`RetainedStore`]: retained messages by topic, looked up by filter through a trie.
//!
//! # Getting started
//!
//! ```
//! use mqttx_router::{
//!     Deliveries, QoS, RetainedStore, Router, SubscribeOptions, SubscriberId, SubscriptionId,
//!     TopicFilter, TopicName,
//! };
//!
//! let mut router = Router::new();
//! let device = SubscriberId::new(7);
//! let dashboard = SubscriberId::new(8);
//!
//! // SUBSCRIBE: validate the filter, then store it with its options.
//! let filter = TopicFilter::new("tenant/acme/device/+/temperature")?;
//! let opts = SubscribeOptions::new(QoS::AtLeastOnce).with_subscription_id(Some(SubscriptionId::new(1)?));
//! router.subscribe(&filter, dashboard, opts)?;
//! router.subscribe(&TopicFilter::new("tenant/acme/#")?, dashboard, SubscribeOptions::new(QoS::AtMostOnce))?;
//!
//! // PUBLISH: one delivery per subscriber, at the maximum QoS of its matching subscriptions.
//! let topic = TopicName::new("tenant/acme/device/42/temperature")?;
//! let mut out = Deliveries::new(); // reuse it: matching then allocates nothing
//! router.route(&topic, Some(device), &mut out);
//! let delivery = out.iter().next().unwrap();
//! assert_eq!(out.len(), 1);
//! assert_eq!(delivery.subscriber(), dashboard);
//! assert_eq!(delivery.qos(), QoS::AtLeastOnce);
//! assert_eq!(delivery.subscription_ids(), &[SubscriptionId::new(1)?]);
//!
//! // Retained messages: the broker stores its own message type.
//! let mut retained = RetainedStore::new();
//! retained.set(&topic, "21.5 °C");
//! let hits: Vec<_> = retained.matching(&filter).map(|(_, msg)| *msg).collect();
//! assert_eq!(hits, ["21.5 °C"]);
//!
//! // DISCONNECT without a session: drop everything the subscriber had.
//! assert_eq!(router.unsubscribe_all(dashboard), 2);
//! assert!(router.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Memory
//!
//! The router and the retained store share one trie layout: an arena of **72-byte nodes** (exact
//! children in an inline / vector / hash map keyed by a 4-byte interned level id, the `+` and
//! `#` children, the parent and the node's level, and the node's subscriptions, inline when
//! there is one subscriber). A node with one child or one subscriber needs no further heap
//! allocation; an exact edge costs 8 bytes in its parent's map. Each distinct level string is
//! stored once, however many nodes use it. The per-subscriber index behind `unsubscribe_all`
//! costs 8 bytes per subscription plus one map entry per subscriber.
//!
//! Measured in `benches/router.rs` with a counting global allocator (live heap bytes after
//! subscribing minus before, divided by the number of subscriptions; requested sizes, so
//! malloc's own per-block overhead comes on top), for 1 000 000 subscriptions of the mix in
//! `docs/performance.md` (80 % exact `tenant/{t}/device/{d}/{metric}`, 15 % with `+`, 5 % with
//! `#`, 100 000 subscribers with ten subscriptions each):
//!
//! | what | measured |
//! | --- | --- |
//! | heap per subscription, everything included | 110 bytes |
//! | trie nodes per subscription | 0.78 (72 bytes each) |
//! | heap allocations per subscription | 0.44 |
//! | retained store, per topic (`u32` values, topic names included) | 167 bytes |
//!
//! Many subscribers of one filter share its node; a node with more than 16 subscribers or
//! children switches to a hash map.
//!
//! # Crate features
//!
//! None. The `fuzzing` module exists only under `cfg(fuzzing)` (set by cargo-fuzz).
#![forbid(unsafe_code)]

mod map;
mod options;
mod retained;
mod router;
mod topic;
mod trie;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use options::{
    OptionsError, QoS, RetainHandling, SubscribeOptions, SubscriberId, SubscriptionId,
};
pub use retained::{Matching, RetainedStore};
pub use router::{
    Deliveries, Delivery, DeliveryIter, Router, ShareStrategy, SubscribeError, SubscribeOutcome,
};
pub use topic::{MAX_TOPIC_LEN, TopicFilter, TopicFilterError, TopicName, TopicNameError};

#[cfg(test)]
mod tests {
    /// Filter, topic, whether they match, and the rule. Shared by the naive matcher's test, the
    /// trie's test and the retained store's test.
    pub(crate) const MATCH_CASES: &[(&str, &str, bool, &str)] = &[
        ("a/b", "a/b", true, "§4.7 exact"),
        ("a/b", "a/c", false, "§4.7 exact"),
        ("a/b", "a", false, "§4.7 exact, shorter topic"),
        ("a", "a/b", false, "§4.7 exact, longer topic"),
        ("A", "a", false, "§4.7.3 matching is case sensitive"),
        ("a b", "a b", true, "§4.7.3 spaces are allowed"),
        ("#", "a", true, "§4.7.1.2 # matches everything"),
        ("#", "a/b/c", true, "§4.7.1.2"),
        ("#", "/", true, "§4.7.1.2"),
        ("a/#", "a", true, "§4.7.1.2 # matches the parent level"),
        ("a/#", "a/b/c", true, "§4.7.1.2"),
        ("a/#", "ab", false, "§4.7.1.2"),
        ("a/b/#", "a", false, "§4.7.1.2 only the parent level"),
        ("a/+", "a/b", true, "§4.7.1.3 + matches one level"),
        (
            "a/+",
            "a",
            false,
            "§4.7.1.3 sport/tennis/+ does not match sport/tennis",
        ),
        ("a/+", "a/", true, "§4.7.1.3 + matches an empty level"),
        ("a/+", "a/b/c", false, "§4.7.1.3 only one level"),
        ("+", "a", true, "§4.7.1.3"),
        ("+", "/", false, "§4.7.1.3 / has two levels"),
        ("+/+", "/", true, "§4.7.1.3 both empty levels"),
        ("/+", "/a", true, "§4.7.1.3"),
        ("+/#", "a", true, "§4.7.1.2 + then # of the parent"),
        ("+/a/#", "b/a", true, "§4.7.1"),
        ("a//b", "a//b", true, "§4.7.1.1 empty levels"),
        ("a//b", "a/b", false, "§4.7.1.1 empty levels count"),
        (
            "#",
            "$SYS",
            false,
            "[MQTT-4.7.2-1] # does not match $ topics",
        ),
        ("#", "$SYS/a", false, "[MQTT-4.7.2-1]"),
        (
            "+",
            "$SYS",
            false,
            "[MQTT-4.7.2-1] + does not match $ topics",
        ),
        ("+/a", "$SYS/a", false, "[MQTT-4.7.2-1]"),
        ("+/#", "$SYS/a", false, "[MQTT-4.7.2-1]"),
        ("$SYS/#", "$SYS", true, "§4.7.2 explicit $ level"),
        ("$SYS/#", "$SYS/a/b", true, "§4.7.2"),
        ("$SYS/+", "$SYS/a", true, "§4.7.2"),
        (
            "a/#",
            "a/$b",
            true,
            "[MQTT-4.7.2-1] applies to the first level only",
        ),
        (
            "a/+",
            "a/$b",
            true,
            "[MQTT-4.7.2-1] applies to the first level only",
        ),
        (
            "+/$b",
            "a/$b",
            true,
            "[MQTT-4.7.2-1] applies to the topic's first level only",
        ),
        (
            "$share/g/a/+",
            "a/b",
            true,
            "§4.8.2 the filter part matches",
        ),
        (
            "$share/g/#",
            "$SYS",
            false,
            "[MQTT-4.7.2-1] shared subscriptions too",
        ),
        ("$share", "$share", true, "§4.8.2 a plain $share filter"),
    ];
}

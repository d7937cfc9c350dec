//! A node's interest: which filters its local subscribers hold, counted per distinct filter,
//! and which NATS subscription's copy of a message the node delivers.
//!
//! The broker reports every local subscription added or removed; the first reference to a
//! filter makes the node subscribe its subjects, the last one unsubscribes them
//! ([`Interest::add`], [`Interest::remove`]). Each distinct filter gets an id, which names its
//! NATS subscriptions.
//!
//! Overlapping filters (`a/#` and `a/+`, or `a/#` and `a`) make NATS deliver one message to
//! the node once per matching subscription, while the broker delivers each message once per
//! subscriber. So the node delivers only the copy that came through the subscription with the
//! smallest id among its normal filters matching the topic ([`Interest::is_first`]), which the
//! router of this module answers, `$` rule included. Shared filters are subscribed in queue
//! groups and are not part of this rule: each group's copy goes to its group.

use std::collections::HashMap;

use mqttx_router::{Deliveries, Router, SubscribeOptions, SubscriberId, TopicFilter, TopicName};

/// A change of the node's NATS subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Subscribe the subjects of `filter`, naming the subscriptions `id`.
    Subscribe {
        /// The interest's id.
        id: u64,
        /// The filter (shared ones with their `$share/` prefix).
        filter: TopicFilter,
    },
    /// Drop the subscriptions named `id`.
    Unsubscribe {
        /// The interest's id.
        id: u64,
    },
}

#[derive(Debug)]
struct Entry {
    id: u64,
    count: usize,
}

/// The filters this node's subscribers hold, with a reference count each.
#[derive(Debug, Default)]
pub struct Interest {
    entries: HashMap<String, Entry>,
    /// The normal filters, each subscribed by its id.
    router: Router,
    next_id: u64,
    deliveries: Deliveries,
}

impl Interest {
    /// No interest.
    pub fn new() -> Self {
        Self::default()
    }

    /// A local subscription to `filter` was added: the change to make when it is the first.
    pub fn add(&mut self, filter: &TopicFilter) -> Option<Change> {
        if let Some(entry) = self.entries.get_mut(filter.as_str()) {
            entry.count += 1;
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.entries
            .insert(filter.as_str().to_owned(), Entry { id, count: 1 });
        if !filter.is_shared() {
            // A valid filter, not shared: the router takes it.
            let _ =
                self.router
                    .subscribe(filter, SubscriberId::new(id), SubscribeOptions::default());
        }
        Some(Change::Subscribe {
            id,
            filter: filter.clone(),
        })
    }

    /// A local subscription to `filter` was removed: the change to make when it was the last.
    /// A filter never added changes nothing.
    pub fn remove(&mut self, filter: &TopicFilter) -> Option<Change> {
        let entry = self.entries.get_mut(filter.as_str())?;
        entry.count -= 1;
        if entry.count > 0 {
            return None;
        }
        let id = entry.id;
        self.entries.remove(filter.as_str());
        if !filter.is_shared() {
            self.router.unsubscribe(filter, SubscriberId::new(id));
        }
        Some(Change::Unsubscribe { id })
    }

    /// The number of distinct filters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no filter is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id of the interest in `filter`, while it is held. A filter dropped and added again
    /// gets a new id, so the id tells an interest from its successor.
    pub fn id(&self, filter: &str) -> Option<u64> {
        self.entries.get(filter).map(|e| e.id)
    }

    /// How many local subscriptions hold `filter`.
    pub fn count(&self, filter: &str) -> usize {
        self.entries.get(filter).map_or(0, |e| e.count)
    }

    /// Whether a message on `topic` that arrived through the (normal) subscription `id` is
    /// the copy this node delivers: `id` is the smallest id among the normal filters held
    /// that match `topic`. False when `id` is no longer held or does not match.
    pub fn is_first(&mut self, id: u64, topic: &TopicName) -> bool {
        self.router.matches_into(topic, None, &mut self.deliveries);
        self.deliveries.iter().map(|d| d.subscriber().get()).min() == Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    fn t(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    #[test]
    fn the_first_reference_subscribes_and_the_last_unsubscribes() {
        let mut i = Interest::new();
        assert_eq!(
            i.add(&f("a/#")),
            Some(Change::Subscribe {
                id: 1,
                filter: f("a/#")
            })
        );
        assert_eq!(i.add(&f("a/#")), None);
        assert_eq!(i.count("a/#"), 2);
        assert_eq!(i.remove(&f("a/#")), None);
        assert_eq!(i.remove(&f("a/#")), Some(Change::Unsubscribe { id: 1 }));
        assert_eq!(i.remove(&f("a/#")), None, "never added");
        assert!(i.is_empty());
        assert_eq!(i.id("a/#"), None);
        // A filter added again gets a new id.
        assert!(matches!(
            i.add(&f("a/#")),
            Some(Change::Subscribe { id: 2, .. })
        ));
        assert_eq!(i.id("a/#"), Some(2));
        // A shared filter is its own interest, apart from the same filter unshared.
        assert!(matches!(
            i.add(&f("$share/g/a/#")),
            Some(Change::Subscribe { id: 3, .. })
        ));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn overlapping_filters_deliver_one_copy() {
        let mut i = Interest::new();
        i.add(&f("a/+")); // 1
        i.add(&f("a/#")); // 2
        i.add(&f("a")); // 3
        i.add(&f("#")); // 4
        i.add(&f("$share/g/a/b")); // 5, not in the rule
        // a/b: matched by 1, 2 and 4; only 1's copy counts.
        assert!(i.is_first(1, &t("a/b")));
        assert!(!i.is_first(2, &t("a/b")));
        assert!(!i.is_first(4, &t("a/b")));
        // a: matched by 2 (parent level), 3 and 4.
        assert!(i.is_first(2, &t("a")));
        assert!(!i.is_first(3, &t("a")));
        // $SYS/x: `#` does not match it [MQTT-4.7.2-1], so no copy is delivered.
        assert!(!i.is_first(4, &t("$SYS/x")));
        // Once 1 is gone, 2's copy of a/b counts.
        i.remove(&f("a/+"));
        assert!(i.is_first(2, &t("a/b")));
        assert!(!i.is_first(1, &t("a/b")), "an id no longer held");
        assert!(
            !i.is_first(5, &t("a/b")),
            "shared filters are not in the rule"
        );
    }
}

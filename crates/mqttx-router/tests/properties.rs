//! Property tests: the trie router and the retained store agree with naive, obviously-correct
//! matchers on random filters and topics, and leave no empty node behind.

use std::collections::{BTreeMap, BTreeSet};

use mqttx_router::{
    Deliveries, QoS, RetainedStore, Router, SubscribeOptions, SubscriberId, TopicFilter, TopicName,
};
use proptest::prelude::*;

/// The oracle, written independently of the crate: level lists, slice patterns, and the `$` rule
/// as MQTT 5.0 §4.7.2 states it.
fn oracle(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').expect("valid shared filter").1,
        None => filter,
    };
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    // [MQTT-4.7.2-1] Filters starting with a wildcard do not match topics starting with `$`.
    if t[0].starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f, t) {
            (["#"], _) => true,
            ([], []) => true,
            (["+", fr @ ..], [_, tr @ ..]) => go(fr, tr),
            ([fl, fr @ ..], [tl, tr @ ..]) => fl == tl && go(fr, tr),
            _ => false,
        }
    }
    go(&f, &t)
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "", "$x", "$SYS", "a b"])
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+")];
    (
        prop::collection::vec(filter_level, 1..5),
        any::<bool>(),
        prop::sample::select(vec!["", "", "", "$share/g/", "$share/h/"]),
    )
        .prop_map(|(mut levels, hash, share)| {
            if hash {
                let n = levels.len();
                levels[n - 1] = "#";
            }
            format!("{share}{}", levels.join("/"))
        })
        .prop_filter("valid", |f| TopicFilter::new(f).is_ok())
}

fn sorted_subscribers(out: &Deliveries) -> Vec<(u64, bool)> {
    let mut v: Vec<_> = out
        .iter()
        .map(|d| (d.subscriber().get(), d.is_shared()))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The naive matcher of the crate agrees with the oracle.
    #[test]
    fn naive_matcher_agrees_with_oracle(f in filter(), t in topic()) {
        let filter = TopicFilter::new(&f).unwrap();
        let topic = TopicName::new(&t).unwrap();
        prop_assert_eq!(filter.matches(&topic), oracle(&f, &t), "{} vs {}", f, t);
    }

    /// The trie gives each subscriber whose filter matches exactly one normal delivery, and each
    /// matching shared group exactly one delivery to one of its members.
    #[test]
    fn trie_agrees_with_oracle(
        filters in prop::collection::vec((filter(), 0u64..8), 1..40),
        topics in prop::collection::vec(topic(), 1..10),
    ) {
        let mut router = Router::new();
        for (f, s) in &filters {
            router
                .subscribe(&TopicFilter::new(f).unwrap(), SubscriberId::new(*s), SubscribeOptions::new(QoS::AtLeastOnce))
                .unwrap();
        }
        router.check_invariants().unwrap();
        let mut out = Deliveries::new();
        for t in &topics {
            let mut normal = BTreeSet::new();
            let mut groups: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
            for (f, s) in &filters {
                if !oracle(f, t) {
                    continue;
                }
                if f.starts_with("$share/") {
                    groups.entry(f.as_str()).or_default().insert(*s);
                } else {
                    normal.insert(*s);
                }
            }
            router.route(&TopicName::new(t).unwrap(), None, &mut out);
            let got = sorted_subscribers(&out);
            let got_normal: BTreeSet<u64> = got.iter().filter(|(_, sh)| !sh).map(|(s, _)| *s).collect();
            prop_assert_eq!(got_normal.len(), got.iter().filter(|(_, sh)| !sh).count(), "one normal delivery per subscriber");
            prop_assert_eq!(&got_normal, &normal, "topic {}", t);
            let shared: Vec<u64> = got.iter().filter(|(_, sh)| *sh).map(|(s, _)| *s).collect();
            prop_assert_eq!(shared.len(), groups.len(), "one delivery per matching group for {}", t);
            for s in shared {
                prop_assert!(groups.values().any(|m| m.contains(&s)));
            }
        }
    }

    /// Random subscribe, unsubscribe and unsubscribe-all sequences leave no empty node behind,
    /// and removing everything leaves only the root.
    #[test]
    fn no_empty_nodes(ops in prop::collection::vec((0u8..4, filter(), 0u64..5), 1..80)) {
        let mut router = Router::new();
        let mut model = BTreeSet::new();
        for (op, f, s) in &ops {
            let filter = TopicFilter::new(f).unwrap();
            let id = SubscriberId::new(*s);
            match op {
                0 | 1 => {
                    router.subscribe(&filter, id, SubscribeOptions::default()).unwrap();
                    model.insert((*s, f.clone()));
                }
                2 => {
                    let existed = model.remove(&(*s, f.clone()));
                    prop_assert_eq!(router.unsubscribe(&filter, id).is_some(), existed);
                }
                _ => {
                    let n = model.iter().filter(|(m, _)| m == s).count();
                    model.retain(|(m, _)| m != s);
                    prop_assert_eq!(router.unsubscribe_all(id), n);
                }
            }
            prop_assert_eq!(router.len(), model.len());
            if let Err(e) = router.check_invariants() {
                prop_assert!(false, "{}", e);
            }
        }
        for s in 0..5 {
            router.unsubscribe_all(SubscriberId::new(s));
        }
        prop_assert_eq!(router.node_count(), 1);
        prop_assert_eq!(router.interned_count(), 0);
    }

    /// A shared group delivers to exactly one member per message, and round-robin visits every
    /// member once per turn.
    #[test]
    fn shared_group_delivers_exactly_one(members in prop::collection::btree_set(0u64..50, 1..10), t in topic()) {
        let mut router = Router::new();
        let f = TopicFilter::new("$share/g/#").unwrap();
        for m in &members {
            router.subscribe(&f, SubscriberId::new(*m), SubscribeOptions::default()).unwrap();
        }
        let topic = TopicName::new(&t).unwrap();
        let mut out = Deliveries::new();
        let mut seen = BTreeSet::new();
        for _ in 0..members.len() {
            router.route(&topic, None, &mut out);
            if topic.is_dollar() {
                prop_assert!(out.is_empty());
                continue;
            }
            prop_assert_eq!(out.len(), 1);
            seen.insert(out.iter().next().unwrap().subscriber().get());
        }
        if !topic.is_dollar() {
            prop_assert_eq!(seen, members);
        }
    }

    /// The retained store's trie walk returns what a scan of every stored topic returns.
    #[test]
    fn retained_agrees_with_scan(
        topics in prop::collection::vec((topic(), any::<bool>()), 1..60),
        filters in prop::collection::vec(filter(), 1..10),
    ) {
        let mut store = RetainedStore::new();
        let mut model = BTreeMap::new();
        for (i, (t, keep)) in topics.iter().enumerate() {
            let name = TopicName::new(t).unwrap();
            if *keep {
                store.set(&name, i);
                model.insert(t.clone(), i);
            } else {
                prop_assert_eq!(store.remove(&name), model.remove(t));
            }
        }
        store.check_invariants().unwrap();
        for f in &filters {
            let mut got: Vec<(String, usize)> = store
                .matching(&TopicFilter::new(f).unwrap())
                .map(|(t, v)| (t.as_str().to_owned(), *v))
                .collect();
            got.sort();
            let expected: Vec<(String, usize)> = model
                .iter()
                .filter(|(t, _)| oracle(f, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            prop_assert_eq!(got, expected, "filter {}", f);
        }
        for t in model.keys() {
            store.remove(&TopicName::new(t).unwrap());
        }
        prop_assert!(store.is_empty());
        prop_assert_eq!(store.node_count(), 1);
    }
}

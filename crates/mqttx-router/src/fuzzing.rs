//! Fuzzing entry points, compiled only under `cfg(fuzzing)` (and for this crate's own tests).
//!
//! Each function interprets arbitrary bytes as a sequence of operations, applies them to the
//! real data structure and to a naive model, and panics when they disagree: that is what a fuzz
//! target is for. The targets in `fuzz/fuzz_targets/` are one-line calls to these functions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    Deliveries, QoS, RetainedStore, Router, ShareStrategy, SubscribeError, SubscribeOptions,
    SubscriberId, SubscriptionId, TopicFilter, TopicName,
};

/// Level strings the fuzzer combines; few, so that filters and topics collide often.
const LEVELS: [&str; 6] = ["a", "b", "$s", "", "c", "$SYS"];

/// Reads bytes, yielding zeros once the input is exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn topic(input: &mut Bytes<'_>) -> TopicName {
    let n = 1 + input.next() % 4;
    let levels: Vec<&str> = (0..n)
        .map(|_| LEVELS[input.next() as usize % LEVELS.len()])
        .collect();
    let mut text = levels.join("/");
    if text.is_empty() {
        // A single empty level is the empty string, which is not a topic; use two empty levels.
        text.push('/');
    }
    TopicName::new(&text).unwrap_or_else(|e| panic!("generated topic is valid: {e}"))
}

fn filter(input: &mut Bytes<'_>) -> TopicFilter {
    let shape = input.next();
    let n = 1 + shape % 4;
    let mut levels = Vec::new();
    for _ in 0..n {
        let b = input.next() as usize % (LEVELS.len() + 2);
        match b {
            b if b < LEVELS.len() => levels.push(LEVELS[b]),
            b if b == LEVELS.len() => levels.push("+"),
            _ => {
                levels.push("#");
                break;
            }
        }
    }
    let mut text = levels.join("/");
    if text.is_empty() {
        text.push('/');
    }
    let text = match (shape >> 4) % 4 {
        1 => format!("$share/g/{text}"),
        2 => format!("$share/h/{text}"),
        _ => text,
    };
    TopicFilter::new(&text).unwrap_or_else(|e| panic!("generated filter {text:?} is valid: {e}"))
}

fn options(input: &mut Bytes<'_>) -> SubscribeOptions {
    let b = input.next();
    let qos = QoS::try_from(b % 3).unwrap_or_default();
    let id = (b >> 2) % 4;
    SubscribeOptions::new(qos)
        .with_no_local(b & 0x40 != 0)
        .with_retain_as_published(b & 0x80 != 0)
        .with_subscription_id(SubscriptionId::new(u32::from(id)).ok())
}

/// One expected normal delivery: maximum QoS, subscription ids, retain-as-published.
type Expected = (QoS, Vec<SubscriptionId>, bool);

/// The body of the `router_ops` fuzz target: when the first byte has its top bit set, the rest
/// drives [`retained_ops`], otherwise [`subscription_ops`].
pub fn router_ops(data: &[u8]) {
    match data.split_first() {
        Some((first, rest)) if first & 0x80 != 0 => retained_ops(rest),
        _ => subscription_ops(data),
    }
}

/// Drives a [`Router`] with subscribe, unsubscribe, unsubscribe-all and route operations, and
/// checks every result against [`TopicFilter::matches`] applied to a list of subscriptions.
pub fn subscription_ops(data: &[u8]) {
    let mut input = Bytes(data);
    let strategy = match input.next() % 3 {
        0 => ShareStrategy::RoundRobin,
        1 => ShareStrategy::Random { seed: 7 },
        _ => ShareStrategy::HashOfPublisher,
    };
    let mut router = Router::with_share_strategy(strategy);
    // (subscriber, full filter) → (filter, options).
    let mut model: BTreeMap<(u64, String), (TopicFilter, SubscribeOptions)> = BTreeMap::new();
    let mut out = Deliveries::new();
    while !input.is_empty() {
        let op = input.next();
        let subscriber = u64::from(input.next() % 6);
        let id = SubscriberId::new(subscriber);
        match op % 5 {
            0 | 1 => {
                let f = filter(&mut input);
                let opts = options(&mut input);
                let result = router.subscribe(&f, id, opts);
                if f.is_shared() && opts.no_local {
                    assert_eq!(result, Err(SubscribeError::NoLocalOnSharedSubscription));
                    continue;
                }
                let key = (subscriber, f.as_str().to_owned());
                let previous = model.insert(key, (f, opts)).map(|(_, o)| o);
                match result {
                    Ok(crate::SubscribeOutcome::New) => assert_eq!(previous, None),
                    Ok(crate::SubscribeOutcome::Replaced { previous: p }) => {
                        assert_eq!(Some(p), previous)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            2 => {
                let f = filter(&mut input);
                let expected = model
                    .remove(&(subscriber, f.as_str().to_owned()))
                    .map(|(_, o)| o);
                assert_eq!(router.unsubscribe(&f, id), expected);
            }
            3 => {
                let expected = model.keys().filter(|(s, _)| *s == subscriber).count();
                model.retain(|(s, _), _| *s != subscriber);
                assert_eq!(router.unsubscribe_all(id), expected);
            }
            _ => {
                let t = topic(&mut input);
                let publisher = (op & 0x80 != 0).then_some(id);
                router.route(&t, publisher, &mut out);
                check_deliveries(&model, &t, publisher, &out, &router);
            }
        }
        assert_eq!(router.len(), model.len());
        if let Err(e) = router.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
    let subscribers: BTreeSet<u64> = model.keys().map(|(s, _)| *s).collect();
    for &s in &subscribers {
        let mut listed: Vec<(String, SubscribeOptions)> = router
            .subscriptions(SubscriberId::new(s))
            .into_iter()
            .map(|(f, o)| (f.as_str().to_owned(), o))
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        let expected: Vec<(String, SubscribeOptions)> = model
            .iter()
            .filter(|((m, _), _)| *m == s)
            .map(|((_, f), (_, o))| (f.clone(), *o))
            .collect();
        assert_eq!(listed, expected, "subscriptions of {s}");
    }
    for s in subscribers {
        router.unsubscribe_all(SubscriberId::new(s));
    }
    assert!(router.is_empty());
    assert_eq!(router.node_count(), 1, "every node pruned");
    assert_eq!(router.interned_count(), 0, "every string released");
}

fn check_deliveries(
    model: &BTreeMap<(u64, String), (TopicFilter, SubscribeOptions)>,
    topic: &TopicName,
    publisher: Option<SubscriberId>,
    out: &Deliveries,
    router: &Router,
) {
    let mut normal: BTreeMap<u64, Expected> = BTreeMap::new();
    // (share name, filter part) → members.
    let mut groups: BTreeMap<(String, String), Vec<(u64, SubscribeOptions)>> = BTreeMap::new();
    for ((s, _), (f, opts)) in model {
        if !f.matches(topic) {
            continue;
        }
        match f.share_name() {
            Some(share) => groups
                .entry((share.to_owned(), f.filter().to_owned()))
                .or_default()
                .push((*s, *opts)),
            None => {
                if opts.no_local && publisher == Some(SubscriberId::new(*s)) {
                    continue;
                }
                let e = normal
                    .entry(*s)
                    .or_insert((QoS::AtMostOnce, Vec::new(), false));
                e.0 = e.0.max(opts.qos);
                e.1.extend(opts.subscription_id);
                e.2 |= opts.retain_as_published;
            }
        }
    }
    let mut got_normal = BTreeMap::new();
    let mut got_shared = Vec::new();
    for d in out {
        if d.is_shared() {
            got_shared.push((d.subscriber().get(), d.qos(), d.subscription_ids().to_vec()));
        } else {
            let mut ids = d.subscription_ids().to_vec();
            ids.sort();
            let dup = got_normal.insert(
                d.subscriber().get(),
                (d.qos(), ids, d.retain_as_published()),
            );
            assert!(dup.is_none(), "two normal deliveries for one subscriber");
        }
    }
    for e in normal.values_mut() {
        e.1.sort();
    }
    assert_eq!(
        got_normal, normal,
        "normal deliveries for {topic:?} from {publisher:?}"
    );
    assert_eq!(
        got_shared.len(),
        groups.len(),
        "one delivery per matching group for {topic:?}: {router:?}"
    );
    // Each shared delivery goes to a member of some matching group, with that member's options.
    for (s, qos, ids) in got_shared {
        let ok = groups.values().flatten().any(|(m, o)| {
            *m == s && o.qos == qos && o.subscription_id.into_iter().collect::<Vec<_>>() == ids
        });
        assert!(
            ok,
            "shared delivery to {s} is not a member of a matching group"
        );
    }
}

/// Drives a [`RetainedStore`] with set, remove and matching operations, and checks every lookup
/// against a scan of a map with [`TopicFilter::matches`].
pub fn retained_ops(data: &[u8]) {
    let mut input = Bytes(data);
    let mut store = RetainedStore::new();
    let mut model: HashMap<String, u8> = HashMap::new();
    while !input.is_empty() {
        let op = input.next();
        match op % 3 {
            0 => {
                let t = topic(&mut input);
                let v = input.next();
                assert_eq!(store.set(&t, v), model.insert(t.as_str().to_owned(), v));
            }
            1 => {
                let t = topic(&mut input);
                assert_eq!(store.remove(&t), model.remove(t.as_str()));
            }
            _ => {
                let f = filter(&mut input);
                let mut got: Vec<(String, u8)> = store
                    .matching(&f)
                    .map(|(t, v)| (t.as_str().to_owned(), *v))
                    .collect();
                got.sort();
                let mut expected: Vec<(String, u8)> = model
                    .iter()
                    .filter(|(t, _)| {
                        f.matches(&TopicName::new(t).unwrap_or_else(|e| panic!("{e}")))
                    })
                    .map(|(t, v)| (t.clone(), *v))
                    .collect();
                expected.sort();
                assert_eq!(got, expected, "retained matching {f:?}");
            }
        }
        assert_eq!(store.len(), model.len());
        if let Err(e) = store.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the fuzz bodies on pseudo-random inputs, so they are exercised by `cargo test`.
    #[test]
    fn fuzz_bodies_on_pseudo_random_input() {
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        for len in 0..400 {
            let data: Vec<u8> = (0..len * 2)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            subscription_ops(&data);
            retained_ops(&data);
            router_ops(&data);
        }
    }
}

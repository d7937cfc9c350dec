//! The subscription index: [`Router`] maps a topic to the subscribers that must receive it.

use core::fmt;
use std::collections::HashMap;

use crate::map::{FastState, SmallMap};
use crate::options::{PackedOptions, QoS, SubscribeOptions, SubscriberId, SubscriptionId};
use crate::topic::{TopicFilter, TopicName};
use crate::trie::{NONE, Payload, ROOT, Step, Trie};

/// How a shared subscription group picks the one member that receives a message (MQTT 5.0 §4.8.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareStrategy {
    /// Each group's members take turns, in the order they joined (the default).
    #[default]
    RoundRobin,
    /// A uniformly random member, drawn from a small xorshift generator seeded by the caller.
    ///
    /// The router reads no clock and no operating-system entropy; the same seed and the same
    /// calls give the same choices.
    Random {
        /// The generator's seed (0 is replaced by a fixed non-zero constant).
        seed: u64,
    },
    /// The same publisher always reaches the same member while the group's membership is
    /// unchanged (sticky). Messages routed without a publisher id fall back to round-robin.
    HashOfPublisher,
}

/// What [`Router::subscribe`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeOutcome {
    /// The subscription is new.
    New,
    /// The subscriber already had this filter (or this shared group); its options were replaced
    /// [MQTT-3.8.4-3].
    Replaced {
        /// The options the subscription had before.
        previous: SubscribeOptions,
    },
}

/// Why [`Router::subscribe`] refused a subscription.
///
/// Message text is for people and may change; match on the variant instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// No Local set on a shared subscription [MQTT-3.8.3-4].
    NoLocalOnSharedSubscription,
}

impl SubscribeError {
    /// The MQTT 5.0 reason code: 0x82, Protocol Error.
    pub fn reason_code(&self) -> u8 {
        0x82
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLocalOnSharedSubscription => {
                f.write_str("[MQTT-3.8.3-4] no local must not be set on a shared subscription")
            }
        }
    }
}

impl core::error::Error for SubscribeError {}

/// The subscriptions stored at one trie node: the node's filter, normal and shared.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    subs: SmallMap<SubscriberId, PackedOptions>,
    shared: Option<Box<Groups>>,
}

impl Payload for Slot {
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.shared.is_none()
    }
}

/// The shared subscription groups of one filter, by ShareName.
#[derive(Debug, Default)]
struct Groups(Vec<Group>);

#[derive(Debug)]
struct Group {
    /// The interned ShareName.
    share: u32,
    /// In joining order, which round-robin follows.
    members: Vec<(SubscriberId, PackedOptions)>,
    /// Round-robin: the index of the next member.
    next: u32,
}

/// In the per-subscriber index, the `share` half of a key for a normal subscription.
const NORMAL: u32 = NONE;

fn index_key(node: u32, share: u32) -> u64 {
    (u64::from(node) << 32) | u64::from(share)
}

fn split_key(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// The subscription index of a broker: a topic trie with per-subscription options, shared
/// subscription groups and a per-subscriber index.
///
/// It is a plain data structure: it knows nothing of connections, async or time, and callers
/// refer to subscribers by an opaque [`SubscriberId`]. Wrap it in whatever synchronisation the
/// broker needs.
///
/// # Matching
///
/// [`Router::route`] (which advances shared-group selection) and [`Router::matches_into`] (which
/// only reads) write into a reusable [`Deliveries`] buffer, so a match allocates nothing once the
/// buffer has grown. The result has:
///
/// - one delivery per subscriber for its normal (non-shared) subscriptions, however many of them
///   match: at the **maximum** QoS among them, carrying **every** matching Subscription
///   Identifier, and with retain-as-published set if **any** of them has it set;
/// - one delivery per matching shared group, to the one member the [`ShareStrategy`] picks, with
///   that member's options. A subscriber that also matches normally gets both deliveries
///   (§4.8.2 allows this).
///
/// A subscription with `no_local` is skipped when its subscriber is the `publisher` passed in.
/// The `$` rule is applied on every path: a filter starting with `+` or `#` never matches a topic
/// starting with `$` [MQTT-4.7.2-1].
///
/// ```
/// use mqttx_router::{Deliveries, QoS, Router, SubscribeOptions, SubscriberId, TopicFilter, TopicName};
///
/// let mut router = Router::new();
/// let (alice, bob) = (SubscriberId::new(1), SubscriberId::new(2));
/// let opts = SubscribeOptions::new(QoS::AtLeastOnce);
/// router.subscribe(&TopicFilter::new("sensors/+/temp")?, alice, opts)?;
/// router.subscribe(&TopicFilter::new("sensors/#")?, alice, SubscribeOptions::new(QoS::ExactlyOnce))?;
/// router.subscribe(&TopicFilter::new("$share/workers/sensors/#")?, bob, opts)?;
///
/// let mut out = Deliveries::new();
/// router.route(&TopicName::new("sensors/kitchen/temp")?, None, &mut out);
/// let mut got: Vec<_> = out.iter().map(|d| (d.subscriber(), d.qos(), d.is_shared())).collect();
/// got.sort();
/// assert_eq!(got, [(alice, QoS::ExactlyOnce, false), (bob, QoS::AtLeastOnce, true)]);
///
/// // `$` topics are only matched by filters that name their first level.
/// router.route(&TopicName::new("$SYS/uptime")?, None, &mut out);
/// assert!(out.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Router {
    trie: Trie<Slot>,
    /// For each subscriber, the (node, share) of each of its subscriptions.
    subscribers: HashMap<SubscriberId, SmallMap<u64, ()>, FastState>,
    subscriptions: usize,
    strategy: ShareStrategy,
    /// The xorshift state of [`ShareStrategy::Random`].
    rng: u64,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// An empty router with round-robin shared groups.
    pub fn new() -> Self {
        Self::with_share_strategy(ShareStrategy::RoundRobin)
    }

    /// An empty router whose shared groups pick members with `strategy`.
    pub fn with_share_strategy(strategy: ShareStrategy) -> Self {
        let seed = match strategy {
            ShareStrategy::Random { seed } if seed != 0 => seed,
            _ => 0x2545_F491_4F6C_DD1D,
        };
        Self {
            trie: Trie::default(),
            subscribers: HashMap::with_hasher(FastState::new()),
            subscriptions: 0,
            strategy,
            rng: seed,
        }
    }

    /// The strategy shared groups use.
    pub fn share_strategy(&self) -> ShareStrategy {
        self.strategy
    }

    /// Adds a subscription, or replaces the options of the subscriber's existing subscription to
    /// the same filter (for a shared filter: to the same group) [MQTT-3.8.4-3].
    ///
    /// Time is proportional to the filter's length (plus the group's size for a shared filter).
    pub fn subscribe(
        &mut self,
        filter: &TopicFilter,
        subscriber: SubscriberId,
        options: SubscribeOptions,
    ) -> Result<SubscribeOutcome, SubscribeError> {
        let packed = PackedOptions::pack(&options);
        let Some(share_name) = filter.share_name() else {
            let node = self.trie.create(filter.levels().map(Step::of));
            let outcome = match self
                .trie
                .node_mut(node)
                .payload
                .subs
                .insert(subscriber, packed)
            {
                Some(previous) => SubscribeOutcome::Replaced {
                    previous: previous.unpack(),
                },
                None => {
                    self.index_add(subscriber, node, NORMAL);
                    SubscribeOutcome::New
                }
            };
            return Ok(outcome);
        };
        // [MQTT-3.8.3-4] It is a Protocol Error to set the No Local bit to 1 on a Shared Subscription.
        if options.no_local {
            return Err(SubscribeError::NoLocalOnSharedSubscription);
        }
        let node = self.trie.create(filter.levels().map(Step::of));
        let share = self.trie.strings.lookup(share_name);
        let groups = &mut self.trie.node_mut(node).payload.shared;
        let group = share.and_then(|share| {
            groups
                .as_mut()
                .and_then(|g| g.0.iter_mut().find(|g| g.share == share))
        });
        let share = match group {
            Some(group) => {
                if let Some(member) = group.members.iter_mut().find(|m| m.0 == subscriber) {
                    let previous = core::mem::replace(&mut member.1, packed);
                    return Ok(SubscribeOutcome::Replaced {
                        previous: previous.unpack(),
                    });
                }
                group.members.push((subscriber, packed));
                group.share
            }
            None => {
                let share = self.trie.strings.intern(share_name);
                let groups = &mut self.trie.node_mut(node).payload.shared;
                groups.get_or_insert_with(Box::default).0.push(Group {
                    share,
                    members: vec![(subscriber, packed)],
                    next: 0,
                });
                share
            }
        };
        self.index_add(subscriber, node, share);
        Ok(SubscribeOutcome::New)
    }

    /// Removes the subscriber's subscription to `filter` (for a shared filter: its membership of
    /// that group). Returns the removed subscription's options, or `None` if there was none
    /// (UNSUBACK 0x11, No subscription existed).
    pub fn unsubscribe(
        &mut self,
        filter: &TopicFilter,
        subscriber: SubscriberId,
    ) -> Option<SubscribeOptions> {
        let node = self.trie.find(filter.levels().map(Step::of))?;
        let share = match filter.share_name() {
            None => NORMAL,
            Some(name) => self.trie.strings.lookup(name)?,
        };
        let removed = self.remove_at(node, share, subscriber)?;
        let index = self.subscribers.get_mut(&subscriber)?;
        index.remove(&index_key(node, share));
        if index.is_empty() {
            self.subscribers.remove(&subscriber);
        }
        Some(removed.unpack())
    }

    /// Removes every subscription of `subscriber`, in time proportional to their number. Returns
    /// how many there were.
    pub fn unsubscribe_all(&mut self, subscriber: SubscriberId) -> usize {
        let Some(index) = self.subscribers.remove(&subscriber) else {
            return 0;
        };
        let n = index.len();
        for (&key, ()) in index.iter() {
            let (node, share) = split_key(key);
            let removed = self.remove_at(node, share, subscriber);
            debug_assert!(removed.is_some(), "index and trie disagree");
        }
        n
    }

    /// Removes one subscription from a node (without touching the per-subscriber index) and
    /// prunes the node if it became empty.
    fn remove_at(
        &mut self,
        node: u32,
        share: u32,
        subscriber: SubscriberId,
    ) -> Option<PackedOptions> {
        let slot = &mut self.trie.node_mut(node).payload;
        let removed = if share == NORMAL {
            slot.subs.remove(&subscriber)?
        } else {
            let groups = slot.shared.as_mut()?;
            let g = groups.0.iter().position(|g| g.share == share)?;
            let group = &mut groups.0[g];
            let m = group.members.iter().position(|m| m.0 == subscriber)?;
            let (_, removed) = group.members.remove(m);
            if group.members.is_empty() {
                groups.0.swap_remove(g);
                if groups.0.is_empty() {
                    slot.shared = None;
                }
                self.trie.strings.release(share);
            } else {
                // Keep the turn with the member that was next, as far as possible.
                if (m as u32) < group.next {
                    group.next -= 1;
                }
                if group.next as usize >= group.members.len() {
                    group.next = 0;
                }
            }
            removed
        };
        self.subscriptions -= 1;
        self.trie.prune(node);
        Some(removed)
    }

    fn index_add(&mut self, subscriber: SubscriberId, node: u32, share: u32) {
        self.subscriptions += 1;
        self.subscribers
            .entry(subscriber)
            .or_default()
            .insert(index_key(node, share), ());
    }

    /// The number of subscriptions (each shared-group membership counts as one).
    pub fn len(&self) -> usize {
        self.subscriptions
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// The number of subscribers with at least one subscription.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// The number of subscriptions `subscriber` has.
    pub fn subscription_count(&self, subscriber: SubscriberId) -> usize {
        self.subscribers.get(&subscriber).map_or(0, SmallMap::len)
    }

    /// The subscriptions of `subscriber`, with their options, in unspecified order.
    ///
    /// Filters are rebuilt from the trie (shared ones with their `$share/{ShareName}/` prefix),
    /// so this allocates; it is meant for session inspection and persistence, not for the hot path.
    pub fn subscriptions(&self, subscriber: SubscriberId) -> Vec<(TopicFilter, SubscribeOptions)> {
        let Some(index) = self.subscribers.get(&subscriber) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(index.len());
        for (&key, ()) in index.iter() {
            let (node, share) = split_key(key);
            let slot = &self.trie.node(node).payload;
            let mut text = String::new();
            let opts = if share == NORMAL {
                slot.subs.get(&subscriber).copied()
            } else {
                text.push_str("$share/");
                text.push_str(self.trie.strings.resolve(share));
                text.push('/');
                slot.shared.as_ref().and_then(|groups| {
                    let group = groups.0.iter().find(|g| g.share == share)?;
                    group
                        .members
                        .iter()
                        .find(|m| m.0 == subscriber)
                        .map(|m| m.1)
                })
            };
            self.trie.path(node, &mut text);
            // The index and the trie agree (see `check_invariants`), and the path spells a
            // filter that was valid when it was subscribed, so both lookups succeed.
            if let (Some(opts), Ok(filter)) = (opts, TopicFilter::try_from(text)) {
                out.push((filter, opts.unpack()));
            }
        }
        out
    }

    /// The deliveries for a message on `topic`, without advancing shared-group selection.
    ///
    /// Convenience for [`Router::matches_into`] with a fresh buffer.
    pub fn matches(&self, topic: &TopicName, publisher: Option<SubscriberId>) -> Deliveries {
        let mut out = Deliveries::new();
        self.matches_into(topic, publisher, &mut out);
        out
    }

    /// Fills `out` with the deliveries for a message on `topic` published by `publisher`.
    ///
    /// Read-only: each matching shared group names the member [`Router::route`] would pick
    /// next, but the choice is not consumed.
    pub fn matches_into(
        &self,
        topic: &TopicName,
        publisher: Option<SubscriberId>,
        out: &mut Deliveries,
    ) {
        self.collect_nodes(topic, out);
        let mut rng = self.rng;
        for i in 0..out.nodes.len() {
            let slot = &self.trie.node(out.nodes[i]).payload;
            out.add_normal(slot, publisher);
            if let Some(groups) = &slot.shared {
                for group in &groups.0 {
                    let mut next = group.next;
                    let pick = pick(
                        self.strategy,
                        group.members.len(),
                        &mut next,
                        &mut rng,
                        publisher,
                    );
                    out.add_shared(group.members[pick]);
                }
            }
        }
        out.finish();
    }

    /// Fills `out` with the deliveries for a message on `topic` published by `publisher`, and
    /// advances each matching shared group's selection (round-robin turn or random draw).
    pub fn route(
        &mut self,
        topic: &TopicName,
        publisher: Option<SubscriberId>,
        out: &mut Deliveries,
    ) {
        self.collect_nodes(topic, out);
        for i in 0..out.nodes.len() {
            let slot = &mut self.trie.node_mut(out.nodes[i]).payload;
            out.add_normal(slot, publisher);
            if let Some(groups) = &mut slot.shared {
                for group in &mut groups.0 {
                    let pick = pick(
                        self.strategy,
                        group.members.len(),
                        &mut group.next,
                        &mut self.rng,
                        publisher,
                    );
                    out.add_shared(group.members[pick]);
                }
            }
        }
        out.finish();
    }

    /// Fills `out` with one delivery for the shared group `filter` (`$share/{ShareName}/{filter}`):
    /// the member its [`ShareStrategy`] picks next, whatever the message's topic. A clustered
    /// broker uses it when the cluster picked this node's group for a message. Returns false,
    /// with `out` empty, when `filter` is not shared or the group has no member.
    pub fn route_group(
        &mut self,
        filter: &TopicFilter,
        publisher: Option<SubscriberId>,
        out: &mut Deliveries,
    ) -> bool {
        out.clear();
        let Some(name) = filter.share_name() else {
            return false;
        };
        let Some(node) = self.trie.find(filter.levels().map(Step::of)) else {
            return false;
        };
        let Some(share) = self.trie.strings.lookup(name) else {
            return false;
        };
        let Some(groups) = &mut self.trie.node_mut(node).payload.shared else {
            return false;
        };
        let Some(group) = groups.0.iter_mut().find(|g| g.share == share) else {
            return false;
        };
        if group.members.is_empty() {
            return false;
        }
        let pick = pick(
            self.strategy,
            group.members.len(),
            &mut group.next,
            &mut self.rng,
            publisher,
        );
        out.add_shared(group.members[pick]);
        out.finish();
        true
    }

    /// Walks the trie and stores the ids of the nodes whose filter matches `topic` in `out.nodes`.
    ///
    /// Each node is reached at most once: a node stands for one filter, and a filter matches a
    /// topic in only one way. The walk uses an explicit stack, since a topic may have 65 536 levels.
    fn collect_nodes(&self, topic: &TopicName, out: &mut Deliveries) {
        out.clear();
        let text = topic.as_str();
        let mut start = 0u32;
        for level in topic.levels() {
            let end = start + level.len() as u32;
            out.levels.push((start, end, UNKNOWN));
            start = end + 1;
        }
        let depth = out.levels.len() as u32;
        // [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a wildcard
        // character (# or +) with Topic Names beginning with a $ character.
        let dollar = topic.is_dollar();
        out.stack.push((ROOT, 0));
        while let Some((id, d)) = out.stack.pop() {
            let node = self.trie.node(id);
            if d == depth {
                out.nodes.push(id);
                // A `#` also matches its parent level: `a/#` matches `a`.
                if node.hash != NONE {
                    out.nodes.push(node.hash);
                }
                continue;
            }
            if !(d == 0 && dollar) {
                if node.hash != NONE {
                    out.nodes.push(node.hash);
                }
                if node.plus != NONE {
                    out.stack.push((node.plus, d + 1));
                }
            }
            if node.children.is_empty() {
                continue;
            }
            let (s, e, mut level) = out.levels[d as usize];
            if level == UNKNOWN {
                level = self
                    .trie
                    .strings
                    .lookup(&text[s as usize..e as usize])
                    .unwrap_or(NONE);
                out.levels[d as usize].2 = level;
            }
            if level != NONE {
                if let Some(&child) = node.children.get(&level) {
                    out.stack.push((child, d + 1));
                }
            }
        }
    }

    /// The number of live trie nodes, the root included (for tests: no empty node is left behind).
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }

    /// The number of distinct interned level strings and ShareNames.
    #[doc(hidden)]
    pub fn interned_count(&self) -> usize {
        self.trie.strings.len()
    }

    /// Checks every internal invariant; for tests and fuzzing.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut share_refs = HashMap::new();
        let mut count = 0;
        let mut indexed = 0;
        for (subscriber, index) in &self.subscribers {
            if index.is_empty() {
                return Err(format!("{subscriber:?} has an empty index entry"));
            }
            for (&key, ()) in index.iter() {
                indexed += 1;
                let (node, share) = split_key(key);
                let slot = &self.trie.node(node).payload;
                let present = if share == NORMAL {
                    slot.subs.get(subscriber).is_some()
                } else {
                    slot.shared.as_ref().is_some_and(|g| {
                        g.0.iter().any(|g| {
                            g.share == share && g.members.iter().any(|m| m.0 == *subscriber)
                        })
                    })
                };
                if !present {
                    return Err(format!(
                        "{subscriber:?} indexed at node {node} share {share} but absent"
                    ));
                }
            }
        }
        for (id, slot) in self.trie.payloads() {
            count += slot.subs.len();
            if let Some(groups) = &slot.shared {
                if groups.0.is_empty() {
                    return Err(format!("node {id} has an empty group list"));
                }
                for g in &groups.0 {
                    if g.members.is_empty() {
                        return Err(format!("node {id} has an empty group"));
                    }
                    if g.next as usize >= g.members.len() {
                        return Err(format!("node {id} group cursor out of range"));
                    }
                    if groups.0.iter().filter(|h| h.share == g.share).count() != 1 {
                        return Err(format!("node {id} has two groups for one ShareName"));
                    }
                    let mut members: Vec<_> = g.members.iter().map(|m| m.0).collect();
                    members.sort_unstable();
                    members.dedup();
                    if members.len() != g.members.len() {
                        return Err(format!("node {id} has a member twice in one group"));
                    }
                    count += g.members.len();
                    *share_refs.entry(g.share).or_insert(0) += 1;
                }
            }
        }
        self.trie.check(&share_refs)?;
        if count != self.subscriptions || indexed != self.subscriptions {
            return Err(format!(
                "{} subscriptions counted, {count} in the trie, {indexed} indexed",
                self.subscriptions
            ));
        }
        Ok(())
    }
}

/// A level id not looked up yet.
const UNKNOWN: u32 = NONE - 1;

/// Picks a member index in `0..len` (`len > 0`), updating the round-robin turn and the generator.
fn pick(
    strategy: ShareStrategy,
    len: usize,
    next: &mut u32,
    rng: &mut u64,
    publisher: Option<SubscriberId>,
) -> usize {
    let round_robin = |next: &mut u32| {
        let pick = *next as usize % len;
        *next = ((pick + 1) % len) as u32;
        pick
    };
    match (strategy, publisher) {
        (ShareStrategy::Random { .. }, _) => {
            // xorshift64* (Vigna), then Lemire's multiply-shift to map onto 0..len.
            let mut x = *rng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            *rng = x;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((u128::from(r) * len as u128) >> 64) as usize
        }
        (ShareStrategy::HashOfPublisher, Some(p)) => {
            // splitmix64's finaliser: a fixed function, so the choice is stable across runs.
            let mut z = p.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((u128::from(z) * len as u128) >> 64) as usize
        }
        _ => round_robin(next),
    }
}

/// A reusable buffer of deliveries, filled by [`Router::route`] and [`Router::matches_into`].
///
/// Keep one per caller and reuse it: once it has grown to the largest result, matching
/// allocates nothing. The order of deliveries is unspecified.
#[derive(Debug, Default)]
pub struct Deliveries {
    items: Vec<Item>,
    ids: Vec<SubscriptionId>,
    /// Scratch: normal subscriptions that matched, before merging per subscriber.
    hits: Vec<(SubscriberId, PackedOptions)>,
    /// Scratch: the matching trie nodes.
    nodes: Vec<u32>,
    /// Scratch: the walk's stack of (node, depth).
    stack: Vec<(u32, u32)>,
    /// Scratch: each topic level's byte range and interned id.
    levels: Vec<(u32, u32, u32)>,
}

#[derive(Clone, Copy, Debug)]
struct Item {
    subscriber: SubscriberId,
    qos: QoS,
    retain_as_published: bool,
    shared: bool,
    ids_start: u32,
    ids_end: u32,
}

impl Deliveries {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of deliveries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The deliveries, in unspecified order.
    pub fn iter(&self) -> DeliveryIter<'_> {
        DeliveryIter {
            items: self.items.iter(),
            ids: &self.ids,
        }
    }

    fn clear(&mut self) {
        self.items.clear();
        self.ids.clear();
        self.hits.clear();
        self.nodes.clear();
        self.stack.clear();
        self.levels.clear();
    }

    fn add_normal(&mut self, slot: &Slot, publisher: Option<SubscriberId>) {
        for (&subscriber, &opts) in slot.subs.iter() {
            // [MQTT-3.8.3-3] Bit 2 of the Subscription Options represents the No Local option.
            // If the value is 1, Application Messages MUST NOT be forwarded to a connection with
            // a ClientID equal to the ClientID of the publishing connection.
            if opts.no_local() && Some(subscriber) == publisher {
                continue;
            }
            self.hits.push((subscriber, opts));
        }
    }

    fn add_shared(&mut self, (subscriber, opts): (SubscriberId, PackedOptions)) {
        let ids_start = self.ids.len() as u32;
        self.ids.extend(opts.subscription_id());
        self.items.push(Item {
            subscriber,
            qos: opts.qos(),
            retain_as_published: opts.retain_as_published(),
            shared: true,
            ids_start,
            ids_end: self.ids.len() as u32,
        });
    }

    /// Merges the normal hits into one delivery per subscriber.
    fn finish(&mut self) {
        if self.hits.len() > 1 {
            self.hits
                .sort_unstable_by_key(|(subscriber, opts)| (*subscriber, opts.subscription_id()));
        }
        let mut i = 0;
        while i < self.hits.len() {
            let subscriber = self.hits[i].0;
            let ids_start = self.ids.len() as u32;
            let (mut qos, mut rap) = (QoS::AtMostOnce, false);
            while let Some(&(s, opts)) = self.hits.get(i) {
                if s != subscriber {
                    break;
                }
                // §3.3.4: deliver at the maximum QoS of all the matching subscriptions, with
                // all their Subscription Identifiers.
                qos = qos.max(opts.qos());
                rap |= opts.retain_as_published();
                self.ids.extend(opts.subscription_id());
                i += 1;
            }
            self.items.push(Item {
                subscriber,
                qos,
                retain_as_published: rap,
                shared: false,
                ids_start,
                ids_end: self.ids.len() as u32,
            });
        }
    }
}

impl<'a> IntoIterator for &'a Deliveries {
    type Item = Delivery<'a>;
    type IntoIter = DeliveryIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Deliveries`].
#[derive(Debug, Clone)]
pub struct DeliveryIter<'a> {
    items: core::slice::Iter<'a, Item>,
    ids: &'a [SubscriptionId],
}

impl<'a> Iterator for DeliveryIter<'a> {
    type Item = Delivery<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.items.next()?;
        Some(Delivery {
            item: *item,
            ids: &self.ids[item.ids_start as usize..item.ids_end as usize],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

impl ExactSizeIterator for DeliveryIter<'_> {}

/// One message copy to send: to whom, at which QoS, with which Subscription Identifiers.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    item: Item,
    ids: &'a [SubscriptionId],
}

impl<'a> Delivery<'a> {
    /// The receiving subscriber.
    pub fn subscriber(&self) -> SubscriberId {
        self.item.subscriber
    }

    /// The granted QoS of the subscription: the maximum over the subscriber's matching normal
    /// subscriptions. The broker sends at the minimum of this and the message's QoS.
    pub fn qos(&self) -> QoS {
        self.item.qos
    }

    /// Whether to keep the message's RETAIN flag: set if any matching subscription has
    /// retain-as-published.
    pub fn retain_as_published(&self) -> bool {
        self.item.retain_as_published
    }

    /// The Subscription Identifiers of every matching subscription that has one, ascending.
    pub fn subscription_ids(&self) -> &'a [SubscriptionId] {
        self.ids
    }

    /// Whether this copy is for a shared subscription group.
    pub fn is_shared(&self) -> bool {
        self.item.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::RetainHandling;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn id(n: u64) -> SubscriberId {
        SubscriberId::new(n)
    }

    fn sid(n: u32) -> SubscriptionId {
        SubscriptionId::new(n).unwrap()
    }

    /// The router's answer as sorted (subscriber, qos, shared) triples.
    fn answer(router: &Router, t: &str) -> Vec<(u64, u8, bool)> {
        let out = router.matches(&topic(t), None);
        let mut got: Vec<_> = out
            .iter()
            .map(|d| (d.subscriber().get(), d.qos() as u8, d.is_shared()))
            .collect();
        got.sort();
        got
    }

    /// Table test: each filter is subscribed by its own subscriber (its index); `expected` lists
    /// the filters that must match the topic.
    fn check(filters: &[&str], topic: &str, expected: &[&str], rule: &str) {
        let mut router = Router::new();
        for (i, f) in filters.iter().enumerate() {
            router
                .subscribe(&filter(f), id(i as u64), SubscribeOptions::default())
                .unwrap();
        }
        router.check_invariants().unwrap();
        let got: Vec<&str> = answer(&router, topic)
            .into_iter()
            .map(|(s, _, _)| filters[s as usize])
            .collect();
        let mut expected = expected.to_vec();
        expected.sort_by_key(|e| filters.iter().position(|f| f == e));
        assert_eq!(got, expected, "topic {topic:?} ({rule})");
    }

    #[test]
    fn trie_matching_table() {
        // The shared table in lib.rs, one filter at a time.
        for (f, t, expected, rule) in crate::tests::MATCH_CASES {
            let want: &[&str] = if *expected { &[f] } else { &[] };
            check(&[f], t, want, rule);
        }
        // Several filters at once.
        let all = [
            "#", "+", "+/#", "a/#", "a/+", "a/b", "a/+/c", "$SYS/#", "$SYS/+", "/+", "+/",
        ];
        check(
            &all,
            "a",
            &["#", "+", "+/#", "a/#"],
            "§4.7.1.2 # matches the parent level",
        );
        check(&all, "a/b", &["#", "+/#", "a/#", "a/+", "a/b"], "§4.7.1");
        check(&all, "a/b/c", &["#", "+/#", "a/#", "a/+/c"], "§4.7.1");
        check(&all, "$SYS", &["$SYS/#"], "[MQTT-4.7.2-1]");
        check(&all, "$SYS/x", &["$SYS/#", "$SYS/+"], "[MQTT-4.7.2-1]");
        check(
            &all,
            "/",
            &["#", "+/#", "/+", "+/"],
            "§4.7.1.1 empty levels",
        );
        check(
            &all,
            "x/$y",
            &["#", "+/#"],
            "[MQTT-4.7.2-1] only the first level counts",
        );
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_max_qos_with_all_ids() {
        let mut r = Router::new();
        let s = id(1);
        let o = |q, n| SubscribeOptions::new(q).with_subscription_id(Some(sid(n)));
        r.subscribe(&filter("a/+"), s, o(QoS::AtMostOnce, 3))
            .unwrap();
        r.subscribe(
            &filter("a/#"),
            s,
            o(QoS::ExactlyOnce, 1).with_retain_as_published(true),
        )
        .unwrap();
        r.subscribe(&filter("a/b"), s, SubscribeOptions::new(QoS::AtLeastOnce))
            .unwrap();
        r.subscribe(&filter("a/b"), id(2), o(QoS::AtLeastOnce, 9))
            .unwrap();
        let out = r.matches(&topic("a/b"), None);
        let mut ds: Vec<_> = out.iter().collect();
        ds.sort_by_key(|d| d.subscriber());
        assert_eq!(ds.len(), 2);
        assert_eq!(ds[0].subscriber(), s);
        assert_eq!(ds[0].qos(), QoS::ExactlyOnce, "§3.3.4 maximum QoS");
        assert_eq!(
            ds[0].subscription_ids(),
            &[sid(1), sid(3)],
            "§3.3.4 every identifier"
        );
        assert!(
            ds[0].retain_as_published(),
            "any subscription with retain_as_published"
        );
        assert_eq!(ds[1].subscription_ids(), &[sid(9)]);
        assert!(!ds[1].retain_as_published());
    }

    #[test]
    fn resubscribe_replaces_options() {
        let mut r = Router::new();
        let f = filter("a/b");
        let first = SubscribeOptions::new(QoS::AtMostOnce);
        let second =
            SubscribeOptions::new(QoS::ExactlyOnce).with_retain_handling(RetainHandling::DoNotSend);
        assert_eq!(r.subscribe(&f, id(1), first), Ok(SubscribeOutcome::New));
        assert_eq!(
            r.subscribe(&f, id(1), second),
            Ok(SubscribeOutcome::Replaced { previous: first }),
            "[MQTT-3.8.4-3]"
        );
        assert_eq!(r.len(), 1);
        assert_eq!(answer(&r, "a/b"), [(1, 2, false)]);
        assert_eq!(r.unsubscribe(&f, id(1)), Some(second));
        assert_eq!(r.unsubscribe(&f, id(1)), None);
        assert_eq!(r.node_count(), 1);
        r.check_invariants().unwrap();
    }

    #[test]
    fn no_local() {
        let mut r = Router::new();
        let nl = SubscribeOptions::new(QoS::AtLeastOnce).with_no_local(true);
        r.subscribe(&filter("a/#"), id(1), nl).unwrap();
        r.subscribe(&filter("a/b"), id(2), nl).unwrap();
        r.subscribe(&filter("a/+"), id(2), SubscribeOptions::default())
            .unwrap();
        let got = |p: Option<u64>| {
            let mut v: Vec<_> = r
                .matches(&topic("a/b"), p.map(id))
                .iter()
                .map(|d| (d.subscriber().get(), d.qos() as u8))
                .collect();
            v.sort();
            v
        };
        assert_eq!(got(None), [(1, 1), (2, 1)]);
        assert_eq!(
            got(Some(1)),
            [(2, 1)],
            "[MQTT-3.8.3-3] skip the publisher's own no_local subscription"
        );
        // Subscriber 2 still matches through its other subscription, at that one's QoS.
        assert_eq!(got(Some(2)), [(1, 1), (2, 0)]);
        assert_eq!(
            r.subscribe(&filter("$share/g/a"), id(1), nl),
            Err(SubscribeError::NoLocalOnSharedSubscription),
            "[MQTT-3.8.3-4]"
        );
        assert_eq!(
            SubscribeError::NoLocalOnSharedSubscription.reason_code(),
            0x82
        );
        r.check_invariants().unwrap();
    }

    #[test]
    fn shared_round_robin_and_both_deliveries() {
        let mut r = Router::new();
        let f = filter("$share/g/jobs/+");
        for n in 1..=3 {
            r.subscribe(&f, id(n), SubscribeOptions::default()).unwrap();
        }
        // Same filter, other group: its own selection. Same group name, other filter: another group.
        r.subscribe(
            &filter("$share/h/jobs/+"),
            id(9),
            SubscribeOptions::default(),
        )
        .unwrap();
        r.subscribe(
            &filter("$share/g/jobs/#"),
            id(8),
            SubscribeOptions::default(),
        )
        .unwrap();
        // A member that is also subscribed normally gets both copies.
        r.subscribe(&filter("jobs/#"), id(2), SubscribeOptions::default())
            .unwrap();
        r.check_invariants().unwrap();
        let mut out = Deliveries::new();
        let mut picked = Vec::new();
        for _ in 0..6 {
            assert_eq!(answer(&r, "jobs/1").len(), 4);
            r.route(&topic("jobs/1"), None, &mut out);
            let mut got: Vec<_> = out
                .iter()
                .map(|d| (d.subscriber().get(), d.is_shared()))
                .collect();
            got.sort();
            let g: Vec<_> = got
                .iter()
                .filter(|(s, sh)| *sh && (1..=3).contains(s))
                .collect();
            assert_eq!(
                g.len(),
                1,
                "exactly one member of $share/g/jobs/+ in {got:?}"
            );
            picked.push(g[0].0);
            assert!(
                got.contains(&(9, true)) && got.contains(&(8, true)) && got.contains(&(2, false))
            );
        }
        assert_eq!(picked, [1, 2, 3, 1, 2, 3], "round-robin in joining order");
        // The read-only variant names the next member without consuming the turn.
        for _ in 0..2 {
            let next: Vec<_> = r
                .matches(&topic("jobs/1"), None)
                .iter()
                .filter(|d| d.is_shared() && d.subscriber().get() <= 3)
                .map(|d| d.subscriber().get())
                .collect();
            assert_eq!(next, [1]);
        }
        // A group disappears with its last member.
        assert!(r.unsubscribe(&filter("$share/h/jobs/+"), id(9)).is_some());
        assert_eq!(r.unsubscribe(&filter("$share/h/jobs/+"), id(9)), None);
        assert_eq!(r.unsubscribe_all(id(8)), 1);
        r.check_invariants().unwrap();
        for n in 1..=3 {
            r.unsubscribe_all(id(n));
        }
        assert!(r.is_empty());
        assert_eq!(r.node_count(), 1);
        assert_eq!(r.interned_count(), 0);
        r.check_invariants().unwrap();
    }

    #[test]
    fn shared_round_robin_survives_membership_changes() {
        let mut r = Router::new();
        let f = filter("$share/g/t");
        for n in 1..=4 {
            r.subscribe(&f, id(n), SubscribeOptions::default()).unwrap();
        }
        let mut out = Deliveries::new();
        let mut next = |r: &mut Router| {
            r.route(&topic("t"), None, &mut out);
            out.iter().next().unwrap().subscriber().get()
        };
        assert_eq!(next(&mut r), 1);
        assert_eq!(next(&mut r), 2);
        r.unsubscribe(&f, id(1));
        assert_eq!(
            next(&mut r),
            3,
            "the turn stays with the member that was next"
        );
        r.unsubscribe(&f, id(4));
        assert_eq!(next(&mut r), 2);
        r.check_invariants().unwrap();
    }

    #[test]
    fn route_group_picks_one_member_of_that_group_only() {
        let mut r = Router::new();
        let opts = |qos| SubscribeOptions {
            qos,
            ..SubscribeOptions::default()
        };
        r.subscribe(&filter("$share/g/a/+"), id(1), opts(QoS::AtLeastOnce))
            .unwrap();
        r.subscribe(&filter("$share/g/a/+"), id(2), opts(QoS::AtMostOnce))
            .unwrap();
        r.subscribe(&filter("$share/h/a/+"), id(3), opts(QoS::AtMostOnce))
            .unwrap();
        r.subscribe(&filter("a/+"), id(4), opts(QoS::AtMostOnce))
            .unwrap();
        let mut out = Deliveries::new();
        let mut picked = Vec::new();
        for _ in 0..4 {
            assert!(r.route_group(&filter("$share/g/a/+"), None, &mut out));
            assert_eq!(out.len(), 1);
            let d = out.iter().next().unwrap();
            assert!(d.is_shared());
            picked.push((d.subscriber().get(), d.qos() as u8));
        }
        assert_eq!(
            picked,
            [(1, 1), (2, 0), (1, 1), (2, 0)],
            "round-robin in group g only"
        );
        for missing in ["$share/x/a/+", "$share/g/a/b", "a/+", "$share/g/b"] {
            assert!(
                !r.route_group(&filter(missing), None, &mut out),
                "{missing}"
            );
            assert!(out.is_empty());
        }
        r.unsubscribe(&filter("$share/h/a/+"), id(3));
        assert!(!r.route_group(&filter("$share/h/a/+"), None, &mut out));
        r.check_invariants().unwrap();
    }

    #[test]
    fn shared_hash_of_publisher_is_sticky() {
        let mut r = Router::with_share_strategy(ShareStrategy::HashOfPublisher);
        let f = filter("$share/g/t");
        for n in 1..=5 {
            r.subscribe(&f, id(n), SubscribeOptions::default()).unwrap();
        }
        let mut out = Deliveries::new();
        let mut seen = std::collections::HashSet::new();
        for publisher in 100..200 {
            r.route(&topic("t"), Some(id(publisher)), &mut out);
            let first = out.iter().next().unwrap().subscriber();
            for _ in 0..3 {
                r.route(&topic("t"), Some(id(publisher)), &mut out);
                assert_eq!(out.iter().next().unwrap().subscriber(), first);
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 5, "publishers spread over all members");
    }

    #[test]
    fn shared_random_is_seeded_and_spreads() {
        let run = |seed| {
            let mut r = Router::with_share_strategy(ShareStrategy::Random { seed });
            let f = filter("$share/g/t");
            for n in 1..=4 {
                r.subscribe(&f, id(n), SubscribeOptions::default()).unwrap();
            }
            let mut out = Deliveries::new();
            (0..200)
                .map(|_| {
                    r.route(&topic("t"), None, &mut out);
                    assert_eq!(out.len(), 1);
                    out.iter().next().unwrap().subscriber().get()
                })
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same choices");
        assert_ne!(a, run(43));
        for n in 1..=4 {
            let c = a.iter().filter(|&&x| x == n).count();
            assert!((20..=80).contains(&c), "member {n} picked {c} times of 200");
        }
    }

    #[test]
    fn unsubscribe_all_is_per_subscriber_and_prunes() {
        let mut r = Router::new();
        let filters = [
            "a/b/c",
            "a/+/c",
            "a/#",
            "#",
            "$share/g/a/b",
            "$share/g2/x/y/z",
            "a//",
        ];
        for f in filters {
            r.subscribe(&filter(f), id(1), SubscribeOptions::default())
                .unwrap();
        }
        r.subscribe(&filter("a/b/c"), id(2), SubscribeOptions::default())
            .unwrap();
        assert_eq!(r.subscription_count(id(1)), filters.len());
        assert_eq!(r.subscriber_count(), 2);
        assert_eq!(r.unsubscribe_all(id(1)), filters.len());
        assert_eq!(r.unsubscribe_all(id(1)), 0);
        r.check_invariants().unwrap();
        assert_eq!(answer(&r, "a/b/c"), [(2, 0, false)]);
        assert_eq!(r.node_count(), 4, "root, a, b, c");
        r.unsubscribe(&filter("a/b/c"), id(2));
        assert_eq!(r.node_count(), 1);
        assert_eq!(r.interned_count(), 0);
    }

    #[test]
    fn unsubscribe_needs_the_same_group() {
        let mut r = Router::new();
        r.subscribe(&filter("$share/g/a"), id(1), SubscribeOptions::default())
            .unwrap();
        r.subscribe(&filter("a"), id(2), SubscribeOptions::default())
            .unwrap();
        assert_eq!(
            r.unsubscribe(&filter("$share/h/a"), id(1)),
            None,
            "§4.8.2 other group"
        );
        assert_eq!(
            r.unsubscribe(&filter("a"), id(1)),
            None,
            "not a normal subscription"
        );
        assert_eq!(
            r.unsubscribe(&filter("$share/g/a"), id(2)),
            None,
            "not a member"
        );
        assert_eq!(r.len(), 2);
        r.check_invariants().unwrap();
    }

    #[test]
    fn deepest_topics_need_no_recursion() {
        // [MQTT-4.7.3-3] allows 65 535 bytes: 65 536 empty levels. Walks use explicit stacks.
        let deep = "/".repeat(crate::MAX_TOPIC_LEN);
        let mut r = Router::new();
        r.subscribe(&filter(&deep), id(1), SubscribeOptions::default())
            .unwrap();
        r.subscribe(
            &filter(&format!("{}#", &deep[..deep.len() - 1])),
            id(2),
            SubscribeOptions::default(),
        )
        .unwrap();
        r.subscribe(&filter("#"), id(3), SubscribeOptions::default())
            .unwrap();
        assert_eq!(r.node_count(), 1 + (deep.len() + 1) + 2);
        assert_eq!(
            answer(&r, &deep),
            [(1, 0, false), (2, 0, false), (3, 0, false)]
        );
        assert_eq!(
            r.unsubscribe_all(id(1)) + r.unsubscribe_all(id(2)) + r.unsubscribe_all(id(3)),
            3
        );
        assert_eq!(r.node_count(), 1);
    }

    #[test]
    fn subscriptions_are_listed_with_their_filters() {
        let mut r = Router::new();
        let filters = ["a/b", "a/+/#", "#", "/", "$share/g/a/+", "$SYS/x"];
        for (i, f) in filters.iter().enumerate() {
            let opts = SubscribeOptions::new(QoS::AtLeastOnce)
                .with_subscription_id(Some(sid(i as u32 + 1)));
            r.subscribe(&filter(f), id(1), opts).unwrap();
        }
        let mut got: Vec<_> = r
            .subscriptions(id(1))
            .into_iter()
            .map(|(f, o)| {
                (
                    f.as_str().to_owned(),
                    o.subscription_id.map(SubscriptionId::get),
                )
            })
            .collect();
        got.sort();
        let mut expected: Vec<_> = filters
            .iter()
            .enumerate()
            .map(|(i, f)| (f.to_string(), Some(i as u32 + 1)))
            .collect();
        expected.sort();
        assert_eq!(got, expected);
        assert!(r.subscriptions(id(2)).is_empty());
    }

    #[test]
    fn node_size() {
        // Documented in the crate's `# Memory` section.
        assert_eq!(size_of::<crate::trie::Node<Slot>>(), 72);
    }
}

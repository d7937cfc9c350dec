//! The retained-message index: [`RetainedStore`] finds the retained messages a filter matches.

use crate::topic::{TopicFilter, TopicName};
use crate::trie::{NONE, Payload, ROOT, Step, Trie};

/// One retained message: its topic and the caller's value.
type Entry<T> = Option<Box<(TopicName, T)>>;

#[derive(Debug)]
pub(crate) struct Retained<T>(Entry<T>);

impl<T> Default for Retained<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Payload for Retained<T> {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// Retained messages by topic, in a trie of topic levels.
///
/// Generic over the stored value, so the broker keeps its own message type (payload, QoS,
/// properties, expiry…). The store only indexes: it counts entries ([`RetainedStore::len`]), and
/// leaves byte accounting and caps to the caller, which sees every value go in and out through
/// [`RetainedStore::set`] and [`RetainedStore::remove`].
///
/// [`RetainedStore::matching`] walks the trie along the filter: an exact level follows one edge,
/// `+` visits the children of a node, and `#` visits a subtree. Its cost grows with the number
/// of nodes the filter can reach, not with the size of the store. The `$` rule applies: a filter
/// starting with `+` or `#` never returns a topic starting with `$` [MQTT-4.7.2-1].
///
/// ```
/// use mqttx_router::{RetainedStore, TopicFilter, TopicName};
///
/// let mut store = RetainedStore::new();
/// store.set(&TopicName::new("home/kitchen/temp")?, 21);
/// store.set(&TopicName::new("home/garage/temp")?, 12);
/// store.set(&TopicName::new("$SYS/uptime")?, 99);
/// // A PUBLISH with RETAIN and an empty payload clears the topic (§3.3.1.3).
/// assert_eq!(store.remove(&TopicName::new("home/garage/temp")?), Some(12));
///
/// let found: Vec<_> = store.matching(&TopicFilter::new("#")?).map(|(t, v)| (t.as_str(), *v)).collect();
/// assert_eq!(found, [("home/kitchen/temp", 21)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RetainedStore<T> {
    trie: Trie<Retained<T>>,
    len: usize,
}

impl<T> Default for RetainedStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RetainedStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            trie: Trie::default(),
            len: 0,
        }
    }

    /// Stores `value` as the retained message of `topic`, returning the one it replaces.
    pub fn set(&mut self, topic: &TopicName, value: T) -> Option<T> {
        let node = self.trie.create(topic.levels().map(Step::Exact));
        let slot = &mut self.trie.node_mut(node).payload.0;
        match slot {
            Some(entry) => Some(core::mem::replace(&mut entry.1, value)),
            None => {
                *slot = Some(Box::new((topic.clone(), value)));
                self.len += 1;
                None
            }
        }
    }

    /// Removes the retained message of `topic` (the broker calls this for a retained PUBLISH
    /// with an empty payload), returning it.
    pub fn remove(&mut self, topic: &TopicName) -> Option<T> {
        let node = self.trie.find(topic.levels().map(Step::Exact))?;
        let entry = self.trie.node_mut(node).payload.0.take()?;
        self.len -= 1;
        self.trie.prune(node);
        Some(entry.1)
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &TopicName) -> Option<&T> {
        let node = self.trie.find(topic.levels().map(Step::Exact))?;
        self.trie.node(node).payload.0.as_ref().map(|e| &e.1)
    }

    /// The number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The retained messages whose topic `filter` matches, in unspecified order.
    ///
    /// For a shared subscription the filter part is used; whether retained messages are sent for
    /// a new shared subscription at all is the broker's decision (MQTT 5.0 §4.8.2 says they are not).
    pub fn matching(&self, filter: &TopicFilter) -> Matching<'_, T> {
        let steps = filter
            .levels()
            .map(|level| match Step::of(level) {
                Step::Exact(s) => FilterStep::Exact(self.trie.strings.lookup(s).unwrap_or(NONE)),
                Step::Plus => FilterStep::Plus,
                Step::Hash => FilterStep::Hash,
            })
            .collect();
        Matching {
            store: self,
            steps,
            stack: vec![(ROOT, 0)],
        }
    }

    /// The number of live trie nodes, the root included.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }

    /// Checks every internal invariant; for tests and fuzzing.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.trie.check(&Default::default())?;
        let n = self.trie.payloads().filter(|(_, p)| p.0.is_some()).count();
        if n != self.len {
            return Err(format!("{n} entries but len {}", self.len));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum FilterStep {
    /// An interned level id, `NONE` when no stored topic has this level.
    Exact(u32),
    Plus,
    Hash,
}

/// A depth meaning "yield this node and its whole subtree" (below a `#`).
const SUBTREE: u32 = u32::MAX;

/// Iterator over the retained messages matching a filter; see [`RetainedStore::matching`].
#[derive(Debug)]
pub struct Matching<'a, T> {
    store: &'a RetainedStore<T>,
    steps: Vec<FilterStep>,
    /// Work to do: (node, filter depth), or (node, `SUBTREE`).
    stack: Vec<(u32, u32)>,
}

impl<'a, T> Matching<'a, T> {
    /// Whether a child of the root starts with `$`, so that wildcards must skip it [MQTT-4.7.2-1].
    fn is_dollar(&self, parent: u32, child: u32) -> bool {
        parent == ROOT && {
            let level = self.store.trie.node(child).level;
            self.store.trie.strings.resolve(level).starts_with('$')
        }
    }

    fn push_children(&mut self, id: u32, depth: u32) {
        let trie = &self.store.trie;
        for (_, &child) in trie.node(id).children.iter() {
            // [MQTT-4.7.2-1] The Server MUST NOT match Topic Filters starting with a wildcard
            // character (# or +) with Topic Names beginning with a $ character.
            if !self.is_dollar(id, child) {
                self.stack.push((child, depth));
            }
        }
    }
}

impl<'a, T> Iterator for Matching<'a, T> {
    type Item = (&'a TopicName, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        let trie = &self.store.trie;
        while let Some((id, depth)) = self.stack.pop() {
            let node = trie.node(id);
            let entry = node.payload.0.as_deref().map(|(t, v)| (t, v));
            if depth == SUBTREE {
                self.push_children(id, SUBTREE);
                if entry.is_some() {
                    return entry;
                }
                continue;
            }
            match self.steps.get(depth as usize) {
                None => {
                    if entry.is_some() {
                        return entry;
                    }
                }
                Some(FilterStep::Exact(level)) => {
                    if let Some(&child) = node.children.get(level) {
                        self.stack.push((child, depth + 1));
                    }
                }
                Some(FilterStep::Plus) => self.push_children(id, depth + 1),
                // `#` matches this level and everything below it (`a/#` matches `a`).
                Some(FilterStep::Hash) => {
                    self.push_children(id, SUBTREE);
                    if entry.is_some() {
                        return entry;
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filter: &str, expected: &[&str], rule: &str) {
        let mut store = RetainedStore::new();
        for t in [
            "a", "a/b", "a/b/c", "a//c", "/", "/x", "b", "$SYS", "$SYS/x", "x/$y",
        ] {
            assert_eq!(store.set(&TopicName::new(t).unwrap(), t.len()), None);
        }
        store.check_invariants().unwrap();
        let f = TopicFilter::new(filter).unwrap();
        let mut got: Vec<&str> = store.matching(&f).map(|(t, _)| t.as_str()).collect();
        got.sort_unstable();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(got, expected, "filter {filter:?} ({rule})");
    }

    #[test]
    fn matching_table() {
        let all_plain = ["a", "a/b", "a/b/c", "a//c", "/", "/x", "b", "x/$y"];
        check("#", &all_plain, "[MQTT-4.7.2-1] # skips $ topics");
        check("+", &["a", "b"], "[MQTT-4.7.2-1] + skips $ topics");
        check("+/#", &all_plain, "[MQTT-4.7.2-1]");
        check(
            "a/#",
            &["a", "a/b", "a/b/c", "a//c"],
            "§4.7.1.2 # matches the parent level",
        );
        check("a/+", &["a/b"], "§4.7.1.3 + matches one level");
        check(
            "a/+/c",
            &["a/b/c", "a//c"],
            "§4.7.1.3 + matches an empty level",
        );
        check("+/+", &["a/b", "/", "/x", "x/$y"], "§4.7.1.1 empty levels");
        check("$SYS/#", &["$SYS", "$SYS/x"], "§4.7.2 explicit $ filter");
        check("$SYS", &["$SYS"], "§4.7.2");
        check("nope/#", &[], "no such level");
        check(
            "$share/g/a/+",
            &["a/b"],
            "§4.8.2 the filter part of a shared subscription",
        );
    }

    #[test]
    fn shared_matching_table() {
        for (filter, topic, expected, rule) in crate::tests::MATCH_CASES {
            let mut store = RetainedStore::new();
            store.set(&TopicName::new(topic).unwrap(), ());
            let n = store.matching(&TopicFilter::new(filter).unwrap()).count();
            assert_eq!(n == 1, *expected, "{filter:?} vs {topic:?} ({rule})");
        }
    }

    #[test]
    fn deepest_topics_need_no_recursion() {
        let deep = TopicName::new(&"/".repeat(crate::MAX_TOPIC_LEN)).unwrap();
        let mut store = RetainedStore::new();
        store.set(&deep, 1);
        assert_eq!(store.matching(&TopicFilter::new("#").unwrap()).count(), 1);
        assert_eq!(store.remove(&deep), Some(1));
        assert_eq!(store.node_count(), 1);
    }

    #[test]
    fn set_replace_remove_prunes() {
        let mut store = RetainedStore::new();
        let t = TopicName::new("a/b/c").unwrap();
        assert_eq!(store.set(&t, 1), None);
        assert_eq!(store.set(&t, 2), Some(1));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&t), Some(&2));
        assert_eq!(store.get(&TopicName::new("a/b").unwrap()), None);
        assert_eq!(store.remove(&TopicName::new("a/b").unwrap()), None);
        assert_eq!(store.remove(&t), Some(2));
        assert_eq!(store.remove(&t), None);
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 1);
        store.check_invariants().unwrap();
    }
}

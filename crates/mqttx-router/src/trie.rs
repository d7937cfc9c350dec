//! The arena trie shared by the router and the retained-message store, and its level interner.
//!
//! ```text
//!   nodes: Vec<Node<P>>            interner: "tenant" → 0, "7" → 1, "device" → 2, …
//!   ┌──────────────────────────┐
//!   │ 0 root   children {0 → 1} │   A node's exact children are keyed by the interned id of
//!   │ 1 tenant children {1 → 2} │   their level, so an edge costs 8 bytes and each distinct
//!   │ 2 7      plus → 3         │   level string is stored once. `+` and `#` children have
//!   │ 3 +      hash → 4         │   their own fields. Nodes point to their parent, so a node
//!   │ 4 #      payload …        │   found by id can be pruned without walking from the root.
//!   └──────────────────────────┘
//! ```
//!
//! Every node other than the root is non-empty: it has a child or a non-empty payload. Removing
//! the last thing from a node prunes it and its emptied ancestors, and releases their level strings.

use std::collections::HashMap;
use std::sync::Arc;

use crate::map::{FastState, SmallMap};

/// The node index meaning "none".
pub(crate) const NONE: u32 = u32::MAX;
/// The root node's index.
pub(crate) const ROOT: u32 = 0;
/// The `level` of a `+` node.
const PLUS_LEVEL: u32 = u32::MAX - 1;
/// The `level` of a `#` node.
const HASH_LEVEL: u32 = u32::MAX - 2;
/// Interned ids stay below this, so they never collide with the markers above.
const MAX_LEVEL_ID: u32 = u32::MAX - 3;

/// One step of a path through the trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Exact(&'a str),
    Plus,
    Hash,
}

impl<'a> Step<'a> {
    /// Reads a filter level; in a topic name `+` and `#` cannot occur, so this is right for both.
    pub(crate) fn of(level: &'a str) -> Self {
        match level {
            "+" => Self::Plus,
            "#" => Self::Hash,
            _ => Self::Exact(level),
        }
    }
}

/// What a node holds besides its children.
pub(crate) trait Payload: Default {
    fn is_empty(&self) -> bool;
}

#[derive(Debug)]
pub(crate) struct Node<P> {
    /// Exact children, by interned level id.
    pub(crate) children: SmallMap<u32, u32>,
    pub(crate) payload: P,
    /// `NONE` for the root and for free slots.
    parent: u32,
    /// The interned id of this node's level, or `PLUS_LEVEL` / `HASH_LEVEL`.
    pub(crate) level: u32,
    /// The `+` child, or `NONE`.
    pub(crate) plus: u32,
    /// The `#` child, or `NONE`.
    pub(crate) hash: u32,
}

impl<P: Default> Node<P> {
    fn new(parent: u32, level: u32) -> Self {
        Self {
            children: SmallMap::default(),
            payload: P::default(),
            parent,
            level,
            plus: NONE,
            hash: NONE,
        }
    }
}

impl<P: Payload> Node<P> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus == NONE
            && self.hash == NONE
            && self.payload.is_empty()
    }
}

/// Level strings, stored once each and counted by reference.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Hashed with the seeded multiply-fold hasher, which is several times faster than SipHash
    /// on short level strings; the per-map random seed keeps collisions from being chosen.
    ids: HashMap<Arc<str>, u32, FastState>,
    /// By id: the string (`None` for a free id) and how many nodes or groups use it.
    slots: Vec<(Option<Arc<str>>, u32)>,
    free: Vec<u32>,
}

impl Interner {
    #[inline]
    pub(crate) fn lookup(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// Returns the id of `s`, adding one reference.
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            self.slots[id as usize].1 += 1;
            return id;
        }
        let text: Arc<str> = s.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = (Some(text.clone()), 1);
                id
            }
            None => {
                let id = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&id| id < MAX_LEVEL_ID)
                    .unwrap_or_else(|| panic!("more than {MAX_LEVEL_ID} distinct topic levels"));
                self.slots.push((Some(text.clone()), 1));
                id
            }
        };
        self.ids.insert(text, id);
        id
    }

    /// Drops one reference to `id`, forgetting the string with the last one.
    pub(crate) fn release(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            if let Some(text) = slot.0.take() {
                self.ids.remove(&text);
            }
            self.free.push(id);
        }
    }

    /// The string of a live id.
    pub(crate) fn resolve(&self, id: u32) -> &str {
        self.slots[id as usize].0.as_deref().unwrap_or("")
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The reference count of every live id, for invariant checks.
    fn counts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (text, _))| text.is_some())
            .map(|(id, (_, refs))| (id as u32, *refs))
    }
}

/// An arena of nodes with a free list; index 0 is the root.
#[derive(Debug)]
pub(crate) struct Trie<P> {
    nodes: Vec<Node<P>>,
    free: Vec<u32>,
    pub(crate) strings: Interner,
}

impl<P: Payload> Default for Trie<P> {
    fn default() -> Self {
        Self {
            nodes: vec![Node::new(NONE, NONE)],
            free: Vec::new(),
            strings: Interner::default(),
        }
    }
}

impl<P: Payload> Trie<P> {
    #[inline]
    pub(crate) fn node(&self, id: u32) -> &Node<P> {
        &self.nodes[id as usize]
    }

    #[inline]
    pub(crate) fn node_mut(&mut self, id: u32) -> &mut Node<P> {
        &mut self.nodes[id as usize]
    }

    /// Number of live nodes, the root included.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Follows `steps` from the root without creating anything.
    pub(crate) fn find<'a>(&self, steps: impl Iterator<Item = Step<'a>>) -> Option<u32> {
        let mut at = ROOT;
        for step in steps {
            let node = self.node(at);
            at = match step {
                Step::Plus => node.plus,
                Step::Hash => node.hash,
                Step::Exact(s) => *node.children.get(&self.strings.lookup(s)?)?,
            };
            if at == NONE {
                return None;
            }
        }
        Some(at)
    }

    /// Follows `steps` from the root, creating missing nodes. The caller must then fill the
    /// returned node's payload, or call [`Trie::prune`] on it.
    pub(crate) fn create<'a>(&mut self, steps: impl Iterator<Item = Step<'a>>) -> u32 {
        let mut at = ROOT;
        for step in steps {
            let node = self.node(at);
            let next = match step {
                Step::Plus => node.plus,
                Step::Hash => node.hash,
                Step::Exact(s) => self
                    .strings
                    .lookup(s)
                    .and_then(|id| node.children.get(&id).copied())
                    .unwrap_or(NONE),
            };
            at = if next != NONE {
                next
            } else {
                let level = match step {
                    Step::Plus => PLUS_LEVEL,
                    Step::Hash => HASH_LEVEL,
                    Step::Exact(s) => self.strings.intern(s),
                };
                let child = self.alloc(at, level);
                let parent = self.node_mut(at);
                match step {
                    Step::Plus => parent.plus = child,
                    Step::Hash => parent.hash = child,
                    Step::Exact(_) => {
                        parent.children.insert(level, child);
                    }
                }
                child
            };
        }
        at
    }

    fn alloc(&mut self, parent: u32, level: u32) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Node::new(parent, level);
                id
            }
            None => {
                let id = u32::try_from(self.nodes.len())
                    .ok()
                    .filter(|&id| id < NONE)
                    .unwrap_or_else(|| panic!("more than {} trie nodes", NONE - 1));
                self.nodes.push(Node::new(parent, level));
                id
            }
        }
    }

    /// Writes the path from the root to `id` as a filter (levels joined by `/`) into `out`.
    pub(crate) fn path(&self, id: u32, out: &mut String) {
        let mut levels = Vec::new();
        let mut at = id;
        while at != ROOT {
            let node = self.node(at);
            levels.push(match node.level {
                PLUS_LEVEL => "+",
                HASH_LEVEL => "#",
                level => self.strings.resolve(level),
            });
            at = node.parent;
        }
        for (i, level) in levels.iter().rev().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(level);
        }
    }

    /// Removes `id` if it is empty, then each ancestor that becomes empty.
    pub(crate) fn prune(&mut self, mut id: u32) {
        while id != ROOT && self.node(id).is_empty() {
            let node = &mut self.nodes[id as usize];
            let (parent, level) = (node.parent, node.level);
            // Free the slot, dropping any heap memory the node still owns.
            *node = Node::new(NONE, NONE);
            self.free.push(id);
            let p = self.node_mut(parent);
            match level {
                PLUS_LEVEL => p.plus = NONE,
                HASH_LEVEL => p.hash = NONE,
                _ => {
                    p.children.remove(&level);
                    self.strings.release(level);
                }
            }
            id = parent;
        }
    }

    /// The ids of the live nodes other than the root.
    fn live(&self) -> impl Iterator<Item = u32> + '_ {
        (1..self.nodes.len() as u32).filter(|&id| self.nodes[id as usize].parent != NONE)
    }

    /// The live nodes other than the root, with their payloads.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = (u32, &P)> + '_ {
        self.live().map(|id| (id, &self.node(id).payload))
    }

    /// Checks the structural invariants: no empty node but the root, parent and child links
    /// agree, and every interned string is referenced exactly as often as counted (`extra` adds
    /// references held outside the trie, such as share names).
    pub(crate) fn check(&self, extra: &HashMap<u32, u32>) -> Result<(), String> {
        let mut refs: HashMap<u32, u32> = extra.clone();
        let mut reached = 0;
        for id in self.live() {
            reached += 1;
            let node = self.node(id);
            if node.is_empty() {
                return Err(format!("node {id} is empty but was not pruned"));
            }
            let p = self.node(node.parent);
            let linked = match node.level {
                PLUS_LEVEL => p.plus == id,
                HASH_LEVEL => p.hash == id,
                level => {
                    *refs.entry(level).or_default() += 1;
                    p.children.get(&level) == Some(&id)
                }
            };
            if !linked {
                return Err(format!(
                    "node {id} is not linked from its parent {}",
                    node.parent
                ));
            }
            if node.level == HASH_LEVEL
                && (!node.children.is_empty() || node.plus != NONE || node.hash != NONE)
            {
                return Err(format!("`#` node {id} has children"));
            }
        }
        if reached + 1 != self.node_count() {
            return Err(format!(
                "{} live nodes but {} counted",
                reached + 1,
                self.node_count()
            ));
        }
        let counted: HashMap<u32, u32> = self.strings.counts().collect();
        if counted != refs {
            return Err(format!("interner counts {counted:?}, references {refs:?}"));
        }
        if self.strings.len() != counted.len() {
            return Err("interner map and slots disagree".to_owned());
        }
        Ok(())
    }
}

//! `SmallMap`: a map that is inline for one entry, a vector for a few, a hash map for many.
//!
//! Most trie nodes have zero or one child and zero or one subscriber, so the common case costs no
//! heap allocation; popular nodes switch to a hash map so that lookups stay O(1).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

/// Above this many entries, a `SmallMap` becomes a hash map.
const MAX_FEW: usize = 16;
/// At this many entries, a hash map goes back to a vector (hysteresis avoids flapping).
const BACK_TO_FEW: usize = MAX_FEW / 2;

/// A fast hasher for the trie's maps: interned level ids, subscriber ids and level strings.
///
/// A multiply-and-fold hash (as in foldhash) keyed with a per-map random seed taken from std's
/// `RandomState`, so keys cannot be chosen to collide without knowing the seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastState {
    seed: u64,
}

impl FastState {
    pub(crate) fn new() -> Self {
        Self {
            seed: RandomState::new().hash_one(0x5EED_u64) | 1,
        }
    }
}

impl Default for FastState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

/// See [`FastState`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastHasher(u64);

/// A 64-bit odd constant (the fractional part of the golden ratio).
const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl FastHasher {
    #[inline]
    fn mix(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x) * u128::from(K);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(buf));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.mix(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
}

/// A map optimised for zero or one entries, see the module docs.
#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    /// Zero entries (no allocation) or a few in a vector.
    Few(Vec<(K, V)>),
    /// Exactly one entry, inline.
    One(K, V),
    /// More than `MAX_FEW` entries. Boxed so that the enum stays three words: most maps are small.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<K, V, FastState>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<K: Copy + Eq + Hash, V> SmallMap<K, V> {
    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self {
            Self::One(k, v) => (k == key).then_some(v),
            Self::Few(few) => few.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Self::Many(map) => map.get(key),
        }
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            Self::One(k, v) => (k == key).then_some(v),
            Self::Few(few) => few.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            Self::Many(map) => map.get_mut(key),
        }
    }

    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(&key) {
            return Some(core::mem::replace(slot, value));
        }
        match self {
            Self::Few(few) if few.is_empty() => *self = Self::One(key, value),
            Self::Few(few) if few.len() < MAX_FEW => few.push((key, value)),
            Self::Few(few) => {
                let mut map = HashMap::with_capacity_and_hasher(few.len() + 1, FastState::new());
                map.extend(few.drain(..));
                map.insert(key, value);
                *self = Self::Many(Box::new(map));
            }
            Self::One(..) => {
                let Self::One(k, v) = core::mem::take(self) else {
                    unreachable!("matched One above")
                };
                *self = Self::Few(vec![(k, v), (key, value)]);
            }
            Self::Many(map) => {
                map.insert(key, value);
            }
        }
        None
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Self::One(k, _) if k == key => {
                let Self::One(_, v) = core::mem::take(self) else {
                    unreachable!("matched One above")
                };
                Some(v)
            }
            Self::One(..) => None,
            Self::Few(few) => {
                let at = few.iter().position(|(k, _)| k == key)?;
                let (_, v) = few.swap_remove(at);
                if few.len() == 1 {
                    if let Some((k, v)) = few.pop() {
                        *self = Self::One(k, v);
                    }
                } else if few.capacity() > 2 * few.len() + 2 {
                    few.shrink_to(few.len() + 1);
                }
                Some(v)
            }
            Self::Many(map) => {
                let v = map.remove(key)?;
                if map.len() <= BACK_TO_FEW {
                    *self = Self::Few(map.drain().collect());
                } else if map.capacity() > 4 * map.len() {
                    map.shrink_to(2 * map.len());
                }
                Some(v)
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(..) => 1,
            Self::Few(few) => few.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Few(few) if few.is_empty())
    }

    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        match self {
            Self::One(k, v) => Iter::One(Some((k, v))),
            Self::Few(few) => Iter::Few(few.iter()),
            Self::Many(map) => Iter::Many(map.iter()),
        }
    }

    /// Heap bytes owned by this map (an estimate for the hash map case).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::One(..) => 0,
            Self::Few(few) => few.capacity() * size_of::<(K, V)>(),
            Self::Many(map) => map.capacity() * (size_of::<(K, V)>() + 1),
        }
    }
}

/// Iterator over a [`SmallMap`], in no particular order.
#[derive(Debug)]
pub(crate) enum Iter<'a, K, V> {
    One(Option<(&'a K, &'a V)>),
    Few(core::slice::Iter<'a, (K, V)>),
    Many(std::collections::hash_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::One(one) => one.take(),
            Self::Few(few) => few.next().map(|(k, v)| (k, v)),
            Self::Many(many) => many.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_through_every_representation() {
        let mut m = SmallMap::<u32, u32>::default();
        assert!(m.is_empty());
        for i in 0..100 {
            assert_eq!(m.insert(i, i * 2), None);
            assert_eq!(m.len(), i as usize + 1);
        }
        assert!(matches!(m, SmallMap::Many(_)));
        assert_eq!(m.insert(5, 7), Some(10));
        assert_eq!(m.get(&5), Some(&7));
        for i in 0..100 {
            assert!(m.remove(&i).is_some(), "{i}");
            assert_eq!(m.remove(&i), None);
            assert_eq!(m.len(), 99 - i as usize);
            for j in i + 1..100 {
                assert!(m.get(&j).is_some(), "{j} after removing {i}");
            }
            assert_eq!(m.iter().count(), m.len());
        }
        assert!(m.is_empty());
        assert_eq!(m.heap_bytes(), 0);
    }

    #[test]
    fn small_sizes() {
        // The trie's per-node maps stay at three words.
        assert_eq!(size_of::<SmallMap<u32, u32>>(), 24);
        assert_eq!(
            size_of::<SmallMap<crate::SubscriberId, crate::options::PackedOptions>>(),
            24
        );
    }
}

//! The index: every durable key and its slot.
//!
//! Point lookups (every GET, SET and DEL) go to a hash map: one probe, where a B-tree walk
//! took a cache miss per level and `perf` showed it at 18-23% of a pipelined GET's CPU. The
//! keys are also kept in order in a B-tree set, for what needs order: KEYS and SCAN by prefix
//! with a resume point, and the checkpoint. An overwrite, the common write, touches only the
//! hash map; a new key or a delete touches both.

use std::collections::hash_map::{self, RandomState};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use smallvec::SmallVec;

use super::Slot;

/// A key: up to 16 bytes inline (24 bytes in all), longer ones on the heap, so a short key
/// costs no allocation of its own and a B-tree search compares without a pointer chase.
pub type IndexKey = SmallVec<[u8; 16]>;

#[derive(Default)]
pub struct Index {
    /// Keyed by bytes clients choose: SipHash with a random key, against hash flooding.
    slots: HashMap<IndexKey, Slot, RandomState>,
    order: BTreeSet<IndexKey>,
}

impl Index {
    /// From `entries` in key order (a checkpoint): the ordered set is built in one pass.
    pub fn from_sorted<'a>(entries: impl IntoIterator<Item = (&'a [u8], Slot)>) -> Index {
        let entries = entries.into_iter();
        // Sized once: growing the table by doubling rehashed every key several times.
        let mut slots =
            HashMap::with_capacity_and_hasher(entries.size_hint().0, RandomState::new());
        let order = entries
            .map(|(key, slot)| {
                let key = IndexKey::from_slice(key);
                slots.insert(key.clone(), slot);
                key
            })
            .collect();
        Index { slots, order }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.slots.get(key)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Slot> {
        self.slots.get_mut(key)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.slots.contains_key(key)
    }

    /// Sets `key`'s slot; returns the one it replaced.
    pub fn insert(&mut self, key: &[u8], slot: Slot) -> Option<Slot> {
        // A live server mostly overwrites keys it has: changed in place, no key built.
        if let Some(old) = self.slots.get_mut(key) {
            return Some(std::mem::replace(old, slot));
        }
        let key = IndexKey::from_slice(key);
        self.order.insert(key.clone());
        self.slots.insert(key, slot);
        None
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.order.remove(key);
        Some(slot)
    }

    /// Every key and slot, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.order.iter().map(|key| (&key[..], &self.slots[key]))
    }

    /// Keys from `start` on, in key order, with their slots.
    pub fn range_from<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a Slot)> + 'a {
        self.order
            .range::<[u8], _>((start, Bound::Unbounded))
            .map(|key| (&key[..], &self.slots[key]))
    }

    /// Every key and slot, in no particular order (cheaper than `iter`).
    pub fn unordered(&self) -> hash_map::Iter<'_, IndexKey, Slot> {
        self.slots.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Location;

    fn slot(seq: u64) -> Slot {
        Slot {
            location: Location {
                file: 1,
                value_offset: seq as u32,
                value_len: 1,
            },
            seq,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn the_map_and_the_order_agree_through_inserts_overwrites_and_removes() {
        let mut index = Index::default();
        for (seq, key) in [b"b".as_slice(), b"a", b"a-long-key-beyond-16-bytes", b"c"]
            .into_iter()
            .enumerate()
        {
            assert_eq!(index.insert(key, slot(seq as u64)), None);
        }
        assert_eq!(index.insert(b"b", slot(9)), Some(slot(0)), "an overwrite");
        assert_eq!(index.remove(b"c"), Some(slot(3)));
        assert_eq!(index.remove(b"c"), None);
        assert_eq!(index.len(), 3);
        let ordered: Vec<(&[u8], u64)> = index.iter().map(|(k, s)| (k, s.seq)).collect();
        assert_eq!(
            ordered,
            [
                (b"a".as_slice(), 1),
                (b"a-long-key-beyond-16-bytes", 2),
                (b"b", 9)
            ]
        );
        let after_a: Vec<&[u8]> = index
            .range_from(Bound::Excluded(b"a"))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after_a, [b"a-long-key-beyond-16-bytes".as_slice(), b"b"]);
        let rebuilt = Index::from_sorted(index.iter().map(|(k, s)| (k, *s)));
        assert_eq!(rebuilt.len(), 3);
        assert_eq!(rebuilt.get(b"b"), Some(&slot(9)));
        assert!(rebuilt.contains(b"a") && !rebuilt.contains(b"c"));
    }
}

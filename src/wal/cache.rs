//! A bounded cache of values read from the log, keyed by where they live.
//!
//! The log is append-only: the bytes at a location never change, so an entry never goes stale.
//! (Compaction, when it comes, must drop the entries of the segments it deletes.) Eviction is
//! CLOCK: an entry read since the hand last passed gets a second chance. Only values up to
//! `VALUE_CACHE_ENTRY_BYTES_MAX` are kept, so large values stream from the page cache instead.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::Location;
use crate::int_hash::IntHasher;
use crate::limits::VALUE_CACHE_ENTRY_BYTES_MAX;

type Key = (u32, u32);

struct Entry {
    value: Bytes,
    referenced: bool,
}

pub struct ValueCache {
    // Keyed by locations this process made, never by input an attacker picks.
    entries: HashMap<Key, Entry, IntHasher>,
    /// The clock: keys in insertion order, the hand at the front.
    clock: VecDeque<Key>,
    bytes: usize,
    bytes_max: usize,
    pub hits: u64,
    pub misses: u64,
}

impl ValueCache {
    pub fn new(bytes_max: usize) -> ValueCache {
        ValueCache {
            entries: HashMap::default(),
            clock: VecDeque::new(),
            bytes: 0,
            bytes_max,
            hits: 0,
            misses: 0,
        }
    }

    fn key(location: Location) -> Key {
        (location.file, location.value_offset)
    }

    pub fn get(&mut self, location: Location) -> Option<Bytes> {
        match self.entries.get_mut(&Self::key(location)) {
            Some(entry) => {
                entry.referenced = true;
                self.hits += 1;
                Some(entry.value.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Hands the cached value at `location` to `read` in place: a reply copies it straight
    /// into the send buffer, with no reference count touched (a cache miss of its own).
    pub fn read<R>(&mut self, location: Location, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self.entries.get_mut(&Self::key(location)) {
            Some(entry) => {
                entry.referenced = true;
                self.hits += 1;
                Some(read(&entry.value))
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn contains(&self, location: Location) -> bool {
        self.entries.contains_key(&Self::key(location))
    }

    pub fn insert(&mut self, location: Location, value: Bytes) {
        let cost = value.len() + std::mem::size_of::<(Key, Entry)>();
        if value.len() > VALUE_CACHE_ENTRY_BYTES_MAX || cost > self.bytes_max {
            return;
        }
        let key = Self::key(location);
        if self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + cost > self.bytes_max {
            let Some(hand) = self.clock.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&hand) else {
                continue;
            };
            if entry.referenced {
                entry.referenced = false;
                self.clock.push_back(hand);
            } else {
                let entry = self.entries.remove(&hand).expect("present");
                self.bytes -= entry.value.len() + std::mem::size_of::<(Key, Entry)>();
            }
        }
        self.bytes += cost;
        self.entries.insert(
            key,
            Entry {
                value,
                referenced: false,
            },
        );
        self.clock.push_back(key);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u32) -> Location {
        Location {
            file: 1,
            value_offset: offset,
            value_len: 10,
        }
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_read() {
        let entry = std::mem::size_of::<(Key, Entry)>();
        let mut cache = ValueCache::new(3 * (entry + 10));
        for offset in 0..3 {
            cache.insert(at(offset), Bytes::from(vec![offset as u8; 10]));
        }
        assert_eq!(cache.get(at(0)).unwrap()[0], 0); // read: a second chance
        cache.insert(at(3), Bytes::from(vec![3; 10]));
        assert!(cache.bytes() <= 3 * (entry + 10));
        assert!(cache.get(at(0)).is_some(), "the read entry survived");
        assert!(cache.get(at(1)).is_none(), "the oldest unread entry went");
        assert!(cache.get(at(3)).is_some());
        cache.insert(at(9), Bytes::from(vec![0; VALUE_CACHE_ENTRY_BYTES_MAX + 1]));
        assert!(cache.get(at(9)).is_none(), "too large to cache");
        let mut off = ValueCache::new(0);
        off.insert(at(1), Bytes::from_static(b"x"));
        assert!(off.get(at(1)).is_none(), "a zero budget caches nothing");
    }
}

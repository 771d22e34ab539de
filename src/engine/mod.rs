//! The store's state and its rules of visibility and order. Pure: no I/O, and no clock of its
//! own (the caller advances `now_ms` with `tick`).
//!
//! - The **index** maps each key to where its value lives in the log, the seq of the last
//!   record that changed the key, and when it expires, for durable writes only: a read never
//!   sees what a crash could take back.
//! - **Pending** writes (accepted, not yet durable) are remembered per key as the key's newest
//!   state, so that writes decide against it: a DEL right after an unacknowledged SET finds it.
//! - The **open batch** is the encoded records waiting for the next write + fdatasync.
//! - **Expiry**: a key whose `expires_at_ms` has passed is invisible at once, to reads and to
//!   the decisions of writes, though its record is still in the index; the leader removes it
//!   by writing an `Expired` record (`expiry.rs`), so followers, watchers and compaction see
//!   the same removal.
//!
//! The engine never sees sockets or files: the server takes batches from it, makes them
//! durable through the log, and hands them back with `apply_durable`. Writes that need a
//! durable value's bytes (INCRBY, MGET, a TXN comparing values) get them through a `Values`
//! reader the caller passes in.

pub mod batch;
pub mod change;
pub mod counter;
pub mod expire_rules;
pub mod expiry;
pub mod raft;
pub mod staging;
pub mod txn;
pub mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use smallvec::SmallVec;

pub use batch::Batch;
pub use expire_rules::ExpireCondition;
pub use write::{Condition, ExpireOutcome, SetOptions, SetOutcome, TxnCompare, TxnOp, TxnOutcome};

use crate::int_hash::IntHasher;
use crate::wal::record::{self, Op, Record};
use crate::wal::Location;

/// A key in the index: up to 16 bytes inline in the tree's node (24 bytes in all), longer ones
/// on the heap. A search compares keys without a pointer chase (a cache miss per comparison
/// at millions of keys) and a short key costs no allocation of its own.
type IndexKey = SmallVec<[u8; 16]>;

/// A durable key: where its value is, the seq of the last record that changed it (its SET,
/// or a later EXPIRE), and when it expires (unix ms; 0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub location: Location,
    pub seq: u64,
    pub expires_at_ms: u64,
}

impl Slot {
    fn expired(&self, now_ms: u64) -> bool {
        is_expired(self.expires_at_ms, now_ms)
    }
}

/// Whether an expiry of `expires_at_ms` (0: never) has passed at `now_ms`.
pub fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && expires_at_ms <= now_ms
}

/// A key's newest state as a pending write left it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PendingState {
    /// Deleted or expired.
    Absent,
    /// Set to `value` (by a SET, or by an EXPIRE over a pending SET).
    Value { value: Bytes, expires_at_ms: u64 },
    /// An EXPIRE over the durable value at `location`.
    Durable {
        location: Location,
        expires_at_ms: u64,
    },
}

impl PendingState {
    /// The key's state as reads and writes observe it, left by the pending record `seq` (the
    /// key's seq, and what a reply based on it waits for); expired is absent.
    fn current(&self, seq: u64, now_ms: u64) -> Current {
        let after_seq = seq;
        match self {
            PendingState::Absent => Current::Absent { after_seq },
            PendingState::Value { expires_at_ms, .. }
            | PendingState::Durable { expires_at_ms, .. }
                if is_expired(*expires_at_ms, now_ms) =>
            {
                Current::Absent { after_seq }
            }
            PendingState::Value {
                value,
                expires_at_ms,
            } => Current::Value {
                value: value.clone(),
                seq,
                expires_at_ms: *expires_at_ms,
                after_seq,
            },
            PendingState::Durable {
                location,
                expires_at_ms,
            } => Current::Stored {
                location: *location,
                seq,
                expires_at_ms: *expires_at_ms,
                after_seq,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingWrite {
    seq: u64,
    state: PendingState,
    /// The value was made here (a counter, an append) and will be read again soon: once
    /// durable, its copy goes to the value cache rather than being read back from the log.
    keep_cached: bool,
}

/// A key's newest state, pending writes included, as writes decide against it and reads
/// observe it. `after_seq` is the pending write that made it (0: the durable state), which a
/// reply based on it must wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    Absent {
        after_seq: u64,
    },
    /// The value is in memory (a pending SET).
    Value {
        value: Bytes,
        seq: u64,
        expires_at_ms: u64,
        after_seq: u64,
    },
    /// The value is in the log at `location`.
    Stored {
        location: Location,
        seq: u64,
        expires_at_ms: u64,
        after_seq: u64,
    },
}

impl Current {
    pub fn exists(&self) -> bool {
        !matches!(self, Current::Absent { .. })
    }

    /// The seq of the last write that changed the key; 0 if it does not exist.
    pub fn seq(&self) -> u64 {
        match self {
            Current::Absent { .. } => 0,
            Current::Value { seq, .. } | Current::Stored { seq, .. } => *seq,
        }
    }

    pub fn expires_at_ms(&self) -> u64 {
        match self {
            Current::Absent { .. } => 0,
            Current::Value { expires_at_ms, .. } | Current::Stored { expires_at_ms, .. } => {
                *expires_at_ms
            }
        }
    }

    pub fn after_seq(&self) -> u64 {
        match self {
            Current::Absent { after_seq }
            | Current::Value { after_seq, .. }
            | Current::Stored { after_seq, .. } => *after_seq,
        }
    }
}

/// What a DEL decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// A tombstone was written with this seq.
    Written { seq: u64 },
    /// The key does not exist; the answer may be given once `after_seq` is durable (it is
    /// the pending DEL that removed the key, or 0).
    NotFound { after_seq: u64 },
}

/// Writes are refused after a failed write or fsync of the log, until a restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("writes are refused since a log write failed ({0}); reads go on; restart kvsd once the disk is fixed")]
pub struct WriteFailed(pub String);

/// Reads a durable value's bytes from the log (the server's value cache, or a read of the
/// file); the error is a message for the client.
pub type Values<'a> = dyn FnMut(Location) -> Result<Bytes, String> + 'a;

pub struct Engine {
    index: BTreeMap<IndexKey, Slot>,
    /// The durable keys that have an expiry, by when: active expiry takes the earliest.
    deadlines: BTreeSet<(u64, IndexKey)>,
    /// Bytes of the records the index points at, per log file: the rest of a file is garbage
    /// that compaction can reclaim.
    live_bytes: HashMap<u32, u64, IntHasher>,
    /// Keys with a write accepted but not yet durable; a short key inline, so a SET allocates
    /// nothing here (a boxed key was a malloc and a free per SET).
    pending: HashMap<IndexKey, PendingWrite>,
    open: Batch,
    /// The newest seq accepted into a batch, and that record's CRC: together they name the
    /// end of this log's history (a follower's handshake carries them).
    last_seq: u64,
    last_crc: u32,
    /// The newest seq made durable (or, under a relaxed fsync policy, written).
    durable_seq: u64,
    term: u64,
    write_failed: Option<WriteFailed>,
    /// The caller's clock, unix ms: what expiry is judged against.
    now_ms: u64,
    /// Writes gathered for one Txn record (MULTI/EXEC), while staging (`staging.rs`).
    staged: Option<staging::Staged>,
    /// Values made durable that the value cache should hold (`keep_cached`), for the
    /// committer to hand to the log's cache.
    to_cache: Vec<(Location, Bytes)>,
    /// A Raft node's side of the engine (`raft.rs`): whether it leads, the seq its open batch
    /// will have, and the points where its pending writes were abandoned.
    raft: raft::RaftState,
}

impl Engine {
    /// An engine whose log ends at `last_seq`, all of it durable.
    pub fn new(last_seq: u64) -> Engine {
        Engine {
            index: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            live_bytes: HashMap::default(),
            pending: HashMap::new(),
            open: Batch::default(),
            last_seq,
            last_crc: 0,
            durable_seq: last_seq,
            term: 0,
            write_failed: None,
            now_ms: 0,
            staged: None,
            to_cache: Vec::new(),
            raft: Default::default(),
        }
    }

    /// Advances the clock that expiry is judged by (unix ms). It never moves back: a clock
    /// stepped back does not bring expired keys back to life.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Recovery: a record read back from the log is durable by definition. `location` is
    /// where the record's value is. Every kind of record format 2 applies (Raft's `Blank` and
    /// `Membership` change no key); the `Result` is for kinds a newer kvsd may add.
    pub fn recover(&mut self, record: &Record<'_>, location: Location) -> Result<(), String> {
        for change in change::changes(record) {
            let at = Location {
                file: location.file,
                value_offset: location.value_offset + change.value_offset,
                value_len: change.value_len,
            };
            let key = change.key(record);
            self.apply(change.op, key, record.seq, change.expires_at_ms, at);
        }
        Ok(())
    }

    /// A durable change joins the index.
    fn apply(&mut self, op: Op, key: &[u8], seq: u64, expires_at_ms: u64, location: Location) {
        match op {
            Op::Set => {
                let new = Slot {
                    location,
                    seq,
                    expires_at_ms,
                };
                // A live server mostly overwrites keys it has: found and changed in place,
                // with no key built and dropped.
                let old = match self.index.get_mut(key) {
                    Some(slot) => Some(std::mem::replace(slot, new)),
                    None => self.index.insert(IndexKey::from_slice(key), new),
                };
                if let Some(old) = old {
                    self.count_live(old.location, key.len(), false);
                    self.move_deadline(key, old.expires_at_ms, expires_at_ms);
                } else {
                    self.move_deadline(key, 0, expires_at_ms);
                }
                self.count_live(location, key.len(), true);
            }
            Op::Del | Op::Expired => {
                if let Some(old) = self.index.remove(key) {
                    self.count_live(old.location, key.len(), false);
                    self.move_deadline(key, old.expires_at_ms, 0);
                }
            }
            Op::ExpireAt => {
                if let Some(slot) = self.index.get_mut(key) {
                    let old = slot.expires_at_ms;
                    slot.expires_at_ms = expires_at_ms;
                    slot.seq = seq;
                    self.move_deadline(key, old, expires_at_ms);
                }
            }
            // Records without a key change no key (a Txn's changes come one by one).
            _ => {}
        }
    }

    fn move_deadline(&mut self, key: &[u8], old: u64, new: u64) {
        if old == new {
            return;
        }
        if old != 0 {
            self.deadlines.remove(&(old, IndexKey::from_slice(key)));
        }
        if new != 0 {
            self.deadlines.insert((new, IndexKey::from_slice(key)));
        }
    }

    /// Start-up from an index checkpoint: `entries` in key order (one pass, no searching).
    pub fn load_index<'a>(&mut self, entries: impl IntoIterator<Item = (&'a [u8], Slot)>) {
        self.index = entries
            .into_iter()
            .map(|(key, slot)| (IndexKey::from_slice(key), slot))
            .collect();
        self.live_bytes.clear();
        self.deadlines.clear();
        for (key, slot) in &self.index {
            *self.live_bytes.entry(slot.location.file).or_default() +=
                record_bytes(key.len(), slot.location);
            if slot.expires_at_ms != 0 {
                self.deadlines.insert((slot.expires_at_ms, key.clone()));
            }
        }
    }

    /// The index in key order, for a checkpoint.
    pub fn index_entries(&self) -> impl Iterator<Item = (&[u8], Slot)> {
        self.index.iter().map(|(key, slot)| (&key[..], *slot))
    }

    fn count_live(&mut self, location: Location, key_len: usize, add: bool) {
        let bytes = record_bytes(key_len, location);
        let live = self.live_bytes.entry(location.file).or_default();
        if add {
            *live += bytes;
        } else {
            *live = live.saturating_sub(bytes);
            if *live == 0 {
                self.live_bytes.remove(&location.file);
            }
        }
    }

    /// Bytes of live records in log file `file`.
    pub fn live_bytes(&self, file: u32) -> u64 {
        self.live_bytes.get(&file).copied().unwrap_or(0)
    }

    /// Whether the index points at `location` for `key`: the record there is live.
    pub fn is_live(&self, key: &[u8], location: Location) -> bool {
        self.index
            .get(key)
            .is_some_and(|slot| slot.location == location)
    }

    /// Whether the record with `seq` is the last that changed `key` (an EXPIRE that
    /// compaction must keep).
    pub fn is_last_change(&self, key: &[u8], seq: u64) -> bool {
        self.index.get(key).is_some_and(|slot| slot.seq == seq)
    }

    /// Whether `key` is in the index (expired or not).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// Compaction copied `key`'s record from `from` to `to`: points the index there, unless a
    /// newer write moved it meanwhile. Returns whether it moved.
    pub fn relocate(&mut self, key: &[u8], from: Location, to: Location) -> bool {
        match self.index.get_mut(key) {
            Some(slot) if slot.location == from => {
                slot.location = to;
                self.count_live(from, key.len(), false);
                self.count_live(to, key.len(), true);
                true
            }
            _ => false,
        }
    }

    /// Recovery is over: the log ended at `last_seq`, all of it durable.
    pub fn recovered(&mut self, last_seq: u64, last_crc: u32) {
        self.last_seq = last_seq;
        self.last_crc = last_crc;
        self.durable_seq = last_seq;
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The CRC of the record with `last_seq` (0 for an empty log).
    pub fn last_crc(&self) -> u32 {
        self.last_crc
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Keys in the index, expired ones not yet removed included.
    pub fn key_count(&self) -> usize {
        self.index.len()
    }

    /// Keys in the newest state (pending writes included, staged ones not), expired ones not
    /// yet removed included: the index's count corrected by the pending writes, so O(pending
    /// keys), not a walk over every key.
    pub fn key_count_newest(&self) -> usize {
        let mut count = self.index.len();
        for (key, write) in &self.pending {
            let durable = self.index.contains_key(key.as_ref());
            let newest = !matches!(write.state, PendingState::Absent);
            match (durable, newest) {
                (false, true) => count += 1,
                (true, false) => count -= 1,
                _ => {}
            }
        }
        count
    }

    /// Keys with an expiry, in the index.
    pub fn expiring_key_count(&self) -> usize {
        self.deadlines.len()
    }

    pub fn write_failed(&self) -> Option<&WriteFailed> {
        self.write_failed.as_ref()
    }

    /// The durable location of `key`'s value, unless it has expired.
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        self.slot(key).map(|slot| slot.location)
    }

    /// The durable state of `key`, unless it has expired.
    pub fn slot(&self, key: &[u8]) -> Option<Slot> {
        self.index
            .get(key)
            .filter(|slot| !slot.expired(self.now_ms))
            .copied()
    }

    /// Durable, unexpired keys starting with `prefix`, after `start_after` if given, in order.
    pub fn keys<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let now_ms = self.now_ms;
        self.index
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .filter(move |(_, slot)| !slot.expired(now_ms))
            .map(|(key, _)| &key[..])
    }

    /// Accepts a plain SET (no expiry, no condition) into the open batch; returns its seq.
    pub fn set(&mut self, key: &[u8], value: Bytes) -> Result<u64, WriteFailed> {
        self.write(Op::Set, key, value, 0)
    }

    /// The write of `key` at `seq` made its value here (a counter, an append): once durable, the
    /// value goes to the value cache (`take_to_cache`), so the next such write of the key does
    /// not read it back from the log.
    pub fn keep_cached(&mut self, key: &[u8], seq: u64) {
        if let Some(pending) = self.pending.get_mut(key).filter(|p| p.seq == seq) {
            pending.keep_cached = true;
        }
    }

    /// The durable values `keep_cached` asked for since the last call, with where they are.
    pub fn take_to_cache(&mut self) -> Vec<(Location, Bytes)> {
        std::mem::take(&mut self.to_cache)
    }

    /// The newest state of `key`, pending writes included; an expired key is absent.
    pub fn current(&self, key: &[u8]) -> Current {
        if let Some(current) = self.current_staged(key) {
            return current;
        }
        match self.pending.get(key) {
            Some(pending) => pending.state.current(pending.seq, self.now_ms),
            None => match self.slot(key) {
                Some(slot) => Current::Stored {
                    location: slot.location,
                    seq: slot.seq,
                    expires_at_ms: slot.expires_at_ms,
                    after_seq: 0,
                },
                None => Current::Absent { after_seq: 0 },
            },
        }
    }

    /// Keys starting with `prefix` (after `start_after`) in the newest state, pending writes
    /// included, in order, until `visit` returns false.
    pub fn keys_newest(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        mut visit: impl FnMut(&[u8]) -> bool,
    ) {
        let after = |key: &[u8]| start_after.is_none_or(|after| key > after);
        let now_ms = self.now_ms;
        let exists = |state: &PendingState| match state {
            PendingState::Absent => false,
            PendingState::Value { expires_at_ms, .. }
            | PendingState::Durable { expires_at_ms, .. } => !is_expired(*expires_at_ms, now_ms),
        };
        let mut pending: Vec<(&[u8], bool)> = self
            .pending
            .iter()
            .filter(|(key, _)| key.starts_with(prefix) && after(key))
            .map(|(key, write)| (&key[..], exists(&write.state)))
            .collect();
        if let Some(staged) = &self.staged {
            // Inside a transaction its own writes come first.
            pending.retain(|(key, _)| !staged.overlay.contains_key(*key));
            let overlay = staged.overlay.iter();
            pending.extend(
                overlay
                    .filter(|(key, _)| key.starts_with(prefix) && after(key))
                    .map(|(key, state)| (&key[..], exists(state))),
            );
        }
        pending.sort_unstable();
        let mut pending = pending.into_iter().peekable();
        let mut durable = self.keys(prefix, start_after).peekable();
        loop {
            let take_pending = match (durable.peek(), pending.peek()) {
                (None, None) => return,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(d), Some((p, _))) => p <= d,
            };
            let (key, exists) = if take_pending {
                let (key, exists) = pending.next().expect("peeked");
                if durable.peek() == Some(&key) {
                    durable.next();
                }
                (key, exists)
            } else {
                (durable.next().expect("peeked"), true)
            };
            if exists && !visit(key) {
                return;
            }
        }
    }

    /// Decides a DEL against the newest state, pending writes included.
    pub fn del(&mut self, key: &[u8]) -> Result<Deleted, WriteFailed> {
        self.check_writable()?;
        match self.current(key) {
            Current::Absent { after_seq } => Ok(Deleted::NotFound { after_seq }),
            _ => self
                .write(Op::Del, key, Bytes::new(), 0)
                .map(|seq| Deleted::Written { seq }),
        }
    }

    fn check_writable(&self) -> Result<(), WriteFailed> {
        match &self.write_failed {
            Some(failed) => Err(failed.clone()),
            None => Ok(()),
        }
    }

    fn write(
        &mut self,
        op: Op,
        key: &[u8],
        value: Bytes,
        expires_at_ms: u64,
    ) -> Result<u64, WriteFailed> {
        self.check_writable()?;
        if self.staged.is_some() {
            return Ok(self.stage(op, key, &value, expires_at_ms));
        }
        let seq = self.next_seq();
        let term = self.term;
        self.push(
            &Record {
                seq,
                term,
                op,
                expires_at_ms,
                key,
                value: &value,
            },
            value.clone(),
        );
        Ok(seq)
    }

    /// A follower takes a record of its leader's log as it is, seq and all; `value` holds the
    /// same bytes as `record.value`.
    pub fn append_replicated(&mut self, record: &Record<'_>, value: Bytes) -> Result<(), String> {
        if let Some(failed) = &self.write_failed {
            return Err(failed.to_string());
        }
        if record.seq != self.last_seq + 1 {
            return Err(format!(
                "record seq {} where {} was due",
                record.seq,
                self.last_seq + 1
            ));
        }
        self.push(record, value);
        Ok(())
    }

    /// Puts `record` in the open batch and makes each key it changes pending with its new
    /// state. `value` holds the same bytes as `record.value` (shared, not copied, by the
    /// pending values that come from it).
    fn push(&mut self, record: &Record<'_>, value: Bytes) {
        let seq = record.seq;
        for change in change::changes(record) {
            let key = change.key(record);
            let change_value = || {
                let start = change.value_offset as usize;
                value.slice(start..start + change.value_len as usize)
            };
            let state = match change.op {
                Op::Set => PendingState::Value {
                    value: change_value(),
                    expires_at_ms: change.expires_at_ms,
                },
                Op::Del | Op::Expired => PendingState::Absent,
                Op::ExpireAt => match self.current_unexpired_or_not(key) {
                    Some(Ok(value)) => PendingState::Value {
                        value,
                        expires_at_ms: change.expires_at_ms,
                    },
                    Some(Err(location)) => PendingState::Durable {
                        location,
                        expires_at_ms: change.expires_at_ms,
                    },
                    None => PendingState::Absent,
                },
                _ => continue,
            };
            let write = PendingWrite {
                seq,
                state,
                keep_cached: false,
            };
            match self.pending.get_mut(key) {
                Some(pending) => *pending = write,
                None => {
                    self.pending.insert(IndexKey::from_slice(key), write);
                }
            }
        }
        self.last_crc = self.open.push(record);
        self.last_seq = seq;
    }

    /// The key's newest value, in memory (Ok) or in the log (Err), expired or not: what an
    /// EXPIRE record keeps.
    fn current_unexpired_or_not(&self, key: &[u8]) -> Option<Result<Bytes, Location>> {
        if let Some(state) = self.staged.as_ref().and_then(|s| s.overlay.get(key)) {
            return match state {
                PendingState::Absent => None,
                PendingState::Value { value, .. } => Some(Ok(value.clone())),
                PendingState::Durable { location, .. } => Some(Err(*location)),
            };
        }
        match self.pending.get(key) {
            Some(pending) => match &pending.state {
                PendingState::Absent => None,
                PendingState::Value { value, .. } => Some(Ok(value.clone())),
                PendingState::Durable { location, .. } => Some(Err(*location)),
            },
            None => self.index.get(key).map(|slot| Err(slot.location)),
        }
    }

    /// Bytes waiting in the open batch.
    pub fn open_batch_bytes(&self) -> usize {
        self.open.bytes()
    }

    /// Takes the open batch for writing, leaving `spare` (an emptied earlier batch, to reuse
    /// its memory) open in its place. None if nothing waits.
    pub fn take_batch(&mut self, spare: Batch) -> Result<Batch, Batch> {
        if self.open.is_empty() {
            return Err(spare);
        }
        self.raft.batch_taken();
        Ok(std::mem::replace(&mut self.open, spare))
    }

    /// The batch is durable in log file `file`, starting at `offset`: its writes become visible.
    pub fn apply_durable(&mut self, batch: &Batch, file: u32, offset: u64) {
        for entry in batch.entries() {
            let key = batch.key(entry);
            let location = Location {
                file,
                value_offset: u32::try_from(offset + entry.value_offset as u64)
                    .expect("segment offsets fit u32"),
                value_len: entry.value_len,
            };
            if let Some(pending) = self.pending.get(key) {
                if pending.seq == entry.seq {
                    let pending = self.pending.remove(key).expect("just found");
                    if let (true, PendingState::Value { value, .. }) =
                        (pending.keep_cached, pending.state)
                    {
                        self.to_cache.push((location, value));
                    }
                }
            }
            self.apply(entry.op, key, entry.seq, entry.expires_at_ms, location);
        }
        if let Some(last) = batch.last_seq() {
            self.durable_seq = last;
        }
    }

    /// A write or fsync of the log failed: nothing pending will ever become durable in this
    /// process, and no further write is accepted.
    pub fn fail(&mut self, error: String) {
        self.write_failed.get_or_insert(WriteFailed(error));
        self.open.clear();
        self.pending.clear();
    }
}

/// Bytes on disk of the SET record whose value is at `location`.
fn record_bytes(key_len: usize, location: Location) -> u64 {
    (record::HEADER_BYTES + key_len) as u64 + location.value_len as u64
}

#[cfg(test)]
mod tests;

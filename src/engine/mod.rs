//! The store's state and its rules of visibility and order. Pure: no I/O.
//!
//! - The **index** maps each key to where its value lives in the log, for durable writes only:
//!   a read never sees what a crash could take back.
//! - **Pending** writes (accepted, not yet durable) are remembered per key so that writes
//!   decide against the newest state: a DEL right after an unacknowledged SET finds it.
//! - The **open batch** is the encoded records waiting for the next write + fdatasync.
//!
//! The engine never sees sockets or files: the server takes batches from it, makes them
//! durable through the log, and hands them back with `apply_durable`.

pub mod batch;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use smallvec::SmallVec;

pub use batch::Batch;

use crate::int_hash::IntHasher;
use crate::wal::record::{self, Op, Record};
use crate::wal::Location;

/// A key in the index: up to 16 bytes inline in the tree's node (24 bytes in all), longer ones
/// on the heap. A search compares keys without a pointer chase (a cache miss per comparison
/// at millions of keys) and a short key costs no allocation of its own.
type IndexKey = SmallVec<[u8; 16]>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingWrite {
    seq: u64,
    op: Op,
    /// The value of a pending SET, so a read that comes after it on the same connection can be
    /// answered with it (once durable) even if later writes replace it before then.
    value: Bytes,
}

/// What a read sees of a key at the moment it is accepted: the newest state. Its reply may go
/// only once that state is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A pending write (`seq`): its value, or None for a DEL.
    Pending { seq: u64, value: Option<Bytes> },
    /// No pending write: the durable value's location, if any.
    Durable(Option<Location>),
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

pub struct Engine {
    index: BTreeMap<IndexKey, Location>,
    /// Bytes of the records the index points at, per log file: the rest of a file is garbage
    /// that compaction can reclaim.
    live_bytes: HashMap<u32, u64, IntHasher>,
    pending: HashMap<Box<[u8]>, PendingWrite>,
    open: Batch,
    /// The newest seq accepted into a batch, and that record's CRC: together they name the
    /// end of this log's history (a follower's handshake carries them).
    last_seq: u64,
    last_crc: u32,
    /// The newest seq made durable (or, under a relaxed fsync policy, written).
    durable_seq: u64,
    term: u64,
    write_failed: Option<WriteFailed>,
}

impl Engine {
    /// An engine whose log ends at `last_seq`, all of it durable.
    pub fn new(last_seq: u64) -> Engine {
        Engine {
            index: BTreeMap::new(),
            live_bytes: HashMap::default(),
            pending: HashMap::new(),
            open: Batch::default(),
            last_seq,
            last_crc: 0,
            durable_seq: last_seq,
            term: 0,
            write_failed: None,
        }
    }

    /// Recovery: a record read back from the log is durable by definition. Refuses a kind
    /// this kvsd cannot apply (written by a newer one), naming it.
    pub fn recover(&mut self, op: Op, key: &[u8], location: Location) -> Result<(), String> {
        match op {
            // One search; an inline key costs no allocation even when it is already there.
            Op::Set => self.index_insert(key, location),
            Op::Del | Op::Expired => self.index_remove(key),
            // Not key data: the cluster's business (issue 11).
            Op::Blank | Op::Membership => {}
            Op::ExpireAt | Op::Txn => return Err(unsupported(op)),
        }
        Ok(())
    }

    fn index_insert(&mut self, key: &[u8], location: Location) {
        if let Some(old) = self.index.insert(IndexKey::from_slice(key), location) {
            self.count_live(old, key.len(), false);
        }
        self.count_live(location, key.len(), true);
    }

    fn index_remove(&mut self, key: &[u8]) {
        if let Some(old) = self.index.remove(key) {
            self.count_live(old, key.len(), false);
        }
    }

    /// A durable write joins the index. Unlike recovery (mostly new keys: one insert), a live
    /// server mostly overwrites keys it has: those are found and changed in place, with no key
    /// built and dropped.
    fn apply(&mut self, op: Op, key: &[u8], location: Location) {
        match op {
            Op::Set => match self.index.get_mut(key) {
                Some(slot) => {
                    let old = std::mem::replace(slot, location);
                    self.count_live(old, key.len(), false);
                    self.count_live(location, key.len(), true);
                }
                None => self.index_insert(key, location),
            },
            Op::Del | Op::Expired => self.index_remove(key),
            // Never in a batch: `append_replicated` refuses them, and this engine writes none.
            Op::Blank | Op::Membership | Op::ExpireAt | Op::Txn => {}
        }
    }

    pub fn load_index<'a>(&mut self, entries: impl IntoIterator<Item = (&'a [u8], Location)>) {
        self.index = entries
            .into_iter()
            .map(|(key, location)| (IndexKey::from_slice(key), location))
            .collect();
        self.live_bytes.clear();
        for (key, location) in &self.index {
            *self.live_bytes.entry(location.file).or_default() +=
                record_bytes(key.len(), *location);
        }
    }

    /// The index in key order, for a checkpoint.
    pub fn index_entries(&self) -> impl Iterator<Item = (&[u8], Location)> {
        self.index
            .iter()
            .map(|(key, location)| (&key[..], *location))
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
        self.index.get(key) == Some(&location)
    }

    /// Whether `key` exists durably.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// Compaction copied `key`'s record from `from` to `to`: points the index there, unless a
    /// newer write moved it meanwhile. Returns whether it moved.
    pub fn relocate(&mut self, key: &[u8], from: Location, to: Location) -> bool {
        match self.index.get_mut(key) {
            Some(slot) if *slot == from => {
                *slot = to;
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

    pub fn key_count(&self) -> usize {
        self.index.len()
    }

    pub fn write_failed(&self) -> Option<&WriteFailed> {
        self.write_failed.as_ref()
    }

    /// The durable location of `key`'s value.
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        self.index.get(key).copied()
    }

    /// Durable keys starting with `prefix`, after `start_after` if given, in order.
    pub fn keys<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.index
            .range::<[u8], _>((start, Bound::Unbounded))
            .map(|(key, _)| &key[..])
            .take_while(move |key| key.starts_with(prefix))
    }

    /// Accepts a SET into the open batch; returns its seq.
    pub fn set(&mut self, key: &[u8], value: Bytes) -> Result<u64, WriteFailed> {
        self.write(Op::Set, key, value)
    }

    /// The newest state of `key`, pending writes included.
    pub fn observe(&self, key: &[u8]) -> Observed {
        match self.pending.get(key) {
            Some(pending) => Observed::Pending {
                seq: pending.seq,
                value: (pending.op == Op::Set).then(|| pending.value.clone()),
            },
            None => Observed::Durable(self.index.get(key).copied()),
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
        let mut pending: Vec<(&[u8], bool)> = self
            .pending
            .iter()
            .filter(|(key, _)| key.starts_with(prefix) && after(key))
            .map(|(key, write)| (&key[..], write.op == Op::Set))
            .collect();
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
        if let Some(failed) = &self.write_failed {
            return Err(failed.clone());
        }
        let exists = match self.pending.get(key) {
            Some(PendingWrite { op: Op::Set, .. }) => true,
            Some(PendingWrite { seq, .. }) => return Ok(Deleted::NotFound { after_seq: *seq }),
            None => self.index.contains_key(key),
        };
        if !exists {
            return Ok(Deleted::NotFound { after_seq: 0 });
        }
        self.write(Op::Del, key, Bytes::new())
            .map(|seq| Deleted::Written { seq })
    }

    fn write(&mut self, op: Op, key: &[u8], value: Bytes) -> Result<u64, WriteFailed> {
        if let Some(failed) = &self.write_failed {
            return Err(failed.clone());
        }
        let seq = self.last_seq + 1;
        let term = self.term;
        self.push(
            &Record {
                seq,
                term,
                op,
                expires_at_ms: 0,
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
        if matches!(record.op, Op::ExpireAt | Op::Txn) {
            return Err(format!(
                "record seq {}: {}",
                record.seq,
                unsupported(record.op)
            ));
        }
        self.push(record, value);
        Ok(())
    }

    fn push(&mut self, record: &Record<'_>, value: Bytes) {
        let (seq, op, key) = (record.seq, record.op, record.key);
        self.last_crc = self.open.push(record);
        self.last_seq = seq;
        if !op.has_key() {
            return;
        }
        let write = PendingWrite { seq, op, value };
        match self.pending.get_mut(key) {
            Some(pending) => *pending = write,
            None => {
                self.pending.insert(key.into(), write);
            }
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
        Ok(std::mem::replace(&mut self.open, spare))
    }

    /// The batch is durable in log file `file`, starting at `offset`: its writes become visible.
    pub fn apply_durable(&mut self, batch: &Batch, file: u32, offset: u64) {
        for entry in batch.entries() {
            let key = batch.key(entry);
            if let Some(pending) = self.pending.get(key) {
                if pending.seq == entry.seq {
                    self.pending.remove(key);
                }
            }
            let location = Location {
                file,
                value_offset: u32::try_from(offset + entry.value_offset as u64)
                    .expect("segment offsets fit u32"),
                value_len: entry.value_len,
            };
            self.apply(entry.op, key, location);
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

fn unsupported(op: Op) -> String {
    format!("a {op:?} record, which this kvsd cannot apply: it was written by a newer kvsd")
}

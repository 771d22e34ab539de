//! A batch: records encoded back to back, ready to be written with one write, and the key
//! changes they make, each with where its key and value sit inside the batch.
//!
//! Which keys a record changes, and where, is `change::changes`.

use super::change::changes;
use crate::wal::record::{self, Op, Record};

/// One key changed by a record of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// `Set`, `Del`, `Expired` or `ExpireAt`.
    pub op: Op,
    pub expires_at_ms: u64,
    /// Offsets inside the batch buffer.
    pub key_offset: u32,
    pub key_len: u32,
    pub value_offset: u32,
    pub value_len: u32,
}

#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    entries: Vec<Entry>,
    records: usize,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

impl Batch {
    /// Appends `record`; returns its CRC.
    pub fn push(&mut self, record: &Record<'_>) -> u32 {
        let start = self.buf.len();
        record::encode(&mut self.buf, record);
        let crc_at = start + record::CRC_OFFSET;
        let crc = u32::from_le_bytes(self.buf[crc_at..crc_at + 4].try_into().expect("4 bytes"));
        let key_offset = start + record::KEY_OFFSET;
        let value_offset = key_offset + record.key.len();
        for change in changes(record) {
            let key_at = match change.in_value {
                true => value_offset + change.key_offset as usize,
                false => key_offset,
            };
            self.entries.push(Entry {
                seq: record.seq,
                op: change.op,
                expires_at_ms: change.expires_at_ms,
                key_offset: key_at as u32,
                key_len: change.key_len,
                value_offset: (value_offset + change.value_offset as usize) as u32,
                value_len: change.value_len,
            });
        }
        self.records += 1;
        self.first_seq.get_or_insert(record.seq);
        self.last_seq = Some(record.seq);
        crc
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn key(&self, entry: &Entry) -> &[u8] {
        &self.buf[entry.key_offset as usize..(entry.key_offset + entry.key_len) as usize]
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The encoded records (what `Entry`'s offsets point into).
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// Lends the encoded bytes out for a write (io_uring owns the buffer meanwhile).
    pub fn take_buf(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn restore_buf(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// Empties the batch, keeping its memory for the next one.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.entries.clear();
        self.records = 0;
        self.first_seq = None;
        self.last_seq = None;
    }
}

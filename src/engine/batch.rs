//! A batch: records encoded back to back, ready to be written with one write, and where each
//! one's key and value sit inside it.

use crate::wal::record::{self, Op, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub op: Op,
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
        self.entries.push(Entry {
            seq: record.seq,
            op: record.op,
            key_offset: key_offset as u32,
            key_len: record.key.len() as u32,
            value_offset: value_offset as u32,
            value_len: record.value.len() as u32,
        });
        crc
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
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
        self.entries.first().map(|e| e.seq)
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.entries.last().map(|e| e.seq)
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
    }
}

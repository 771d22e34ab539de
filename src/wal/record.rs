//! One log record.
//!
//! | offset   | size | field                                                        |
//! |----------|------|--------------------------------------------------------------|
//! | 0        | 4    | `len` u32 LE: bytes after the `crc` field (21 + klen + vlen) |
//! | 4        | 4    | `crc` u32 LE: CRC32 of bytes 0..4 (`len`) and 8..8+len      |
//! | 8        | 8    | `seq` u64 LE: +1 per write, never reused                     |
//! | 16       | 8    | `term` u64 LE: 0 for now, reserved for leader election       |
//! | 24       | 1    | `op`: 1 set, 2 delete (a tombstone: no value)                |
//! | 25       | 4    | `klen` u32 LE                                                |
//! | 29       | klen | key                                                          |
//! | 29+klen  | rest | value                                                        |
//!
//! The checksum covers the length, so a torn or flipped length is caught like any other byte.

use crate::limits::{RECORD_FIXED_BYTES, RECORD_LEN_MAX};

pub const LEN_OFFSET: usize = 0;
pub const CRC_OFFSET: usize = 4;
pub const SEQ_OFFSET: usize = 8;
pub const TERM_OFFSET: usize = 16;
pub const OP_OFFSET: usize = 24;
pub const KLEN_OFFSET: usize = 25;
pub const KEY_OFFSET: usize = 29;
/// Bytes before the key.
pub const HEADER_BYTES: usize = KEY_OFFSET;
/// The smallest and largest `len` a record can have; anything else is damage.
pub const LEN_MIN: u32 = (KEY_OFFSET - SEQ_OFFSET) as u32 + 1;
pub const LEN_MAX: u32 = RECORD_LEN_MAX;
// `limits` states the fixed part of `len` without depending on this layout: they must agree.
const _: () = assert!((KEY_OFFSET - SEQ_OFFSET) as u32 == RECORD_FIXED_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Set = 1,
    Del = 2,
}

/// A record as values, borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub term: u64,
    pub op: Op,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// What decoding learned about a record without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub term: u64,
    pub op: Op,
    pub key_len: u32,
    pub value_len: u32,
    /// The whole record's size on disk.
    pub total_bytes: usize,
    /// The record's checksum: with its seq, what identifies it across logs.
    pub crc: u32,
}

impl RecordHeader {
    pub fn value_offset(&self) -> usize {
        KEY_OFFSET + self.key_len as usize
    }
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete record: {have} of {need} bytes")]
    Incomplete { have: usize, need: usize },
    #[error("record length {len} is impossible")]
    BadLength { len: u32 },
    #[error("record checksum mismatch")]
    BadChecksum,
    #[error("record op {op} is unknown")]
    BadOp { op: u8 },
    #[error("record key length {key_len} does not fit its record")]
    BadKeyLength { key_len: u32 },
}

/// Bytes `record` takes on disk.
pub fn encoded_bytes(key_len: usize, value_len: usize) -> usize {
    HEADER_BYTES + key_len + value_len
}

/// Appends `record` to `dst`.
pub fn encode(dst: &mut Vec<u8>, record: &Record<'_>) {
    let start = dst.len();
    let len = u32::try_from(encoded_bytes(record.key.len(), record.value.len()) - SEQ_OFFSET)
        .expect("record fits u32");
    let key_len = u32::try_from(record.key.len()).expect("key fits u32");
    dst.extend_from_slice(&len.to_le_bytes());
    dst.extend_from_slice(&[0; 4]); // crc, filled in below
    dst.extend_from_slice(&record.seq.to_le_bytes());
    dst.extend_from_slice(&record.term.to_le_bytes());
    dst.push(record.op as u8);
    dst.extend_from_slice(&key_len.to_le_bytes());
    dst.extend_from_slice(record.key);
    dst.extend_from_slice(record.value);
    let crc = checksum(&dst[start..]);
    dst[start + CRC_OFFSET..start + SEQ_OFFSET].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC of a whole encoded record: its length field and everything after the crc field.
fn checksum(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[LEN_OFFSET..CRC_OFFSET]);
    hasher.update(&record[SEQ_OFFSET..]);
    hasher.finalize()
}

/// Decodes the record at the start of `buf`, verifying its checksum.
pub fn decode(buf: &[u8]) -> Result<(RecordHeader, Record<'_>), DecodeError> {
    let header = decode_header(buf)?;
    let record = &buf[..header.total_bytes];
    let key_end = header.value_offset();
    Ok((
        header,
        Record {
            seq: header.seq,
            term: header.term,
            op: header.op,
            key: &record[KEY_OFFSET..key_end],
            value: &record[key_end..],
        },
    ))
}

/// Checks the record at the start of `buf` (length, checksum, layout) and reads its header.
pub fn decode_header(buf: &[u8]) -> Result<RecordHeader, DecodeError> {
    if buf.len() < SEQ_OFFSET {
        return Err(DecodeError::Incomplete {
            have: buf.len(),
            need: SEQ_OFFSET,
        });
    }
    let len = read_u32(buf, LEN_OFFSET);
    if !(LEN_MIN..=LEN_MAX).contains(&len) {
        return Err(DecodeError::BadLength { len });
    }
    let total_bytes = SEQ_OFFSET + len as usize;
    if buf.len() < total_bytes {
        return Err(DecodeError::Incomplete {
            have: buf.len(),
            need: total_bytes,
        });
    }
    let record = &buf[..total_bytes];
    if read_u32(record, CRC_OFFSET) != checksum(record) {
        return Err(DecodeError::BadChecksum);
    }
    let op = match record[OP_OFFSET] {
        1 => Op::Set,
        2 => Op::Del,
        op => return Err(DecodeError::BadOp { op }),
    };
    let key_len = read_u32(record, KLEN_OFFSET);
    let value_len = (total_bytes - KEY_OFFSET)
        .checked_sub(key_len as usize)
        .filter(|value_len| key_len > 0 && (op == Op::Set || *value_len == 0))
        .ok_or(DecodeError::BadKeyLength { key_len })?;
    Ok(RecordHeader {
        seq: read_u64(record, SEQ_OFFSET),
        term: read_u64(record, TERM_OFFSET),
        op,
        key_len,
        value_len: value_len as u32,
        total_bytes,
        crc: read_u32(record, CRC_OFFSET),
    })
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(record: &Record<'_>) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, record);
        buf
    }

    proptest! {
        #[test]
        fn round_trip(seq: u64, term: u64, del: bool,
                      key in proptest::collection::vec(any::<u8>(), 1..64),
                      value in proptest::collection::vec(any::<u8>(), 0..256)) {
            let value = if del { &[][..] } else { &value[..] };
            let record = Record { seq, term, op: if del { Op::Del } else { Op::Set }, key: &key, value };
            let buf = encoded(&record);
            prop_assert_eq!(buf.len(), encoded_bytes(key.len(), value.len()));
            let (header, decoded) = decode(&buf).unwrap();
            prop_assert_eq!(decoded, record);
            prop_assert_eq!(header.total_bytes, buf.len());
            prop_assert_eq!(&buf[header.value_offset()..], value);
        }

        #[test]
        fn any_flipped_bit_is_caught(bit in 0usize..(8 * 40)) {
            let buf = encoded(&Record { seq: 3, term: 0, op: Op::Set, key: b"key", value: b"value!" });
            let mut bad = buf.clone();
            let bit = bit % (8 * buf.len());
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bad).is_err());
        }
    }

    #[test]
    fn every_cut_is_incomplete() {
        let buf = encoded(&Record {
            seq: 1,
            term: 0,
            op: Op::Set,
            key: b"k",
            value: b"v",
        });
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Err(DecodeError::Incomplete { .. })),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_reading_on() {
        let mut buf = vec![0xff; 8];
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&buf), Err(DecodeError::BadLength { len: u32::MAX }));
    }
}

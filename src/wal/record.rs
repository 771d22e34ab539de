//! One log record (record format 2, written in segment version 3 and later).
//!
//! | offset   | size | field                                                          |
//! |----------|------|----------------------------------------------------------------|
//! | 0        | 4    | `len` u32 LE: bytes after the `crc` field (29 + klen + vlen)   |
//! | 4        | 4    | `crc` u32 LE: CRC32 of bytes 0..4 (`len`) and 8..8+len        |
//! | 8        | 8    | `seq` u64 LE: the log index, +1 per record, never reused       |
//! | 16       | 8    | `term` u64 LE: the Raft term of the leader that wrote it, or 0 |
//! | 24       | 1    | `kind` (`Op` below)                                            |
//! | 25       | 8    | `expires_at_ms` u64 LE: unix time in ms; 0 = never             |
//! | 33       | 4    | `klen` u32 LE                                                  |
//! | 37       | klen | key                                                            |
//! | 37+klen  | rest | value                                                          |
//!
//! Every kind has this one header, so a reader finds a record's key and value the same way
//! whatever it holds; what each kind may carry is checked by [`decode_header`]:
//!
//! | kind | name         | key | value                     | expiry                |
//! |------|--------------|-----|---------------------------|-----------------------|
//! | 1    | `Set`        | yes | the value                 | when it lapses, or 0  |
//! | 2    | `Del`        | yes | none                      | 0                     |
//! | 3    | `Expired`    | yes | none                      | 0: a delete because the key's time ran out |
//! | 4    | `ExpireAt`   | yes | none                      | the key's new expiry; 0 = persist |
//! | 5    | `Blank`      | no  | none                      | 0: Raft's no-op entry |
//! | 6    | `Membership` | no  | the cluster configuration | 0                     |
//! | 7    | `Txn`        | no  | ops, below                | 0                     |
//!
//! A `Txn` record's value is ops back to back, each `op` u8 (1 set, 2 del, 4 expire_at),
//! `expires_at_ms` u64 LE, `klen` u32 LE, `vlen` u32 LE, key, value: all at the record's seq,
//! applied all or none, because one checksum covers them all.
//!
//! The checksum covers the length, so a torn or flipped length is caught like any other byte.
//! Along a log, seq rises by exactly one per record (compacted segments skip, never go back)
//! and term never falls: a stale record that happens to checksum (a recycled file, an
//! uncommitted suffix cut by a new leader) breaks one of the two and ends the log there.
//!
//! [`v1`] reads the records of segment versions 1 and 2, which recovery rewrites once into
//! this format (`wal::upgrade`).

use crate::limits::{RECORD_FIXED_BYTES, RECORD_LEN_MAX};

pub const LEN_OFFSET: usize = 0;
pub const CRC_OFFSET: usize = 4;
pub const SEQ_OFFSET: usize = 8;
pub const TERM_OFFSET: usize = 16;
pub const OP_OFFSET: usize = 24;
pub const EXPIRES_OFFSET: usize = 25;
pub const KLEN_OFFSET: usize = 33;
pub const KEY_OFFSET: usize = 37;
/// Bytes before the key.
pub const HEADER_BYTES: usize = KEY_OFFSET;
/// The smallest and largest `len` a record can have; anything else is damage.
pub const LEN_MIN: u32 = (KEY_OFFSET - SEQ_OFFSET) as u32;
pub const LEN_MAX: u32 = RECORD_LEN_MAX;
// `limits` states the fixed part of `len` without depending on this layout: they must agree.
const _: () = assert!((KEY_OFFSET - SEQ_OFFSET) as u32 == RECORD_FIXED_BYTES);

/// A record's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Set = 1,
    Del = 2,
    Expired = 3,
    ExpireAt = 4,
    Blank = 5,
    Membership = 6,
    Txn = 7,
}

impl Op {
    pub fn from_u8(byte: u8) -> Option<Op> {
        Some(match byte {
            1 => Op::Set,
            2 => Op::Del,
            3 => Op::Expired,
            4 => Op::ExpireAt,
            5 => Op::Blank,
            6 => Op::Membership,
            7 => Op::Txn,
            _ => return None,
        })
    }

    /// Whether a record of this kind names one key.
    pub fn has_key(self) -> bool {
        matches!(self, Op::Set | Op::Del | Op::Expired | Op::ExpireAt)
    }
}

/// A record as values, borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub term: u64,
    pub op: Op,
    pub expires_at_ms: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// A record that sets `key` to `value`, never expiring.
    pub fn set(seq: u64, term: u64, key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record {
            seq,
            term,
            op: Op::Set,
            expires_at_ms: 0,
            key,
            value,
        }
    }

    /// A record that deletes `key`.
    pub fn del(seq: u64, term: u64, key: &'a [u8]) -> Record<'a> {
        Record {
            seq,
            term,
            op: Op::Del,
            expires_at_ms: 0,
            key,
            value: &[],
        }
    }
}

/// What decoding learned about a record without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub term: u64,
    pub op: Op,
    pub expires_at_ms: u64,
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
    #[error("record kind {op} is unknown")]
    BadOp { op: u8 },
    #[error("record key length {key_len} does not fit its record")]
    BadKeyLength { key_len: u32 },
    #[error("a {op:?} record cannot carry {what}")]
    BadShape { op: Op, what: &'static str },
    #[error("transaction op {index} is malformed: {why}")]
    BadTxnOp { index: usize, why: &'static str },
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
    dst.extend_from_slice(&record.expires_at_ms.to_le_bytes());
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
            expires_at_ms: header.expires_at_ms,
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
    let op = Op::from_u8(record[OP_OFFSET]).ok_or(DecodeError::BadOp {
        op: record[OP_OFFSET],
    })?;
    let key_len = read_u32(record, KLEN_OFFSET);
    let value_len = (total_bytes - KEY_OFFSET)
        .checked_sub(key_len as usize)
        .ok_or(DecodeError::BadKeyLength { key_len })?;
    let expires_at_ms = read_u64(record, EXPIRES_OFFSET);
    let shape = |what| Err(DecodeError::BadShape { op, what });
    if op.has_key() != (key_len > 0) {
        return shape(if key_len > 0 { "a key" } else { "an empty key" });
    }
    match op {
        Op::Set | Op::Membership | Op::Txn => {}
        _ if value_len > 0 => return shape("a value"),
        _ => {}
    }
    if expires_at_ms != 0 && !matches!(op, Op::Set | Op::ExpireAt) {
        return shape("an expiry");
    }
    if op == Op::Txn {
        let value = &record[KEY_OFFSET + key_len as usize..];
        let mut ops = txn_ops(value);
        let mut count = 0;
        for (index, txn_op) in (&mut ops).enumerate() {
            txn_op.map_err(|why| DecodeError::BadTxnOp { index, why })?;
            count += 1;
        }
        if count == 0 {
            return shape("no ops");
        }
    }
    Ok(RecordHeader {
        seq: read_u64(record, SEQ_OFFSET),
        term: read_u64(record, TERM_OFFSET),
        op,
        expires_at_ms,
        key_len,
        value_len: value_len as u32,
        total_bytes,
        crc: read_u32(record, CRC_OFFSET),
    })
}

/// One write inside a `Txn` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOp<'a> {
    /// `Set`, `Del` or `ExpireAt`.
    pub op: Op,
    pub expires_at_ms: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Where the value starts inside the `Txn` record's value.
    pub value_offset: usize,
}

/// Bytes before a transaction op's key.
pub const TXN_OP_HEADER_BYTES: usize = 1 + 8 + 4 + 4;

/// Appends one op to a `Txn` record's value.
pub fn encode_txn_op(dst: &mut Vec<u8>, op: Op, expires_at_ms: u64, key: &[u8], value: &[u8]) {
    dst.push(op as u8);
    dst.extend_from_slice(&expires_at_ms.to_le_bytes());
    dst.extend_from_slice(
        &u32::try_from(key.len())
            .expect("key fits u32")
            .to_le_bytes(),
    );
    dst.extend_from_slice(
        &u32::try_from(value.len())
            .expect("value fits u32")
            .to_le_bytes(),
    );
    dst.extend_from_slice(key);
    dst.extend_from_slice(value);
}

/// The ops of a `Txn` record's value, in order. [`decode_header`] has checked every one of a
/// record it accepted, so a reader of such a record sees no error.
pub fn txn_ops(value: &[u8]) -> TxnOps<'_> {
    TxnOps { rest: value, at: 0 }
}

pub struct TxnOps<'a> {
    rest: &'a [u8],
    /// Bytes of the value before `rest`.
    at: usize,
}

impl<'a> Iterator for TxnOps<'a> {
    type Item = Result<TxnOp<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.take();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

impl<'a> TxnOps<'a> {
    fn take(&mut self) -> Result<TxnOp<'a>, &'static str> {
        let rest = self.rest;
        if rest.len() < TXN_OP_HEADER_BYTES {
            return Err("shorter than an op header");
        }
        let op = match Op::from_u8(rest[0]) {
            Some(op @ (Op::Set | Op::Del | Op::ExpireAt)) => op,
            _ => return Err("its op is not set, del or expire_at"),
        };
        let expires_at_ms = read_u64(rest, 1);
        let key_len = read_u32(rest, 9) as usize;
        let value_len = read_u32(rest, 13) as usize;
        let end = TXN_OP_HEADER_BYTES
            .checked_add(key_len)
            .and_then(|n| n.checked_add(value_len))
            .filter(|end| *end <= rest.len())
            .ok_or("its lengths run past the record")?;
        if key_len == 0 {
            return Err("its key is empty");
        }
        if op != Op::Set && value_len > 0 {
            return Err("only a set carries a value");
        }
        if op == Op::Del && expires_at_ms != 0 {
            return Err("a del carries no expiry");
        }
        let key_end = TXN_OP_HEADER_BYTES + key_len;
        let value_offset = self.at + key_end;
        self.rest = &rest[end..];
        self.at += end;
        Ok(TxnOp {
            op,
            expires_at_ms,
            key: &rest[TXN_OP_HEADER_BYTES..key_end],
            value: &rest[key_end..end],
            value_offset,
        })
    }
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Records of segment versions 1 and 2 (record format 1), read only to rewrite them in this
/// format: `len` u32, `crc` u32 (of `len` and what follows it), `seq` u64, `term` u64, `op` u8
/// (1 set, 2 del), `klen` u32, key, value.
pub mod v1 {
    use super::{read_u32, read_u64, DecodeError, Op, Record};

    const KLEN_OFFSET: usize = 25;
    const KEY_OFFSET: usize = 29;
    const LEN_MIN: u32 = (KEY_OFFSET - super::SEQ_OFFSET) as u32 + 1;

    /// Decodes the format-1 record at the start of `buf`; also returns its size on disk.
    pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
        if buf.len() < super::SEQ_OFFSET {
            return Err(DecodeError::Incomplete {
                have: buf.len(),
                need: super::SEQ_OFFSET,
            });
        }
        let len = read_u32(buf, 0);
        if !(LEN_MIN..=super::LEN_MAX).contains(&len) {
            return Err(DecodeError::BadLength { len });
        }
        let total = super::SEQ_OFFSET + len as usize;
        if buf.len() < total {
            return Err(DecodeError::Incomplete {
                have: buf.len(),
                need: total,
            });
        }
        let record = &buf[..total];
        if read_u32(record, super::CRC_OFFSET) != super::checksum(record) {
            return Err(DecodeError::BadChecksum);
        }
        let op = match record[super::OP_OFFSET] {
            1 => Op::Set,
            2 => Op::Del,
            op => return Err(DecodeError::BadOp { op }),
        };
        let key_len = read_u32(record, KLEN_OFFSET);
        let key_end = KEY_OFFSET
            .checked_add(key_len as usize)
            .filter(|end| *end <= total && key_len > 0 && (op == Op::Set || *end == total))
            .ok_or(DecodeError::BadKeyLength { key_len })?;
        Ok((
            Record {
                seq: read_u64(record, super::SEQ_OFFSET),
                term: read_u64(record, super::TERM_OFFSET),
                op,
                expires_at_ms: 0,
                key: &record[KEY_OFFSET..key_end],
                value: &record[key_end..],
            },
            total,
        ))
    }

    /// Encodes `record` in format 1: for tests that make old logs.
    pub fn encode(dst: &mut Vec<u8>, record: &Record<'_>) {
        let start = dst.len();
        let len = (KEY_OFFSET - super::SEQ_OFFSET + record.key.len() + record.value.len()) as u32;
        dst.extend_from_slice(&len.to_le_bytes());
        dst.extend_from_slice(&[0; 4]);
        dst.extend_from_slice(&record.seq.to_le_bytes());
        dst.extend_from_slice(&record.term.to_le_bytes());
        dst.push(record.op as u8);
        dst.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
        dst.extend_from_slice(record.key);
        dst.extend_from_slice(record.value);
        let crc = super::checksum(&dst[start..]);
        dst[start + super::CRC_OFFSET..start + super::SEQ_OFFSET]
            .copy_from_slice(&crc.to_le_bytes());
    }
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

    fn txn_value(ops: &[(Op, u64, &[u8], &[u8])]) -> Vec<u8> {
        let mut value = Vec::new();
        for (op, expires, key, val) in ops {
            encode_txn_op(&mut value, *op, *expires, key, val);
        }
        value
    }

    proptest! {
        #[test]
        fn round_trip(seq: u64, term: u64, kind in 1u8..=4, expires: u64,
                      key in proptest::collection::vec(any::<u8>(), 1..64),
                      value in proptest::collection::vec(any::<u8>(), 0..256)) {
            let op = Op::from_u8(kind).unwrap();
            let value = if op == Op::Set { &value[..] } else { &[][..] };
            let expires_at_ms = if matches!(op, Op::Set | Op::ExpireAt) { expires } else { 0 };
            let record = Record { seq, term, op, expires_at_ms, key: &key, value };
            let buf = encoded(&record);
            prop_assert_eq!(buf.len(), encoded_bytes(key.len(), value.len()));
            let (header, decoded) = decode(&buf).unwrap();
            prop_assert_eq!(decoded, record);
            prop_assert_eq!(header.total_bytes, buf.len());
            prop_assert_eq!(&buf[header.value_offset()..], value);
        }

        #[test]
        fn any_flipped_bit_is_caught(bit in 0usize..(8 * 48)) {
            let buf = encoded(&Record::set(3, 1, b"key", b"value!"));
            let mut bad = buf.clone();
            let bit = bit % (8 * buf.len());
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bad).is_err());
        }

        #[test]
        fn txn_ops_round_trip(ops in proptest::collection::vec(
            (1u8..=3, any::<u64>(), proptest::collection::vec(any::<u8>(), 1..16),
             proptest::collection::vec(any::<u8>(), 0..32)), 1..8)) {
            let ops: Vec<(Op, u64, Vec<u8>, Vec<u8>)> = ops.into_iter().map(|(kind, expires, key, value)| {
                match kind {
                    1 => (Op::Set, expires, key, value),
                    2 => (Op::Del, 0, key, Vec::new()),
                    _ => (Op::ExpireAt, expires, key, Vec::new()),
                }
            }).collect();
            let borrowed: Vec<_> = ops.iter().map(|(o, e, k, v)| (*o, *e, &k[..], &v[..])).collect();
            let value = txn_value(&borrowed);
            let record = Record { seq: 9, term: 2, op: Op::Txn, expires_at_ms: 0, key: &[], value: &value };
            let buf = encoded(&record);
            let (header, decoded) = decode(&buf).unwrap();
            prop_assert_eq!(decoded, record);
            let read: Vec<TxnOp> = txn_ops(decoded.value).map(Result::unwrap).collect();
            prop_assert_eq!(read.len(), ops.len());
            for (got, (op, expires, key, val)) in read.iter().zip(&ops) {
                prop_assert_eq!((got.op, got.expires_at_ms, got.key, got.value), (*op, *expires, &key[..], &val[..]));
                // The offset finds the value inside the record, as the index will.
                let at = header.value_offset() + got.value_offset;
                prop_assert_eq!(&buf[at..at + val.len()], &val[..]);
            }
        }
    }

    #[test]
    fn every_cut_is_incomplete() {
        let buf = encoded(&Record::set(1, 0, b"k", b"v"));
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

    #[test]
    fn blank_and_membership_records_carry_no_key() {
        let blank = Record {
            seq: 5,
            term: 3,
            op: Op::Blank,
            expires_at_ms: 0,
            key: &[],
            value: &[],
        };
        assert_eq!(decode(&encoded(&blank)).unwrap().1, blank);
        let membership = Record {
            op: Op::Membership,
            value: b"n1,n2,n3",
            ..blank
        };
        assert_eq!(decode(&encoded(&membership)).unwrap().1, membership);
    }

    /// A checksum proves the bytes are what was written, not that the writer made sense: each
    /// kind's shape is checked too.
    #[test]
    fn a_record_of_the_wrong_shape_is_refused() {
        let bad = [
            Record {
                value: b"v",
                ..Record::del(1, 0, b"k")
            },
            Record {
                expires_at_ms: 9,
                ..Record::del(1, 0, b"k")
            },
            Record::set(1, 0, b"", b"v"),
            Record {
                op: Op::Blank,
                ..Record::del(1, 0, b"k")
            },
            Record {
                op: Op::Expired,
                value: b"v",
                ..Record::del(1, 0, b"k")
            },
            Record {
                op: Op::Txn,
                key: b"",
                value: b"",
                ..Record::del(1, 0, b"k")
            },
            Record {
                op: Op::Txn,
                key: b"",
                value: b"\x01short",
                ..Record::del(1, 0, b"k")
            },
        ];
        for record in bad {
            assert!(
                matches!(
                    decode(&encoded(&record)),
                    Err(DecodeError::BadShape { .. } | DecodeError::BadTxnOp { .. })
                ),
                "{record:?}"
            );
        }
        let mut unknown = encoded(&Record::set(1, 0, b"k", b"v"));
        unknown[OP_OFFSET] = 8;
        let crc = checksum(&unknown);
        unknown[CRC_OFFSET..SEQ_OFFSET].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&unknown), Err(DecodeError::BadOp { op: 8 }));
    }

    #[test]
    fn txn_ops_refuse_lengths_past_the_end() {
        let mut value = txn_value(&[(Op::Set, 0, b"key", b"value")]);
        value.truncate(value.len() - 1);
        let ops: Vec<_> = txn_ops(&value).collect();
        assert_eq!(ops, vec![Err("its lengths run past the record")]);
        let mut huge = txn_value(&[(Op::Set, 0, b"key", b"")]);
        huge[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(txn_ops(&huge).next().unwrap().is_err());
    }

    #[test]
    fn format_1_records_read_back() {
        let mut buf = Vec::new();
        v1::encode(&mut buf, &Record::set(7, 0, b"key", b"value"));
        v1::encode(&mut buf, &Record::del(8, 0, b"key"));
        let (set, used) = v1::decode(&buf).unwrap();
        assert_eq!(set, Record::set(7, 0, b"key", b"value"));
        let (del, rest) = v1::decode(&buf[used..]).unwrap();
        assert_eq!((del, used + rest), (Record::del(8, 0, b"key"), buf.len()));
        // A format-1 record is not a format-2 one.
        assert!(decode(&buf).is_err());
        let mut flipped = buf.clone();
        flipped[10] ^= 1;
        assert_eq!(v1::decode(&flipped), Err(DecodeError::BadChecksum));
    }
}

//! The value of a `Txn` record: its ops back to back, each
//!
//! | size | field |
//! |---|---|
//! | 1 | `op`: 1 set, 2 del, 4 expire_at |
//! | 8 | `expires_at_ms` u64 LE (0: never; for expire_at 0 removes the expiry) |
//! | 4 | `klen` u32 LE |
//! | 4 | `vlen` u32 LE (0 but for set) |
//! | klen | key |
//! | vlen | value |
//!
//! all at the record's seq, applied all or none (the record's CRC covers them all). The log's
//! decoder validates a Txn record's value before anything reads it; `changes` stops at the
//! first op that does not parse all the same, so no input can make it panic.

use super::batch::Change;
use crate::wal::record::Op;

const OP_OFFSET: usize = 0;
const EXPIRES_OFFSET: usize = 1;
const KLEN_OFFSET: usize = 9;
const VLEN_OFFSET: usize = 13;
const KEY_OFFSET: usize = 17;
/// Bytes of an op before its key.
pub const OP_HEADER_BYTES: usize = KEY_OFFSET;

pub const OP_SET: u8 = 1;
pub const OP_DEL: u8 = 2;
pub const OP_EXPIRE_AT: u8 = 4;

/// Appends one op to a Txn record's value.
pub fn put_op(dst: &mut Vec<u8>, op: Op, expires_at_ms: u64, key: &[u8], value: &[u8]) {
    let code = match op {
        Op::Set => OP_SET,
        Op::Del => OP_DEL,
        Op::ExpireAt => OP_EXPIRE_AT,
        other => unreachable!("a Txn holds sets, dels and expire_ats, not {other:?}"),
    };
    dst.push(code);
    dst.extend_from_slice(&expires_at_ms.to_le_bytes());
    dst.extend_from_slice(&(key.len() as u32).to_le_bytes());
    dst.extend_from_slice(&(value.len() as u32).to_le_bytes());
    dst.extend_from_slice(key);
    dst.extend_from_slice(value);
}

/// The key changes of a Txn record whose value is `value`, offsets relative to it.
pub fn changes(value: &[u8]) -> impl Iterator<Item = Change> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let op = *value.get(at + OP_OFFSET)?;
        let read_u32 = |offset: usize| -> Option<u32> {
            Some(u32::from_le_bytes(value.get(at + offset..at + offset + 4)?.try_into().ok()?))
        };
        let expires_at_ms = u64::from_le_bytes(
            value
                .get(at + EXPIRES_OFFSET..at + EXPIRES_OFFSET + 8)?
                .try_into()
                .ok()?,
        );
        let key_len = read_u32(KLEN_OFFSET)?;
        let value_len = read_u32(VLEN_OFFSET)?;
        let key_offset = at + KEY_OFFSET;
        let value_offset = key_offset.checked_add(key_len as usize)?;
        let end = value_offset.checked_add(value_len as usize)?;
        if end > value.len() {
            return None;
        }
        let op = match op {
            OP_SET => Op::Set,
            OP_DEL => Op::Del,
            OP_EXPIRE_AT => Op::ExpireAt,
            _ => return None,
        };
        at = end;
        Some(Change {
            op,
            expires_at_ms,
            in_value: true,
            key_offset: key_offset as u32,
            key_len,
            value_offset: value_offset as u32,
            value_len,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_read_back_as_written() {
        let mut value = Vec::new();
        put_op(&mut value, Op::Set, 9, b"a", b"one");
        put_op(&mut value, Op::Del, 0, b"bb", b"");
        put_op(&mut value, Op::ExpireAt, 5, b"c", b"");
        let changes: Vec<Change> = changes(&value).collect();
        assert_eq!(changes.len(), 3);
        let (set, del, expire) = (changes[0], changes[1], changes[2]);
        assert_eq!((set.op, set.expires_at_ms), (Op::Set, 9));
        let at = |offset: u32, len: u32| &value[offset as usize..(offset + len) as usize];
        assert_eq!(at(set.key_offset, set.key_len), b"a");
        assert_eq!(at(set.value_offset, set.value_len), b"one");
        assert_eq!(at(del.key_offset, del.key_len), b"bb");
        assert_eq!((expire.op, expire.expires_at_ms), (Op::ExpireAt, 5));
        // Cut anywhere: no panic, only the whole ops before the cut.
        for cut in 0..value.len() {
            assert!(super::changes(&value[..cut]).count() < 3);
        }
    }
}

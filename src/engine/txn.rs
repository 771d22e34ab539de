//! A `Txn` record's ops: `put_op` writes one (`wal::record::txn_ops` reads them back, and
//! `change::txn_changes` turns them into the key changes the engine applies).

use crate::wal::record::{self, Op};

/// Appends one op to a Txn record's value.
pub fn put_op(dst: &mut Vec<u8>, op: Op, expires_at_ms: u64, key: &[u8], value: &[u8]) {
    debug_assert!(matches!(op, Op::Set | Op::Del | Op::ExpireAt));
    record::encode_txn_op(dst, op, expires_at_ms, key, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::change::{txn_changes, Change};

    #[test]
    fn ops_read_back_as_written() {
        let mut value = Vec::new();
        put_op(&mut value, Op::Set, 9, b"a", b"one");
        put_op(&mut value, Op::Del, 0, b"bb", b"");
        put_op(&mut value, Op::ExpireAt, 5, b"c", b"");
        let changes: Vec<Change> = txn_changes(&value).collect();
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
            assert!(txn_changes(&value[..cut]).count() < 3);
        }
    }
}

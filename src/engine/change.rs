//! The key changes a record makes, each located inside the record: most records change one
//! key; a `Txn` record changes several (each op's key and value sit inside the record's value),
//! and a `Blank` or `Membership` record none.

use crate::wal::record::{self, Op, Record};

/// One key change of a record, located inside the record: the key is the record's key, or
/// (`in_value`) at `key_offset` in its value; the change's value is at `value_offset` in the
/// record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    pub expires_at_ms: u64,
    pub in_value: bool,
    pub key_offset: u32,
    pub key_len: u32,
    pub value_offset: u32,
    pub value_len: u32,
}

impl Change {
    /// The key this change is to, inside `record`.
    pub fn key<'a>(&self, record: &Record<'a>) -> &'a [u8] {
        if self.in_value {
            let start = self.key_offset as usize;
            &record.value[start..start + self.key_len as usize]
        } else {
            record.key
        }
    }
}

/// The key changes `record` makes, in order.
pub fn changes<'r>(record: &Record<'r>) -> impl Iterator<Item = Change> + 'r {
    let single = match record.op {
        Op::Set | Op::Del | Op::Expired | Op::ExpireAt => Some(Change {
            op: record.op,
            expires_at_ms: record.expires_at_ms,
            in_value: false,
            key_offset: 0,
            key_len: record.key.len() as u32,
            value_offset: 0,
            value_len: record.value.len() as u32,
        }),
        _ => None,
    };
    let value: &'r [u8] = record.value;
    let txn = (record.op == Op::Txn).then(|| txn_changes(value));
    single.into_iter().chain(txn.into_iter().flatten())
}

/// The key changes of a Txn record whose value is `value`, offsets relative to it. The log's
/// decoder has checked every op of a record it accepted; should one not parse all the same,
/// the changes stop before it (no input makes this panic).
pub fn txn_changes(value: &[u8]) -> impl Iterator<Item = Change> + '_ {
    record::txn_ops(value).map_while(|op| op.ok()).map(|op| {
        let value_offset = op.value_offset as u32;
        Change {
            op: op.op,
            expires_at_ms: op.expires_at_ms,
            in_value: true,
            key_offset: value_offset - op.key.len() as u32,
            key_len: op.key.len() as u32,
            value_offset,
            value_len: op.value.len() as u32,
        }
    })
}

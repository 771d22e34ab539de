//! Applying an entry of ops (`Command::Ops`): the changes the leader's engine decided for one
//! batch of client writes, as one `Txn` record. The engine applies them in order, each SET's
//! value left where it lies inside the record; nothing is decided again here.

use openraft::{ErrorSubject, ErrorVerb};

use super::state_machine::StateMachine;
use super::{io_error, seq_of, Entry, Reply, StorageError};
use crate::wal::record::{self, Op, Record};
use crate::wal::Location;

/// Applies `ops`, the value of the `Txn` record `entry` rests as, to the engine's index.
pub fn apply(sm: &StateMachine, entry: &Entry, ops: &[u8]) -> Result<Reply, StorageError> {
    let seq = seq_of(&entry.log_id);
    let fail = |verb, reason: String| {
        io_error(
            ErrorSubject::Apply(entry.log_id),
            verb,
            std::io::Error::other(reason),
        )
    };
    let slot = sm.log.slot(seq).ok_or_else(|| {
        fail(
            ErrorVerb::Read,
            format!("committed entry {seq} is not in the log"),
        )
    })?;
    // The record has no key: its value (the ops) starts right after the header.
    let value_offset = slot.offset + record::KEY_OFFSET as u64;
    let location = Location {
        file: slot.file,
        value_offset: u32::try_from(value_offset).expect("segment offsets fit u32"),
        value_len: ops.len() as u32,
    };
    let txn = Record {
        seq,
        term: entry.log_id.leader_id.term,
        op: Op::Txn,
        key: &[],
        value: ops,
        expires_at_ms: 0,
    };
    sm.engine
        .borrow_mut()
        .recover(&txn, location)
        .map_err(|reason| fail(ErrorVerb::Write, reason))?;
    Ok(Reply)
}

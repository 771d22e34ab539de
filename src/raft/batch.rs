//! Applying a batch entry (`Command::Batch`): several clients' SETs and DELs that the leader
//! proposed together so that they share one append and one fdatasync on every member.
//!
//! The entry rests as one `Txn` record; the engine applies its ops in order, each SET's value
//! left where it lies inside the record. Whether each DEL found its key is worked out before,
//! in the same order, so every client gets the answer it would have had alone.

use std::collections::HashMap;

use openraft::{ErrorSubject, ErrorVerb};

use super::state_machine::StateMachine;
use super::{codec, io_error, seq_of, Command, Entry, Reply, StorageError};
use crate::wal::record::{self, Op, Record};
use crate::wal::Location;

/// Applies `commands`, the batch held by `entry`, to the engine's index.
pub fn apply(
    sm: &StateMachine,
    entry: &Entry,
    commands: &[Command],
) -> Result<Reply, StorageError> {
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
    let value = codec::encode_batch(commands);
    let mut engine = sm.engine.borrow_mut();
    // A DEL's answer: did its key exist after the batch's earlier commands?
    let mut changed: HashMap<&[u8], bool> = HashMap::new();
    let existed_each = commands
        .iter()
        .map(|command| match command {
            Command::Set { key, .. } => {
                changed.insert(key, true);
                false
            }
            Command::Del { key } => changed
                .insert(key, false)
                .unwrap_or_else(|| engine.contains(key)),
            Command::Batch(_) => false,
        })
        .collect();
    // A batch's record has no key: its value (the ops) starts right after the header.
    let value_offset = slot.offset + record::KEY_OFFSET as u64;
    let location = Location {
        file: slot.file,
        value_offset: u32::try_from(value_offset).expect("segment offsets fit u32"),
        value_len: value.len() as u32,
    };
    let term = entry.log_id.leader_id.term;
    let txn = Record {
        seq,
        term,
        op: Op::Txn,
        key: &[],
        value: &value,
        expires_at_ms: 0,
    };
    engine
        .recover(&txn, location)
        .map_err(|reason| fail(ErrorVerb::Write, reason))?;
    Ok(Reply {
        existed: false,
        existed_each,
    })
}

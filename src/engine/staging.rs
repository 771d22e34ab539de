//! Staging: a run of writes gathered into ONE `Txn` record, as RESP's MULTI/EXEC needs.
//!
//! Between `begin_staging` and `commit_staged` every write the engine decides (SET, DEL,
//! EXPIRE, INCRBY, a TXN's ops: whatever calls `Engine::write`) is kept in a staging area
//! instead of the open batch, and answers the one seq the record will have. Reads and the
//! decisions of later writes see the staged state first (`current`), so a transaction sees its
//! own earlier writes. `commit_staged` writes every staged op as one `Txn` record: all or none
//! after a crash, replicated and recovered as a unit. Staging never outlives one call of the
//! connection's state machine, so no other connection, the expirer or a replicated record ever
//! sees it.

use std::collections::HashMap;

use bytes::Bytes;

use super::{change, txn, Current, Engine, PendingState, WriteFailed};
use crate::limits::RECORD_LEN_MAX;
use crate::wal::record::{self, Op};

/// Writes staged for one record.
#[derive(Debug)]
pub(super) struct Staged {
    /// The seq the record will have: every staged write answers it.
    pub(super) seq: u64,
    /// The Txn record's value: its ops back to back.
    body: Vec<u8>,
    /// Each staged key's newest state.
    pub(super) overlay: HashMap<Box<[u8]>, PendingState>,
}

/// Why staged writes were not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    WriteFailed(#[from] WriteFailed),
    #[error("the transaction's writes take {bytes} bytes, over the {max} bytes one log record can hold: nothing was written")]
    TooLarge { bytes: usize, max: u32 },
}

impl Engine {
    /// From now on writes are staged (see the module's comment) until `commit_staged`.
    pub fn begin_staging(&mut self) {
        debug_assert!(self.staged.is_none(), "staging does not nest");
        self.staged = Some(Staged {
            seq: self.next_seq(),
            body: Vec::new(),
            overlay: HashMap::new(),
        });
    }

    /// Ends staging and drops what was staged: nothing is written.
    pub fn abort_staged(&mut self) {
        self.staged = None;
    }

    /// Whether writes are being staged.
    pub fn staging(&self) -> bool {
        self.staged.is_some()
    }

    /// Writes the staged ops as one `Txn` record and ends staging; the record's seq, or 0 if
    /// nothing was staged. On an error nothing is written.
    pub fn commit_staged(&mut self) -> Result<u64, StageError> {
        let Some(staged) = self.staged.take() else {
            return Ok(0);
        };
        if staged.body.is_empty() {
            return Ok(0);
        }
        if record::encoded_bytes(0, staged.body.len()) > RECORD_LEN_MAX as usize {
            return Err(StageError::TooLarge {
                bytes: staged.body.len(),
                max: RECORD_LEN_MAX,
            });
        }
        let seq = self.write(Op::Txn, &[], Bytes::from(staged.body), 0)?;
        debug_assert_eq!(seq, staged.seq);
        Ok(seq)
    }

    /// A staged key's newest state, as `current` answers it: the record's seq is the key's
    /// seq, and a reply that observed it waits for that record.
    pub(super) fn current_staged(&self, key: &[u8]) -> Option<Current> {
        let staged = self.staged.as_ref()?;
        let state = staged.overlay.get(key)?;
        Some(state.current(staged.seq, self.now_ms))
    }

    /// Stages one write (or each op of a `Txn`); returns the staged seq. Called by `write`.
    pub(super) fn stage(&mut self, op: Op, key: &[u8], value: &Bytes, expires_at_ms: u64) -> u64 {
        if op == Op::Txn {
            for change in change::txn_changes(value) {
                let at = |offset: u32, len: u32| offset as usize..(offset + len) as usize;
                let key = &value[at(change.key_offset, change.key_len)];
                let op_value = value.slice(at(change.value_offset, change.value_len));
                self.stage_one(change.op, key, op_value, change.expires_at_ms);
            }
        } else {
            self.stage_one(op, key, value.clone(), expires_at_ms);
        }
        self.staged.as_ref().map_or(0, |staged| staged.seq)
    }

    fn stage_one(&mut self, op: Op, key: &[u8], value: Bytes, expires_at_ms: u64) {
        // An expiry removal inside a transaction is a delete: a Txn record holds sets, dels
        // and expires only.
        let op = match op {
            Op::Expired => Op::Del,
            op => op,
        };
        let state = match op {
            Op::Set => PendingState::Value {
                value: value.clone(),
                expires_at_ms,
            },
            Op::Del => PendingState::Absent,
            Op::ExpireAt => match self.current_unexpired_or_not(key) {
                Some(Ok(value)) => PendingState::Value {
                    value,
                    expires_at_ms,
                },
                Some(Err(location)) => PendingState::Durable {
                    location,
                    expires_at_ms,
                },
                None => PendingState::Absent,
            },
            _ => return,
        };
        let Some(staged) = self.staged.as_mut() else {
            return;
        };
        txn::put_op(&mut staged.body, op, expires_at_ms, key, &value);
        staged.overlay.insert(key.into(), state);
    }
}

//! The engine on a Raft node (issue 11): the same decisions as on a single node, with durable
//! meaning *committed by a majority and applied here*.
//!
//! - The index holds applied entries only: the state machine feeds it (`Engine::recover`), and
//!   `applied_through` moves `durable_seq` with it, on every member.
//! - Only a leader that has applied its whole log takes writes (`lead`). Every write it takes
//!   joins the open batch, which becomes ONE Raft entry (a `Txn` record of its ops), so every
//!   write in the open batch gets the seq that entry will have: `next`, the seq after the
//!   last entry in the log. The proposer hands the batches to openraft in order, one entry
//!   each, so the seqs come true; should one not (an entry this node did not expect), the
//!   pending writes are abandoned (below), never answered under a wrong seq.
//! - When the node stops leading, its pending writes are **abandoned** (`abandon`): the
//!   pending state and the open batch are dropped (what reads see again is what is applied)
//!   and the epoch moves on. A reply that waits for a seq past the abandon point, taken in an
//!   earlier epoch, is never answered OK: the new leader may have truncated that entry and
//!   written another under the same seq (`outcome_lost`).
//!
//! Two writes to one key in one batch share the batch's seq, so a compare on seqs (IF_SEQ,
//! WATCH … EXEC) sees them as one change: the second write's compare cannot have observed the
//! first's seq (no reply with it has left), so it is only ever more permissive within one batch.

use std::collections::VecDeque;

use super::Engine;
use crate::limits::BATCH_BYTES_MAX;

/// Abandon points kept; a reply taken before the oldest kept is treated as lost.
const ABANDON_POINTS_MAX: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct RaftState {
    /// This engine is a Raft member's.
    enabled: bool,
    /// While leading: the seq of the entry the open batch will become.
    next: Option<u64>,
    /// Writes are held off (a membership change is under way) though the node leads.
    paused: bool,
    /// Bumped at each `abandon`.
    epoch: u64,
    /// (epoch that ended, `durable_seq` when it ended), oldest first.
    abandoned: VecDeque<(u64, u64)>,
    /// The most bytes one batch (one entry) takes before connections hold off: an entry must
    /// fit one AppendEntries frame.
    batch_bytes_max: Option<usize>,
}

impl RaftState {
    /// The open batch was taken: the next one becomes the next entry.
    pub(super) fn batch_taken(&mut self) {
        if let Some(next) = self.next.as_mut() {
            *next += 1;
        }
    }
}

impl Engine {
    /// The seq a write taken now gets.
    pub(super) fn next_seq(&self) -> u64 {
        match self.raft.next {
            Some(next) => next,
            None => self.last_seq + 1,
        }
    }

    /// Marks this engine a Raft member's: writes wait for `lead`, and a batch holds at most
    /// `batch_bytes_max` bytes (past it, connections wait until it is taken).
    pub fn raft_member(&mut self, batch_bytes_max: usize) {
        self.raft.enabled = true;
        self.raft.batch_bytes_max = Some(batch_bytes_max);
    }

    /// The open batch is as large as one may grow: writes wait until it is taken.
    pub fn open_batch_full(&self) -> bool {
        let max = self.raft.batch_bytes_max.unwrap_or(BATCH_BYTES_MAX);
        self.open.bytes() >= max
    }

    pub fn is_raft(&self) -> bool {
        self.raft.enabled
    }

    /// The Raft leader has applied its whole log, which ends at `last_seq`: writes may be taken,
    /// into the entry `last_seq + 1`. Only with nothing pending.
    pub fn lead(&mut self, last_seq: u64) {
        debug_assert!(self.pending.is_empty() && self.open.is_empty());
        self.raft.next = Some(last_seq + 1);
        self.raft.paused = false;
        self.last_seq = last_seq;
        self.durable_seq = self.durable_seq.max(last_seq);
    }

    /// Whether this Raft node takes writes now (always true off Raft, if the log is healthy).
    pub fn takes_writes(&self) -> bool {
        !self.raft.enabled || (self.raft.next.is_some() && !self.raft.paused)
    }

    /// Whether this Raft node leads with its log applied (taking writes or paused).
    pub fn leads(&self) -> bool {
        self.raft.next.is_some()
    }

    /// Holds writes off (answered NOT_LEADER with this node's address) until `lead` again;
    /// what is pending still goes.
    pub fn pause_writes(&mut self) {
        self.raft.paused = true;
    }

    /// Writes are held off by `pause_writes`.
    pub fn is_paused(&self) -> bool {
        self.raft.paused
    }

    /// Nothing pending: every taken write was applied (or abandoned).
    pub fn settled(&self) -> bool {
        self.pending.is_empty() && self.open.is_empty() && self.durable_seq >= self.last_seq
    }

    /// The Raft log is applied through `seq` (its changes are in the index): replies that
    /// waited for it may go.
    pub fn applied_through(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
        self.last_seq = self.last_seq.max(seq);
    }

    /// The entry made of `batch` was applied with the seq its writes were taken at: their
    /// pending states give way to the index.
    pub fn settle_batch(&mut self, batch: &super::Batch) {
        for entry in batch.entries() {
            let key = batch.key(entry);
            if self.pending.get(key).is_some_and(|p| p.seq == entry.seq) {
                self.pending.remove(key);
            }
        }
        if let Some(last) = batch.last_seq() {
            self.applied_through(last);
        }
    }

    /// This node stopped leading (or its entries did not get the seqs it gave them): every
    /// pending write is dropped, and replies waiting past what is applied are lost.
    pub fn abandon(&mut self) {
        self.raft
            .abandoned
            .push_back((self.raft.epoch, self.durable_seq));
        if self.raft.abandoned.len() > ABANDON_POINTS_MAX {
            self.raft.abandoned.pop_front();
        }
        self.raft.epoch += 1;
        self.raft.next = None;
        self.raft.paused = false;
        self.pending.clear();
        self.open.clear();
        self.staged = None;
        self.last_seq = self.durable_seq;
    }

    /// A snapshot's state (`other`, built from it) becomes this engine's: its index, with
    /// this engine's Raft side, clock and progress kept (a snapshot is installed on a member
    /// that does not lead, so nothing is pending here).
    pub fn install_state(&mut self, mut other: Engine) {
        other.raft = std::mem::take(&mut self.raft);
        other.now_ms = other.now_ms.max(self.now_ms);
        other.durable_seq = other.durable_seq.max(self.durable_seq);
        other.last_seq = other.last_seq.max(self.last_seq);
        other.write_failed = self.write_failed.take();
        *self = other;
    }

    /// The current epoch: a reply records it when its request is taken.
    pub fn epoch(&self) -> u64 {
        self.raft.epoch
    }

    /// Whether a reply taken in `epoch` that waits for `seq` can no longer be answered from
    /// it: its epoch ended before `seq` was applied.
    pub fn outcome_lost(&self, epoch: u64, seq: u64) -> bool {
        if epoch == self.raft.epoch {
            return false;
        }
        match self
            .raft
            .abandoned
            .iter()
            .find(|(ended, _)| *ended == epoch)
        {
            Some((_, durable)) => seq > *durable,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_leaders_batch_shares_the_entry_seq_and_abandoned_writes_are_lost() {
        let mut engine = Engine::new(0);
        engine.raft_member(1 << 20);
        assert!(!engine.takes_writes());
        engine.applied_through(7);
        engine.lead(7);
        assert!(engine.takes_writes());
        let a = engine.set(b"a", Bytes::from("1")).unwrap();
        let b = engine.set(b"b", Bytes::from("2")).unwrap();
        assert_eq!((a, b), (8, 8));
        let batch = engine.take_batch(Default::default()).unwrap();
        assert_eq!(engine.set(b"c", Bytes::from("3")).unwrap(), 9);
        engine.settle_batch(&batch);
        assert_eq!(engine.durable_seq(), 8);
        let epoch = engine.epoch();
        engine.abandon();
        assert!(!engine.takes_writes());
        assert!(!engine.current(b"c").exists());
        assert!(engine.outcome_lost(epoch, 9));
        assert!(!engine.outcome_lost(epoch, 8));
        assert!(!engine.outcome_lost(engine.epoch(), 9));
    }
}

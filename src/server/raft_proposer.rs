//! The Raft leader's group commit: the engine's open batch, proposed as one entry.
//!
//! On a Raft leader, connections decide writes exactly as on a single node (`command::accept`
//! into the engine: conditions, INCRBY, TXN, expiry, against the index and the pending
//! writes), and the writes taken join the engine's open batch. Here the batch, instead of
//! being written and fsynced locally (`committer`), becomes one openraft entry: the changes it
//! holds as the ops of one `Txn` record (`Command::Ops`). So the log carries results, not
//! commands, and members only install them. The batch's writes were given the seq that entry
//! gets (`engine::raft`); once openraft has committed and applied it, their pending states
//! give way to the index and their replies go.
//!
//! A batch is proposed as soon as the leader's previous append is written (its fdatasync runs
//! beside replication: `raft::log_store`), or the previous proposal ended, so the writes that
//! arrive during one append share the next entry (one append and one fdatasync on every member
//! for all of them), and replication and commit of one entry overlap the append of the next.

use std::rc::Rc;

use bytes::Bytes;

use super::node::Node;
use super::raft_node::RaftNode;
use crate::engine::Batch;
use crate::raft::{seq_of, Command};
use crate::wal::record::Op;

pub async fn run(node: Rc<Node>, raft: Rc<RaftNode>) {
    let shard = &node.shard;
    let mut appends = raft.log.appends.subscribe();
    loop {
        let taken = shard.engine.borrow_mut().take_batch(Batch::default());
        let Ok(batch) = taken else {
            shard.commit_wake.notified().await;
            continue;
        };
        shard.batch_taken.notify_waiters();
        let epoch = shard.engine.borrow().epoch();
        appends.borrow_and_update();
        let mut proposed = crate::runtime::spawn(propose(node.clone(), raft.clone(), batch, epoch));
        tokio::select! {
            _ = appends.changed() => {}
            _ = &mut proposed => {}
        }
    }
}

/// The ops of `batch` as the value of one `Txn` record. An expiry's removal rests as a DEL
/// (a `Txn` record holds sets, dels and expires).
fn ops_of(batch: &Batch) -> Bytes {
    let mut ops = Vec::with_capacity(batch.bytes());
    let buf = batch.buf();
    for entry in batch.entries() {
        let at = |offset: u32, len: u32| &buf[offset as usize..(offset + len) as usize];
        let op = match entry.op {
            Op::Expired => Op::Del,
            op => op,
        };
        let value = match op {
            Op::Set => at(entry.value_offset, entry.value_len),
            _ => &[],
        };
        crate::engine::txn::put_op(&mut ops, op, entry.expires_at_ms, batch.key(entry), value);
    }
    Bytes::from(ops)
}

/// Proposes one batch; once it is applied its writes are settled. If this node stops leading
/// first, or the entry got another seq than its writes were promised, they are abandoned: their
/// clients hear that the outcome is unknown (`engine::raft`).
async fn propose(node: Rc<Node>, raft: Rc<RaftNode>, batch: Batch, epoch: u64) {
    let seq = batch.first_seq().expect("a taken batch is not empty");
    let ops = ops_of(&batch);
    let result = raft.raft.client_write(Command::Ops(ops)).await;
    let abandoned = {
        let mut engine = node.shard.engine.borrow_mut();
        let current = engine.epoch() == epoch;
        match result {
            Ok(response) if seq_of(&response.log_id) == seq => {
                if current {
                    engine.settle_batch(&batch);
                }
                false
            }
            Ok(response) => {
                if current {
                    tracing::error!(
                        promised = seq,
                        got = seq_of(&response.log_id),
                        "an entry got another seq than its writes were given: abandoning the writes pending"
                    );
                    engine.abandon();
                }
                current
            }
            Err(error) => {
                if current {
                    tracing::info!(%error, seq, "a proposal failed: abandoning the writes pending");
                    engine.abandon();
                }
                current
            }
        }
    };
    if abandoned {
        node.shard.wake_all();
        raft.confirmed.send_modify(|_| {});
    }
    node.progressed();
}

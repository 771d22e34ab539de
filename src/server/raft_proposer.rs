//! The Raft leader's group commit: clients' writes proposed together, many to an entry.
//!
//! openraft 0.9 appends each proposed entry on its own, and its core awaits the append (our
//! fdatasync) before it does anything else, so one client write per entry meant one fsync per
//! write on the leader, one after another (770 SET/s at 50 clients, against 11,900 for a single
//! node: `bench/results/2026-12-03-raft-speed.md`). Here the writes that arrive while the
//! leader's previous append is on its way to disk wait, and go as one `Command::Batch` entry:
//! one record, one append and one fdatasync on every member for all of them. Replication and
//! commit of one batch overlap with the leader's append of the next.
//!
//! A batch is bounded (`BATCH_COUNT_MAX` writes, half a frame of bytes, so that an entry always
//! fits one AppendEntries frame); a write too big for that goes alone, as a plain entry.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{oneshot, Notify};

use super::raft_node::RaftNode;
use crate::raft::{codec, seq_of, Command};

/// Writes in one batch entry, at most.
const BATCH_COUNT_MAX: usize = 1024;

/// What became of one proposed write.
pub enum Outcome {
    /// Committed and applied as (part of) the entry with this seq; `existed` answers a DEL.
    Applied { seq: u64, existed: bool },
    /// This node does not lead (any more).
    NotLeader,
    /// openraft refused or failed the write.
    Failed(String),
}

type Waiter = oneshot::Sender<Outcome>;

/// The writes waiting for the next batch, and the wake-up of the task that proposes them.
#[derive(Default)]
pub struct Proposer {
    pending: RefCell<Vec<(Command, Waiter)>>,
    pending_bytes: Cell<usize>,
    wake: Notify,
}

impl Proposer {
    /// Queues `command` for the next batch; the answer comes on the returned receiver.
    pub fn propose(&self, command: Command) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.pending_bytes
            .set(self.pending_bytes.get() + codec::batch_op_bytes(&command));
        self.pending.borrow_mut().push((command, tx));
        self.wake.notify_one();
        rx
    }

    /// The next batch: the oldest pending writes, within the bounds (at least one).
    fn take(&self, bytes_max: usize) -> Vec<(Command, Waiter)> {
        let mut pending = self.pending.borrow_mut();
        if self.pending_bytes.get() <= bytes_max && pending.len() <= BATCH_COUNT_MAX {
            self.pending_bytes.set(0);
            return std::mem::take(&mut *pending);
        }
        let mut bytes = 0;
        let mut count = 0;
        for (command, _) in pending.iter() {
            let size = codec::batch_op_bytes(command);
            if count > 0 && (bytes + size > bytes_max || count == BATCH_COUNT_MAX) {
                break;
            }
            bytes += size;
            count += 1;
        }
        self.pending_bytes.set(self.pending_bytes.get() - bytes);
        pending.drain(..count).collect()
    }
}

/// Proposes the pending writes, a batch at a time, until the node shuts down: a batch goes as
/// soon as the leader's previous append has reached its disk (or failed).
pub async fn run(node: Rc<RaftNode>) {
    let proposer = &node.proposer;
    let bytes_max = node.config.frame_bytes_max as usize / 2;
    let mut shutdown = node.shutdown.subscribe();
    let mut appends = node.log.appends.subscribe();
    loop {
        if proposer.pending.borrow().is_empty() {
            tokio::select! {
                _ = proposer.wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let batch = proposer.take(bytes_max);
        appends.borrow_and_update();
        let mut proposed = crate::runtime::spawn(propose(node.clone(), batch));
        tokio::select! {
            _ = appends.changed() => {}
            _ = &mut proposed => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Proposes one batch and answers each of its writes.
async fn propose(node: Rc<RaftNode>, batch: Vec<(Command, Waiter)>) {
    let (mut commands, waiters): (Vec<Command>, Vec<Waiter>) = batch.into_iter().unzip();
    let single = commands.len() == 1;
    let command = if single {
        commands.pop().expect("one command")
    } else {
        Command::Batch(commands)
    };
    match node.raft.client_write(command).await {
        Ok(response) => {
            let seq = seq_of(&response.log_id);
            for (i, waiter) in waiters.into_iter().enumerate() {
                let existed = if single {
                    response.data.existed
                } else {
                    response.data.existed_each.get(i).copied().unwrap_or(false)
                };
                let _ = waiter.send(Outcome::Applied { seq, existed });
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            for waiter in waiters {
                let _ = waiter.send(Outcome::NotLeader);
            }
        }
        Err(error) => {
            let message = format!("the write failed: {error}");
            for waiter in waiters {
                let _ = waiter.send(Outcome::Failed(message.clone()));
            }
        }
    }
}

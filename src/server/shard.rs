//! A shard: the engine, its log, the committer's signals and the compactor's state. Today a
//! node has one shard on one core; with N shards each core's loop would own one, keys hashed to
//! them (`docs/storage.md`, "More cores"). Nothing here knows of sockets, roles or connections.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tokio::sync::{watch, Notify};

use crate::engine::Engine;
use crate::wal::file::LogFile;

use super::compactor::CompactionState;

pub struct Shard {
    /// Shared with a Raft node's state machine, which applies committed entries to it.
    pub engine: Rc<RefCell<Engine>>,
    pub log: Rc<LogFile>,
    /// Connections → committer: the open batch has records, or a client the commit window
    /// waits for has spoken.
    pub commit_wake: Notify,
    /// Committer → connections waiting for room: the open batch was taken.
    pub batch_taken: Notify,
    /// The durable seq, for the few replication tasks that follow every move of it.
    pub progress: watch::Sender<u64>,
    /// Connections whose next reply waits for the log: each is woken once the log has come as
    /// far as it needs, so a batch wakes only the connections it answers.
    waiters: RefCell<Vec<Waiter>>,
    /// A write or an fdatasync of the log is in flight.
    pub committing: Cell<bool>,
    /// The committer has nothing in flight and nothing open.
    pub committer_idle: Notify,
    /// Connections answered a write since the last flush completed that owe nothing else: the
    /// commit window waits (briefly) for their clients' next requests before the next flush.
    /// Counted per flush (`window`), so a client that went quiet long ago holds nothing up.
    pub awaiting_clients: Cell<u32>,
    pub window: Cell<u64>,
    pub compaction: RefCell<CompactionState>,
    pub compact_wake: Notify,
    /// Bumped when a compaction pass ends.
    pub compact_done: watch::Sender<u64>,
}

struct Waiter {
    seq: u64,
    /// Waits for the seq to be on `--min-acks` followers too (a write's OK).
    replicated: bool,
    slot: Rc<WaitSlot>,
}

/// One connection's place in the wait list: at most one entry per connection stays listed
/// (the lowest seq it waits for), so the list is bounded by the connections.
#[derive(Default)]
pub struct WaitSlot {
    pub notify: Notify,
    listed: Cell<Option<u64>>,
}

impl Shard {
    pub fn new(engine: Rc<RefCell<Engine>>, log: Rc<LogFile>) -> Shard {
        let durable = engine.borrow().durable_seq();
        Shard {
            engine,
            log,
            commit_wake: Notify::new(),
            batch_taken: Notify::new(),
            progress: watch::Sender::new(durable),
            waiters: RefCell::default(),
            committing: Cell::new(false),
            committer_idle: Notify::new(),
            awaiting_clients: Cell::new(0),
            window: Cell::new(0),
            compaction: RefCell::default(),
            compact_wake: Notify::new(),
            compact_done: watch::Sender::new(0),
        }
    }

    /// Wakes `wake` once `seq` is durable (and, with `replicated`, on enough followers), or
    /// writes failed.
    pub fn wait_for(&self, seq: u64, replicated: bool, slot: &Rc<WaitSlot>) {
        if slot.listed.get().is_some_and(|listed| listed <= seq) {
            return;
        }
        slot.listed.set(Some(seq));
        self.waiters.borrow_mut().push(Waiter {
            seq,
            replicated,
            slot: slot.clone(),
        });
    }

    /// The log moved: durable up to `durable`, on followers up to `replicated`, or failed.
    /// Wakes the connections that can now answer, and the replication streams.
    pub fn progressed(&self, replicated: u64) {
        let (durable, failed) = {
            let engine = self.engine.borrow();
            (engine.durable_seq(), engine.write_failed().is_some())
        };
        self.waiters.borrow_mut().retain(|waiter| {
            let reached = match waiter.replicated {
                true => durable.min(replicated),
                false => durable,
            };
            let go = failed || waiter.seq <= reached;
            if go {
                waiter.slot.listed.set(None);
                waiter.slot.notify.notify_one();
            }
            // A closed connection's entry goes too.
            !go && Rc::strong_count(&waiter.slot) > 1
        });
        self.progress.send_replace(durable);
    }

    /// Wakes every waiting connection, whatever it waits for: a Raft node stopped leading, and
    /// what they wait for may never come.
    pub fn wake_all(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            waiter.slot.listed.set(None);
            waiter.slot.notify.notify_one();
        }
    }

    /// A flush completed: the commit window starts over with the clients it answers.
    pub fn new_window(&self) {
        self.window.set(self.window.get() + 1);
        self.awaiting_clients.set(0);
    }

    pub fn has_open_batch(&self) -> bool {
        self.engine.borrow().open_batch_bytes() > 0
    }
}

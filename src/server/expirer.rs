//! Active expiry on the leader (on Raft, the leader that takes writes): a task that writes `Expired` records for keys whose time has
//! run out (`Engine::expire_due`), through the open batch and the committer like any write,
//! so followers, watchers and compaction agree on the removal. Expired keys are invisible
//! from the moment they expire whether or not this has caught up: it only reclaims them.
//!
//! Bounded work per loop turn: at most `EXPIRE_KEYS_PER_TURN` keys, then it waits for the
//! committer to take the batch they joined (one slice per flush), and it holds off while the
//! open batch is large, so a million keys expiring at once become many small slices riding
//! along with client writes, not one stall.

use std::rc::Rc;
use std::time::Duration;

use crate::limits::{BATCH_BYTES_MAX, EXPIRE_IDLE_MS, EXPIRE_KEYS_PER_TURN};

use super::{unix_now_ms, Node};

pub async fn run(node: Rc<Node>) {
    let mut shutdown = node.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // The leader expires keys; on Raft, the leader that takes writes, through an entry.
        let leads = match node.raft() {
            Some(_) => node.shard.engine.borrow().takes_writes(),
            None => node.leader().is_some(),
        };
        let wrote = if leads {
            let mut engine = node.shard.engine.borrow_mut();
            engine.tick(unix_now_ms());
            if engine.open_batch_full() || engine.open_batch_bytes() >= BATCH_BYTES_MAX / 4 {
                0
            } else {
                engine.expire_due(EXPIRE_KEYS_PER_TURN).unwrap_or(0)
            }
        } else {
            0
        };
        let idle = Duration::from_millis(EXPIRE_IDLE_MS);
        if wrote > 0 {
            node.stats.count_expired(wrote as u64);
            let taken = node.shard.batch_taken.notified();
            node.shard.commit_wake.notify_one();
            let _ = tokio::time::timeout(idle, taken).await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = shutdown.changed() => return,
        }
    }
}

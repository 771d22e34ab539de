//! Active expiry: the leader removes keys whose time has run out by writing an `Expired`
//! record for each, through the open batch like any write, so followers, watchers and
//! compaction see the same removal. An expired key is invisible from the moment it expires
//! (`Engine::current`, `Engine::slot`); this only reclaims it.
//!
//! The durable keys with an expiry are kept ordered by deadline (`Engine::deadlines`), so each
//! call looks only at keys that are due, earliest first, and does bounded work: the loop
//! serves clients between calls however many keys expire at once.

use bytes::Bytes;

use super::{is_expired, Engine, PendingState, WriteFailed};
use crate::wal::record::Op;

impl Engine {
    /// Writes `Expired` records for up to `count_max` due keys, looking at no more than
    /// `4 * count_max` entries; returns how many it wrote. Keys whose newest state is not
    /// expired (re-set since, or already removed but not yet durable) are passed over.
    pub fn expire_due(&mut self, count_max: usize) -> Result<usize, WriteFailed> {
        self.check_writable()?;
        let now_ms = self.now_ms;
        let mut due: Vec<Box<[u8]>> = Vec::new();
        for (deadline, key) in self.deadlines.iter().take(count_max.saturating_mul(4)) {
            if *deadline > now_ms || due.len() >= count_max {
                break;
            }
            let expired = match self.pending.get(&key[..]) {
                None => true,
                Some(pending) => match &pending.state {
                    PendingState::Absent => false,
                    PendingState::Value { expires_at_ms, .. }
                    | PendingState::Durable { expires_at_ms, .. } => {
                        is_expired(*expires_at_ms, now_ms)
                    }
                },
            };
            if expired {
                due.push(key[..].into());
            }
        }
        for key in &due {
            self.write(Op::Expired, key, Bytes::new(), 0)?;
        }
        Ok(due.len())
    }

    /// The earliest deadline of a durable key, for the caller to sleep until.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }
}

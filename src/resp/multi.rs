//! A RESP connection's transaction as it is being built (MULTI ... EXEC) and the keys it
//! WATCHes: pure bookkeeping; the connection state machine (`connection/state/resp/multi.rs`)
//! runs it.

use bytes::Bytes;

use crate::limits::{RESP_MULTI_BYTES_MAX, RESP_WATCHED_KEYS_MAX};

/// What a queued command costs besides its arguments' bytes.
const COMMAND_OVERHEAD_BYTES: usize = 64;

/// Commands queued after MULTI.
#[derive(Debug, Default)]
pub struct Multi {
    pub commands: Vec<Vec<Bytes>>,
    bytes: usize,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    pub failed: bool,
}

impl Multi {
    /// Queues a command; false (and the transaction fails) past `RESP_MULTI_BYTES_MAX`.
    pub fn queue(&mut self, args: &[Bytes]) -> bool {
        let bytes = COMMAND_OVERHEAD_BYTES + args.iter().map(|a| a.len() + 16).sum::<usize>();
        if self.bytes + bytes > RESP_MULTI_BYTES_MAX {
            self.failed = true;
            return false;
        }
        self.bytes += bytes;
        self.commands.push(args.to_vec());
        true
    }
}

/// Keys a connection WATCHes, each with the seq it had when watched (0: absent).
#[derive(Debug, Default)]
pub struct Watched {
    pub keys: Vec<(Bytes, u64)>,
}

impl Watched {
    /// Watches `key` as of `seq`, unless it is watched already. False past
    /// `RESP_WATCHED_KEYS_MAX` keys.
    pub fn watch(&mut self, key: &Bytes, seq: u64) -> bool {
        if self.keys.iter().any(|(watched, _)| watched == key) {
            return true;
        }
        if self.keys.len() >= RESP_WATCHED_KEYS_MAX {
            return false;
        }
        self.keys.push((key.clone(), seq));
        true
    }

    /// Whether any watched key's seq is no longer what it was (changed, deleted, expired).
    pub fn any_changed(&self, mut seq_of: impl FnMut(&[u8]) -> u64) -> bool {
        self.keys.iter().any(|(key, seq)| seq_of(key) != *seq)
    }

    pub fn clear(&mut self) {
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_watched_once_and_a_changed_seq_is_seen() {
        let mut watched = Watched::default();
        assert!(watched.watch(&Bytes::from("a"), 3));
        assert!(watched.watch(&Bytes::from("a"), 9));
        assert!(watched.watch(&Bytes::from("b"), 0));
        assert_eq!(watched.keys.len(), 2);
        assert!(!watched.any_changed(|key| if key == b"a" { 3 } else { 0 }));
        assert!(watched.any_changed(|key| if key == b"a" { 4 } else { 0 }));
    }

    #[test]
    fn queuing_past_the_cap_fails_the_transaction() {
        let mut multi = Multi::default();
        let big = vec![Bytes::from(vec![0u8; RESP_MULTI_BYTES_MAX / 2])];
        assert!(multi.queue(&big));
        assert!(!multi.queue(&big));
        assert!(multi.failed);
        assert_eq!(multi.commands.len(), 1);
    }
}

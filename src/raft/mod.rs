//! Raft (issue 11): openraft on kvsd's own log and framing.
//!
//! - `codec`: openraft's values as bytes: entries as WAL records, membership, RPC bodies. Pure.
//! - `vote`: the vote (and the purged log id) in its own fsynced file; the committed log id
//!   beside it.
//! - `log_store`: openraft's `RaftLogStorage` on `wal::file::LogFile`: a record's (term, seq)
//!   is its log id.
//! - `state_machine`: applies committed entries to the engine's index (nothing uncommitted
//!   ever reaches it), builds and installs snapshots.
//! - `snapshot`: the state machine's snapshot file, `raft-snapshot`, and openraft's snapshot
//!   data on it.
//! - `snapshot_receive`: a snapshot from the leader, chunk by chunk, checked as it arrives; a
//!   damaged one is refused to its sender, never fatal here.
//! - `network`: the client side of the Raft RPCs, as frames on the members' client ports.
//!
//! The serving side (the Raft node's loop, connections, admin ops) is `server::raft_node`.
//!
//! Seq and index: openraft numbers its first entry 0 and kvsd's log its first record 1, so a
//! record's `seq` is the entry's `index + 1`, and its `term` is the entry's term.

// openraft's storage traits return its `StorageError` (200+ bytes); the helpers that build
// one return it as is rather than box it only to unbox it at the trait boundary.
#![allow(clippy::result_large_err)]

pub mod batch;
pub mod codec;
pub mod log_store;
pub mod network;
pub mod seed;
pub mod snapshot;
pub mod snapshot_receive;
pub mod state_machine;
pub mod vote;

use std::fmt;

use bytes::Bytes;

/// A member's numeric id: a stable hash of its `--node-id` name (openraft's ids must be `Copy`).
pub type NodeId = u64;

/// What the cluster knows of a member: its name and its client address (where clients,
/// NOT_LEADER answers and the other members' RPCs go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// A client write, as an entry's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A SET as kvsd before the one request path proposed it; read back from older logs.
    Set { key: Bytes, value: Bytes },
    /// A DEL, likewise.
    Del { key: Bytes },
    /// The changes the leader's engine decided for one batch of client writes (SETs with
    /// their expiry, DELs, EXPIREs, expiry removals as DELs: `engine::txn` ops back to back),
    /// stored as one `Txn` record and applied as recorded: the log carries results, never
    /// commands, so members only install them (`server::raft_proposer`).
    Ops(Bytes),
}

impl Default for Command {
    fn default() -> Self {
        Command::Del {
            key: Bytes::from_static(b"-"),
        }
    }
}

/// What applying an entry answers its proposer: nothing. The leader's engine decided every
/// write's answer when it took it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply;

openraft::declare_raft_types!(
    /// kvsd's Raft types.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = snapshot::SnapshotFile,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// The id of the member named `name`: FNV-1a, so every node computes the same one.
pub fn node_id_of(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The log id of the entry with `seq` in term `term`.
pub fn log_id(term: u64, seq: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 0), seq - 1)
}

/// The kvsd seq of an entry's log id.
pub fn seq_of(log_id: &LogId) -> u64 {
    log_id.index + 1
}

/// Turns an I/O error into the storage error openraft expects.
pub fn io_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&error)).into()
}

/// Op codes: admin ops in the client range 0x20–0x27, Raft RPCs in the replication range
/// (`docs/protocol.md`).
pub mod op {
    /// CLUSTER: empty body; OK with the cluster's state as text (`kvsctl cluster`).
    pub const CLUSTER: u8 = 0x20;
    /// JOIN: `learner` u8, name (u16 len + UTF-8), client address (u16 len + UTF-8).
    pub const JOIN: u8 = 0x21;
    /// PROMOTE: a member's name: learner → voter.
    pub const PROMOTE: u8 = 0x22;
    /// REMOVE: a member's name.
    pub const REMOVE: u8 = 0x23;
    /// TRANSFER: a voter's name: the leader asks it to stand for election now.
    pub const TRANSFER: u8 = 0x24;
    /// ELECT: empty body: stand for election now (what TRANSFER sends to its target).
    pub const ELECT: u8 = 0x25;
    /// GET_LOCAL: the key: this member's applied value, without asking the leader (may be
    /// stale; a plain GET is linearizable and answered by the leader only).
    pub const GET_LOCAL: u8 = 0x26;
    /// Raft AppendEntries (`codec::encode_append`).
    pub const RAFT_APPEND: u8 = 0x45;
    /// Raft RequestVote (`codec::encode_vote_request`).
    pub const RAFT_VOTE: u8 = 0x46;
    /// Raft InstallSnapshot, one chunk (`codec::encode_snapshot_request`).
    pub const RAFT_SNAPSHOT: u8 = 0x47;

    /// Whether `kind` is one the Raft node answers itself (admin ops, Raft RPCs) rather than
    /// the shared command path.
    pub fn is_raft_node_op(kind: u8) -> bool {
        (CLUSTER..=GET_LOCAL).contains(&kind) || (RAFT_APPEND..=RAFT_SNAPSHOT).contains(&kind)
    }
}

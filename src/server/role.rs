//! What this node is in replication, as one value: a leader with its followers, a follower
//! with its link, or a Raft member. Nothing of one role exists on a node of another.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

pub enum Role {
    Leader(Leader),
    Follower(Follower),
    /// A member of a Raft cluster (`--bootstrap`, `--join`): openraft decides who leads,
    /// and the node's state says what it is now (`raft_node`).
    Raft(std::rc::Rc<super::raft_node::RaftNode>),
}

/// A leader: the followers streaming from it now, and what they have acknowledged.
#[derive(Default)]
pub struct Leader {
    /// The followers streaming now, by link id.
    pub followers: RefCell<BTreeMap<u64, FollowerInfo>>,
    pub next_link_id: Cell<u64>,
    /// The newest seq durable on `--min-acks` followers.
    pub replicated: Cell<u64>,
    /// The last refusal logged per follower node id (each is logged once, not per retry).
    pub refusals: RefCell<HashMap<String, String>>,
}

/// A follower: where its leader is and how the link to it fares.
pub struct Follower {
    /// The leader's client address: what NOT_LEADER answers and where the link dials.
    pub leader_addr: String,
    pub link: RefCell<LinkInfo>,
}

/// What the leader knows of one follower.
pub struct FollowerInfo {
    pub node_id: String,
    pub addr: SocketAddr,
    /// The follower's own durable seq, as it last said.
    pub acked_seq: u64,
    pub sent_seq: u64,
    /// Where the cursor reads next: file number and offset.
    pub position: (u32, u64),
    pub records_sent: u64,
    pub connected_at: Instant,
}

/// How a follower's link to its leader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    ReceivingSnapshot,
    Disconnected,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::ReceivingSnapshot => "receiving snapshot",
            LinkState::Disconnected => "disconnected",
        })
    }
}

/// What a follower knows of its link to the leader.
pub struct LinkInfo {
    pub state: LinkState,
    pub connected_at: Option<Instant>,
    pub leader_durable_seq: u64,
    /// Records received on the current link, and since start.
    pub records_received: u64,
    pub records_received_total: u64,
}

impl Role {
    pub fn new(leader_addr: Option<String>) -> Role {
        match leader_addr {
            None => Role::Leader(Leader::default()),
            Some(leader_addr) => Role::Follower(Follower {
                leader_addr,
                link: RefCell::new(LinkInfo {
                    state: LinkState::Connecting,
                    connected_at: None,
                    leader_durable_seq: 0,
                    records_received: 0,
                    records_received_total: 0,
                }),
            }),
        }
    }
}

impl Leader {
    /// Recomputes the seq durable on `min_acks` followers; true if it moved.
    pub fn update_replicated(&self, min_acks: u32) -> bool {
        let needed = min_acks as usize;
        if needed == 0 {
            return false;
        }
        let mut acked: Vec<u64> = self
            .followers
            .borrow()
            .values()
            .map(|f| f.acked_seq)
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let replicated = acked.get(needed - 1).copied().unwrap_or(0);
        let moved = replicated > self.replicated.get();
        self.replicated.set(self.replicated.get().max(replicated));
        moved
    }

    pub fn new_link_id(&self) -> u64 {
        let id = self.next_link_id.get() + 1;
        self.next_link_id.set(id);
        id
    }
}

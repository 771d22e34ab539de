//! A node: what one kvsd process shares among its tasks — its configuration, its role in
//! replication, its shard, the connections it serves (counted by RAII slots), its counters and
//! its shutdown signal. Single-threaded: cells, not locks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::{watch, Notify};

use super::config::Config;
use super::role::{Follower, Leader, Role};
use super::shard::Shard;
use super::stats::Stats;
use super::sweep::ConnWatch;

pub struct Node {
    pub config: Config,
    pub role: Role,
    pub shard: Shard,
    pub stats: Stats,
    pub shutdown: watch::Sender<bool>,
    /// The connections served now, by id: what the idle/stall sweep looks at.
    connections: RefCell<HashMap<u64, Rc<ConnWatch>>>,
    next_connection_id: Cell<u64>,
    /// Connections that have sent a write: what a full flush would carry at one request each.
    pub writers: Cell<u32>,
    /// The last connection closed.
    all_closed: Notify,
    pub started: Instant,
    /// Follower: a snapshot was received; stop serving and start again on it.
    pub restart: Notify,
    /// WATCH cursors (file number, offset) by watch id: compaction leaves their files alone.
    pub watch_positions: RefCell<HashMap<u64, (u32, u64)>>,
    pub next_watch_id: Cell<u64>,
    /// Pub/sub's channels and patterns, to the mailboxes of RESP connections (`pubsub`).
    pub pubsub: super::pubsub::PubSub,
}

/// A connection's place in the node: counted while it lives, so shutdown can wait for the
/// connections themselves to finish, not poll a counter.
pub struct ConnectionSlot {
    node: Rc<Node>,
    id: u64,
    pub watch: Rc<ConnWatch>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut connections = self.node.connections.borrow_mut();
        connections.remove(&self.id);
        if connections.is_empty() {
            self.node.all_closed.notify_waiters();
        }
    }
}

impl Node {
    pub fn new(config: Config, shard: Shard) -> Node {
        let role = Role::new(config.leader_addr.clone());
        Node::with_role(config, shard, role)
    }

    pub fn with_role(config: Config, shard: Shard, role: Role) -> Node {
        Node {
            config,
            role,
            shard,
            stats: Stats::default(),
            shutdown: watch::Sender::new(false),
            watch_positions: RefCell::default(),
            next_watch_id: Cell::new(0),
            connections: RefCell::default(),
            next_connection_id: Cell::new(0),
            writers: Cell::new(0),
            all_closed: Notify::new(),
            started: Instant::now(),
            restart: Notify::new(),
            pubsub: Default::default(),
        }
    }

    /// A slot for a new connection, or None at `--max-connections`.
    pub fn admit(self: &Rc<Self>, fd: i32) -> Option<ConnectionSlot> {
        if self.connection_count() >= self.config.connections_max as usize {
            return None;
        }
        let id = self.next_connection_id.get() + 1;
        self.next_connection_id.set(id);
        let watch = Rc::new(ConnWatch::new(fd));
        self.connections.borrow_mut().insert(id, watch.clone());
        self.stats.count_connection();
        Some(ConnectionSlot {
            node: self.clone(),
            id,
            watch,
        })
    }

    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Every connection now, for the sweep.
    pub fn connection_watches(&self) -> Vec<Rc<ConnWatch>> {
        self.connections.borrow().values().cloned().collect()
    }

    /// At shutdown: waits up to `SHUTDOWN_DRAIN_MS` for the connections to finish what is in
    /// flight and close; the ones left are closed by the caller.
    pub async fn drain_connections(&self) {
        let drain = std::time::Duration::from_millis(crate::limits::SHUTDOWN_DRAIN_MS);
        if tokio::time::timeout(drain, self.connections_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.connection_count(),
                "closing connections that did not read their replies in time"
            );
        }
    }

    /// Waits until no connection is left.
    pub async fn connections_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            if self.connection_count() == 0 {
                return;
            }
            closed.await;
        }
    }

    pub fn leader(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    pub fn follower(&self) -> Option<&Follower> {
        match &self.role {
            Role::Follower(follower) => Some(follower),
            _ => None,
        }
    }

    /// The Raft member this node is, if it is one.
    pub fn raft(&self) -> Option<&Rc<super::raft_node::RaftNode>> {
        match &self.role {
            Role::Raft(raft) => Some(raft),
            _ => None,
        }
    }

    /// Leader: where each follower's cursor reads next (file number, offset); none on a follower.
    pub fn follower_positions(&self) -> Vec<(u32, u64)> {
        self.leader().map_or_else(Vec::new, |leader| {
            leader
                .followers
                .borrow()
                .values()
                .map(|f| f.position)
                .collect()
        })
    }

    /// On a follower, the leader's client address (what NOT_LEADER says).
    pub fn leader_addr(&self) -> Option<&str> {
        self.follower().map(|f| f.leader_addr.as_str())
    }

    /// The newest seq a client write may be acknowledged at, as far as followers go.
    pub fn replicated_seq(&self) -> u64 {
        match self.leader() {
            Some(leader) if self.config.min_acks > 0 => leader.replicated.get(),
            _ => u64::MAX,
        }
    }

    /// The log moved (durable, replicated or failed): wake whoever that lets answer.
    pub fn progressed(&self) {
        self.shard.progressed(self.replicated_seq());
    }

    /// A test's fault hook (`KVS_CRASH_POINT=<what>:<step>`): dies there as kill -9 would.
    pub fn crash_point(&self, what: &str, step: &str) {
        if let Some(point) = &self.config.crash_point {
            if point.split_once(':') == Some((what, step)) {
                tracing::warn!(what, step, "KVS_CRASH_POINT: aborting the process here");
                std::process::abort();
            }
        }
    }
}

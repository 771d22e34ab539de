//! `/metrics`, `/health` and `/ready` on a Raft node (`--metrics-addr`): the figures of
//! `metrics::exposition` that a Raft node has, with its Raft role, term and leader.
//!
//! A Raft node has no committer, compactor or per-request histograms yet (it answers clients
//! on its own request path, `raft_node`), so those families read zero here.

use crate::metrics::{exposition, Endpoint, Reply, Site, Snapshot};
use crate::raft::seq_of;

use super::raft_node::RaftNode;

/// The `/metrics` snapshot of a Raft node.
pub fn snapshot(node: &RaftNode) -> Snapshot {
    let metrics = node.raft.metrics().borrow().clone();
    let engine = node.engine.borrow();
    let log = &node.log.file;
    let (cache_hits, cache_misses, cache_bytes) = log.cache_stats();
    let last_seq = node.log.last_log_id().map_or(0, |id| seq_of(&id));
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        node_id: node.config.node_id.clone(),
        role: node.role(&metrics),
        term: metrics.current_term,
        ready: !*node.shutdown.borrow(),
        writes_refused: false,
        leader_known: metrics.current_leader.is_some(),
        uptime_seconds: node.started.elapsed().as_secs_f64(),
        keys: engine.key_count() as u64,
        last_seq,
        durable_seq: last_seq,
        log_bytes: log.log_bytes(),
        live_bytes: log
            .segments()
            .iter()
            .map(|segment| engine.live_bytes(segment.file_no))
            .sum(),
        segments: log.segment_count() as u64,
        value_cache_hits: cache_hits,
        value_cache_misses: cache_misses,
        value_cache_bytes: cache_bytes as u64,
        ..Snapshot::default()
    }
}

impl Site for RaftNode {
    fn answer(&self, endpoint: Endpoint) -> Reply {
        match endpoint {
            Endpoint::Metrics => Reply {
                status: 200,
                content_type: exposition::CONTENT_TYPE,
                body: exposition::render(snapshot(self)),
            },
            Endpoint::Health if *self.shutdown.borrow() => Reply::text(503, "shutting down"),
            Endpoint::Health => match self.raft.metrics().borrow().current_leader {
                Some(_) => Reply::text(200, "ok"),
                None => Reply::text(503, "no leader known: an election may be under way"),
            },
            Endpoint::Ready if *self.shutdown.borrow() => Reply::text(503, "shutting down"),
            Endpoint::Ready => Reply::text(200, "ready"),
        }
    }
}

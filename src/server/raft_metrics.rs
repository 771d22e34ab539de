//! `/metrics`, `/health` and `/ready` on a Raft node (`--metrics-addr`): the figures of
//! `metrics::exposition` that a Raft node has, with its Raft role, term and leader.
//!
//! A Raft node serves clients through the shared connections, so the per-request and
//! connection families are the node's own; it has no committer or compactor, so those read
//! zero here.

use crate::metrics::Snapshot;
use crate::raft::seq_of;

use super::node::Node;
use super::raft_node::RaftNode;

/// The `/metrics` snapshot of a Raft node.
pub fn snapshot(server: &Node, node: &RaftNode) -> Snapshot {
    let stats = &server.stats;
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
        ready: !*server.shutdown.borrow(),
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
        connections: server.connection_count() as u64,
        connections_accepted: stats.connections_total.get(),
        connections_closed_idle: stats.connections_closed_idle_total.get(),
        connections_closed_output_stall: stats.connections_closed_output_stall_total.get(),
        connections_closed_auth: stats.connections_closed_auth_total.get(),
        auth_failures: stats.auth_failures_total.get(),
        requests: stats.requests.snapshot(),
        ..Snapshot::default()
    }
}

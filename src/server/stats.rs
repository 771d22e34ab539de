//! Counters the server keeps, the STATS text (`docs/protocol.md` lists the names) and the
//! `/metrics` snapshot (`crate::metrics`), both read from the same cells.

use std::cell::Cell;
use std::fmt::Write;
use std::time::Duration;

use super::role::{LinkState, Role};
use super::Node;
use crate::metrics::histogram::{Histogram, BATCH_RECORDS_BOUNDS, LATENCY_BOUNDS_NS};
use crate::metrics::{exposition, RequestMetrics, Snapshot};

pub struct Stats {
    pub connections_total: Cell<u64>,
    /// Replies by op and status, and their latency: connections record each as it is encoded.
    pub requests: RequestMetrics,
    pub batches_total: Cell<u64>,
    pub batch_records_total: Cell<u64>,
    pub batch_records_max: Cell<u64>,
    /// Per flush: its records ÷ the writing connections, in thousandths, capped at 1000.
    pub batch_fill_permille_total: Cell<u64>,
    pub fsync_us_total: Cell<u64>,
    pub fsync_us_max: Cell<u64>,
    pub auth_failures_total: Cell<u64>,
    pub connections_closed_auth_total: Cell<u64>,
    pub connections_closed_idle_total: Cell<u64>,
    pub connections_closed_output_stall_total: Cell<u64>,
    /// Each flush's fdatasync, in nanoseconds, and records.
    pub fsync_ns: Histogram,
    pub batch_records: Histogram,
    /// Keys removed by active expiry (`Expired` records written).
    pub expired_keys_total: Cell<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_total: Cell::default(),
            requests: RequestMetrics::default(),
            batches_total: Cell::default(),
            batch_records_total: Cell::default(),
            batch_records_max: Cell::default(),
            batch_fill_permille_total: Cell::default(),
            fsync_us_total: Cell::default(),
            fsync_us_max: Cell::default(),
            auth_failures_total: Cell::default(),
            connections_closed_auth_total: Cell::default(),
            connections_closed_idle_total: Cell::default(),
            connections_closed_output_stall_total: Cell::default(),
            fsync_ns: Histogram::new(LATENCY_BOUNDS_NS),
            batch_records: Histogram::new(BATCH_RECORDS_BOUNDS),
            expired_keys_total: Cell::default(),
        }
    }
}

fn add(cell: &Cell<u64>, amount: u64) {
    cell.set(cell.get() + amount);
}

fn raise(cell: &Cell<u64>, value: u64) {
    cell.set(cell.get().max(value));
}

impl Stats {
    pub fn count_expired(&self, keys: u64) {
        add(&self.expired_keys_total, keys);
    }

    pub fn count_connection(&self) {
        add(&self.connections_total, 1);
    }

    /// A wrong secret, or a request before AUTH; `closed`: the connection is closed for it.
    pub fn count_auth_failure(&self, closed: bool) {
        add(&self.auth_failures_total, 1);
        add(&self.connections_closed_auth_total, u64::from(closed));
    }

    pub fn count_idle_closed(&self) {
        add(&self.connections_closed_idle_total, 1);
    }

    pub fn count_output_stalled(&self) {
        add(&self.connections_closed_output_stall_total, 1);
    }

    /// One flush made `records` durable; `took`: its fdatasync (None without one); `writers`:
    /// the connections that write, which a full flush would all be in.
    pub fn count_batch(&self, records: usize, took: Option<Duration>, writers: u32) {
        let micros = took.map_or(0, |took| took.as_micros() as u64);
        let fill = (records as u64 * 1000)
            .checked_div(u64::from(writers))
            .unwrap_or(1000);
        add(&self.batch_fill_permille_total, fill.min(1000));
        add(&self.batches_total, 1);
        add(&self.batch_records_total, records as u64);
        raise(&self.batch_records_max, records as u64);
        add(&self.fsync_us_total, micros);
        raise(&self.fsync_us_max, micros);
        self.batch_records.observe(records as u64);
        if let Some(took) = took {
            self.fsync_ns
                .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
    }
}

/// The STATS reply body: `name:value` lines.
pub fn render(node: &Node) -> String {
    if let Some(raft) = node.raft() {
        return super::raft_node::stats(node, raft);
    }
    let stats = &node.stats;
    let engine = node.shard.engine.borrow();
    let batches = stats.batches_total.get().max(1);
    let mut text = String::with_capacity(1024);
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(text, "{name}:{value}");
    };
    line("version", &env!("CARGO_PKG_VERSION"));
    line(
        "role",
        &match node.role {
            Role::Follower(_) => "follower",
            Role::Leader(_) | Role::Raft(_) => "leader",
        },
    );
    line("node_id", &node.config.node_id);
    line("log_id", &node.shard.log.log_id());
    line("fsync", &node.config.fsync);
    line("keys", &engine.key_count());
    line("last_seq", &engine.last_seq());
    line("durable_seq", &engine.durable_seq());
    line("keys_with_expiry", &engine.expiring_key_count());
    line("expired_keys_total", &stats.expired_keys_total.get());
    line("log_bytes", &node.shard.log.log_bytes());
    line("segments", &node.shard.log.segment_count());
    line("horizon_seq", &node.shard.log.horizon_seq());
    {
        let compaction = node.shard.compaction.borrow();
        line("compaction_running", &u8::from(compaction.running));
        line("compaction_runs_total", &compaction.runs_total);
        line(
            "compaction_bytes_reclaimed_total",
            &compaction.bytes_reclaimed_total,
        );
    }
    line("connections", &node.connection_count());
    line("connections_total", &stats.connections_total.get());
    line("requests_total", &stats.requests.total());
    line(
        "auth",
        &if node.config.auth.is_some() {
            "required"
        } else {
            "off"
        },
    );
    line("auth_failures_total", &stats.auth_failures_total.get());
    line(
        "connections_closed_auth_total",
        &stats.connections_closed_auth_total.get(),
    );
    line(
        "connections_closed_idle_total",
        &stats.connections_closed_idle_total.get(),
    );
    line(
        "connections_closed_output_stall_total",
        &stats.connections_closed_output_stall_total.get(),
    );
    line("batches_total", &stats.batches_total.get());
    line(
        "batch_records_avg",
        &format_args!(
            "{:.1}",
            stats.batch_records_total.get() as f64 / batches as f64
        ),
    );
    line("batch_records_max", &stats.batch_records_max.get());
    line("writer_connections", &node.writers.get());
    line(
        "batch_fill_pct_avg",
        &format_args!(
            "{:.1}",
            stats.batch_fill_permille_total.get() as f64 / 10.0 / batches as f64
        ),
    );
    line("fsync_us_avg", &(stats.fsync_us_total.get() / batches));
    line("fsync_us_max", &stats.fsync_us_max.get());
    let (cache_hits, cache_misses, cache_bytes) = node.shard.log.cache_stats();
    line("value_cache_hits", &cache_hits);
    line("value_cache_misses", &cache_misses);
    line("value_cache_bytes", &cache_bytes);
    line("write_failed", &u8::from(engine.write_failed().is_some()));
    line("uptime_s", &node.started.elapsed().as_secs());
    let durable = engine.durable_seq();
    match &node.role {
        // Rendered by `raft_node::stats` instead.
        Role::Raft(_) => {}
        Role::Follower(follower) => {
            let link = follower.link.borrow();
            let _ = writeln!(text, "leader_addr:{}", follower.leader_addr);
            let _ = writeln!(text, "link_state:{}", link.state);
            let _ = writeln!(text, "applied_seq:{durable}");
            let _ = writeln!(text, "leader_durable_seq:{}", link.leader_durable_seq);
            let _ = writeln!(
                text,
                "lag_records:{}",
                link.leader_durable_seq.saturating_sub(durable)
            );
            let _ = writeln!(text, "records_received:{}", link.records_received);
            let _ = writeln!(
                text,
                "records_received_total:{}",
                link.records_received_total
            );
            let since = link.connected_at.map_or(0, |at| at.elapsed().as_secs());
            let _ = writeln!(text, "link_connected_s:{since}");
        }
        Role::Leader(leader) => {
            let followers = leader.followers.borrow();
            let _ = writeln!(text, "min_acks:{}", node.config.min_acks);
            let _ = writeln!(text, "followers:{}", followers.len());
            for info in followers.values() {
                let prefix = format!("follower.{}", info.node_id);
                let (segment, offset) = info.position;
                let _ = writeln!(text, "{prefix}.addr:{}", info.addr);
                let _ = writeln!(text, "{prefix}.acked_seq:{}", info.acked_seq);
                let _ = writeln!(text, "{prefix}.sent_seq:{}", info.sent_seq);
                let _ = writeln!(
                    text,
                    "{prefix}.lag_records:{}",
                    durable.saturating_sub(info.acked_seq)
                );
                let _ = writeln!(
                    text,
                    "{prefix}.lag_bytes:{}",
                    node.shard.log.bytes_after(segment, offset)
                );
                let _ = writeln!(text, "{prefix}.records_sent:{}", info.records_sent);
                let _ = writeln!(
                    text,
                    "{prefix}.connected_s:{}",
                    info.connected_at.elapsed().as_secs()
                );
            }
        }
    }
    text
}

/// Whether the node can take writes (or, on a follower, follow its leader): why not, if not.
/// What `/health` answers.
pub fn health(node: &Node) -> Result<(), String> {
    if *node.shutdown.borrow() {
        return Err("shutting down".into());
    }
    if let Some(failed) = node.shard.engine.borrow().write_failed() {
        return Err(format!("writes refused after a log write failed: {failed}"));
    }
    match &node.role {
        Role::Leader(_) => Ok(()),
        Role::Raft(raft) => match raft.raft.metrics().borrow().current_leader {
            Some(_) => Ok(()),
            None => Err("no leader known: an election may be under way".into()),
        },
        Role::Follower(follower) => match follower.link.borrow().state {
            LinkState::Connected | LinkState::ReceivingSnapshot => Ok(()),
            state => Err(format!(
                "no leader known: the link to {} is {state}",
                follower.leader_addr
            )),
        },
    }
}

/// The `/metrics` snapshot.
pub fn snapshot(node: &Node) -> Snapshot {
    if let Some(raft) = node.raft() {
        return super::raft_metrics::snapshot(node, raft);
    }
    let stats = &node.stats;
    let engine = node.shard.engine.borrow();
    let log = &node.shard.log;
    let compaction = node.shard.compaction.borrow();
    let (cache_hits, cache_misses, cache_bytes) = log.cache_stats();
    let durable = engine.durable_seq();
    let mut snapshot = Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        node_id: node.config.node_id.clone(),
        role: match node.role {
            Role::Leader(_) | Role::Raft(_) => "leader",
            Role::Follower(_) => "follower",
        },
        term: 0,
        ready: !*node.shutdown.borrow(),
        writes_refused: engine.write_failed().is_some(),
        leader_known: true,
        uptime_seconds: node.started.elapsed().as_secs_f64(),
        keys: engine.key_count() as u64,
        last_seq: engine.last_seq(),
        durable_seq: durable,
        log_bytes: log.log_bytes(),
        live_bytes: log
            .segments()
            .iter()
            .map(|segment| engine.live_bytes(segment.file_no))
            .sum(),
        segments: log.segment_count() as u64,
        compaction_running: compaction.running,
        compaction_runs: compaction.runs_total,
        compaction_reclaimed_bytes: compaction.bytes_reclaimed_total,
        connections: node.connection_count() as u64,
        connections_accepted: stats.connections_total.get(),
        connections_closed_idle: stats.connections_closed_idle_total.get(),
        connections_closed_output_stall: stats.connections_closed_output_stall_total.get(),
        connections_closed_auth: stats.connections_closed_auth_total.get(),
        auth_failures: stats.auth_failures_total.get(),
        writer_connections: u64::from(node.writers.get()),
        requests: stats.requests.snapshot(),
        fsync: stats.fsync_ns.snapshot(1e-9),
        batch_records: stats.batch_records.snapshot(1.0),
        value_cache_hits: cache_hits,
        value_cache_misses: cache_misses,
        value_cache_bytes: cache_bytes as u64,
        followers: Vec::new(),
        own_lag_records: None,
    };
    match &node.role {
        // Made by `raft_metrics::snapshot` instead.
        Role::Raft(_) => {}
        Role::Leader(leader) => {
            // One series per follower node id: of two links from one node (a reconnect not yet
            // noticed), the newest.
            let mut by_node = std::collections::BTreeMap::new();
            for info in leader.followers.borrow().values() {
                let (file, offset) = info.position;
                by_node.insert(
                    info.node_id.clone(),
                    exposition::FollowerLag {
                        follower: info.node_id.clone(),
                        acked_seq: info.acked_seq,
                        lag_records: durable.saturating_sub(info.acked_seq),
                        lag_bytes: log.bytes_after(file, offset),
                    },
                );
            }
            snapshot.followers = by_node.into_values().collect();
        }
        Role::Follower(follower) => {
            let link = follower.link.borrow();
            snapshot.leader_known = matches!(
                link.state,
                LinkState::Connected | LinkState::ReceivingSnapshot
            );
            snapshot.own_lag_records = Some(link.leader_durable_seq.saturating_sub(durable));
        }
    }
    snapshot
}

impl crate::metrics::Site for Node {
    fn answer(&self, endpoint: crate::metrics::Endpoint) -> crate::metrics::Reply {
        use crate::metrics::{Endpoint, Reply};
        match endpoint {
            Endpoint::Metrics => Reply {
                status: 200,
                content_type: exposition::CONTENT_TYPE,
                body: exposition::render(snapshot(self)),
            },
            Endpoint::Health => match health(self) {
                Ok(()) => Reply::text(200, "ok"),
                Err(why) => Reply::text(503, why),
            },
            Endpoint::Ready if *self.shutdown.borrow() => Reply::text(503, "shutting down"),
            Endpoint::Ready => Reply::text(200, "ready"),
        }
    }
}

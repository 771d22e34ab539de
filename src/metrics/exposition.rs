//! The `/metrics` page: a `Snapshot` of the node's figures, taken on the loop at scrape time,
//! written in the Prometheus text format (0.0.4) by the `prometheus-client` crate, which owns
//! the format's rules (names, `# HELP`/`# TYPE`, label escaping, `_total`, `le` buckets).
//!
//! The node keeps its figures in plain cells (`server::stats`); nothing here runs until a
//! scrape. Every name starts with `kvs_`; `docs/operations.md` lists them.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::histogram::HistogramSnapshot;
use super::requests::OpSnapshot;

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything `/metrics` shows, copied out of the node in one go.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: &'static str,
    pub node_id: String,
    /// `leader` or `follower`.
    pub role: &'static str,
    /// The Raft term (0 outside Raft).
    pub term: u64,
    pub ready: bool,
    pub writes_refused: bool,
    /// Whether this node knows a leader it can take writes from or send to (a leader knows
    /// itself).
    pub leader_known: bool,
    pub uptime_seconds: f64,
    pub keys: u64,
    pub last_seq: u64,
    pub durable_seq: u64,
    pub log_bytes: u64,
    pub live_bytes: u64,
    pub segments: u64,
    pub compaction_running: bool,
    pub compaction_runs: u64,
    pub compaction_reclaimed_bytes: u64,
    pub connections: u64,
    pub connections_accepted: u64,
    pub connections_closed_idle: u64,
    pub connections_closed_output_stall: u64,
    pub connections_closed_auth: u64,
    pub auth_failures: u64,
    pub writer_connections: u64,
    pub requests: Vec<OpSnapshot>,
    /// Seconds.
    pub fsync: HistogramSnapshot,
    pub batch_records: HistogramSnapshot,
    pub value_cache_hits: u64,
    pub value_cache_misses: u64,
    pub value_cache_bytes: u64,
    /// Leader: one per follower node id streaming now.
    pub followers: Vec<FollowerLag>,
    /// Follower: records the leader has durable that this node has not applied yet.
    pub own_lag_records: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct FollowerLag {
    pub follower: String,
    pub acked_seq: u64,
    pub lag_records: u64,
    pub lag_bytes: u64,
}

/// The page's text.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Page(snapshot)));
    let mut text = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// The snapshot as a collector: the crate asks it to describe and encode each family.
#[derive(Debug)]
struct Page(Snapshot);

/// Writes one family without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: Value,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    value.encode(&mut metric)
}

enum Value {
    Count(u64),
    Whole(u64),
    Gauge(f64),
}

impl Value {
    fn encode(&self, metric: &mut prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        match *self {
            Value::Count(count) => metric.encode_counter::<NoLabelSet, _, u64>(&count, None),
            Value::Whole(value) => metric.encode_gauge(&value),
            Value::Gauge(value) => metric.encode_gauge(&value),
        }
    }
}

fn gauge(value: u64) -> Value {
    Value::Whole(value)
}

fn flag(value: bool) -> Value {
    Value::Whole(u64::from(value))
}

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge, Histogram};
        use Value::Count;
        let s = &self.0;
        let e = &mut encoder;
        {
            let mut metric = e.encode_descriptor(
                "kvs_build",
                "The kvsd version and this node's --node-id (always 1).",
                None,
                MetricType::Info,
            )?;
            metric.encode_info(&[("version", s.version), ("node_id", s.node_id.as_str())])?;
        }
        {
            let mut metric = e.encode_descriptor(
                "kvs_role",
                "1 for the role this node has now (leader or follower; on a Raft node also learner or candidate), 0 for the others.",
                None,
                Gauge,
            )?;
            // A Raft node may also be a learner or a candidate; a node outside Raft (term 0)
            // never is, and its page keeps its two series.
            for role in ["leader", "follower", "learner", "candidate"] {
                if matches!(role, "learner" | "candidate") && s.term == 0 && s.role != role {
                    continue;
                }
                metric
                    .encode_family(&[("role", role)])?
                    .encode_gauge(&u64::from(s.role == role))?;
            }
        }
        single(
            e,
            "kvs_term",
            "The Raft term this node is in (0 outside Raft).",
            Gauge,
            gauge(s.term),
        )?;
        single(
            e,
            "kvs_ready",
            "1 once recovery is done and the node serves.",
            Gauge,
            flag(s.ready),
        )?;
        single(
            e,
            "kvs_writes_refused",
            "1 after a log write or fdatasync failed: every later write is refused until kvsd is restarted on a working disk.",
            Gauge,
            flag(s.writes_refused),
        )?;
        single(
            e,
            "kvs_leader_known",
            "1 while this node knows its leader (a leader itself; a follower while its link to the leader is up).",
            Gauge,
            flag(s.leader_known),
        )?;
        single(
            e,
            "kvs_uptime_seconds",
            "Seconds since this kvsd started serving.",
            Gauge,
            Value::Gauge(s.uptime_seconds),
        )?;
        single(
            e,
            "kvs_keys",
            "Live keys in the index.",
            Gauge,
            gauge(s.keys),
        )?;
        single(
            e,
            "kvs_last_seq",
            "The newest seq in the log, durable or not.",
            Gauge,
            gauge(s.last_seq),
        )?;
        single(
            e,
            "kvs_durable_seq",
            "The newest seq that is durable (and visible).",
            Gauge,
            gauge(s.durable_seq),
        )?;
        single(
            e,
            "kvs_log_bytes",
            "Bytes of log records on disk, in every segment.",
            Gauge,
            gauge(s.log_bytes),
        )?;
        single(
            e,
            "kvs_live_bytes",
            "Bytes of the log's records that hold live keys; the rest is garbage for compaction.",
            Gauge,
            gauge(s.live_bytes),
        )?;
        single(
            e,
            "kvs_log_segments",
            "Log segment files.",
            Gauge,
            gauge(s.segments),
        )?;
        single(
            e,
            "kvs_compaction_running",
            "1 while a compaction pass runs.",
            Gauge,
            flag(s.compaction_running),
        )?;
        single(
            e,
            "kvs_compaction_runs",
            "Compaction passes finished.",
            Counter,
            Count(s.compaction_runs),
        )?;
        single(
            e,
            "kvs_compaction_reclaimed_bytes",
            "Bytes of log removed by compaction.",
            Counter,
            Count(s.compaction_reclaimed_bytes),
        )?;
        single(
            e,
            "kvs_connections",
            "Client and follower connections open now.",
            Gauge,
            gauge(s.connections),
        )?;
        single(
            e,
            "kvs_writer_connections",
            "Connections open now that have sent a write.",
            Gauge,
            gauge(s.writer_connections),
        )?;
        single(
            e,
            "kvs_connections_accepted",
            "Connections accepted.",
            Counter,
            Count(s.connections_accepted),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "kvs_connections_closed",
                "Connections kvsd closed, by reason: idle (--idle-timeout-secs), output_stall (--output-stall-secs), auth (failed AUTH).",
                None,
                Counter,
            )?;
            for (reason, count) in [
                ("idle", s.connections_closed_idle),
                ("output_stall", s.connections_closed_output_stall),
                ("auth", s.connections_closed_auth),
            ] {
                metric
                    .encode_family(&[("reason", reason)])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        single(
            e,
            "kvs_auth_failures",
            "AUTH attempts with a wrong secret, and requests before AUTH.",
            Counter,
            Count(s.auth_failures),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "kvs_requests",
                "Requests answered, by op and reply status (ok, not_found, not_leader, error).",
                None,
                Counter,
            )?;
            for row in &s.requests {
                for (status, count) in &row.by_status {
                    metric
                        .encode_family(&[("op", row.op.as_str()), ("status", status.as_str())])?
                        .encode_counter::<NoLabelSet, _, u64>(count, None)?;
                }
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "kvs_request_duration_seconds",
                "From the loop turn that read a request to the one that encoded its reply (a durable write's includes its fdatasync), by op.",
                None,
                Histogram,
            )?;
            for row in &s.requests {
                let latency = &row.latency;
                metric
                    .encode_family(&[("op", row.op.as_str())])?
                    .encode_histogram::<NoLabelSet>(
                        latency.sum,
                        latency.count,
                        &latency.buckets,
                        None,
                    )?;
            }
        }
        histogram(
            e,
            "kvs_fsync_duration_seconds",
            "Time of each fdatasync that made a batch of writes durable.",
            &s.fsync,
        )?;
        histogram(
            e,
            "kvs_batch_records",
            "Records made durable by each flush (group commit).",
            &s.batch_records,
        )?;
        single(
            e,
            "kvs_value_cache_hits",
            "GETs whose value came from the value cache.",
            Counter,
            Count(s.value_cache_hits),
        )?;
        single(
            e,
            "kvs_value_cache_misses",
            "GETs whose value was read from the log.",
            Counter,
            Count(s.value_cache_misses),
        )?;
        single(
            e,
            "kvs_value_cache_bytes",
            "Bytes of values held in the value cache.",
            Gauge,
            gauge(s.value_cache_bytes),
        )?;
        if !s.followers.is_empty() {
            for (name, help, value) in [
                (
                    "kvs_replication_lag_records",
                    "Leader: records durable here that the follower has not acknowledged as durable.",
                    (|f: &FollowerLag| f.lag_records) as fn(&FollowerLag) -> u64,
                ),
                (
                    "kvs_replication_lag_bytes",
                    "Leader: bytes of log the follower's stream has yet to send.",
                    |f: &FollowerLag| f.lag_bytes,
                ),
                (
                    "kvs_replication_acked_seq",
                    "Leader: the newest seq the follower said is durable on it.",
                    |f: &FollowerLag| f.acked_seq,
                ),
            ] {
                let mut metric = e.encode_descriptor(name, help, None, Gauge)?;
                for follower in &s.followers {
                    metric
                        .encode_family(&[("follower", follower.follower.as_str())])?
                        .encode_gauge(&value(follower))?;
                }
            }
        }
        if let Some(lag) = s.own_lag_records {
            single(
                e,
                "kvs_follower_lag_records",
                "Follower: records the leader last said are durable that this node has not applied.",
                Gauge,
                gauge(lag),
            )?;
        }
        Ok(())
    }
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &HistogramSnapshot,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(histogram.sum, histogram.count, &histogram.buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::{Histogram, BATCH_RECORDS_BOUNDS};

    fn sample() -> Snapshot {
        let batches = Histogram::new(BATCH_RECORDS_BOUNDS);
        batches.observe(3);
        Snapshot {
            version: "0.1.0",
            node_id: "n\"1".into(),
            role: "leader",
            ready: true,
            leader_known: true,
            keys: 7,
            batch_records: batches.snapshot(1.0),
            followers: vec![FollowerLag {
                follower: "f1".into(),
                acked_seq: 5,
                lag_records: 2,
                lag_bytes: 90,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_page_names_every_family_with_the_prefix_and_conventions() {
        let text = render(sample());
        for line in [
            "kvs_build_info{version=\"0.1.0\",node_id=\"n\\\"1\"} 1",
            "kvs_role{role=\"leader\"} 1",
            "kvs_role{role=\"follower\"} 0",
            "kvs_keys 7",
            "kvs_compaction_runs_total 0",
            "kvs_connections_closed_total{reason=\"idle\"} 0",
            "kvs_batch_records_bucket{le=\"2\"} 0",
            "kvs_batch_records_bucket{le=\"4\"} 1",
            "kvs_batch_records_bucket{le=\"+Inf\"} 1",
            "kvs_batch_records_count 1",
            "kvs_replication_lag_records{follower=\"f1\"} 2",
            "# TYPE kvs_request_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert!(line.starts_with("kvs_"), "{line}");
        }
    }
}

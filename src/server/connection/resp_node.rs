//! RESP replies that read the node rather than the store: INFO, ROLE and WAIT. The
//! connection's task renders them (`state::Next::Node`) once what they read is durable.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::resp::{reply, NodeRead, Version, REDIS_VERSION};

use super::super::role::{LinkState, Role};
use super::super::{stats, Node};

/// How often WAIT looks again at its followers' acknowledgements.
const WAIT_POLL: Duration = Duration::from_millis(5);

pub async fn answer(node: &Node, read: NodeRead, out: &mut BytesMut) {
    match read {
        NodeRead::Info { sections, version } => {
            let text = info(node, &sections);
            reply::verbatim(out, &text, version);
        }
        NodeRead::Role { version } => role(node, out, version),
        NodeRead::Wait {
            replicas,
            seq,
            deadline,
        } => {
            // As Redis's WAIT: the followers that have this connection's writes, counted once
            // enough have them, at the timeout, or at shutdown.
            let mut shutdown = node.shutdown.subscribe();
            loop {
                let acked = node.leader().map_or(0, |leader| {
                    leader
                        .followers
                        .borrow()
                        .values()
                        .filter(|follower| follower.acked_seq >= seq)
                        .count()
                });
                let now = Instant::now();
                let expired = deadline.is_some_and(|deadline| now >= deadline);
                if acked as u64 >= replicas || expired || *shutdown.borrow_and_update() {
                    reply::integer(out, acked as i64);
                    return;
                }
                let pause = deadline.map_or(WAIT_POLL, |d| (d - now).min(WAIT_POLL));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

fn role(node: &Node, out: &mut BytesMut, _version: Version) {
    let durable = node.shard.engine.borrow().durable_seq();
    match &node.role {
        Role::Leader(leader) => {
            let followers = leader.followers.borrow();
            reply::array(out, 3);
            reply::bulk(out, b"master");
            reply::integer(out, durable as i64);
            reply::array(out, followers.len());
            for follower in followers.values() {
                reply::array(out, 3);
                reply::bulk(out, follower.addr.ip().to_string().as_bytes());
                reply::bulk(out, follower.addr.port().to_string().as_bytes());
                reply::bulk(out, follower.acked_seq.to_string().as_bytes());
            }
        }
        Role::Follower(follower) => {
            let (host, port) = split_addr(&follower.leader_addr);
            let state = match follower.link.borrow().state {
                LinkState::Connected => "connected",
                LinkState::ReceivingSnapshot => "sync",
                LinkState::Connecting | LinkState::Disconnected => "connecting",
            };
            reply::array(out, 5);
            reply::bulk(out, b"slave");
            reply::bulk(out, host.as_bytes());
            reply::integer(out, port);
            reply::bulk(out, state.as_bytes());
            reply::integer(out, durable as i64);
        }
        Role::Raft(raft) => {
            // As Redis's ROLE: master (no replicas listed; `kvsctl cluster` lists members), or
            // slave of the leader, `connected` while one is known.
            if node.shard.engine.borrow().leads() {
                reply::array(out, 3);
                reply::bulk(out, b"master");
                reply::integer(out, durable as i64);
                reply::array(out, 0);
                return;
            }
            let leader = raft.view.leader_addr.borrow().clone();
            let (host, port) = split_addr(&leader);
            let state = if leader.is_empty() {
                "connecting"
            } else {
                "connected"
            };
            reply::array(out, 5);
            reply::bulk(out, b"slave");
            reply::bulk(out, host.as_bytes());
            reply::integer(out, port);
            reply::bulk(out, state.as_bytes());
            reply::integer(out, durable as i64);
        }
    }
}

fn split_addr(addr: &str) -> (&str, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(0)),
        None => (addr, 0),
    }
}

/// INFO's text: `# Section` headers and `field:value` lines ending in CRLF, Redis's field
/// names where the meaning is the same and `kvs_` ones for the rest; `docs/resp.md` lists them.
pub fn info(node: &Node, sections: &[String]) -> String {
    const DEFAULT: [&str; 6] = [
        "server",
        "clients",
        "persistence",
        "replication",
        "stats",
        "keyspace",
    ];
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s == name
                    || s == "everything"
                    || ((s == "all" || s == "default") && DEFAULT.contains(&name))
            })
    };
    let engine = node.shard.engine.borrow();
    let config = &node.config;
    let stats = &node.stats;
    let mut text = String::new();
    let section = |text: &mut String, title: &str| {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {title}\r\n");
    };
    let line = |text: &mut String, name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(text, "{name}:{value}\r\n");
    };
    let uptime = node.started.elapsed().as_secs();
    if wanted("server") {
        section(&mut text, "Server");
        line(&mut text, "redis_version", &REDIS_VERSION);
        line(&mut text, "kvs_version", &env!("CARGO_PKG_VERSION"));
        line(&mut text, "redis_mode", &"standalone");
        line(&mut text, "arch_bits", &(usize::BITS));
        line(&mut text, "multiplexing_api", &"io_uring");
        line(&mut text, "process_id", &std::process::id());
        line(&mut text, "run_id", &node.shard.log.log_id());
        line(
            &mut text,
            "tcp_port",
            &config.resp_listen.map_or(0, |a| a.port()),
        );
        line(&mut text, "kvs_native_port", &config.listen.port());
        line(&mut text, "uptime_in_seconds", &uptime);
        line(&mut text, "uptime_in_days", &(uptime / 86_400));
        line(&mut text, "kvs_node_id", &config.node_id);
    }
    if wanted("clients") {
        section(&mut text, "Clients");
        line(&mut text, "connected_clients", &node.connection_count());
        line(&mut text, "maxclients", &config.connections_max);
        line(&mut text, "blocked_clients", &0);
        line(&mut text, "kvs_writer_connections", &node.writers.get());
    }
    if wanted("persistence") {
        let compaction = node.shard.compaction.borrow();
        section(&mut text, "Persistence");
        line(&mut text, "loading", &0);
        line(&mut text, "aof_enabled", &1);
        line(
            &mut text,
            "aof_rewrite_in_progress",
            &u8::from(compaction.running),
        );
        let status = match engine.write_failed() {
            Some(_) => "err",
            None => "ok",
        };
        line(&mut text, "aof_last_write_status", &status);
        line(&mut text, "kvs_fsync", &config.fsync);
        line(&mut text, "kvs_last_seq", &engine.last_seq());
        line(&mut text, "kvs_durable_seq", &engine.durable_seq());
        line(&mut text, "kvs_log_bytes", &node.shard.log.log_bytes());
        line(&mut text, "kvs_segments", &node.shard.log.segment_count());
        line(
            &mut text,
            "kvs_compaction_runs_total",
            &compaction.runs_total,
        );
    }
    if wanted("replication") {
        section(&mut text, "Replication");
        let durable = engine.durable_seq();
        // What a Redis replica says of its master, for both kinds of follower.
        let replica = |text: &mut String, leader_addr: &str, up: bool| {
            let (host, port) = split_addr(leader_addr);
            line(text, "role", &"slave");
            line(text, "master_host", &host);
            line(text, "master_port", &port);
            line(text, "master_link_status", &if up { "up" } else { "down" });
            line(text, "slave_repl_offset", &durable);
            line(text, "slave_read_only", &1);
        };
        match &node.role {
            Role::Leader(leader) => {
                let followers = leader.followers.borrow();
                line(&mut text, "role", &"master");
                line(&mut text, "connected_slaves", &followers.len());
                for (i, follower) in followers.values().enumerate() {
                    let value = format!(
                        "ip={},port={},state=online,offset={},lag=0,kvs_node_id={}",
                        follower.addr.ip(),
                        follower.addr.port(),
                        follower.acked_seq,
                        follower.node_id
                    );
                    line(&mut text, &format!("slave{i}"), &value);
                }
                line(&mut text, "kvs_min_acks", &config.min_acks);
            }
            Role::Follower(follower) => {
                let link = follower.link.borrow();
                let up = link.state == LinkState::Connected;
                replica(&mut text, &follower.leader_addr, up);
                line(
                    &mut text,
                    "kvs_leader_durable_seq",
                    &link.leader_durable_seq,
                );
            }
            Role::Raft(raft) => {
                if engine.leads() {
                    line(&mut text, "role", &"master");
                    line(&mut text, "connected_slaves", &0);
                } else {
                    let leader = raft.view.leader_addr.borrow().clone();
                    replica(&mut text, &leader, !leader.is_empty());
                }
                line(
                    &mut text,
                    "kvs_raft_term",
                    &raft.raft.metrics().borrow().current_term,
                );
            }
        }
        line(&mut text, "master_repl_offset", &durable);
    }
    if wanted("stats") {
        section(&mut text, "Stats");
        line(
            &mut text,
            "total_connections_received",
            &stats.connections_total.get(),
        );
        line(
            &mut text,
            "total_commands_processed",
            &stats.requests.total(),
        );
        line(&mut text, "kvs_batches_total", &stats.batches_total.get());
        line(
            &mut text,
            "kvs_batch_records_total",
            &stats.batch_records_total.get(),
        );
        line(
            &mut text,
            "kvs_auth_failures_total",
            &stats.auth_failures_total.get(),
        );
        let pubsub = &node.pubsub;
        line(&mut text, "pubsub_channels", &pubsub.channel_count());
        line(&mut text, "pubsub_patterns", &pubsub.numpat());
        line(
            &mut text,
            "kvs_pubsub_messages_total",
            &pubsub.published_total.get(),
        );
        line(
            &mut text,
            "kvs_pubsub_deliveries_total",
            &pubsub.delivered_total.get(),
        );
        line(
            &mut text,
            "kvs_pubsub_subscribers_cut_total",
            &pubsub.cut_total.get(),
        );
    }
    if wanted("keyspace") {
        section(&mut text, "Keyspace");
        if engine.key_count() > 0 {
            // Redis's avg_ttl is an estimate from its sampling; kvs does not keep one.
            let value = format!(
                "keys={},expires={},avg_ttl=0",
                engine.key_count(),
                engine.expiring_key_count()
            );
            line(&mut text, "db0", &value);
        }
    }
    if sections.iter().any(|s| s == "kvs" || s == "everything") {
        drop(engine);
        section(&mut text, "Kvs");
        for stat in stats::render(node).lines() {
            text.push_str(stat);
            text.push_str("\r\n");
        }
    }
    text
}

//! A kvsd node in a Raft cluster (issue 11): recovery of the log as openraft's log store, the
//! openraft instance, joining, and the connections, which here serve client requests, the admin
//! ops (0x20–0x25) and the Raft RPCs (0x45–0x47) on the one client port.
//!
//! Replaces, on a Raft node, what `server::serve` runs for the asynchronous leader/follower
//! roles: no committer (openraft appends through the log store, fsynced), no compactor (the
//! Raft log is never compacted in this version), no replication streams.
//!
//! A connection reads requests in order and runs each as its own task so that a pipelining
//! client's writes share commits; replies leave in request order (a writer task awaits them in
//! turn). A read waits for the connection's earlier writes, so a connection reads its writes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use super::config::Config;
use super::frames::{self, ReadError};
use super::ServerError;
use crate::engine::Engine;
use crate::protocol::frame::{self, Frame, BODY_OFFSET};
use crate::protocol::response::{self, encode_error};
use crate::protocol::{Request, Status};
use crate::raft::codec::{self, Reader};
use crate::raft::log_store::{LogStore, RaftLog};
use crate::raft::network::{Conn, Network};
use crate::raft::state_machine::{Machine, StateMachine};
use crate::raft::{node_id_of, op, seq_of, Command, Member, NodeId, Raft};

/// Requests of one connection being worked on at once; past this it stops reading.
const CONNECTION_IN_FLIGHT_MAX: usize = 256;
/// How long JOIN waits between tries.
const JOIN_RETRY_MS: u64 = 300;

/// What the connections of a Raft node share.
pub struct RaftNode {
    pub config: Config,
    pub id: NodeId,
    pub addr: String,
    pub raft: Raft,
    pub engine: Rc<RefCell<Engine>>,
    pub log: Rc<RaftLog>,
    pub sm: Rc<StateMachine>,
    pub started: Instant,
    pub shutdown: watch::Sender<bool>,
    /// Requests answered, for STATS.
    pub requests: std::cell::Cell<u64>,
    /// Client writes waiting to be proposed, many to an entry (the leader's group commit).
    pub proposer: super::raft_proposer::Proposer,
}

impl RaftNode {
    fn metrics(&self) -> openraft::RaftMetrics<NodeId, Member> {
        self.raft.metrics().borrow().clone()
    }

    /// The leader's client address, if one is known (and is not this node).
    pub fn leader_addr(&self) -> Option<String> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|member| member.addr.clone())
    }

    /// This node leads and has heard from a quorum within the election timeout: a leader cut off
    /// from the majority stops answering as one after that, even before openraft notices.
    fn leads(&self) -> bool {
        let timeout = self.election_timeout();
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < timeout.as_millis() as u64)
    }

    fn election_timeout(&self) -> Duration {
        let settings = self
            .config
            .raft
            .as_ref()
            .expect("a raft node has raft settings");
        Duration::from_millis(settings.election_timeout_ms)
    }

    pub fn role(&self, metrics: &openraft::RaftMetrics<NodeId, Member>) -> &'static str {
        match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
            ServerState::Follower | ServerState::Learner => {
                let voter = metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|id| id == self.id);
                if voter {
                    "follower"
                } else {
                    "learner"
                }
            }
        }
    }
}

/// Serves a Raft node until SIGINT or SIGTERM.
pub fn run(
    config: Config,
    listener: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
) -> Result<(), ServerError> {
    let settings = config.raft.clone().expect("raft::run is for raft nodes");
    let started = Instant::now();
    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        what: "local_addr",
        source,
    })?;
    // The index checkpoint describes an index of every record; a Raft node's index holds only
    // committed entries, so it never uses one.
    crate::wal::checkpoint::remove(&config.data_dir).map_err(|source| ServerError::Io {
        what: "removing the index checkpoint",
        source,
    })?;
    let id = node_id_of(&config.node_id);
    let member_addr = addr.to_string();

    crate::runtime::start(async move {
        let io = |what| move |source| ServerError::Io { what, source };
        let (log, recovered) = RaftLog::recover(
            &config.data_dir,
            config.repair_truncate,
            config.segment_bytes,
            config.value_cache_bytes,
        )?;
        if log.file.segments().iter().any(|s| s.compacted.is_some()) {
            return Err(ServerError::Config(
                "this data dir holds compacted segments (written by a kvsd outside Raft): a Raft node needs a data dir of its own".into(),
            ));
        }
        // Marks the data dir as a Raft member's at once (the seeds' flags read it: src/raft/seed.rs).
        let vote_path = config.data_dir.join(crate::raft::vote::VOTE_FILE);
        if !vote_path.exists() {
            crate::raft::vote::write_hard_state(&config.data_dir, &Default::default())
                .map_err(io("writing raft-vote"))?;
        }
        super::fd_limit::ensure(config.connections_max, recovered.segments.len())
            .map_err(ServerError::Config)?;
        let log = Rc::new(log);
        let file = log.file.clone();
        let engine = Rc::new(RefCell::new(Engine::new(0)));
        let sm = Rc::new(StateMachine::new(engine.clone(), log.clone()));
        // Snapshots and purging (`raft::snapshot`, `super::raft_compact`).
        *sm.crash_point.borrow_mut() = config.crash_point.clone();
        sm.damage_sends.set(config.damage_snapshot_sends);
        sm.restore().await.map_err(io("loading raft-snapshot"))?;
        let (snapshot_policy, snapshot_chunk_bytes) =
            super::raft_compact::policy(&settings, config.frame_bytes_max);
        let raft_config = openraft::Config {
            cluster_name: "kvs".into(),
            election_timeout_min: settings.election_timeout_ms,
            election_timeout_max: settings.election_timeout_ms * 2,
            heartbeat_interval: settings.heartbeat_ms,
            snapshot_policy,
            max_in_snapshot_log_to_keep: settings.keep_entries,
            purge_batch_size: super::raft_compact::PURGE_BATCH_ENTRIES,
            snapshot_max_chunk_size: snapshot_chunk_bytes,
            install_snapshot_timeout: super::raft_compact::INSTALL_TIMEOUT_MS,
            max_payload_entries: 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ServerError::Config(format!("raft settings: {e}")))?;
        let network = Network {
            secret: config.auth.as_ref().map(|s| Rc::new(s.bytes().to_vec())),
            frame_bytes_max: config.frame_bytes_max,
            dial: settings.dial.clone(),
        };
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            network,
            LogStore { log: log.clone() },
            Machine(sm.clone()),
        )
        .await
        .map_err(|e| ServerError::Config(format!("starting raft: {e}")))?;
        let node = Rc::new(RaftNode {
            config,
            id,
            addr: member_addr.clone(),
            raft,
            engine,
            log,
            sm,
            started,
            shutdown: watch::Sender::new(false),
            requests: std::cell::Cell::new(0),
            proposer: Default::default(),
        });
        crate::runtime::spawn(super::raft_proposer::run(node.clone()));
        let preparer = file.clone();
        crate::runtime::spawn(async move { preparer.prepare_segments().await });

        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| ServerError::Config(format!("raft: {e}")))?;
        if settings.bootstrap {
            if initialized {
                tracing::info!("--bootstrap: this data dir already belongs to a cluster; starting as a member of it");
            } else {
                let members = BTreeMap::from([(
                    id,
                    Member {
                        name: node.config.node_id.clone(),
                        addr: member_addr.clone(),
                    },
                )]);
                node.raft
                    .initialize(members)
                    .await
                    .map_err(|e| ServerError::Config(format!("bootstrapping the cluster: {e}")))?;
                tracing::info!("bootstrapped a new cluster with this node as its one voter");
            }
        }
        if let Some(join) = settings.join.clone() {
            if initialized {
                tracing::info!("--join: this data dir already belongs to a cluster; starting as a member of it");
            } else {
                crate::runtime::spawn(join_cluster(node.clone(), join, settings.learner));
            }
        }

        let listener = crate::runtime::TcpListener::from_std(listener);
        let mut terminate = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
        tracing::info!(
            %addr,
            data_dir = %node.config.data_dir.display(),
            node_id = %node.config.node_id,
            raft_id = id,
            last_seq = recovered.last_seq,
            records = recovered.records,
            truncated_bytes = recovered.truncated_bytes,
            recovery_ms = started.elapsed().as_millis() as u64,
            "kvsd ready (raft)"
        );
        let metrics_addr = match metrics {
            Some(metrics) => {
                let metrics_addr = metrics
                    .local_addr()
                    .map_err(io("local_addr of --metrics-addr"))?;
                let site: Rc<dyn crate::metrics::Site> = node.clone();
                crate::runtime::spawn(crate::metrics::serve::run(
                    crate::runtime::TcpListener::from_std(metrics),
                    site,
                ));
                Some(metrics_addr)
            }
            None => None,
        };
        let addrs = super::ready::Addrs {
            addr,
            metrics_addr,
            resp_addr: None,
        };
        super::ready::announce(&node.config, addrs, recovered.last_seq)?;
        let reason = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        crate::runtime::spawn(serve_connection(node.clone(), stream, peer));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
            }
        };
        tracing::info!(reason, "shutting down");
        node.shutdown.send_replace(true);
        let _ = node.raft.shutdown().await;
        file.sync().await.map_err(io("final fdatasync"))?;
        tracing::info!(keys = node.engine.borrow().key_count(), "kvsd stopped");
        Ok(())
    })
}

/// Asks the member at `addr` (or the leader it names) to add this node, until one has.
async fn join_cluster(node: Rc<RaftNode>, mut addr: String, learner: bool) {
    let mut body = BytesMut::new();
    body.put_u8(u8::from(learner));
    put_string(&mut body, &node.config.node_id);
    put_string(&mut body, &node.addr);
    let secret = node.config.auth.as_ref().map(|s| s.bytes().to_vec());
    let mut logged = false;
    loop {
        let timeout = Duration::from_secs(30);
        let answer = async {
            let mut conn = Conn::open(
                &addr,
                secret.as_deref(),
                node.config.frame_bytes_max,
                Duration::from_secs(2),
            )
            .await?;
            tokio::time::timeout(timeout, conn.request(op::JOIN, 0, &body))
                .await
                .map_err(|_| crate::raft::network::CallError::Wire("no answer".into()))?
        }
        .await;
        match answer {
            Ok((Status::Ok, _)) => {
                tracing::info!(%addr, learner, "joined the cluster");
                return;
            }
            Ok((Status::NotLeader, leader)) if !leader.is_empty() => {
                addr = String::from_utf8_lossy(&leader).into_owned();
                continue;
            }
            Ok((status, text)) => {
                if !logged {
                    tracing::warn!(%addr, ?status, answer = %String::from_utf8_lossy(&text), "join: not added yet; retrying");
                    logged = true;
                }
            }
            Err(error) => {
                if !logged {
                    tracing::warn!(%addr, %error, "join: no member answered yet; retrying");
                    logged = true;
                }
            }
        }
        if *node.shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
    }
}

fn put_string(dst: &mut BytesMut, text: &str) {
    dst.put_u16_le(text.len() as u16);
    dst.put_slice(text.as_bytes());
}

type Reply = crate::runtime::Task<BytesMut>;

async fn serve_connection(node: Rc<RaftNode>, stream: crate::runtime::TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let (replies, mut queue) = mpsc::channel::<Reply>(CONNECTION_IN_FLIGHT_MAX);
    let writer_stream = stream.clone();
    let writer = crate::runtime::spawn(async move {
        while let Some(reply) = queue.recv().await {
            let Ok(out) = reply.await else { break };
            if out.is_empty() {
                continue;
            }
            let (result, _) = writer_stream.write_all(out.to_vec()).await;
            if result.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(crate::limits::CONNECTION_READ_BYTES);
    let mut authed = node.config.auth.is_none();
    // The connection's newest write: a read waits until it is answered.
    let mut last_write: Option<watch::Receiver<bool>> = None;
    let mut shutdown = node.shutdown.subscribe();
    loop {
        let frame = tokio::select! {
            frame = frames::next_frame(&stream, &mut buf, node.config.frame_bytes_max) => frame,
            _ = shutdown.changed() => break,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(ReadError::Frame(error)) => {
                let mut out = BytesMut::new();
                encode_error(&mut out, 0, &error.to_string());
                let _ = replies
                    .send(crate::runtime::spawn(async move { out }))
                    .await;
                break;
            }
            Err(_) => break,
        };
        let id = frame.header.id;
        if !authed {
            let mut out = BytesMut::new();
            let secret = node.config.auth.as_ref().expect("auth configured");
            let ok = frame.header.kind == crate::protocol::request::op::AUTH
                && secret.matches(&frame.body);
            if ok {
                authed = true;
                response::encode(&mut out, Status::Ok, 0, id, &[]);
            } else {
                encode_error(
                    &mut out,
                    id,
                    "authentication required: send AUTH with the secret of --auth-file first",
                );
            }
            let _ = replies
                .send(crate::runtime::spawn(async move { out }))
                .await;
            if ok {
                continue;
            }
            break;
        }
        let is_write = matches!(frame.header.kind, 0x02 | 0x03);
        let after = last_write.clone();
        let done = is_write.then(|| {
            let (tx, rx) = watch::channel(false);
            last_write = Some(rx);
            tx
        });
        let node = node.clone();
        let task = crate::runtime::spawn(async move {
            if let Some(mut after) = after.filter(|_| !is_write) {
                let _ = after.wait_for(|done| *done).await;
            }
            let mut out = BytesMut::new();
            handle(&node, frame, &mut out).await;
            node.requests.set(node.requests.get() + 1);
            if let Some(done) = done {
                done.send_replace(true);
            }
            out
        });
        if replies.send(task).await.is_err() {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

/// Answers one frame into `out`.
async fn handle(node: &RaftNode, frame: Frame, out: &mut BytesMut) {
    let id = frame.header.id;
    let reply = match frame.header.kind {
        op::RAFT_APPEND | op::RAFT_VOTE | op::RAFT_SNAPSHOT => raft_rpc(node, &frame).await,
        op::CLUSTER..=op::GET_LOCAL => admin(node, &frame).await,
        _ => client(node, &frame).await,
    };
    match reply {
        Ok((status, flags, body)) => response::encode(out, status, flags, id, &[&body]),
        Err(message) => encode_error(out, id, &message),
    }
}

type Answer = Result<(Status, u8, Bytes), String>;

fn ok(body: impl Into<Bytes>) -> Answer {
    Ok((Status::Ok, 0, body.into()))
}

fn not_leader(node: &RaftNode) -> Answer {
    let leader = node
        .leader_addr()
        .filter(|addr| *addr != node.addr)
        .unwrap_or_default();
    Ok((Status::NotLeader, 0, Bytes::from(leader)))
}

async fn raft_rpc(node: &RaftNode, frame: &Frame) -> Answer {
    let mut body = BytesMut::new();
    match frame.header.kind {
        op::RAFT_APPEND => {
            let rpc = codec::decode_append(&frame.body).map_err(|e| e.to_string())?;
            let response = node
                .raft
                .append_entries(rpc)
                .await
                .map_err(|e| e.to_string())?;
            codec::encode_append_response(&mut body, &response);
        }
        op::RAFT_VOTE => {
            let rpc = codec::decode_vote_request(&frame.body).map_err(|e| e.to_string())?;
            let response = node.raft.vote(rpc).await.map_err(|e| e.to_string())?;
            codec::encode_vote_response(&mut body, &response);
        }
        _ => {
            let rpc = codec::decode_snapshot_request(&frame.body).map_err(|e| e.to_string())?;
            let response =
                crate::raft::snapshot_receive::receive(&node.raft, &node.sm, rpc).await?;
            codec::encode_snapshot_response(&mut body, &response);
        }
    }
    ok(body.freeze())
}

/// The reads and writes of native protocol v1, on a Raft node.
async fn client(node: &RaftNode, frame: &Frame) -> Answer {
    let limits = node.config.limits;
    let request = Request::decode(frame, limits).map_err(|e| e.to_string())?;
    let timeout = node.config.ack_timeout;
    match request {
        Request::Set { key, value } => write(node, Command::Set { key, value }, timeout).await,
        Request::Del { key } => write(node, Command::Del { key }, timeout).await,
        Request::Get { key, min_seq } => {
            if let Err(answer) = read_barrier(node, min_seq, false).await {
                return answer;
            }
            read_value(node, &key).await
        }
        Request::Keys {
            prefix,
            start_after,
        } => {
            if let Err(answer) = read_barrier(node, None, false).await {
                return answer;
            }
            let keys_body_max =
                node.config.frame_bytes_max as usize - (BODY_OFFSET - frame::KIND_OFFSET);
            let (flags, body) = crate::command::keys_reply(
                &node.engine.borrow(),
                &prefix,
                start_after.as_deref(),
                keys_body_max,
            );
            Ok((Status::Ok, flags, body))
        }
        Request::Ping { payload } => ok(payload),
        Request::Stats => ok(stats(node)),
        Request::Compact => {
            let text = super::raft_compact::compact(node).await?;
            Ok((Status::Ok, 0, Bytes::from(text)))
        }
        Request::Auth { .. } => ok(Bytes::new()),
        Request::Ext(_) => Err(
            "this op (expiry, counters, MGET/MSET, TXN, WATCH) is not served by a Raft node in this version; run kvsd without --bootstrap/--join for it".into(),
        ),
    }
}

/// Before a read: with `min_seq`, wait until this node has applied it (any role: read-your-
/// writes on followers and learners); `local` (GET_LOCAL) reads what is applied here, maybe
/// stale; otherwise the read is linearizable: the leader confirms with a quorum that it still
/// leads (ReadIndex, `ensure_linearizable`) and waits until that index is applied, and any
/// other member answers NOT_LEADER.
async fn read_barrier(node: &RaftNode, min_seq: Option<u64>, local: bool) -> Result<(), Answer> {
    if let Some(min_seq) = min_seq {
        let mut applied = node.sm.applied_seq.subscribe();
        let waited = tokio::time::timeout(
            node.config.min_seq_wait,
            applied.wait_for(|seq| *seq >= min_seq),
        )
        .await;
        return match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Err(format!(
                "seq {min_seq} was not applied here within {} ms (--min-seq-wait-ms); applied: {}",
                node.config.min_seq_wait.as_millis(),
                *node.sm.applied_seq.borrow()
            ))),
        };
    }
    if local {
        return Ok(());
    }
    if !node.leads() {
        return Err(not_leader(node));
    }
    match tokio::time::timeout(node.election_timeout() * 2, node.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => match error {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_)) => {
                Err(not_leader(node))
            }
            error => Err(Err(format!(
                "this node could not confirm it still leads: {error}"
            ))),
        },
        Err(_) => Err(Err(
            "this node could not confirm it still leads (no quorum answered in time): retry".into(),
        )),
    }
}

async fn read_value(node: &RaftNode, key: &[u8]) -> Answer {
    let location = node.engine.borrow().get(key);
    match location {
        None => Ok((Status::NotFound, 0, Bytes::new())),
        Some(location) => {
            let value = match node.log.file.cached_value(location) {
                Some(value) => value,
                None => node
                    .log
                    .file
                    .read_value(location)
                    .await
                    .map_err(|e| format!("reading the value failed: {e}"))?,
            };
            ok(value)
        }
    }
}

async fn write(node: &RaftNode, command: Command, timeout: Duration) -> Answer {
    use super::raft_proposer::Outcome;
    if !node.leads() {
        return not_leader(node);
    }
    let del = matches!(command, Command::Del { .. });
    match tokio::time::timeout(timeout, node.proposer.propose(command)).await {
        Ok(Ok(Outcome::Applied { seq, existed })) => {
            if del && !existed {
                return Ok((Status::NotFound, 0, Bytes::new()));
            }
            ok(Bytes::copy_from_slice(&seq.to_le_bytes()))
        }
        Ok(Ok(Outcome::NotLeader)) => not_leader(node),
        Ok(Ok(Outcome::Failed(message))) => Err(message),
        Ok(Err(_)) => Err("the write was dropped: this node is shutting down".into()),
        Err(_) => Err(format!(
            "the write was not committed within {} ms (no majority reached): it may or may not be applied later",
            timeout.as_millis()
        )),
    }
}

fn member_id(node: &RaftNode, name: &str) -> Result<NodeId, String> {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership();
    let found = membership
        .nodes()
        .find(|(_, member)| member.name == name)
        .map(|(id, _)| *id);
    found.ok_or_else(|| format!("no member is named '{name}'"))
}

async fn change(node: &RaftNode, changes: ChangeMembers<NodeId, Member>) -> Result<(), String> {
    match node.raft.change_membership(changes, false).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err("not the leader".into())
        }
        Err(error) => Err(error.to_string()),
    }
}

async fn admin(node: &RaftNode, frame: &Frame) -> Answer {
    let kind = frame.header.kind;
    if kind == op::CLUSTER {
        return ok(cluster(node));
    }
    if kind == op::GET_LOCAL {
        if frame.body.is_empty() {
            return Err("GET_LOCAL takes the key as its body".into());
        }
        return read_value(node, &frame.body).await;
    }
    if kind == op::ELECT {
        node.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| e.to_string())?;
        return ok(Bytes::new());
    }
    if node.metrics().state != ServerState::Leader {
        return not_leader(node);
    }
    let mut reader = Reader::new(&frame.body);
    match kind {
        op::JOIN => {
            let learner = reader.bool("learner").map_err(|e| e.to_string())?;
            let name = reader.string("name").map_err(|e| e.to_string())?;
            let addr = reader.string("addr").map_err(|e| e.to_string())?;
            let id = node_id_of(&name);
            let metrics = node.metrics();
            let membership = metrics.membership_config.membership();
            let known = membership.get_node(&id).cloned();
            let voter = membership.voter_ids().any(|v| v == id);
            if let Some(known) = &known {
                if known.addr != addr {
                    return Err(format!(
                        "a member named '{name}' is already in the cluster at {}: remove it first (kvsctl cluster remove {name})",
                        known.addr
                    ));
                }
            }
            if known.is_none() {
                tracing::info!(%name, %addr, "adding a learner");
                node.raft
                    .add_learner(
                        id,
                        Member {
                            name: name.clone(),
                            addr,
                        },
                        true,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if !learner && !voter {
                tracing::info!(%name, "promoting to voter");
                change(node, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
            }
            ok(Bytes::new())
        }
        op::PROMOTE => {
            let name = String::from_utf8_lossy(&frame.body).into_owned();
            let id = member_id(node, &name)?;
            change(node, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
            ok(Bytes::new())
        }
        op::REMOVE => {
            let name = String::from_utf8_lossy(&frame.body).into_owned();
            let id = member_id(node, &name)?;
            let voter = node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id);
            if voter {
                change(node, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
            }
            change(node, ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
            ok(Bytes::new())
        }
        op::TRANSFER => {
            let name = String::from_utf8_lossy(&frame.body).into_owned();
            let id = member_id(node, &name)?;
            if id == node.id {
                return ok(Bytes::new());
            }
            let metrics = node.metrics();
            let membership = metrics.membership_config.membership();
            if !membership.voter_ids().any(|v| v == id) {
                return Err(format!("'{name}' is not a voter: only a voter can lead"));
            }
            let addr = membership
                .get_node(&id)
                .map(|m| m.addr.clone())
                .unwrap_or_default();
            // openraft 0.9 has no leadership transfer, and its voters refuse a candidate while
            // the leader's lease (the longest election timeout since they last heard from it)
            // runs. So this leader pauses its heartbeats until every lease on it has run out,
            // then has the target stand, and answers OK only once the target leads.
            node.raft.runtime_config().heartbeat(false);
            let moved = transfer_to(node, id, &addr).await;
            node.raft.runtime_config().heartbeat(true);
            moved?;
            ok(Bytes::new())
        }
        _ => Err(format!("unknown op 0x{kind:02x}")),
    }
}

/// `kvsctl cluster transfer`: with this leader's heartbeats paused, waits out the leases on it,
/// asks the target to stand (again after each election timeout), and returns once the target
/// leads, or an error saying where leadership is.
async fn transfer_to(node: &RaftNode, id: NodeId, addr: &str) -> Result<(), String> {
    let lease = node.election_timeout() * 2;
    tokio::time::sleep(lease + Duration::from_millis(20)).await;
    let secret = node.config.auth.as_ref().map(|s| s.bytes().to_vec());
    let mut conn = Conn::open(
        addr,
        secret.as_deref(),
        node.config.frame_bytes_max,
        Duration::from_secs(2),
    )
    .await
    .map_err(|e| e.to_string())?;
    for _ in 0..5 {
        conn.call(op::ELECT, 0, &[])
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + lease;
        while Instant::now() < deadline {
            if node.metrics().current_leader == Some(id) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let metrics = node.metrics();
    let now = metrics
        .current_leader
        .and_then(|l| metrics.membership_config.membership().get_node(&l).cloned())
        .map_or_else(
            || "no leader is known yet".to_string(),
            |m| format!("'{}' leads", m.name),
        );
    Err(format!(
        "leadership did not move to the target ({now}); try again"
    ))
}

/// `kvsctl cluster`: this node's view of the cluster, as `name:value` lines, then one line per
/// member: `member:<name> id:<id> addr:<addr> role:<role> matched_seq:<seq> lag:<entries>`
/// (`matched_seq` and `lag` are known on the leader only, `-` elsewhere).
fn cluster(node: &RaftNode) -> String {
    use std::fmt::Write;
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership();
    let mut text = String::new();
    let leader = metrics
        .current_leader
        .and_then(|id| membership.get_node(&id))
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let commit_seq = *node.sm.applied_seq.borrow();
    let last_seq = node.log.last_log_id().map_or(0, |id| seq_of(&id));
    let _ = writeln!(text, "node_id:{}", node.config.node_id);
    let _ = writeln!(text, "role:{}", node.role(&metrics));
    let _ = writeln!(text, "leader:{leader}");
    let _ = writeln!(text, "term:{}", metrics.current_term);
    let _ = writeln!(text, "commit_seq:{commit_seq}");
    let _ = writeln!(text, "last_seq:{last_seq}");
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    for (id, member) in membership.nodes() {
        let role = if Some(*id) == metrics.current_leader {
            "leader"
        } else if voters.contains(id) {
            "follower"
        } else {
            "learner"
        };
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id))
            .map(|m| m.as_ref().map_or(0, seq_of));
        let (matched, lag) = match (matched, Some(*id) == metrics.current_leader) {
            (_, true) => (last_seq.to_string(), "0".to_string()),
            (Some(m), false) => (m.to_string(), last_seq.saturating_sub(m).to_string()),
            (None, false) => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            text,
            "member:{} id:{id} addr:{} role:{role} matched_seq:{matched} lag:{lag}",
            member.name, member.addr
        );
    }
    text
}

/// STATS on a Raft node: the `docs/protocol.md` names that apply, and the Raft ones.
fn stats(node: &RaftNode) -> String {
    use std::fmt::Write;
    let metrics = node.metrics();
    let mut text = String::new();
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(text, "{name}:{value}");
    };
    let applied = *node.sm.applied_seq.borrow();
    let last_seq = node.log.last_log_id().map_or(0, |id| seq_of(&id));
    line("node_id", &node.config.node_id);
    line("role", &node.role(&metrics));
    line("term", &metrics.current_term);
    line("leader_addr", &node.leader_addr().unwrap_or_default());
    line("commit_seq", &applied);
    line("applied_seq", &applied);
    line("last_seq", &last_seq);
    line("durable_seq", &last_seq);
    line("keys", &node.engine.borrow().key_count());
    line("log_bytes", &node.log.file.log_bytes());
    line("segments", &node.log.file.segment_count());
    line(
        "members",
        &metrics.membership_config.membership().nodes().count(),
    );
    super::raft_compact::stats(node, &mut line);
    line("uptime_s", &node.started.elapsed().as_secs());
    line("requests_total", &node.requests.get());
    line("fsync", &node.config.fsync);
    text
}

//! A kvsd node in a Raft cluster (issue 11): recovery of the log as openraft's log store, the
//! openraft instance, joining, and what the shared request path needs from Raft.
//!
//! A Raft node serves clients through the same connections and command path as a single node
//! (`connection`, `command::accept`, the engine), on the client port and `--resp-port` alike.
//! What differs is only how a write becomes durable and who may write:
//! - the leader's engine decides every write as a single node's does, and its open batch
//!   goes to openraft as one entry of the changes decided (`raft_proposer`), not to a local
//!   fsync; a reply waits until the entry is applied here (`follow` moves the engine's
//!   durable seq with the applied one);
//! - only a leader that has applied its whole log takes writes and linearizable reads; its
//!   reads go once a leadership confirmation begun after they arrived succeeds
//!   (`confirm_reads`); other members answer NOT_LEADER, and serve `min_seq` reads, WATCH and
//!   GET_LOCAL from their own applied state;
//! - the admin ops (0x20–0x26) and the Raft RPCs (0x45–0x47) come in on the client port and
//!   are answered here (`answer`).
//!
//! No committer (openraft appends through the log store, fsynced), no compactor (snapshots and
//! purges instead: `raft_compact`), no replication streams.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

use super::config::Config;
use super::connection::state::RaftView;
use super::connection::Port;
use super::node::Node;
use super::role::Role;
use super::shard::Shard;
use super::ServerError;
use crate::engine::Engine;
use crate::protocol::frame::Frame;
use crate::protocol::response::{self, encode_error};
use crate::protocol::Status;
use crate::raft::codec::{self, Reader};
use crate::raft::log_store::{LogStore, RaftLog};
use crate::raft::network::{Conn, Network};
use crate::raft::state_machine::{Machine, StateMachine};
use crate::raft::{node_id_of, op, seq_of, Member, NodeId, Raft};

/// A failed leadership confirmation is tried again this many times.
const CONFIRM_RETRIES: u32 = 3;
/// How long JOIN waits for a new member to catch up before making it a voter.
const LEARNER_CATCH_UP: Duration = Duration::from_secs(600);
/// How long JOIN waits between tries.
const JOIN_RETRY_MS: u64 = 300;

/// A Raft member: openraft, its log and state machine, and what the connections decide by.
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
    /// The leader's address as the connections answer NOT_LEADER with it.
    pub view: RaftView,
    /// Connections → `confirm_reads`: a read waits for a leadership confirmation.
    pub confirm_wake: Notify,
    /// When the newest successful leadership confirmation began.
    pub confirmed: watch::Sender<Option<Instant>>,
    /// A membership change is under way: writes wait (`changing_membership`).
    pub paused: Cell<bool>,
    /// Held through each membership change, so that they run one at a time.
    membership: tokio::sync::Mutex<()>,
    /// Wakes `follow` (a membership change ended).
    pub kick: Notify,
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
    resp: Option<std::net::TcpListener>,
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
    let resp_addr = super::bound_addr(resp.as_ref(), "local_addr of --resp-port")?;
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
        log.flush_delay
            .set(std::time::Duration::from_millis(config.delay_log_flush_ms));
        let log = Rc::new(log);
        let file = log.file.clone();
        let mut engine = Engine::new(0);
        // An entry must fit one AppendEntries frame.
        engine.raft_member(config.frame_bytes_max as usize / 2);
        let engine = Rc::new(RefCell::new(engine));
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
        let raft = Rc::new(RaftNode {
            config: config.clone(),
            id,
            addr: member_addr.clone(),
            raft,
            engine: engine.clone(),
            log,
            sm,
            started,
            shutdown: watch::Sender::new(false),
            view: RaftView::default(),
            confirm_wake: Notify::new(),
            confirmed: watch::Sender::new(None),
            paused: Cell::new(false),
            membership: tokio::sync::Mutex::new(()),
            kick: Notify::new(),
        });
        let shard = Shard::new(engine, file.clone());
        let node = Rc::new(Node::with_role(config, shard, Role::Raft(raft.clone())));
        crate::runtime::spawn(super::raft_proposer::run(node.clone(), raft.clone()));
        crate::runtime::spawn(follow(node.clone(), raft.clone()));
        crate::runtime::spawn(confirm_reads(raft.clone()));
        crate::runtime::spawn(super::expirer::run(node.clone()));
        let sweeper = crate::runtime::spawn(super::sweep::run(node.clone()));
        let preparer = file.clone();
        crate::runtime::spawn(async move { preparer.prepare_segments().await });

        let initialized = raft
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
                        name: raft.config.node_id.clone(),
                        addr: member_addr.clone(),
                    },
                )]);
                raft.raft
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
                crate::runtime::spawn(join_cluster(raft.clone(), join, settings.learner));
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
            resp_addr = %resp_addr.map_or("off".to_string(), |addr| addr.to_string()),
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
            resp_addr,
        };
        super::ready::announce(&node.config, addrs, recovered.last_seq)?;
        let accepting = [
            Some(crate::runtime::spawn(super::accept_loop(
                node.clone(),
                listener,
                Port::Native,
            ))),
            resp.zip(resp_addr).map(|(listener, local)| {
                let listener = crate::runtime::TcpListener::from_std(listener);
                crate::runtime::spawn(super::accept_loop(
                    node.clone(),
                    listener,
                    Port::Resp { local },
                ))
            }),
        ];
        let reason = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        for task in accepting.into_iter().flatten() {
            task.abort();
            let _ = task.await;
        }
        tracing::info!(
            reason,
            "shutting down: no new connections or requests; finishing what is in flight"
        );
        node.shutdown.send_replace(true);
        raft.shutdown.send_replace(true);
        node.drain_connections().await;
        sweeper.abort();
        let _ = raft.raft.shutdown().await;
        file.sync().await.map_err(io("final fdatasync"))?;
        tracing::info!(keys = raft.engine.borrow().key_count(), "kvsd stopped");
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

/// Answers a Raft RPC or an admin op taken by a connection (`Later::Raft`) into `out`.
pub async fn answer(node: &Node, raft: &RaftNode, frame: &Frame, out: &mut BytesMut) {
    let id = frame.header.id;
    let reply = match frame.header.kind {
        op::RAFT_APPEND | op::RAFT_VOTE | op::RAFT_SNAPSHOT => raft_rpc(raft, frame).await,
        _ => admin(node, raft, frame).await,
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

/// GET_LOCAL: this member's applied value of `key`, maybe stale.
async fn read_local(node: &RaftNode, key: &[u8]) -> Answer {
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

/// Follows openraft's view of the cluster for the connections: the leader's address, the
/// applied seq (what replies wait for), and whether this node takes writes. A new leader
/// takes writes only once it has applied its whole log, the blank entry of its term included
/// (so every write any leader acknowledged is in its index); a leader that stops leading
/// abandons what it had pending (`engine::raft`).
async fn follow(node: Rc<Node>, raft: Rc<RaftNode>) {
    let mut metrics = raft.raft.metrics();
    let mut applied = raft.sm.applied_seq.subscribe();
    let mut shutdown = node.shutdown.subscribe();
    // The term this node took writes in, while it does.
    let mut led_term: Option<u64> = None;
    // When this node was elected, and in which term.
    let mut elected_at: Option<(u64, Instant)> = None;
    loop {
        let m = metrics.borrow_and_update().clone();
        let applied_seq = *applied.borrow_and_update();
        // A leader that has not heard from a quorum within the election timeout stops taking
        // writes and reads at once, before openraft notices it was cut off.
        let lease = raft.election_timeout().as_millis() as u64;
        let leading = m.state == ServerState::Leader
            && m.current_leader == Some(raft.id)
            && m.millis_since_quorum_ack.is_some_and(|ms| ms < lease);
        // What NOT_LEADER names: never this node itself (a leader not taking writes yet, or
        // no more, names none: the client retries).
        *raft.view.leader_addr.borrow_mut() = raft
            .leader_addr()
            .filter(|addr| *addr != raft.addr)
            .unwrap_or_default();
        let mut abandoned = false;
        {
            let mut engine = node.shard.engine.borrow_mut();
            engine.applied_through(applied_seq);
            if let Some(term) = led_term {
                if !leading || m.current_term != term {
                    tracing::info!(
                        term,
                        "stopped leading: abandoning the writes not yet applied"
                    );
                    engine.abandon();
                    led_term = None;
                    abandoned = true;
                }
            }
            let log_seq = m.last_log_index.map_or(0, |index| index + 1);
            let applied_all = m
                .last_applied
                .is_some_and(|id| seq_of(&id) == log_seq && id.leader_id.term == m.current_term);
            // Also after the proposer abandoned its writes (an entry got another seq than it
            // promised): this node still leads, and takes writes again from its applied log.
            let resume = led_term.is_none() || engine.is_paused() || !engine.leads();
            if leading && resume && !raft.paused.get() && applied_all && engine.settled() {
                engine.lead(log_seq);
                if led_term.is_none() {
                    tracing::info!(
                        term = m.current_term,
                        seq = log_seq,
                        "leading: taking writes"
                    );
                }
                led_term = Some(m.current_term);
            }
        }
        // Elected, with a fresh lease, not taking requests yet: connections hold theirs.
        // (Or during a membership change.) Woken at each turn while so, and when it ends.
        // A leader just elected has no quorum's answer yet: it holds them for a while too.
        let elected = m.state == ServerState::Leader && m.current_leader == Some(raft.id);
        if !elected {
            elected_at = None;
        } else if elected_at.is_none_or(|(term, _)| term != m.current_term) {
            elected_at = Some((m.current_term, Instant::now()));
        }
        let new = elected_at.is_some_and(|(_, at)| at.elapsed() < raft.election_timeout() * 2);
        let becoming = (leading || new) && !node.shard.engine.borrow().takes_writes();
        if raft.view.becoming_leader.replace(becoming) || becoming {
            node.shard.batch_taken.notify_waiters();
        }
        if abandoned {
            node.shard.wake_all();
            // The reads waiting for a confirmation: they are answered NOT_LEADER now.
            raft.confirmed.send_modify(|_| {});
        }
        node.progressed();
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = applied.changed() => {}
            _ = raft.kick.notified() => {}
            _ = shutdown.changed() => {}
            // The quorum's last answer ages without a change of the metrics.
            _ = tokio::time::sleep(Duration::from_millis(lease / 4 + 1)) => {}
        }
    }
}

/// Confirms for the connections that this leader still leads (openraft's ReadIndex,
/// `ensure_linearizable`), one round for every read that arrived before it began.
async fn confirm_reads(raft: Rc<RaftNode>) {
    // Rounds failed in a row: a failed round is tried again a few times for the reads that
    // wait (they give up at their deadline; a leader that lost its place abandons them).
    let mut failed = 0;
    loop {
        if failed == 0 || failed > CONFIRM_RETRIES {
            failed = 0;
            raft.confirm_wake.notified().await;
        }
        let began = Instant::now();
        let round =
            tokio::time::timeout(raft.election_timeout() * 2, raft.raft.ensure_linearizable())
                .await;
        match round {
            Ok(Ok(_)) => {
                failed = 0;
                raft.confirmed.send_replace(Some(began));
            }
            Ok(Err(error)) => {
                failed += 1;
                tracing::debug!(%error, "a read's leadership confirmation failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                failed += 1;
                tracing::debug!("no quorum confirmed this leader in time");
            }
        }
    }
}

/// A membership change on the leader: the writes already taken are applied first and none
/// is taken meanwhile (connections hold them, as while a new leader applies its log), because
/// the change's entries take seqs the open batch would otherwise have been promised.
async fn changing_membership<F: std::future::Future<Output = Result<(), String>>>(
    node: &Node,
    raft: &RaftNode,
    change: F,
) -> Result<(), String> {
    // One change at a time: two members joining at once are two changes, and the first to end
    // must not let writes resume while the other's entries are still to come (each would take
    // a seq the open batch was promised).
    let _one_at_a_time = raft.membership.lock().await;
    raft.paused.set(true);
    node.shard.engine.borrow_mut().pause_writes();
    let deadline = Instant::now() + node.config.ack_timeout;
    let result = loop {
        if node.shard.engine.borrow().settled() {
            break change.await;
        }
        if Instant::now() >= deadline {
            break Err("the writes under way were not applied in time; try again".into());
        }
        node.shard.commit_wake.notify_one();
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    raft.paused.set(false);
    // The leader follower (`follow`) takes writes again once the change is applied.
    raft.kick.notify_one();
    result
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

async fn admin(server: &Node, node: &RaftNode, frame: &Frame) -> Answer {
    let kind = frame.header.kind;
    if kind == op::CLUSTER {
        return ok(cluster(node));
    }
    if kind == op::GET_LOCAL {
        if frame.body.is_empty() {
            return Err("GET_LOCAL takes the key as its body".into());
        }
        return read_local(node, &frame.body).await;
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
            // Writes wait only while a membership entry is appended and applied, not while
            // the new member catches up (a snapshot may take a while).
            if known.is_none() {
                tracing::info!(%name, %addr, "adding a learner");
                let member = Member {
                    name: name.clone(),
                    addr,
                };
                let added = async {
                    node.raft
                        .add_learner(id, member, false)
                        .await
                        .map(|response| response.log_id)
                        .map_err(|e| e.to_string())
                };
                let mut log_id = None;
                changing_membership(server, node, async {
                    log_id = Some(added.await?);
                    Ok(())
                })
                .await?;
                if let Some(log_id) = log_id {
                    caught_up(node, id, log_id).await?;
                }
            }
            let changes = async {
                if !learner && !voter {
                    tracing::info!(%name, "promoting to voter");
                    change(node, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                }
                Ok(())
            };
            changing_membership(server, node, changes).await?;
            ok(Bytes::new())
        }
        op::PROMOTE => {
            let name = String::from_utf8_lossy(&frame.body).into_owned();
            let id = member_id(node, &name)?;
            let changes = change(node, ChangeMembers::AddVoterIds(BTreeSet::from([id])));
            changing_membership(server, node, changes).await?;
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
            let changes = async {
                if voter {
                    change(node, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
                }
                change(node, ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await
            };
            changing_membership(server, node, changes).await?;
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

/// Waits until the member `id` holds the log up to `log_id` (what openraft's blocking
/// `add_learner` waits for), or says where it stands.
async fn caught_up(node: &RaftNode, id: NodeId, log_id: crate::raft::LogId) -> Result<(), String> {
    node.raft
        .wait(Some(LEARNER_CATCH_UP))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .is_some_and(|matched| matched.is_some_and(|m| m.index >= log_id.index))
            },
            "the new member to catch up",
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("the new member has not caught up yet ({e}): it was added as a learner; join again to go on"))
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
pub fn stats(server: &Node, node: &RaftNode) -> String {
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
    line("requests_total", &server.stats.requests.total());
    line("connections", &server.connection_count());
    line("fsync", &node.config.fsync);
    text
}

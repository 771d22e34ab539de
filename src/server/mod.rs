//! The server: recovery, the listener, connections, the committer and shutdown, on one
//! single-threaded io_uring loop (pinned to a core with `--core`).
//!
//! - `node`: what the loop's tasks share (config, role, shard, connections, stats, shutdown).
//! - `role`: leader with followers, or follower with its link. `shard`: engine, log, the
//!   committer's signals and the wait list of connections.
//! - `connection`: one task per client, driving `connection::state`, a plain value.
//! - `committer`: group commit. `compactor`, `sweep` (idle/stalled connections),
//!   `leader_stream` / `follower_link` (replication), `stats` (STATS and the `/metrics`
//!   snapshot), `ready`, `fd_limit`, `protected` (no wide bind without a secret).
//!
//! The runtime is named only in `crate::runtime`.

mod committer;
mod compactor;
pub mod config;
mod connection;
mod expirer;
mod fd_limit;
mod follower_link;
mod frames;
mod leader_stream;
mod node;
pub mod protected;
pub mod pubsub;
mod raft_compact;
mod raft_metrics;
mod raft_node;
mod raft_proposer;
mod ready;
mod role;
mod shard;
mod stats;
mod sweep;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use connection::Port;
pub use node::Node;
use shard::Shard;

pub use config::{Config, FsyncPolicy};

use crate::engine::Engine;
use crate::limits::SET_OVERHEAD_BYTES;
use crate::wal::file::LogFile;
use crate::wal::record::Record;
use crate::wal::recovery::{self, RecoveryError};
use crate::wal::RecordHeader;

/// Why kvsd could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot pin to CPU {core}: {reason}")]
    Pin { core: usize, reason: String },
    #[error("recovery of the data dir failed: {0}")]
    Recovery(#[from] RecoveryError),
    #[error(
        "cannot listen on {addr}: {source} (is another kvsd running there? pick another --port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("recovery of the data dir stopped at {0}; start the kvsd version that wrote it")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The listening socket handed to a kvsd that re-executes itself (see `restart`).
const LISTEN_FD_ENV: &str = "KVS_LISTEN_FD";
/// The `--metrics-addr` socket, handed on the same way: its port (even one picked with
/// `HOST:0`) stays, and a scrape during the restart waits in its backlog for the new process.
const METRICS_FD_ENV: &str = "KVS_METRICS_FD";
/// The same for the RESP port (`--resp-port`).
const RESP_FD_ENV: &str = "KVS_RESP_FD";

/// Recovers the data dir and serves until SIGINT or SIGTERM; returns once every acknowledged
/// write is durable. A follower that received a snapshot starts again on it: the process
/// executes itself anew, keeping only its listening sockets (and so its ports).
pub fn run(config: Config) -> Result<(), ServerError> {
    protected::check("--bind", config.listen.ip(), &config)?;
    let listener = match inherited_listener(LISTEN_FD_ENV) {
        Some(listener) => listener,
        None => bind(config.listen)?,
    };
    let inherited_metrics = inherited_listener(METRICS_FD_ENV);
    let metrics = match (config.metrics_addr, inherited_metrics) {
        (None, _) => None,
        (Some(_), Some(listener)) => Some(listener),
        (Some(addr), None) => Some(bind(addr).map_err(|error| match error {
            ServerError::Bind { addr, source } => ServerError::Config(format!(
                "cannot listen on {addr} (--metrics-addr): {source}"
            )),
            error => error,
        })?),
    };
    // The Redis protocol's port, bound before recovery as the native one.
    let resp = match (config.resp_listen, inherited_listener(RESP_FD_ENV)) {
        (None, _) => None,
        (Some(_), Some(listener)) => Some(listener),
        (Some(addr), None) => Some(bind(addr).map_err(|error| match error {
            ServerError::Bind { addr, source } => {
                ServerError::Config(format!("cannot listen on {addr} (--resp-port): {source}"))
            }
            error => error,
        })?),
    };
    if config.raft.is_some() {
        return raft_node::run(config, listener, metrics, resp);
    }
    let clone = |listener: &std::net::TcpListener| {
        listener.try_clone().map_err(|source| ServerError::Io {
            what: "listening socket",
            source,
        })
    };
    let kept = Kept {
        metrics: metrics.as_ref().map(clone).transpose()?,
        resp: resp.as_ref().map(clone).transpose()?,
    };
    match serve(config, clone(&listener)?, metrics, resp)? {
        Outcome::Stopped => Ok(()),
        Outcome::Restart => restart(listener, kept),
    }
}

/// Binds the client port. Right after a kvsd on it was killed, the kernel may still hold its
/// socket for a moment (an io_uring is torn down after its process): retry for a while then.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let deadline = Instant::now() + Duration::from_millis(crate::limits::BIND_RETRY_MS);
    let mut logged = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                if !logged {
                    tracing::warn!(%addr, "the port is still in use; retrying for a few seconds");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(source) => return Err(ServerError::Bind { addr, source }),
        }
    }
}

/// The listening sockets besides the client port that a restart on a snapshot keeps.
struct Kept {
    metrics: Option<std::net::TcpListener>,
    resp: Option<std::net::TcpListener>,
}

/// Starts this program again with the same arguments and the listening sockets (the client
/// port, the metrics port and the RESP port): every other file, socket and io_uring closes as
/// at exit, so no connection of the old state lingers.
fn restart(listener: std::net::TcpListener, kept: Kept) -> Result<(), ServerError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let keep = |listener: &std::net::TcpListener| {
        let fd = listener.as_raw_fd();
        // SAFETY: plain fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(ServerError::Io {
                what: "keeping a listening socket across restart",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(fd)
    };
    let fd = keep(&listener)?;
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .args(std::env::args_os().skip(1))
        .env(LISTEN_FD_ENV, fd.to_string());
    if let Some(metrics) = &kept.metrics {
        command.env(METRICS_FD_ENV, keep(metrics)?.to_string());
    }
    if let Some(resp) = &kept.resp {
        command.env(RESP_FD_ENV, keep(resp)?.to_string());
    }
    tracing::info!("starting again on the snapshot");
    let error = command.exec();
    Err(ServerError::Io {
        what: "starting again after a snapshot",
        source: error,
    })
}

/// The listening socket a kvsd before this exec passed on in the variable `env`, if any.
fn inherited_listener(env: &str) -> Option<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var(env).ok()?.parse().ok()?;
    std::env::remove_var(env);
    // SAFETY: the fd was our listening socket before exec, passed on by `restart`; it is
    // checked below to be a bound TCP socket, and marked close-on-exec again.
    let listener = unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        std::net::TcpListener::from_raw_fd(fd)
    };
    listener.local_addr().ok().map(|_| listener)
}

enum Outcome {
    Stopped,
    Restart,
}

fn serve(
    config: Config,
    listener: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    resp_listener: Option<std::net::TcpListener>,
) -> Result<Outcome, ServerError> {
    let set_bytes_max =
        SET_OVERHEAD_BYTES + config.limits.key_bytes_max + config.limits.value_bytes_max;
    if config.frame_bytes_max < set_bytes_max {
        return Err(ServerError::Config(format!(
            "--max-frame-bytes {} cannot carry the largest SET ({} bytes: 14 + --max-key-bytes {} + --max-value-bytes {}); raise it or lower the others",
            config.frame_bytes_max, set_bytes_max, config.limits.key_bytes_max, config.limits.value_bytes_max
        )));
    }
    if let Some(core) = config.core {
        crate::cpu::pin_to(core).map_err(|reason| ServerError::Pin { core, reason })?;
    }

    let metrics_addr = bound_addr(metrics.as_ref(), "local_addr of --metrics-addr")?;
    // Until the loop runs, the metrics port answers 503: recovering.
    let recovering = metrics
        .map(crate::metrics::recovering::Recovering::start)
        .transpose()
        .map_err(|source| ServerError::Io {
            what: "serving --metrics-addr during recovery",
            source,
        })?;

    let started = Instant::now();
    match crate::wal::snapshot::install_pending(&config.data_dir) {
        Ok(Some(what)) => tracing::info!(data_dir = %config.data_dir.display(), "{what}"),
        Ok(None) => {}
        Err(source) => {
            return Err(ServerError::Io {
                what: "installing a snapshot received from the leader",
                source,
            })
        }
    }
    let upgraded = crate::wal::upgrade::run(&config.data_dir, config.repair_truncate)?;
    if upgraded > 0 {
        tracing::info!(
            segments = upgraded,
            "rewrote the log's older segments in record format 2"
        );
        // It counted on the old files' offsets.
        crate::wal::checkpoint::remove(&config.data_dir).map_err(|source| ServerError::Io {
            what: "removing the index checkpoint",
            source,
        })?;
    }
    let mut engine = Engine::new(0);
    let mut last_crc = 0;
    let checkpoint = load_checkpoint(&config.data_dir, &mut engine, &mut last_crc);
    let resume = checkpoint.as_ref().map(|c| c.resume()).unwrap_or_default();
    let recover = |engine: &mut Engine, last_crc: &mut u32, resume| {
        let mut refused = None;
        let recovered = recovery::recover(
            &config.data_dir,
            config.repair_truncate,
            config.segment_bytes,
            resume,
            |header: &RecordHeader, key, value, location| {
                let record = Record {
                    seq: header.seq,
                    term: header.term,
                    op: header.op,
                    expires_at_ms: header.expires_at_ms,
                    key,
                    value,
                };
                if let Err(reason) = engine.recover(&record, location) {
                    refused.get_or_insert(format!("seq {}: {reason}", header.seq));
                }
                *last_crc = header.crc;
            },
        )?;
        match refused {
            Some(reason) => Err(ServerError::Unsupported(reason)),
            None => Ok(recovered),
        }
    };
    let mut recovered = recover(&mut engine, &mut last_crc, &resume)?;
    let same_files = checkpoint.as_ref().is_none_or(|checkpoint| {
        let ids = recovered.segments.iter().map(|s| s.id);
        checkpoint
            .segments
            .iter()
            .map(|s| s.id)
            .zip(ids)
            .all(|(c, r)| c == r)
    });
    if !recovered.resume_matched || !same_files {
        tracing::warn!("the index checkpoint does not match the log (it was cut or changed); reading the whole log instead");
        engine = Engine::new(0);
        last_crc = 0;
        let cut = recovered.truncated_bytes;
        recovered = recover(&mut engine, &mut last_crc, &Default::default())?;
        recovered.truncated_bytes += cut;
    }
    // It describes the log only until the log changes: never let it outlive this start.
    crate::wal::checkpoint::remove(&config.data_dir).map_err(|source| ServerError::Io {
        what: "removing the index checkpoint",
        source,
    })?;
    engine.recovered(recovered.last_seq, last_crc);
    let recovery_time = started.elapsed();
    fd_limit::ensure(config.connections_max, recovered.segments.len())
        .map_err(ServerError::Config)?;

    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        what: "local_addr",
        source,
    })?;
    let metrics = recovering
        .map(crate::metrics::recovering::Recovering::finish)
        .transpose()
        .map_err(|source| ServerError::Io {
            what: "taking --metrics-addr over after recovery",
            source,
        })?;
    let resp_addr = bound_addr(resp_listener.as_ref(), "local_addr of --resp-port")?;

    crate::runtime::start(async move {
        let log = LogFile::open(
            &config.data_dir,
            &recovered,
            config.segment_bytes,
            config.value_cache_bytes,
        )
        .map_err(|source| ServerError::Io {
            what: "opening the log",
            source,
        })?;
        let shard = Shard::new(Rc::new(std::cell::RefCell::new(engine)), Rc::new(log));
        let node = Rc::new(Node::new(config, shard));
        let listener = crate::runtime::TcpListener::from_std(listener);
        let resp_listener = resp_listener.map(crate::runtime::TcpListener::from_std);
        let mut terminate = signal(SignalKind::terminate()).map_err(|source| ServerError::Io {
            what: "SIGTERM handler",
            source,
        })?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| ServerError::Io {
            what: "SIGINT handler",
            source,
        })?;
        crate::runtime::spawn(committer::run(node.clone()));
        let sweeper = crate::runtime::spawn(sweep::run(node.clone()));
        crate::runtime::spawn(compactor::run(node.clone()));
        crate::runtime::spawn(expirer::run(node.clone()));
        let node_for_preparer = node.clone();
        crate::runtime::spawn(async move { node_for_preparer.shard.log.prepare_segments().await });
        if let FsyncPolicy::Interval(every) = node.config.fsync {
            crate::runtime::spawn(committer::sync_every(node.clone(), every));
        }
        if let Some(metrics) = metrics {
            let listener = crate::runtime::TcpListener::from_std(metrics);
            crate::runtime::spawn(crate::metrics::serve::run(listener, node.clone()));
        }
        if let Some(follower) = node.follower() {
            crate::runtime::spawn(follower_link::run(
                node.clone(),
                follower.leader_addr.clone(),
            ));
        }

        let config = &node.config;
        tracing::info!(
            %addr,
            data_dir = %config.data_dir.display(),
            core = %config.core.map_or("none".to_string(), |core| core.to_string()),
            fsync = %config.fsync,
            node_id = %config.node_id,
            role = %config.leader_addr.as_ref().map_or("leader".to_string(), |leader| format!("follower of {leader}")),
            log_id = %node.shard.log.log_id(),
            keys = node.shard.engine.borrow().key_count(),
            last_seq = recovered.last_seq,
            log_bytes = node.shard.log.log_bytes(),
            records = recovered.records,
            truncated_bytes = recovered.truncated_bytes,
            recovery_ms = recovery_time.as_millis() as u64,
            new_log = recovered.created,
            resp_addr = %resp_addr.map_or("off".to_string(), |addr| addr.to_string()),
            auth = config.auth.is_some(),
            metrics_addr = %metrics_addr.map_or("off".to_string(), |addr| addr.to_string()),
            idle_timeout_s = config.idle_timeout.map_or(0, |idle| idle.as_secs()),
            "kvsd ready"
        );
        let addrs = ready::Addrs {
            addr,
            metrics_addr,
            resp_addr,
        };
        ready::announce(config, addrs, recovered.last_seq)?;

        // One accepting task per listener: an io_uring accept dropped in flight (as a losing
        // `select!` branch would be) can still complete in the kernel, and the connection it
        // accepted would then be served by no one.
        let accepting = [
            Some(crate::runtime::spawn(accept_loop(
                node.clone(),
                listener,
                Port::Native,
            ))),
            resp_listener.zip(resp_addr).map(|(listener, local)| {
                crate::runtime::spawn(accept_loop(node.clone(), listener, Port::Resp { local }))
            }),
        ];
        let reason = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            _ = node.restart.notified() => "snapshot received",
        };
        for task in accepting.into_iter().flatten() {
            task.abort();
            // Wait for the listener to be dropped: no connection is accepted past this point.
            let _ = task.await;
        }
        let stopped = shut_down(&node, reason).await;
        sweeper.abort();
        stopped?;
        Ok(if reason == "snapshot received" {
            Outcome::Restart
        } else {
            Outcome::Stopped
        })
    })
}

/// The wall clock in unix ms, what key expiry is judged by.
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Loads the index from `index.ckpt` if it matches the log; a checkpoint that does not is
/// logged and ignored (recovery then reads the whole log).
fn load_checkpoint(
    dir: &std::path::Path,
    engine: &mut Engine,
    last_crc: &mut u32,
) -> Option<crate::wal::checkpoint::Checkpoint> {
    use crate::wal::checkpoint;
    let started = Instant::now();
    let loaded = checkpoint::read(dir).and_then(|found| {
        let Some(found) = found else { return Ok(None) };
        engine.load_index(found.entries()?.into_iter().map(|(key, entry)| {
            let slot = crate::engine::Slot {
                location: entry.location,
                seq: entry.seq,
                expires_at_ms: entry.expires_at_ms,
            };
            (key, slot)
        }));
        Ok(Some(found))
    });
    match loaded {
        Ok(Some(found)) => {
            *last_crc = found.last_crc;
            tracing::info!(
                keys = engine.key_count(),
                ms = started.elapsed().as_millis() as u64,
                "loaded the index checkpoint"
            );
            Some(found)
        }
        Ok(None) => None,
        Err(reason) => {
            tracing::warn!(%reason, "ignoring the index checkpoint; reading the whole log instead");
            *engine = Engine::new(0);
            None
        }
    }
}

/// At a clean stop: writes the index checkpoint the next start loads instead of reading the
/// whole log. A failure only costs that start time.
fn write_checkpoint(node: &Node) {
    use crate::wal::checkpoint::{self, CheckpointSegment};
    let started = Instant::now();
    let engine = node.shard.engine.borrow();
    let segments = node.shard.log.segments();
    let dir = &node.config.data_dir;
    let mut listed = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let path = crate::wal::segment::path(dir, segment.id);
        let nonce = match read_nonce(&path) {
            Ok(nonce) => nonce,
            Err(error) => {
                tracing::warn!(%error, "no index checkpoint written");
                return;
            }
        };
        let last_seq = match segments.get(i + 1) {
            Some(next) => next.first_seq - 1,
            None => engine.durable_seq(),
        };
        listed.push(CheckpointSegment {
            id: segment.id,
            nonce,
            bytes: segment.bytes(),
            last_seq,
        });
    }
    let index_of: std::collections::HashMap<u32, u32> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.file_no, i as u32))
        .collect();
    let mut unknown = false;
    let entries = engine.index_entries().map(|(key, slot)| {
        let index = index_of
            .get(&slot.location.file)
            .copied()
            .unwrap_or_else(|| {
                unknown = true;
                0
            });
        let entry = checkpoint::Entry {
            location: slot.location,
            seq: slot.seq,
            expires_at_ms: slot.expires_at_ms,
        };
        (key, index, entry)
    });
    let result = checkpoint::write(
        dir,
        node.shard.log.log_id(),
        engine.last_crc(),
        &listed,
        engine.key_count() as u64,
        entries,
    );
    match result {
        Ok(()) if unknown => {
            let _ = checkpoint::remove(dir);
            tracing::warn!("no index checkpoint: the index names a file that is not in the log");
        }
        Ok(()) => tracing::info!(
            keys = engine.key_count(),
            ms = started.elapsed().as_millis() as u64,
            "wrote the index checkpoint"
        ),
        Err(error) => {
            let _ = checkpoint::remove(dir);
            tracing::warn!(%error, "could not write the index checkpoint; the next start reads the whole log");
        }
    }
}

fn read_nonce(path: &std::path::Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut head = [0u8; crate::wal::segment::HEADER_BYTES];
    std::fs::File::open(path)?.read_exact(&mut head)?;
    crate::wal::segment::SegmentHeader::decode(&head)
        .map(|header| header.nonce)
        .map_err(std::io::Error::other)
}

/// Accepts connections on `listener` until aborted.
async fn accept_loop(node: Rc<Node>, listener: crate::runtime::TcpListener, port: Port) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => accept(&node, stream, peer, port),
            Err(error) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(%error, ?port, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves a new connection on either port; both count against `--max-connections`.
fn accept(node: &Rc<Node>, stream: crate::runtime::TcpStream, peer: SocketAddr, port: Port) {
    use std::os::fd::AsRawFd;
    match node.admit(stream.as_raw_fd()) {
        Some(slot) => {
            crate::runtime::spawn(connection::serve(node.clone(), stream, peer, slot, port));
        }
        None => {
            let connections_max = node.config.connections_max;
            tracing::warn!(%peer, connections_max, "refusing a connection: --max-connections reached");
            crate::runtime::spawn(connection::refuse(stream, connections_max, port));
        }
    }
}

/// Stop reading requests, let the committer make what was accepted durable and the
/// connections send those replies (each connection ends when its queue is answered), then
/// sync and return.
async fn shut_down(node: &Node, reason: &str) -> Result<(), ServerError> {
    tracing::info!(
        reason,
        "shutting down: no new connections or requests; finishing what is in flight"
    );
    node.shutdown.send_replace(true);
    node.drain_connections().await;
    let shard = &node.shard;
    let committed = async {
        loop {
            let idle = shard.committer_idle.notified();
            let failed = shard.engine.borrow().write_failed().is_some();
            if failed || (!shard.committing.get() && !shard.has_open_batch()) {
                return;
            }
            shard.commit_wake.notify_one();
            idle.await;
        }
    };
    committed.await;
    if node.config.fsync != FsyncPolicy::Always && shard.engine.borrow().write_failed().is_none() {
        shard.log.sync().await.map_err(|source| ServerError::Io {
            what: "final fdatasync",
            source,
        })?;
    }
    if shard.engine.borrow().write_failed().is_none()
        && !shard.has_open_batch()
        && !shard.compaction.borrow().running
    {
        write_checkpoint(node);
    }
    let engine = shard.engine.borrow();
    tracing::info!(
        durable_seq = engine.durable_seq(),
        keys = engine.key_count(),
        "kvsd stopped"
    );
    match engine.write_failed() {
        Some(failed) => Err(ServerError::Config(failed.to_string())),
        None => Ok(()),
    }
}

/// The address an optional listener is bound to (the kernel's pick for a port of 0).
pub(super) fn bound_addr(
    listener: Option<&std::net::TcpListener>,
    what: &'static str,
) -> Result<Option<SocketAddr>, ServerError> {
    listener
        .map(|listener| listener.local_addr())
        .transpose()
        .map_err(|source| ServerError::Io { what, source })
}

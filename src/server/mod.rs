//! The server: recovery, the listener, connections, the committer and shutdown, on one
//! single-threaded io_uring loop pinned to one core. With `wal::file`, the one place that
//! names `tokio_uring`.

mod committer;
mod compactor;
pub mod config;
mod connection;
mod cpu;
mod fd_limit;
mod follower_link;
mod frames;
mod leader_stream;
mod stats;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

pub use config::{Config, FsyncPolicy};

use crate::engine::Engine;
use crate::limits::{SET_OVERHEAD_BYTES, SHUTDOWN_DRAIN_MS};
use crate::wal::file::LogFile;
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
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// What every task of the loop shares. Single-threaded: cells, not locks.
pub struct Shared {
    pub config: Config,
    pub engine: RefCell<Engine>,
    pub log: LogFile,
    stats: stats::Stats,
    /// Readers → committer: a batch has records.
    commit_wake: Notify,
    /// Committer → readers waiting for room: the open batch was taken.
    batch_taken: Notify,
    /// Bumped whenever the durable seq moves or writes fail: wakes the waiting writers.
    progress: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    committing: Cell<bool>,
    connections: Cell<u32>,
    started: Instant,
    /// Leader: the followers streaming now, by link id.
    followers: RefCell<BTreeMap<u64, FollowerInfo>>,
    next_link_id: Cell<u64>,
    /// Leader: the newest seq durable on `--min-acks` followers.
    replicated: Cell<u64>,
    /// Follower: the link to the leader.
    link: RefCell<LinkInfo>,
    /// Leader: the last refusal logged per follower node id.
    refusals: RefCell<std::collections::HashMap<String, String>>,
    compaction: RefCell<compactor::CompactionState>,
    compact_wake: Notify,
    /// Bumped when a compaction pass ends.
    compact_done: watch::Sender<u64>,
    /// Follower: a snapshot was received; stop serving and start again on it.
    restart: Notify,
}

/// What the leader knows of one follower.
pub struct FollowerInfo {
    node_id: String,
    addr: SocketAddr,
    /// The follower's own durable seq, as it last said.
    acked_seq: u64,
    sent_seq: u64,
    /// Where the cursor reads next: segment and offset.
    position: (u32, u64),
    records_sent: u64,
    connected_at: Instant,
}

/// What a follower knows of its link to the leader.
pub struct LinkInfo {
    state: &'static str,
    connected_at: Option<Instant>,
    leader_durable_seq: u64,
    /// Records received on the current link, and since start.
    records_received: u64,
    records_received_total: u64,
}

impl Shared {
    /// On a follower, the leader's client address (what NOT_LEADER says).
    pub fn leader_addr(&self) -> Option<&str> {
        self.config.leader_addr.as_deref()
    }

    /// The newest seq a client write may be acknowledged at, as far as followers go.
    fn replicated_seq(&self) -> u64 {
        if self.config.min_acks == 0 {
            u64::MAX
        } else {
            self.replicated.get()
        }
    }

    /// A test's fault hook (`KVS_CRASH_POINT=<what>:<step>`): dies there as kill -9 would.
    fn crash_point(&self, what: &str, step: &str) {
        if let Some(point) = &self.config.crash_point {
            if point.split_once(':') == Some((what, step)) {
                tracing::warn!(what, step, "KVS_CRASH_POINT: aborting the process here");
                std::process::abort();
            }
        }
    }

    /// Recomputes the seq durable on `--min-acks` followers; true if it moved.
    fn update_replicated(&self) -> bool {
        let needed = self.config.min_acks as usize;
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
}

/// The listening socket handed to a kvsd that re-executes itself (see `restart`).
const LISTEN_FD_ENV: &str = "KVS_LISTEN_FD";

/// Recovers the data dir and serves until SIGINT or SIGTERM; returns once every acknowledged
/// write is durable. A follower that received a snapshot starts again on it: the process
/// executes itself anew, keeping only its listening socket (and so its port).
pub fn run(config: Config) -> Result<(), ServerError> {
    let listener = match inherited_listener() {
        Some(listener) => listener,
        None => bind(config.listen)?,
    };
    match serve(
        config,
        listener.try_clone().map_err(|source| ServerError::Io {
            what: "listening socket",
            source,
        })?,
    )? {
        Outcome::Stopped => Ok(()),
        Outcome::Restart => restart(listener),
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

/// Starts this program again with the same arguments and the listening socket: every other
/// file, socket and io_uring closes as at exit, so no connection of the old state lingers.
fn restart(listener: std::net::TcpListener) -> Result<(), ServerError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // SAFETY: plain fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(ServerError::Io {
            what: "keeping the listening socket across restart",
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("starting again on the snapshot");
    let error = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env(LISTEN_FD_ENV, fd.to_string())
        .exec();
    Err(ServerError::Io {
        what: "starting again after a snapshot",
        source: error,
    })
}

fn inherited_listener() -> Option<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var(LISTEN_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(LISTEN_FD_ENV);
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

fn serve(config: Config, listener: std::net::TcpListener) -> Result<Outcome, ServerError> {
    let set_bytes_max =
        SET_OVERHEAD_BYTES + config.limits.key_bytes_max + config.limits.value_bytes_max;
    if config.frame_bytes_max < set_bytes_max {
        return Err(ServerError::Config(format!(
            "--max-frame-bytes {} cannot carry the largest SET ({} bytes: 14 + --max-key-bytes {} + --max-value-bytes {}); raise it or lower the others",
            config.frame_bytes_max, set_bytes_max, config.limits.key_bytes_max, config.limits.value_bytes_max
        )));
    }
    if let Some(core) = config.core {
        cpu::pin_to(core).map_err(|reason| ServerError::Pin { core, reason })?;
    }

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
    let mut engine = Engine::new(0);
    let mut last_crc = 0;
    let checkpoint = load_checkpoint(&config.data_dir, &mut engine, &mut last_crc);
    let resume = checkpoint.as_ref().map(|c| c.resume()).unwrap_or_default();
    let recover = |engine: &mut Engine, last_crc: &mut u32, resume| {
        recovery::recover(
            &config.data_dir,
            config.repair_truncate,
            config.segment_bytes,
            resume,
            |record: &RecordHeader, key, location| {
                engine.recover(record.op, key, location);
                *last_crc = record.crc;
            },
        )
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

    tokio_uring::start(async move {
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
        let shared = Rc::new(Shared {
            config,
            engine: RefCell::new(engine),
            log,
            stats: stats::Stats::default(),
            commit_wake: Notify::new(),
            batch_taken: Notify::new(),
            progress: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            committing: Cell::new(false),
            connections: Cell::new(0),
            started: Instant::now(),
            followers: RefCell::new(BTreeMap::new()),
            next_link_id: Cell::new(1),
            replicated: Cell::new(0),
            refusals: RefCell::default(),
            compaction: RefCell::default(),
            compact_wake: Notify::new(),
            compact_done: watch::Sender::new(0),
            restart: Notify::new(),
            link: RefCell::new(LinkInfo {
                state: "connecting",
                connected_at: None,
                leader_durable_seq: 0,
                records_received: 0,
                records_received_total: 0,
            }),
        });
        let listener = tokio_uring::net::TcpListener::from_std(listener);
        let mut terminate = signal(SignalKind::terminate()).map_err(|source| ServerError::Io {
            what: "SIGTERM handler",
            source,
        })?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| ServerError::Io {
            what: "SIGINT handler",
            source,
        })?;
        tokio_uring::spawn(committer::run(shared.clone()));
        tokio_uring::spawn(compactor::run(shared.clone()));
        let preparer = shared.clone();
        tokio_uring::spawn(async move { preparer.log.prepare_segments().await });
        if let FsyncPolicy::Interval(every) = shared.config.fsync {
            tokio_uring::spawn(committer::sync_every(shared.clone(), every));
        }
        if let Some(leader_addr) = shared.config.leader_addr.clone() {
            tokio_uring::spawn(follower_link::run(shared.clone(), leader_addr));
        }

        let config = &shared.config;
        tracing::info!(
            %addr,
            data_dir = %config.data_dir.display(),
            core = %config.core.map_or("none".to_string(), |core| core.to_string()),
            fsync = %config.fsync,
            node_id = %config.node_id,
            role = %config.leader_addr.as_ref().map_or("leader".to_string(), |leader| format!("follower of {leader}")),
            log_id = %shared.log.log_id(),
            keys = shared.engine.borrow().key_count(),
            last_seq = recovered.last_seq,
            log_bytes = shared.log.log_bytes(),
            records = recovered.records,
            truncated_bytes = recovered.truncated_bytes,
            recovery_ms = recovery_time.as_millis() as u64,
            new_log = recovered.created,
            auth = config.auth.is_some(),
            idle_timeout_s = config.idle_timeout.map_or(0, |idle| idle.as_secs()),
            "kvsd ready"
        );

        let reason = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => accept(&shared, stream, peer),
                    Err(error) => {
                        // Out of file descriptors, most likely: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = shared.restart.notified() => break "snapshot received",
            }
        };
        drop(listener);
        shut_down(&shared, reason).await?;
        Ok(if reason == "snapshot received" {
            Outcome::Restart
        } else {
            Outcome::Stopped
        })
    })
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
        engine.load_index(found.entries()?);
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
fn write_checkpoint(shared: &Shared) {
    use crate::wal::checkpoint::{self, CheckpointSegment};
    let started = Instant::now();
    let engine = shared.engine.borrow();
    let segments = shared.log.segments();
    let dir = &shared.config.data_dir;
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
    let entries = engine.index_entries().map(|(key, location)| {
        let index = index_of.get(&location.file).copied().unwrap_or_else(|| {
            unknown = true;
            0
        });
        (key, index, location)
    });
    let result = checkpoint::write(
        dir,
        shared.log.log_id(),
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

fn accept(shared: &Rc<Shared>, stream: tokio_uring::net::TcpStream, peer: SocketAddr) {
    let connections_max = shared.config.connections_max;
    if shared.connections.get() >= connections_max {
        tracing::warn!(%peer, connections_max, "refusing a connection: --max-connections reached");
        tokio_uring::spawn(connection::refuse(stream, connections_max));
        return;
    }
    shared.connections.set(shared.connections.get() + 1);
    shared
        .stats
        .connections_total
        .set(shared.stats.connections_total.get() + 1);
    tokio_uring::spawn(connection::serve(shared.clone(), stream, peer));
}

/// Stop reading requests, let the committer make what was accepted durable, let the writers
/// send those replies, then sync and return.
async fn shut_down(shared: &Shared, reason: &str) -> Result<(), ServerError> {
    tracing::info!(
        reason,
        "shutting down: no new connections or requests; finishing what is in flight"
    );
    shared.shutdown.send_replace(true);
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS);
    let busy = || {
        let engine = shared.engine.borrow();
        let flushing = engine.write_failed().is_none()
            && (engine.open_batch_bytes() > 0 || shared.committing.get());
        flushing || shared.connections.get() > 0
    };
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if shared.connections.get() > 0 {
        tracing::warn!(
            connections = shared.connections.get(),
            "closing connections that did not read their replies in time"
        );
    }
    while shared.committing.get() || shared.engine.borrow().open_batch_bytes() > 0 {
        if shared.engine.borrow().write_failed().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if shared.config.fsync != FsyncPolicy::Always && shared.engine.borrow().write_failed().is_none()
    {
        shared.log.sync().await.map_err(|source| ServerError::Io {
            what: "final fdatasync",
            source,
        })?;
    }
    if shared.engine.borrow().write_failed().is_none()
        && shared.engine.borrow().open_batch_bytes() == 0
        && !shared.compaction.borrow().running
    {
        write_checkpoint(shared);
    }
    let engine = shared.engine.borrow();
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

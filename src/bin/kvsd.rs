//! kvsd: the kvs server. Parses flags, starts logging, runs the server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvs::limits;
use kvs::protocol::RequestLimits;
use kvs::server::{self, Config, FsyncPolicy};

/// kvsd: a durable key-value server on one io_uring event loop (--core pins it to one CPU).
///
/// Every write goes to a CRC-checked write-ahead log in --data-dir; writes that arrive while a
/// flush is in flight are batched into the next write + fdatasync (group commit), and with the
/// default --fsync always a client hears OK only once its write is on stable storage. Restart
/// replays the log. Stop with SIGINT or SIGTERM: kvsd finishes what is in flight and exits 0.
///
/// Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more or less.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Run as the leader. On a new data dir (or a Raft member's) this is --bootstrap: a Raft
    /// cluster with this node as its one voter, which others join with --leader-addr or --join.
    /// With --async-replication, or on a data dir an asynchronous leader wrote, it is the
    /// asynchronous leader. Without any role flag kvsd is a single node that followers may
    /// still follow asynchronously.
    #[arg(long)]
    leader: bool,

    /// This node's name, shown in STATS and logs.
    #[arg(long, default_value = "node1")]
    node_id: String,

    /// Address to listen on. Keep 127.0.0.1 unless clients on other machines must reach kvsd,
    /// and then use --auth-file (traffic is not encrypted: keep it on a trusted network).
    /// Protected mode: kvsd refuses to start on an address other than loopback without
    /// --auth-file, unless --unprotected-bind is given.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// TCP port for clients (0: pick a free one; the "kvsd ready" log line and --ready-file
    /// name it).
    #[arg(long, default_value_t = limits::PORT_DEFAULT)]
    port: u16,

    /// Once listening and serving, write {"addr", "pid", "node_id", "data_dir", "last_seq"} as
    /// JSON to this file (to a temp name, then renamed), for a program that waits for kvsd to
    /// be ready. Written again on each start; never removed.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,

    /// Directory of the write-ahead log; created if missing.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,

    /// Pin the event loop to this CPU (0-based). Default: not pinned.
    #[arg(long)]
    core: Option<usize>,

    /// When a write is made durable before its OK.
    /// `always`: write + fdatasync before the OK; nothing acknowledged is lost, even on power loss.
    /// `interval=<ms>`: OK once written to the OS, fdatasync every <ms>; a machine crash or
    /// power loss can lose the last <ms> of acknowledged writes (a kvsd crash alone loses nothing).
    /// `never`: OK once written to the OS; fdatasync only when a segment fills and at shutdown.
    #[arg(long, default_value = "always", verbatim_doc_comment)]
    fsync: FsyncPolicy,

    /// Client connections served at once; one more gets an ERROR and is closed. kvsd raises its
    /// open-file limit (RLIMIT_NOFILE) to the hard limit if this needs it, and refuses to start
    /// if even that is too low.
    #[arg(long, default_value_t = limits::CONNECTIONS_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,

    /// Largest key, in bytes.
    #[arg(long, default_value_t = limits::KEY_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=limits::KEY_BYTES_MAX_CEILING as i64))]
    max_key_bytes: u32,

    /// Largest value, in bytes.
    #[arg(long, default_value_t = limits::VALUE_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=limits::VALUE_BYTES_MAX_CEILING as i64))]
    max_value_bytes: u32,

    /// Largest frame (the `len` field: everything after it), in bytes. Must hold the largest
    /// SET: 14 + --max-key-bytes + --max-value-bytes. A longer frame gets an ERROR and the
    /// connection is closed.
    #[arg(long, default_value_t = limits::FRAME_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(64..=limits::FRAME_BYTES_MAX_CEILING as i64))]
    max_frame_bytes: u32,

    /// A log segment is sealed and a new one started at this size, in bytes.
    #[arg(long, default_value_t = limits::SEGMENT_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_CEILING))]
    segment_bytes: u64,

    /// Memory for a cache of values read from the log (values up to 64 KiB), in bytes; 0
    /// turns it off. The index always stays in memory; values need not.
    #[arg(long, default_value_t = limits::VALUE_CACHE_BYTES_DEFAULT)]
    value_cache_bytes: u64,

    /// How long a GET with min_seq waits for that seq to be applied, in milliseconds.
    #[arg(long, default_value_t = limits::MIN_SEQ_WAIT_MS_DEFAULT)]
    min_seq_wait_ms: u64,

    /// The leader at this client address (host:port). On a new data dir (or a Raft member's)
    /// this is --join ADDR: join that Raft cluster. With --async-replication, or on a data dir
    /// an asynchronous follower wrote, follow it asynchronously: dial it (in any start order),
    /// copy its log and serve reads; writes get NOT_LEADER.
    #[arg(long, conflicts_with = "leader")]
    leader_addr: Option<String>,

    /// Leader: answer a write OK only once it is durable here and on N followers. 0 (the
    /// default) replicates asynchronously: an acknowledged write can be missing on followers if
    /// the leader's disk is lost before they copy it.
    #[arg(long, default_value_t = 0)]
    min_acks: u32,

    /// Leader, with --min-acks: how long a write waits for its follower acks before the client
    /// gets an ERROR saying it is durable on the leader but not confirmed on followers.
    #[arg(long, default_value_t = limits::ACK_TIMEOUT_MS_DEFAULT)]
    ack_timeout_ms: u64,

    /// Raft: start a new cluster with this node (--node-id) as its one voter. On a data dir that
    /// already belongs to a cluster it only logs that, so the same command line restarts the node.
    #[arg(long, conflicts_with_all = ["join", "leader_addr"])]
    bootstrap: bool,

    /// Raft: join the cluster of the member at this client address (host:port), retrying until
    /// a member answers; the node catches up, then becomes a voter (or stays a learner).
    #[arg(long, value_name = "ADDR", conflicts_with = "leader_addr")]
    join: Option<String>,

    /// Raft, with --join (or --leader-addr): join as a learner, a non-voting read replica.
    #[arg(long)]
    learner: bool,

    /// Asynchronous replication for --leader / --leader-addr (which otherwise mean --bootstrap
    /// and --join on a new data dir): the leader streams its log to followers, which follow
    /// it without voting; nothing fails over by itself.
    #[arg(long, conflicts_with_all = ["bootstrap", "join"])]
    async_replication: bool,

    /// Raft: a follower that hears from no leader for a random time between this and twice
    /// this stands for election. With the default a new leader is serving about a second after
    /// the old one died.
    #[arg(long, default_value_t = 200)]
    election_timeout_ms: u64,

    /// Raft: how often the leader sends heartbeats; well under --election-timeout-ms.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,

    /// Raft: make a snapshot (every live key, in raft-snapshot) once this many log entries were
    /// applied since the last one, then delete the log before it, so disk stays bounded by
    /// the live data plus about this many entries. 0: only on `kvsctl compact`. A snapshot
    /// holds at most 4 GiB (37 bytes + key + value per live key): a node whose live data
    /// outgrows that stops at its next snapshot, saying so (docs/replication.md).
    #[arg(long, default_value_t = 100_000)]
    raft_snapshot_entries: u64,

    /// Raft: log entries kept before a snapshot, so that a member a little behind catches up
    /// from the log rather than by a whole snapshot.
    #[arg(long, default_value_t = 1_000)]
    raft_keep_entries: u64,

    /// Tests only: dial ADDR_TO instead of ADDR when this node connects to the member at ADDR
    /// (ADDR=ADDR_TO, repeatable): puts a fault proxy on a Raft link.
    #[arg(long, hide = true, value_name = "ADDR=ADDR_TO")]
    raft_dial: Vec<String>,

    /// A file holding a shared secret (1 to 1024 bytes; one trailing newline is ignored; keep
    /// it chmod 600). Every connection, followers' included, must then send AUTH with the
    /// secret before anything else; a follower sends its own --auth-file to its leader.
    /// kvsctl and kvs-bench take --auth-file or KVS_AUTH.
    #[arg(long, value_name = "PATH")]
    auth_file: Option<PathBuf>,

    /// Close a connection that sends nothing for this many seconds while it is owed no reply,
    /// one stalled in the middle of a frame included (0: never). Clients and followers that
    /// idle longer simply reconnect.
    #[arg(long, default_value_t = limits::IDLE_TIMEOUT_SECS_DEFAULT, value_name = "SECONDS")]
    idle_timeout_secs: u64,

    /// Close a connection whose replies wait to be sent while the client takes none of their
    /// bytes for this many seconds (it stopped reading). Until then such a client costs at
    /// most its 8 MiB / 4,096 requests of unanswered requests and replies: kvsd stops reading
    /// from it at that cap.
    #[arg(long, default_value_t = limits::OUTPUT_STALL_SECS_DEFAULT, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    output_stall_secs: u64,

    /// Group commit: after an fdatasync, hold the next one for up to this long while the
    /// clients it just answered have not yet sent their next request, so one flush carries
    /// them all instead of two half batches alternating (0: never hold; flush as soon as the
    /// last one completes). Only under `--fsync always`; a lone client is never held.
    #[arg(long, default_value_t = limits::COMMIT_WINDOW_MS_DEFAULT, value_name = "MS")]
    commit_window_ms: u64,

    /// Also serve the Redis protocol (RESP2, and RESP3 after HELLO 3) on this TCP port, on
    /// --bind's address, for redis-cli, redis-benchmark and Redis client libraries (0: pick a
    /// free one; --ready-file names it). Same store, durability, limits, --auth-file (AUTH) and
    /// timeouts as the native port; docs/resp.md lists the commands. Off by default.
    #[arg(long, value_name = "PORT")]
    resp_port: Option<u16>,

    /// Start even if the log is corrupt before its tail: cut it at the first bad record and
    /// lose every record after it. Without it, kvsd refuses to start and names file and offset.
    #[arg(long)]
    repair_truncate: bool,

    /// Compact a sealed log segment (copy its live records into a new file, drop the rest) once
    /// this share of its bytes is overwritten or deleted data. Lower keeps the disk closer to
    /// the live data and rewrites more; 1.0 compacts only segments that are entirely garbage.
    /// `never` leaves it to `kvsctl compact`, which compacts every segment with any garbage now.
    #[arg(long, default_value_t = limits::COMPACT_GARBAGE_RATIO_DEFAULT, value_parser = parse_ratio)]
    compact_garbage_ratio: f64,

    /// Follower: if this node's data is another history than the leader's (another log, a
    /// diverged or a longer one), discard it and take a snapshot of the leader's instead of
    /// being refused. Without it, such a follower is refused and its data left untouched.
    #[arg(long, requires = "leader_addr")]
    resync: bool,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics, and /health (200 while serving;
    /// 503 once writes are refused after a disk failure, or on a follower while its leader is
    /// unreachable) and /ready (503 while the log is recovered, 200 once serving). Off by
    /// default; PORT 0 picks a free port (named in --ready-file as metrics_addr). It serves
    /// no keys or values, and needs no AUTH: bind it where only your monitoring reaches.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,

    /// Protected mode off: let --bind be an address other than loopback without --auth-file,
    /// so that anyone who can reach it may read, change and delete every key. Only for a
    /// network where every machine is trusted.
    #[arg(long)]
    unprotected_bind: bool,

    /// Tests only: abort at a named point, as kill -9 would (e.g. compaction:renamed).
    #[arg(long, env = "KVS_CRASH_POINT", hide = true)]
    crash_point: Option<String>,

    /// Tests only: flip one bit in each of the first N reads of a Raft snapshot this node
    /// sends (past its first byte), so that members must refuse it (docs/replication.md).
    #[arg(
        long,
        env = "KVS_DAMAGE_SNAPSHOT_SENDS",
        hide = true,
        default_value_t = 0
    )]
    damage_snapshot_sends: u32,

    /// Tests only: a Raft node's log waits this many milliseconds before each fdatasync, so
    /// that a power-cut test finds written appends not yet durable (tests/power_loss.rs).
    #[arg(long, env = "KVS_DELAY_LOG_FLUSH_MS", hide = true, default_value_t = 0)]
    delay_log_flush_ms: u64,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    if text == "never" {
        return Ok(f64::INFINITY);
    }
    let ratio: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if ratio > 0.0 && ratio <= 1.0 {
        Ok(ratio)
    } else {
        Err(format!(
            "{text} is neither in (0, 1] (the share of a segment that is garbage) nor never"
        ))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let auth = match args.auth_file.as_deref().map(kvs::auth::Secret::from_file) {
        None => None,
        Some(Ok(file)) => {
            if let Some(warning) = file.warning {
                tracing::warn!("{warning}");
            }
            Some(file.secret)
        }
        Some(Err(error)) => {
            eprintln!("kvsd: {error}");
            return ExitCode::from(2);
        }
    };
    // The seeds' flags (issue 11): on a data dir that is new or a Raft member's, --leader means
    // --bootstrap and --leader-addr X means --join X. --async-replication, or a data dir that an
    // asynchronous leader or follower wrote, keeps asynchronous replication.
    let dir_kind = kvs::raft::seed::data_dir_kind(&args.data_dir);
    let seeds_mean_raft = !args.async_replication && dir_kind != kvs::raft::seed::DataDir::Outside;
    let bootstrap = args.bootstrap || (seeds_mean_raft && args.leader);
    let (join, leader_addr) = match (args.join, args.leader_addr) {
        (None, Some(addr)) if seeds_mean_raft => (Some(addr), None),
        (join, leader_addr) => (join, leader_addr),
    };
    let raft_dir = dir_kind == kvs::raft::seed::DataDir::Raft;
    if raft_dir && !bootstrap && join.is_none() {
        eprintln!(
            "kvsd: {} belongs to a Raft cluster (it holds a raft-vote file): start it with --bootstrap or --join ADDR, as it was started",
            args.data_dir.display()
        );
        return ExitCode::from(2);
    }
    if args.learner && join.is_none() {
        eprintln!("kvsd: --learner needs --join ADDR");
        return ExitCode::from(2);
    }
    let config = Config {
        node_id: args.node_id,
        listen: SocketAddr::new(args.bind, args.port),
        data_dir: args.data_dir,
        ready_file: args.ready_file,
        core: args.core,
        fsync: args.fsync,
        connections_max: args.max_connections,
        limits: RequestLimits {
            key_bytes_max: args.max_key_bytes,
            value_bytes_max: args.max_value_bytes,
        },
        frame_bytes_max: args.max_frame_bytes,
        segment_bytes: args.segment_bytes,
        value_cache_bytes: usize::try_from(args.value_cache_bytes).unwrap_or(usize::MAX),
        repair_truncate: args.repair_truncate,
        min_seq_wait: Duration::from_millis(args.min_seq_wait_ms),
        leader_addr,
        min_acks: args.min_acks,
        ack_timeout: Duration::from_millis(args.ack_timeout_ms),
        compact_garbage_ratio: args.compact_garbage_ratio,
        crash_point: args.crash_point,
        damage_snapshot_sends: args.damage_snapshot_sends,
        delay_log_flush_ms: args.delay_log_flush_ms,
        resync: args.resync,
        auth,
        idle_timeout: (args.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(args.idle_timeout_secs)),
        output_stall: Duration::from_secs(args.output_stall_secs),
        commit_window: (args.commit_window_ms > 0)
            .then(|| Duration::from_millis(args.commit_window_ms)),
        metrics_addr: args.metrics_addr,
        unprotected_bind: args.unprotected_bind,
        resp_listen: args.resp_port.map(|port| SocketAddr::new(args.bind, port)),
        raft: (bootstrap || join.is_some()).then(|| server::config::RaftSettings {
            bootstrap,
            join: join.clone(),
            learner: args.learner,
            election_timeout_ms: args.election_timeout_ms,
            heartbeat_ms: args.heartbeat_ms,
            dial: args
                .raft_dial
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .map(|(from, to)| (from.to_string(), to.to_string()))
                .collect(),
            snapshot_entries: args.raft_snapshot_entries,
            keep_entries: args.raft_keep_entries,
        }),
    };
    // --leader only states the default role; it conflicts with --leader-addr.
    let _ = args.leader;
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kvsd: {error}");
            ExitCode::from(2)
        }
    }
}

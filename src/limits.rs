//! Every limit and default of kvs, in one place, units last.
//!
//! Flags may move a default within its ceiling; the ceilings bound what recovery will
//! ever believe a length on disk or on the wire can be, whatever the flags say today.
//!
//! This module depends on nothing; the codecs take their bounds from it.

/// The TCP port kvsd listens on when `--port` is not given.
pub const PORT_DEFAULT: u16 = 7379;

/// Keys: 1 to `key_bytes_max` bytes.
pub const KEY_BYTES_MAX_DEFAULT: u32 = 4 * 1024;
pub const KEY_BYTES_MAX_CEILING: u32 = 64 * 1024;

/// Values: 0 to `value_bytes_max` bytes.
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 1024 * 1024;
pub const VALUE_BYTES_MAX_CEILING: u32 = 64 * 1024 * 1024;

/// A frame's `len` field (bytes after it): 10 to `frame_bytes_max`.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 1024 * 1024 + 64 * 1024;
pub const FRAME_BYTES_MAX_CEILING: u32 =
    VALUE_BYTES_MAX_CEILING + KEY_BYTES_MAX_CEILING + 64 * 1024;

/// A log record's `len` field counts the bytes after its checksum: seq 8, term 8, kind 1, expiry 8, klen 4,
/// then key and value. `wal::record` checks its layout against the fixed part.
pub const RECORD_FIXED_BYTES: u32 = 8 + 8 + 1 + 8 + 4;
/// The largest `len` a log record can have whatever the flags (a transaction's ops fit one
/// frame): recovery takes any larger one for damage.
pub const RECORD_LEN_MAX: u32 = RECORD_FIXED_BYTES + FRAME_BYTES_MAX_CEILING;

/// The header of a SET request after `len`: kind, flags, id, klen.
pub const SET_OVERHEAD_BYTES: u32 = 1 + 1 + 8 + 4;

/// Client connections served at once; one more is answered ERROR and closed.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 1024;

/// Requests read from one connection and not yet answered. Past either cap the server stops
/// reading from that connection until its replies drain, so a client that sends but never
/// reads costs at most this much memory.
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: usize = 4096;
pub const CONNECTION_BYTES_IN_FLIGHT_MAX: usize = 8 * 1024 * 1024;

/// Bytes asked of the kernel per read on a connection.
pub const CONNECTION_READ_BYTES: usize = 64 * 1024;

/// Replies gathered into one write on a connection before it is sent.
pub const CONNECTION_WRITE_BYTES_MAX: usize = 256 * 1024;

/// A log segment is sealed and a new one started once it reaches this size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Offsets inside a segment are u32 in the index.
pub const SEGMENT_BYTES_CEILING: u64 = 1 << 31;

/// The next segment is zero-filled ahead of use in pieces of this size, each fdatasynced
/// within `PREPARE_SYNC_BYTES`, so the disk never holds a large flush of it in front of the
/// log's own fdatasync.
pub const PREPARE_CHUNK_BYTES: usize = 256 * 1024;
pub const PREPARE_SYNC_BYTES: u64 = 1024 * 1024;
/// It keeps step with the log's appends so as to be done when the active segment is this
/// full, and goes at least this fast however idle the log is.
pub const PREPARE_DONE_AT_FRACTION: f64 = 0.75;
pub const PREPARE_BYTES_PER_SEC_MIN: u64 = 4 * 1024 * 1024;
/// Longest pause between pieces (a wake-up to look at the log's progress again).
pub const PREPARE_PAUSE_MS_MAX: u64 = 10;

/// An append up to this size is a plain pwrite on the loop's thread (a copy into the page
/// cache: microseconds); a larger one goes through the ring, off the loop (`wal::file`).
pub const INLINE_APPEND_BYTES_MAX: usize = 256 * 1024;

/// A batch (one write + one fdatasync) takes new records while it is smaller than this; more
/// wait for the next batch. Bounds the memory of the open batch under any load (one record
/// larger than this still goes, alone).
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Active expiry: at most this many keys removed per slice (one slice per flush); 1,024 let
/// a mass expiry raise the client load's p99 to 2.5-3.8x of quiet, 256 keeps it under 2x...
pub const EXPIRE_KEYS_PER_TURN: usize = 256;
/// ... and how often it looks for due keys when none were due.
pub const EXPIRE_IDLE_MS: u64 = 50;

/// `--commit-window-ms`: how long a flush may wait for the clients the last one answered.
pub const COMMIT_WINDOW_MS_DEFAULT: u64 = 1;

/// How long a GET with `min_seq` waits for the server to apply that seq.
pub const MIN_SEQ_WAIT_MS_DEFAULT: u64 = 5_000;

/// How long a graceful shutdown waits for in-flight replies to drain.
pub const SHUTDOWN_DRAIN_MS: u64 = 5_000;

/// Default `--fsync interval=<ms>` when no number is given.
pub const FSYNC_INTERVAL_MS_DEFAULT: u64 = 100;

// The relations the code relies on.
const _: () = assert!(
    FRAME_BYTES_MAX_DEFAULT >= SET_OVERHEAD_BYTES + KEY_BYTES_MAX_DEFAULT + VALUE_BYTES_MAX_DEFAULT
);
const _: () = assert!(
    FRAME_BYTES_MAX_CEILING >= SET_OVERHEAD_BYTES + KEY_BYTES_MAX_CEILING + VALUE_BYTES_MAX_CEILING
);
const _: () = assert!(KEY_BYTES_MAX_DEFAULT <= KEY_BYTES_MAX_CEILING);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_MAX_CEILING);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_CEILING);
const _: () = assert!(PREPARE_SYNC_BYTES >= PREPARE_CHUNK_BYTES as u64);
const _: () = assert!(PREPARE_DONE_AT_FRACTION > 0.0 && PREPARE_DONE_AT_FRACTION < 1.0);
const _: () = assert!(CONNECTION_BYTES_IN_FLIGHT_MAX >= CONNECTION_READ_BYTES);
const _: () = assert!(BATCH_BYTES_MAX >= FRAME_BYTES_MAX_DEFAULT as usize);

/// Replication: bytes of log read per step of a follower's cursor.
pub const REPLICATION_CHUNK_BYTES: usize = 256 * 1024;
/// Replication frames carry whole records: room for the largest one.
pub const REPLICATION_FRAME_BYTES_MAX: u32 = RECORD_LEN_MAX + 64;
/// An idle leader sends an empty RECORDS frame this often; a follower ACKs as often.
pub const REPLICATION_HEARTBEAT_MS: u64 = 1_000;
/// A link that hears nothing for this long is taken as dead and dialled again.
pub const REPLICATION_SILENCE_MS_MAX: u64 = 5_000;
/// A follower redials after a backoff that doubles from the min to the max (with jitter).
pub const REPLICATION_BACKOFF_MS_MIN: u64 = 100;
pub const REPLICATION_BACKOFF_MS_MAX: u64 = 2_000;
/// `--ack-timeout-ms` default: how long a write waits for `--min-acks` followers.
pub const ACK_TIMEOUT_MS_DEFAULT: u64 = 5_000;

const _: () = assert!(REPLICATION_SILENCE_MS_MAX > 2 * REPLICATION_HEARTBEAT_MS);
const _: () = assert!(REPLICATION_FRAME_BYTES_MAX as usize > REPLICATION_CHUNK_BYTES);

/// The cache of values read from the log: its default budget, and the largest value it keeps.
pub const VALUE_CACHE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
pub const VALUE_CACHE_ENTRY_BYTES_MAX: usize = 64 * 1024;

/// Compaction rewrites a sealed segment once this share of its bytes is garbage (overwritten
/// or deleted records): `--compact-garbage-ratio`. Disk use then stays near live / (1 - ratio).
pub const COMPACT_GARBAGE_RATIO_DEFAULT: f64 = 0.5;
/// How often the compactor looks for work.
pub const COMPACTION_CHECK_MS: u64 = 1_000;
/// Compaction reads and writes in steps of this size, yielding to the loop between them.
pub const COMPACTION_IO_BYTES: usize = 1024 * 1024;
/// Compaction fdatasyncs its output every this many bytes, so the disk takes it in small
/// pieces rather than a whole segment in front of the log's own fdatasync.
pub const COMPACTION_SYNC_BYTES: u64 = 4 * 1024 * 1024;
/// Index entries moved to a compacted segment per step of the loop.
pub const COMPACTION_SWITCH_SLICE: usize = 4096;
/// Files a compaction replaced stay open this long for reads decided before it.
pub const COMPACTION_RETIRE_MS: u64 = 30_000;
/// Authentication (`--auth-file`): a secret is 1 to `AUTH_SECRET_BYTES_MAX` bytes. Before a
/// connection has authenticated, its frames may be at most `AUTH_FRAME_BYTES_MAX` (the `len`
/// field), judged from the header before anything is allocated, as Redis caps unauthenticated
/// requests; after `AUTH_FAILURES_MAX` failures (a wrong secret, or any other request sent
/// before AUTH) the connection is closed.
pub const AUTH_SECRET_BYTES_MAX: usize = 1024;
pub const AUTH_FRAME_BYTES_MAX: u32 = 4096;
pub const AUTH_FAILURES_MAX: u32 = 3;

const _: () = assert!(AUTH_FRAME_BYTES_MAX as usize >= 10 + AUTH_SECRET_BYTES_MAX);

/// `--idle-timeout-secs` default: a connection that sends nothing for this long while it is
/// owed no reply (a stalled half frame included) is closed. 0 turns it off.
pub const IDLE_TIMEOUT_SECS_DEFAULT: u64 = 300;

/// `--output-stall-secs` default: a connection whose replies wait to be sent while the socket
/// takes none of their bytes for this long (a client that stopped reading) is closed.
pub const OUTPUT_STALL_SECS_DEFAULT: u64 = 60;

/// How often each connection's watchdog looks for an idle or stalled connection: the
/// timeouts above act within this much after they run out.
pub const CONNECTION_WATCH_MS: u64 = 1_000;

/// RESP (`--resp-port`): the most arguments one command may have (Redis's old limit), and
/// the bytes of one command beyond `--max-frame-bytes` (its array and bulk headers, which the
/// native frame has no need of). A command is taken only once all of it has arrived, so one
/// connection's unparsed input is bounded by these.
pub const RESP_ARRAY_LEN_MAX: usize = 1024 * 1024;
pub const RESP_COMMAND_OVERHEAD_BYTES: usize = 64 * 1024;
/// The largest reply KEYS builds; past it the client is told to use SCAN.
pub const RESP_KEYS_REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// MULTI: the bytes of the commands one transaction may queue (past it the transaction is
/// discarded, as a queuing error discards it), the keys one connection may WATCH, and the
/// largest reply EXEC builds (past it nothing is written and EXEC answers an error).
pub const RESP_MULTI_BYTES_MAX: usize = 64 * 1024 * 1024;
pub const RESP_WATCHED_KEYS_MAX: usize = 64 * 1024;
pub const RESP_EXEC_REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Pub/sub, as Redis's `client-output-buffer-limit pubsub 32mb 8mb 60`: a subscriber whose
/// undelivered messages pass the hard limit, or stay past the soft one for the soft time, is
/// cut off. The channels and patterns one connection may subscribe to are bounded too.
pub const RESP_PUBSUB_HARD_BYTES_MAX: usize = 32 * 1024 * 1024;
pub const RESP_PUBSUB_SOFT_BYTES_MAX: usize = 8 * 1024 * 1024;
pub const RESP_PUBSUB_SOFT_SECS: u64 = 60;
pub const RESP_SUBSCRIPTIONS_MAX: usize = 64 * 1024;
const _: () = assert!(RESP_PUBSUB_SOFT_BYTES_MAX <= RESP_PUBSUB_HARD_BYTES_MAX);

/// File descriptors kvsd needs besides one per connection and one per log segment: the
/// listener, the io_uring ring, the data dir, signals, the follower link, spares.
pub const FILE_DESCRIPTORS_RESERVED: u64 = 64;

/// How long kvsd retries binding a port that is still in use (a killed kvsd's socket lingers
/// while the kernel tears down its io_uring) before it gives up.
pub const BIND_RETRY_MS: u64 = 5_000;

/// `--metrics-addr`: connections to the metrics port served at once (more are closed
/// unanswered), the longest request head read from one, and how long one may take from
/// accept to the end of its reply.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
pub const METRICS_HEAD_BYTES_MAX: usize = 8 * 1024;
pub const METRICS_REQUEST_TIMEOUT_MS: u64 = 5_000;

//! What kvsd runs with: the flags, checked, as one value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::protocol::RequestLimits;

/// When a write is made durable before its OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// write + fdatasync before the OK (the default): an OK survives power loss.
    Always,
    /// OK once written to the OS; fdatasync every so often: a crash of the machine may lose
    /// up to that much acknowledged time; a crash of kvsd alone loses nothing.
    Interval(Duration),
    /// OK once written to the OS; fdatasync only when a segment is sealed and at shutdown.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::Interval(Duration::from_millis(
                crate::limits::FSYNC_INTERVAL_MS_DEFAULT,
            ))),
            _ => match text.strip_prefix("interval=").map(|ms| ms.trim_end_matches("ms").parse()) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "'{text}' is not a fsync policy: use always, interval=<ms> (e.g. interval=100) or never"
                )),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Interval(every) => write!(f, "interval={}", every.as_millis()),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `--ready-file`: where to say, once serving, the address and state (`ready.rs`).
    pub ready_file: Option<PathBuf>,
    pub core: Option<usize>,
    pub fsync: FsyncPolicy,
    pub connections_max: u32,
    pub limits: RequestLimits,
    pub frame_bytes_max: u32,
    pub segment_bytes: u64,
    /// Budget of the cache of values read from the log.
    pub value_cache_bytes: usize,
    pub repair_truncate: bool,
    pub min_seq_wait: Duration,
    /// Set on a follower: the leader's client address.
    pub leader_addr: Option<String>,
    /// Leader: a write is answered OK once durable here and on this many followers.
    pub min_acks: u32,
    pub ack_timeout: Duration,
    /// Compact a sealed segment once this share of it is garbage.
    pub compact_garbage_ratio: f64,
    /// Tests only: abort the process at this named point (`KVS_CRASH_POINT`).
    pub crash_point: Option<String>,
    /// Tests only: this many reads of a Raft snapshot being sent get one bit flipped
    /// (`--damage-snapshot-sends`, `KVS_DAMAGE_SNAPSHOT_SENDS`); 0: none.
    pub damage_snapshot_sends: u32,
    /// Tests only: a Raft node's log waits this long before each fdatasync
    /// (`--delay-log-flush-ms`, `KVS_DELAY_LOG_FLUSH_MS`); 0: no wait.
    pub delay_log_flush_ms: u64,
    /// Follower: replace this node's data with a snapshot of the leader's when it holds
    /// another history, rather than be refused.
    pub resync: bool,
    /// `--auth-file`: every connection (a follower's too) must AUTH with it first; a follower
    /// sends it to its leader.
    pub auth: Option<crate::auth::Secret>,
    /// `--idle-timeout-secs`; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `--output-stall-secs`.
    pub output_stall: Duration,
    /// `--commit-window-ms`; `None`: flush as soon as the last flush completes.
    pub commit_window: Option<Duration>,
    /// `--metrics-addr`: serve /metrics, /health and /ready over HTTP there.
    pub metrics_addr: Option<SocketAddr>,
    /// `--unprotected-bind`: listen beyond loopback without `--auth-file` (`protected`).
    pub unprotected_bind: bool,
    /// `--resp-port`: where the Redis protocol is served (same host as `listen`); None: off.
    pub resp_listen: Option<SocketAddr>,
    /// Raft (issue 11): set when the node runs in a Raft cluster (`--bootstrap`, `--join`).
    pub raft: Option<RaftSettings>,
}

/// Raft (issue 11): how this node takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// `--bootstrap`: start a new cluster with this node as its one voter (a no-op on a data
    /// dir that already belongs to a cluster).
    pub bootstrap: bool,
    /// `--join ADDR`: ask the member at ADDR (or the leader it names) to add this node.
    pub join: Option<String>,
    /// `--learner`: join as a non-voting read replica.
    pub learner: bool,
    /// `--election-timeout-ms`: a follower that hears no leader for a random time between this
    /// and twice this stands for election.
    pub election_timeout_ms: u64,
    /// `--heartbeat-ms`.
    pub heartbeat_ms: u64,
    /// Tests only (`--raft-dial`): member address → the address dialled for it.
    pub dial: Vec<(String, String)>,
    /// `--raft-snapshot-entries`: a snapshot is made once this many entries were applied
    /// since the last one; the log before it is then deleted (0: only on `kvsctl compact`).
    pub snapshot_entries: u64,
    /// `--raft-keep-entries`: entries kept before a snapshot for members that lag a little.
    pub keep_entries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policies_parse_and_print() {
        for text in ["always", "never", "interval=250"] {
            assert_eq!(text.parse::<FsyncPolicy>().unwrap().to_string(), text);
        }
        assert_eq!(
            "interval".parse::<FsyncPolicy>().unwrap().to_string(),
            "interval=100"
        );
        assert!("interval=0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes"
            .parse::<FsyncPolicy>()
            .unwrap_err()
            .contains("always, interval"));
    }
}

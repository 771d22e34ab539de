//! Bounded disk on a Raft node: when snapshots are made (openraft's snapshot policy, and
//! `kvsctl compact`), and what STATS says of them. The snapshot itself is `raft::snapshot`;
//! purging the log it covers is `raft::log_store`.

use std::time::Duration;

use openraft::SnapshotPolicy;

use super::config::RaftSettings;
use super::raft_node::RaftNode;
use crate::raft::seq_of;

/// openraft purges the log in steps of at least this many entries. The purge point moves only
/// when a snapshot is made, so each snapshot is followed by one purge whatever its size.
pub const PURGE_BATCH_ENTRIES: u64 = 1;
/// How long a leader waits for a member to take one snapshot chunk, the last one included
/// (which the member checks, writes and fsyncs whole before it answers).
pub const INSTALL_TIMEOUT_MS: u64 = 60_000;
/// How long `kvsctl compact` waits for the snapshot, and then for the purge after it.
const COMPACT_WAIT: Duration = Duration::from_secs(120);
const PURGE_WAIT: Duration = Duration::from_secs(5);

/// openraft's snapshot policy for `--raft-snapshot-entries`, and the chunk size a snapshot is
/// sent in: half a frame, so a chunk and its meta always fit one.
pub fn policy(settings: &RaftSettings, frame_bytes_max: u32) -> (SnapshotPolicy, u64) {
    let policy = match settings.snapshot_entries {
        0 => SnapshotPolicy::Never,
        entries => SnapshotPolicy::LogsSinceLast(entries),
    };
    (policy, u64::from(frame_bytes_max / 2).max(4096))
}

/// COMPACT on a Raft node: a snapshot of everything applied here now, then the purge of the
/// log before it (less `--raft-keep-entries`; on a leader, less what a member still reads).
/// Answers the snapshot's seq and the bytes on disk.
pub async fn compact(node: &RaftNode) -> Result<String, String> {
    let want = *node.sm.applied_seq.borrow();
    if want > 0 {
        node.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| format!("COMPACT: {e}"))?;
        node.raft
            .wait(Some(COMPACT_WAIT))
            .metrics(
                |m| m.snapshot.as_ref().map_or(0, seq_of) >= want,
                "a snapshot at the applied seq",
            )
            .await
            .map_err(|e| format!("COMPACT: the snapshot was not made: {e}"))?;
        let keep = node
            .config
            .raft
            .as_ref()
            .map_or(0, |settings| settings.keep_entries);
        // The purge follows the snapshot; on a leader it also waits for lagging members.
        let _ = node
            .raft
            .wait(Some(PURGE_WAIT))
            .metrics(
                |m| m.purged.as_ref().map_or(0, seq_of) + keep + 1 >= want,
                "the purge after the snapshot",
            )
            .await;
    }
    let mut text = String::new();
    stats(node, &mut |name: &str, value: &dyn std::fmt::Display| {
        text.push_str(&format!("{name}:{value}\n"));
    });
    text.push_str(&format!("log_bytes:{}\n", node.log.file.log_bytes()));
    Ok(text)
}

/// STATS lines: the snapshot's seq and bytes, the purged seq, snapshots made, installed and
/// refused as damaged.
pub fn stats(node: &RaftNode, line: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
    let (snapshot_seq, snapshot_bytes) = node.sm.snapshot_stats();
    line("snapshot_seq", &snapshot_seq);
    line("snapshot_bytes", &snapshot_bytes);
    line("purged_seq", &node.log.purged().as_ref().map_or(0, seq_of));
    line("snapshots_built", &node.sm.snapshots_built.get());
    line("snapshots_installed", &node.sm.snapshots_installed.get());
    line("snapshots_rejected", &node.sm.snapshots_rejected.get());
}

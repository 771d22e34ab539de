//! Which side of the Raft line a data dir stands on. Raft runs only when asked (`--bootstrap`,
//! `--join`): the seeds' `--leader` / `--leader-addr` keep today's asynchronous replication
//! until a Raft node compacts its log and comes near a single node's write rate (issue 11;
//! `docs/replication.md`). A data dir that already belongs to a cluster must be started as a
//! Raft node again, never as an asynchronous leader that would write outside the cluster.

use std::path::Path;

use super::vote::VOTE_FILE;
use crate::wal::segment::EXTENSION;

/// Where the data dir stands: no data yet, a Raft member's, or one written outside Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    New,
    Raft,
    Outside,
}

/// Reads what the data dir holds (a missing or unreadable dir counts as new: opening it
/// later reports any real problem).
pub fn data_dir_kind(dir: &Path) -> DataDir {
    if dir.join(VOTE_FILE).exists() {
        return DataDir::Raft;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return DataDir::New;
    };
    let has_segments = entries.filter_map(Result::ok).any(|entry| {
        Path::new(&entry.file_name())
            .extension()
            .is_some_and(|ext| ext == EXTENSION)
    });
    if has_segments {
        DataDir::Outside
    } else {
        DataDir::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_new_raft_or_outside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(data_dir_kind(&dir.path().join("missing")), DataDir::New);
        assert_eq!(data_dir_kind(dir.path()), DataDir::New);
        std::fs::write(dir.path().join("0000000001.wal"), b"").unwrap();
        assert_eq!(data_dir_kind(dir.path()), DataDir::Outside);
        std::fs::write(dir.path().join(VOTE_FILE), b"").unwrap();
        assert_eq!(data_dir_kind(dir.path()), DataDir::Raft);
    }
}

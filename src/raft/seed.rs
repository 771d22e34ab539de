//! Which side of the Raft line a data dir stands on. On a new data dir or a Raft member's,
//! the seeds' `--leader` / `--leader-addr` mean `--bootstrap` / `--join`; a data dir that an
//! asynchronous leader or follower wrote keeps asynchronous replication, so a restart never moves
//! a deployment onto Raft (`docs/replication.md`). A data dir that already belongs to a cluster
//! must be started as a Raft node again, never as an asynchronous leader that would write
//! outside the cluster.

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

//! The seeds' replication flags on a Raft node (issue 11): `--leader` on a new data dir means
//! `--bootstrap`, `--leader-addr X` means `--join X`, so the README's commands start a cluster
//! that fails over by itself. Today's asynchronous leader and follower stay available with
//! `--async-replication`, and are kept for a data dir they wrote (one with segments and no
//! `raft-vote`) and whenever an option only they have is given (`--min-acks`, `--resync`).

use std::path::Path;

use super::vote::VOTE_FILE;
use crate::wal::segment::EXTENSION;

/// What a node given the seeds' flags runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedRole {
    /// Neither flag, or today's asynchronous replication: nothing to map.
    Unchanged,
    /// `--leader`: start (or restart) a Raft cluster as with `--bootstrap`.
    Bootstrap,
    /// `--leader-addr X`: join the Raft cluster of X as with `--join X`.
    Join(String),
}

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

/// Maps `--leader` / `--leader-addr` to Raft. `legacy` is true when the command line asks
/// for asynchronous replication (`--async-replication`, `--min-acks N` > 0, `--resync`).
pub fn map(dir: DataDir, leader: bool, leader_addr: Option<&str>, legacy: bool) -> SeedRole {
    if legacy || dir == DataDir::Outside {
        return SeedRole::Unchanged;
    }
    match leader_addr {
        Some(addr) => SeedRole::Join(addr.to_string()),
        None if leader => SeedRole::Bootstrap,
        None => SeedRole::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_flags_map_to_raft_on_new_and_raft_data_dirs_only() {
        for dir in [DataDir::New, DataDir::Raft] {
            assert_eq!(map(dir, true, None, false), SeedRole::Bootstrap);
            assert_eq!(
                map(dir, false, Some("h:1"), false),
                SeedRole::Join("h:1".into())
            );
            assert_eq!(map(dir, false, None, false), SeedRole::Unchanged);
            assert_eq!(map(dir, true, None, true), SeedRole::Unchanged);
            assert_eq!(map(dir, false, Some("h:1"), true), SeedRole::Unchanged);
        }
        assert_eq!(
            map(DataDir::Outside, true, None, false),
            SeedRole::Unchanged
        );
        assert_eq!(
            map(DataDir::Outside, false, Some("h:1"), false),
            SeedRole::Unchanged
        );
    }

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

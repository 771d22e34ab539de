//! The Raft hard state beside the log: the vote (term, voted-for, committed) and the last
//! purged log id in `raft-vote`, fsynced on every change; the newest committed log id in
//! `raft-committed`, written without fsync (a lost one only means fewer entries re-applied at
//! start until the leader says again what is committed).
//!
//! The log store writes both through the io_uring (`save_hard_state`, `save_committed`), so the
//! loop's thread never blocks on the file system; the blocking `write_*` are for start-up.
//!
//! Both files: written to `<name>.tmp`, then renamed over `<name>`; `raft-vote` is fsynced
//! before the rename and the directory after, so it is the old vote or the new one, whole.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `KVSVOTE\0` or `KVSCMIT\0` |
//! | 8 | 4 | `crc` u32 LE: CRC32 of the bytes after it |
//! | 12 | .. | `raft-vote`: vote (`codec::put_vote`), purged log id (`codec::put_log_id`); `raft-committed`: a log id |

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use super::codec::{self, Reader};
use super::{LogId, Vote};

pub const VOTE_FILE: &str = "raft-vote";
pub const COMMITTED_FILE: &str = "raft-committed";
const VOTE_MAGIC: &[u8; 8] = b"KVSVOTE\0";
const COMMITTED_MAGIC: &[u8; 8] = b"KVSCMIT\0";
const BODY_OFFSET: usize = 12;

/// What `raft-vote` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardState {
    pub vote: Option<Vote>,
    pub purged: Option<LogId>,
}

fn wrap(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(BODY_OFFSET + body.len());
    buf.extend_from_slice(magic);
    buf.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    buf.extend_from_slice(body);
    buf
}

fn unwrap<'a>(magic: &[u8; 8], buf: &'a [u8], path: &Path) -> io::Result<&'a [u8]> {
    let damaged = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    if buf.len() < BODY_OFFSET || &buf[..8] != magic {
        return Err(damaged(
            "not a kvsd raft state file (bad magic or too short)",
        ));
    }
    let body = &buf[BODY_OFFSET..];
    if u32::from_le_bytes(buf[8..12].try_into().expect("4")) != crc32fast::hash(body) {
        return Err(damaged("checksum mismatch"));
    }
    Ok(body)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
    }
    fs::rename(&tmp, &path)?;
    if durable {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `write_file` through the io_uring: the loop's thread never waits on the file system. While
/// another process flushed large writes to the same disk, this create-write-rename took 50 to
/// 530 ms (`tools/raft-churn --disk-hog`), and on the loop the whole node, Raft heartbeats and
/// socket reads included, stood still that long.
async fn write_file_on_ring(
    dir: &Path,
    name: &str,
    bytes: Vec<u8>,
    durable: bool,
) -> io::Result<()> {
    use crate::runtime::File;
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp).await?;
    let (result, _) = file.write_all_at(bytes, 0).await;
    result?;
    if durable {
        file.sync_all().await?;
    }
    file.close().await?;
    crate::runtime::rename(&tmp, &path).await?;
    if durable {
        let dir_file = File::open(dir).await?;
        dir_file.sync_all().await?;
        dir_file.close().await?;
    }
    Ok(())
}

fn hard_state_bytes(state: &HardState) -> Vec<u8> {
    let mut body = BytesMut::new();
    match &state.vote {
        Some(vote) => {
            body.extend_from_slice(&[1]);
            codec::put_vote(&mut body, vote);
        }
        None => body.extend_from_slice(&[0]),
    }
    codec::put_log_id(&mut body, state.purged.as_ref());
    wrap(VOTE_MAGIC, &body)
}

fn committed_bytes(committed: Option<&LogId>) -> Vec<u8> {
    let mut body = BytesMut::new();
    codec::put_log_id(&mut body, committed);
    wrap(COMMITTED_MAGIC, &body)
}

/// `write_hard_state` through the io_uring (must run on the loop).
pub async fn save_hard_state(dir: &Path, state: &HardState) -> io::Result<()> {
    write_file_on_ring(dir, VOTE_FILE, hard_state_bytes(state), true).await
}

/// `write_committed` through the io_uring (must run on the loop).
pub async fn save_committed(dir: &Path, committed: Option<&LogId>) -> io::Result<()> {
    write_file_on_ring(dir, COMMITTED_FILE, committed_bytes(committed), false).await
}

/// Reads `raft-vote`; the default (no vote, nothing purged) if there is none. A damaged file
/// is an error: forgetting a vote could let this node vote twice in one term.
pub fn read_hard_state(dir: &Path) -> io::Result<HardState> {
    let path = dir.join(VOTE_FILE);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(error) => return Err(error),
    };
    let body = unwrap(VOTE_MAGIC, &buf, &path)?;
    let invalid = |e: codec::DecodeError| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let mut reader = Reader::new(body);
    let vote = match reader.bool("vote flag").map_err(invalid)? {
        true => Some(codec::get_vote(&mut reader).map_err(invalid)?),
        false => None,
    };
    let purged = codec::get_log_id(&mut reader).map_err(invalid)?;
    reader.end("raft-vote").map_err(invalid)?;
    Ok(HardState { vote, purged })
}

/// Writes `raft-vote` durably: once this returns, a crash keeps `state`.
pub fn write_hard_state(dir: &Path, state: &HardState) -> io::Result<()> {
    write_file(dir, VOTE_FILE, &hard_state_bytes(state), true)
}

/// The committed log id last written, if the file is there and whole (else None: it is only
/// a hint).
pub fn read_committed(dir: &Path) -> Option<LogId> {
    let path = dir.join(COMMITTED_FILE);
    let buf = fs::read(&path).ok()?;
    let body = unwrap(COMMITTED_MAGIC, &buf, &path).ok()?;
    let mut reader = Reader::new(body);
    codec::get_log_id(&mut reader).ok().flatten()
}

pub fn write_committed(dir: &Path, committed: Option<&LogId>) -> io::Result<()> {
    write_file(dir, COMMITTED_FILE, &committed_bytes(committed), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_round_trips_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_hard_state(dir.path()).unwrap(), HardState::default());
        let state = HardState {
            vote: Some(Vote::new_committed(7, 3)),
            purged: Some(super::super::log_id(6, 100)),
        };
        write_hard_state(dir.path(), &state).unwrap();
        assert_eq!(read_hard_state(dir.path()).unwrap(), state);
        let path = dir.path().join(VOTE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(read_hard_state(dir.path()).is_err());
        write_committed(dir.path(), Some(&super::super::log_id(6, 90))).unwrap();
        assert_eq!(
            read_committed(dir.path()),
            Some(super::super::log_id(6, 90))
        );
    }
}

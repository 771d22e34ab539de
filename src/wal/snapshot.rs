//! A follower's snapshot of its leader's log: received into `<data>/snapshot.tmp/` as compacted
//! segments, then installed in place of the follower's log at the next start.
//!
//! Installing is idempotent, so a crash at any point leaves either the old log or the whole
//! snapshot, never a mix:
//!
//! 1. while receiving, `snapshot.tmp/` holds no marker: a start-up deletes it (the old log
//!    stays, and the follower asks for a snapshot again);
//! 2. once every record is written and fsynced, `COMPLETE` is written and fsynced;
//! 3. install: delete the old segments, rename `COMPLETE` to `MOVING`, move the snapshot's
//!    segments into the data dir, remove `snapshot.tmp/`, fsyncing the directories between.
//!    A start-up that finds `COMPLETE` redoes it all; one that finds `MOVING` only moves on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::runtime::File;

use super::record::RecordHeader;
use super::recovery::sync_dir;
use super::segment::{self, Compacted, SegmentHeader};
use super::LogId;

pub const DIR: &str = "snapshot.tmp";
const COMPLETE: &str = "COMPLETE";
const MOVING: &str = "MOVING";

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// Writes a snapshot's records, in order, into segment files of about `segment_bytes`.
pub struct SnapshotWriter {
    dir: PathBuf,
    log_id: LogId,
    segment_bytes: u64,
    /// The segment being written: its id, file, header (first seq), and bytes so far.
    current: Option<(u32, File, SegmentHeader, u64)>,
    buf: Vec<u8>,
    /// Seq of the last record taken.
    last_seq: u64,
    pub records: u64,
}

impl SnapshotWriter {
    /// Starts an empty snapshot dir (removing any earlier, unfinished one).
    pub fn create(data_dir: &Path, log_id: LogId, segment_bytes: u64) -> io::Result<Self> {
        let dir = dir(data_dir);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        sync_dir(data_dir).map_err(io::Error::other)?;
        Ok(SnapshotWriter {
            dir,
            log_id,
            segment_bytes,
            current: None,
            buf: Vec::with_capacity(1024 * 1024),
            last_seq: 0,
            records: 0,
        })
    }

    /// Takes one verified record (`bytes` is the whole record).
    pub async fn push(&mut self, header: &RecordHeader, bytes: &[u8]) -> io::Result<()> {
        if header.seq <= self.last_seq {
            return Err(io::Error::other(format!(
                "snapshot record seq {} after seq {}",
                header.seq, self.last_seq
            )));
        }
        let full = self.current.as_ref().is_some_and(|(_, _, _, written)| {
            *written + self.buf.len() as u64 >= self.segment_bytes
        });
        if full {
            // The next segment starts right after the last record of this one.
            self.seal(self.last_seq + 1).await?;
        }
        if self.current.is_none() {
            let id = self.next_id();
            let path = segment::path(&self.dir, id);
            let file = File::create(&path).await?;
            let header = SegmentHeader::new(self.log_id, id, self.last_seq + 1);
            self.current = Some((id, file, header, segment::HEADER_BYTES as u64));
        }
        self.buf.extend_from_slice(bytes);
        self.last_seq = header.seq;
        self.records += 1;
        if self.buf.len() >= 1024 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    fn next_id(&self) -> u32 {
        fs::read_dir(&self.dir)
            .map(|entries| entries.count() as u32 + 1)
            .unwrap_or(1)
    }

    async fn flush(&mut self) -> io::Result<()> {
        let Some((_, file, _, written)) = &mut self.current else {
            return Ok(());
        };
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len() as u64;
        let (result, mut buf) = file.write_all_at(buf, *written).await;
        result?;
        *written += len;
        buf.clear();
        self.buf = buf;
        Ok(())
    }

    /// Finishes the current segment: its header (now that its end is known), fsync.
    async fn seal(&mut self, end_seq: u64) -> io::Result<()> {
        self.flush().await?;
        let Some((id, file, header, _)) = self.current.take() else {
            return Ok(());
        };
        let header = SegmentHeader {
            compacted: Some(Compacted {
                covers_through: id,
                end_seq,
            }),
            ..header
        };
        let (result, _) = file.write_all_at(header.encode().to_vec(), 0).await;
        result?;
        file.sync_all().await?;
        file.close().await
    }

    /// Every record up to `snapshot_seq` is in: seal, fsync, mark complete.
    pub async fn finish(mut self, snapshot_seq: u64) -> io::Result<()> {
        if self.current.is_none() {
            // An empty snapshot still says where the log goes on.
            let id = self.next_id();
            let file = File::create(segment::path(&self.dir, id)).await?;
            let header = SegmentHeader::new(self.log_id, id, 1);
            self.current = Some((id, file, header, segment::HEADER_BYTES as u64));
        }
        self.seal(snapshot_seq + 1).await?;
        sync_dir(&self.dir).map_err(io::Error::other)?;
        let marker = self.dir.join(COMPLETE);
        let file = File::create(&marker).await?;
        file.sync_all().await?;
        file.close().await?;
        sync_dir(&self.dir).map_err(io::Error::other)
    }
}

/// At start-up, before recovery: installs a complete snapshot, or deletes an unfinished one.
/// Returns what it did, for the log.
pub fn install_pending(data_dir: &Path) -> io::Result<Option<&'static str>> {
    let dir = dir(data_dir);
    if !dir.exists() {
        return Ok(None);
    }
    let sync = |path: &Path| sync_dir(path).map_err(io::Error::other);
    if dir.join(COMPLETE).exists() {
        for entry in fs::read_dir(data_dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".wal") || name.ends_with(segment::TMP_SUFFIX) {
                fs::remove_file(&path)?;
            }
        }
        let _ = fs::remove_file(super::checkpoint::path(data_dir));
        sync(data_dir)?;
        fs::rename(dir.join(COMPLETE), dir.join(MOVING))?;
        sync(&dir)?;
    }
    if dir.join(MOVING).exists() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if let Some(name) = path.file_name().filter(|_| path.extension().is_some()) {
                if segment::parse_name(&name.to_string_lossy()).is_some() {
                    fs::rename(&path, data_dir.join(name))?;
                }
            }
        }
        sync(data_dir)?;
        fs::remove_dir_all(&dir)?;
        sync(data_dir)?;
        return Ok(Some("installed a snapshot received from the leader"));
    }
    fs::remove_dir_all(&dir)?;
    sync(data_dir)?;
    Ok(Some(
        "deleted an unfinished snapshot transfer; the follower will ask for it again",
    ))
}

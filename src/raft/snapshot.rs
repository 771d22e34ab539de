//! The state machine's snapshot file, `raft-snapshot`: every live key of the state machine at
//! one applied log id, as log records, so that the Raft log before that id can be deleted.
//!
//! The index's values then live in this file (the records a snapshot copies are the keys'
//! current records, so the index is pointed at the copies) and in the log after it. A snapshot
//! is written to `raft-snapshot.tmp`, fsynced, renamed over `raft-snapshot` and the directory
//! fsynced: a crash leaves the old snapshot or the new one, never a mix. The same bytes are
//! what a leader streams to a member that needs them (`SnapshotFile` is openraft's snapshot
//! data), and a member that receives one checks every record, writes it the same way, and only
//! then takes it as its state.
//!
//! | offset | size     | field                                                 |
//! |--------|----------|-------------------------------------------------------|
//! | 0      | 8        | magic `KVSRSNAP`                                      |
//! | 8      | 4        | `version` u32 LE: 1                                   |
//! | 12     | 4        | `meta_len` u32 LE                                     |
//! | 16     | 4        | `meta_crc` u32 LE: CRC32 of the meta bytes            |
//! | 20     | 4        | zero                                                  |
//! | 24     | meta_len | meta: last log id, membership, `records` u64 LE       |
//! | …      |          | `records` records (record format 2, SET), to the end  |
//!
//! Memory stays bounded: files are read and written in `IO_BYTES` chunks, yielding between.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};

use super::codec::{self, Reader};
use super::{LogId, StoredMembership};
use crate::engine::Engine;
use crate::wal::record::{self, DecodeError, Op, Record};
use crate::wal::Location;

pub const FILE: &str = "raft-snapshot";
pub const TMP: &str = "raft-snapshot.tmp";
/// Where a snapshot being received from the leader is written, before it is checked.
pub const RECEIVING: &str = "raft-snapshot.recv";
const MAGIC: &[u8; 8] = b"KVSRSNAP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 24;
/// Bytes per read and write when making, checking or copying a snapshot.
pub const IO_BYTES: usize = 1 << 20;
/// A meta larger than this is damage (a membership of a few members is a few hundred bytes).
const META_BYTES_MAX: usize = 1 << 20;

/// What a snapshot file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    pub records: u64,
}

impl Meta {
    /// openraft's id for the snapshot: one state per log id, so the log id names it.
    pub fn snapshot_id(&self) -> String {
        match &self.last_log_id {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index + 1),
            None => "empty".into(),
        }
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The header and meta, ready to be written at the start of a snapshot file.
pub fn encode_head(meta: &Meta) -> Vec<u8> {
    let mut body = BytesMut::new();
    codec::put_log_id(&mut body, meta.last_log_id.as_ref());
    codec::put_stored_membership(&mut body, &meta.membership);
    body.put_u64_le(meta.records);
    let mut head = Vec::with_capacity(HEADER_BYTES + body.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    head.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    head.extend_from_slice(&body);
    head
}

fn damaged(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("raft snapshot: {why}"))
}

/// Reads the header and meta from the start of `src`; returns them and their bytes.
pub fn read_head(src: &mut impl Read) -> io::Result<(Meta, Vec<u8>)> {
    let mut header = [0u8; HEADER_BYTES];
    src.read_exact(&mut header)
        .map_err(|e| damaged(format!("reading the header: {e}")))?;
    if &header[..8] != MAGIC {
        return Err(damaged("not a kvsd raft snapshot (bad magic)"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
    if u32_at(8) != VERSION {
        return Err(damaged(format!(
            "version {} is not supported (this kvsd reads {VERSION})",
            u32_at(8)
        )));
    }
    let meta_len = u32_at(12) as usize;
    if meta_len > META_BYTES_MAX {
        return Err(damaged(format!("a meta of {meta_len} bytes")));
    }
    let mut body = vec![0u8; meta_len];
    src.read_exact(&mut body)
        .map_err(|e| damaged(format!("reading the meta: {e}")))?;
    if crc32fast::hash(&body) != u32_at(16) {
        return Err(damaged("meta checksum mismatch"));
    }
    let mut reader = Reader::new(&body);
    let meta = (|| {
        let last_log_id = codec::get_log_id(&mut reader)?;
        let membership = codec::get_stored_membership(&mut reader)?;
        let records = reader.u64("records")?;
        reader.end("snapshot meta")?;
        Ok::<_, codec::DecodeError>(Meta {
            last_log_id,
            membership,
            records,
        })
    })()
    .map_err(|e| damaged(e.0))?;
    let mut head = header.to_vec();
    head.extend_from_slice(&body);
    Ok((meta, head))
}

/// Reads a whole snapshot from `src` (from its start): checks every record, points `engine`
/// at each value as it will lie in file `file_no` (a copy of these same bytes), and writes
/// the bytes to `copy` if given. Yields to the loop between chunks.
pub async fn load(
    src: &mut impl Read,
    file_no: u32,
    engine: &mut Engine,
    mut copy: Option<&mut std::fs::File>,
) -> io::Result<Meta> {
    let (meta, head) = read_head(src)?;
    if let Some(copy) = copy.as_deref_mut() {
        copy.write_all(&head)?;
    }
    let mut offset = head.len() as u64;
    let mut buf: Vec<u8> = Vec::with_capacity(IO_BYTES);
    let mut records = 0u64;
    let mut ended = false;
    while !ended || !buf.is_empty() {
        if !ended {
            let start = buf.len();
            let want = IO_BYTES.max(start + IO_BYTES / 4);
            buf.resize(want, 0);
            let read = src.read(&mut buf[start..])?;
            buf.truncate(start + read);
            if read == 0 {
                ended = true;
            }
            if let Some(copy) = copy.as_deref_mut() {
                copy.write_all(&buf[start..])?;
            }
        }
        let mut at = 0;
        while at < buf.len() {
            match record::decode(&buf[at..]) {
                Ok((header, rec)) => {
                    if header.op != Op::Set {
                        return Err(damaged(format!(
                            "a {:?} record at byte {}",
                            header.op,
                            offset + at as u64
                        )));
                    }
                    let value_offset = offset + (at + header.value_offset()) as u64;
                    let location = Location {
                        file: file_no,
                        value_offset: u32::try_from(value_offset)
                            .map_err(|_| damaged("larger than 4 GiB"))?,
                        value_len: header.value_len,
                    };
                    engine
                        .recover(
                            &Record::set(rec.seq, rec.term, rec.key, rec.value),
                            location,
                        )
                        .map_err(damaged)?;
                    records += 1;
                    at += header.total_bytes;
                }
                Err(DecodeError::Incomplete { .. }) if !ended => break,
                Err(error) => {
                    return Err(damaged(format!(
                        "record at byte {}: {error}",
                        offset + at as u64
                    )))
                }
            }
        }
        buf.drain(..at);
        offset += at as u64;
        if ended && !buf.is_empty() {
            return Err(damaged("a torn record at the end"));
        }
        tokio::task::yield_now().await;
    }
    if records != meta.records {
        return Err(damaged(format!(
            "{records} records where the meta says {}",
            meta.records
        )));
    }
    Ok(meta)
}

/// Reads only the meta of the snapshot in `dir`, if there is one.
pub fn read_meta(dir: &Path) -> io::Result<Option<Meta>> {
    match std::fs::File::open(path(dir)) {
        Ok(mut file) => Ok(Some(read_head(&mut file)?.0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// fsync of a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// openraft's snapshot data: a snapshot file, read (a leader sending it) or written (a member
/// receiving it) in chunks of at most `Config::snapshot_max_chunk_size`. The calls are plain
/// file reads and writes of one chunk each (page-cache speed), made on the loop.
pub struct SnapshotFile {
    file: RefCell<std::fs::File>,
    pub path: PathBuf,
}

impl SnapshotFile {
    pub fn open(path: &Path) -> io::Result<SnapshotFile> {
        Ok(SnapshotFile {
            file: RefCell::new(std::fs::File::open(path)?),
            path: path.to_path_buf(),
        })
    }

    /// A new, empty file to receive a snapshot into.
    pub fn create(path: &Path) -> io::Result<SnapshotFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(SnapshotFile {
            file: RefCell::new(file),
            path: path.to_path_buf(),
        })
    }

    /// The file, from its start.
    pub fn rewind(&mut self) -> io::Result<&mut std::fs::File> {
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = self.file.borrow_mut().read(buf.initialize_unfilled());
        Poll::Ready(read.map(|n| buf.advance(n)))
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.file.borrow_mut().write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        self.file.borrow_mut().seek(position).map(|_| ())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(self.file.borrow_mut().stream_position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_damage_is_refused() {
        let meta = Meta {
            last_log_id: Some(super::super::log_id(3, 9)),
            membership: StoredMembership::default(),
            records: 2,
        };
        let mut bytes = encode_head(&meta);
        let head = bytes.len();
        record::encode(&mut bytes, &Record::set(4, 3, b"a", b"one"));
        record::encode(&mut bytes, &Record::set(9, 3, b"b", b"two"));
        let mut engine = Engine::new(0);
        let loaded = crate::runtime::start(load(&mut &bytes[..], 7, &mut engine, None)).unwrap();
        assert_eq!(loaded, meta);
        assert_eq!(engine.key_count(), 2);
        let at = engine.get(b"b").unwrap();
        assert_eq!(at.file, 7);
        assert_eq!(&bytes[at.value_offset as usize..][..3], b"two");
        assert!(head > HEADER_BYTES);

        let mut torn = bytes.clone();
        torn.pop();
        let mut engine = Engine::new(0);
        assert!(crate::runtime::start(load(&mut &torn[..], 7, &mut engine, None)).is_err());
        let mut flipped = bytes.clone();
        flipped[head + 40] ^= 1;
        let mut engine = Engine::new(0);
        assert!(crate::runtime::start(load(&mut &flipped[..], 7, &mut engine, None)).is_err());
    }
}

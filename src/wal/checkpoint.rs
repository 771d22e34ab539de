//! The index checkpoint: `index.ckpt`, the whole index sorted by key, written at a clean
//! shutdown so that the next start builds the index in one sequential pass instead of reading
//! every record of the log.
//!
//! It is trusted only if it describes the log exactly: the same log id and, for every segment
//! it lists, a file with the same id and nonce (a compaction makes a new nonce) and at least
//! the bytes it lists; no other segment may sit among them. Recovery then reads each listed
//! segment only from where the checkpoint ends, and every later segment whole. It is deleted
//! once loaded (so it never outlives the state it describes), and one that is missing, stale
//! or damaged is ignored for a full scan of the log, never trusted.
//!
//! | field | size |
//! |---|---|
//! | magic `KVSIDX\0\0` | 8 |
//! | version u32 = 2 | 4 |
//! | log id | 16 |
//! | `last_crc` u32: the CRC of the newest record | 4 |
//! | segment count u32, then per segment: id u32, nonce u32, bytes u64, last_seq u64 | 4 + 24 n |
//! | entry count u64, then per entry: klen u32, key, segment index u32, value offset u32, value len u32, seq u64, expires_at_ms u64 | 8 + … |
//!
//! (Version 1, before keys had a seq and an expiry in the index, is ignored: a full scan.)
//! | CRC32 of everything before it | 4 |

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::recovery::{sync_dir, Resume};
use super::segment::{self, SegmentHeader};
use super::{Location, LogId};

const MAGIC: [u8; 8] = *b"KVSIDX\0\0";
const VERSION: u32 = 2;
pub const FILE: &str = "index.ckpt";
const TMP: &str = "index.ckpt.tmp";

/// One segment as the checkpoint saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSegment {
    pub id: u32,
    pub nonce: u32,
    /// Bytes of header and records.
    pub bytes: u64,
    /// The seq the segment's records end at (its next segment starts after it).
    pub last_seq: u64,
}

/// A checkpoint read back and checked against the data dir.
pub struct Checkpoint {
    pub log_id: LogId,
    pub last_crc: u32,
    pub segments: Vec<CheckpointSegment>,
    buf: Vec<u8>,
    entries_at: usize,
    pub entry_count: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// One key of the index as a checkpoint holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub location: Location,
    /// The seq of the last record that changed the key.
    pub seq: u64,
    /// Unix ms; 0: never.
    pub expires_at_ms: u64,
}

/// Writes the checkpoint durably: temp name, fsync, rename, fsync the dir. `entries` are the
/// index in key order, each with the position of its segment in `segments`.
pub fn write<'a>(
    dir: &Path,
    log_id: LogId,
    last_crc: u32,
    segments: &[CheckpointSegment],
    entry_count: u64,
    entries: impl Iterator<Item = (&'a [u8], u32, Entry)>,
) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut out = Crc(
        BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
        crc32fast::Hasher::new(),
    );
    out.put(&MAGIC)?;
    out.put(&VERSION.to_le_bytes())?;
    out.put(&log_id.0)?;
    out.put(&last_crc.to_le_bytes())?;
    out.put(&(segments.len() as u32).to_le_bytes())?;
    for s in segments {
        out.put(&s.id.to_le_bytes())?;
        out.put(&s.nonce.to_le_bytes())?;
        out.put(&s.bytes.to_le_bytes())?;
        out.put(&s.last_seq.to_le_bytes())?;
    }
    out.put(&entry_count.to_le_bytes())?;
    let mut written = 0;
    for (key, segment_index, entry) in entries {
        out.put(&(key.len() as u32).to_le_bytes())?;
        out.put(key)?;
        out.put(&segment_index.to_le_bytes())?;
        out.put(&entry.location.value_offset.to_le_bytes())?;
        out.put(&entry.location.value_len.to_le_bytes())?;
        out.put(&entry.seq.to_le_bytes())?;
        out.put(&entry.expires_at_ms.to_le_bytes())?;
        written += 1;
    }
    if written != entry_count {
        return Err(io::Error::other(
            "the index changed while it was checkpointed",
        ));
    }
    let crc = out.1.clone().finalize();
    let mut file = out.0.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&crc.to_le_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path(dir))?;
    sync_dir(dir).map_err(io::Error::other)
}

struct Crc<W: Write>(W, crc32fast::Hasher);

impl<W: Write> Crc<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.1.update(bytes);
        self.0.write_all(bytes)
    }
}

/// Reads the checkpoint, if there is one that matches the log in `dir`; says why not otherwise.
pub fn read(dir: &Path) -> Result<Option<Checkpoint>, String> {
    let path = path(dir);
    let mut buf = Vec::new();
    match File::open(&path) {
        Ok(mut file) => file.read_to_end(&mut buf).map_err(|e| e.to_string())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let checkpoint = parse(buf)?;
    check_against(dir, &checkpoint)?;
    Ok(Some(checkpoint))
}

fn parse(buf: Vec<u8>) -> Result<Checkpoint, String> {
    let body_len = buf.len().checked_sub(4).ok_or("too short")?;
    let stored = u32::from_le_bytes(buf[body_len..].try_into().expect("4"));
    if crc32fast::hash(&buf[..body_len]) != stored {
        return Err("checksum mismatch".into());
    }
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let bytes = buf.get(at..at + n).filter(|_| at + n <= body_len);
        at += n;
        bytes.ok_or_else(|| "truncated".to_string())
    };
    if take(8)? != MAGIC {
        return Err("not an index checkpoint".into());
    }
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4"));
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8"));
    if u32_of(take(4)?) != VERSION {
        return Err("unknown version".into());
    }
    let log_id = LogId(take(16)?.try_into().expect("16"));
    let last_crc = u32_of(take(4)?);
    let count = u32_of(take(4)?) as usize;
    let mut segments = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        segments.push(CheckpointSegment {
            id: u32_of(take(4)?),
            nonce: u32_of(take(4)?),
            bytes: u64_of(take(8)?),
            last_seq: u64_of(take(8)?),
        });
    }
    let entry_count = u64_of(take(8)?);
    let entries_at = at;
    Ok(Checkpoint {
        log_id,
        last_crc,
        segments,
        buf,
        entries_at,
        entry_count,
    })
}

/// The checkpoint's segments must be the data dir's first segments, unchanged.
fn check_against(dir: &Path, checkpoint: &Checkpoint) -> Result<(), String> {
    let mut ids: Vec<u32> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|entry| segment::parse_name(&entry.ok()?.file_name().to_string_lossy()))
        .collect();
    ids.sort_unstable();
    if ids.len() < checkpoint.segments.len() || checkpoint.segments.is_empty() {
        return Err("the log has other segments than it lists".into());
    }
    for (listed, id) in checkpoint.segments.iter().zip(&ids) {
        if listed.id != *id {
            return Err(format!(
                "it lists segment {} where the log has {id}",
                listed.id
            ));
        }
        let path = segment::path(dir, *id);
        let mut head = [0u8; segment::HEADER_BYTES];
        let mut file = File::open(&path).map_err(|e| e.to_string())?;
        file.read_exact(&mut head).map_err(|e| e.to_string())?;
        let header = SegmentHeader::decode(&head).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if header.nonce != listed.nonce || header.log_id != checkpoint.log_id {
            return Err(format!("segment {id} is not the file it describes"));
        }
        if len < listed.bytes {
            return Err(format!("segment {id} is shorter than it lists"));
        }
    }
    Ok(())
}

impl Checkpoint {
    /// Where recovery goes on in each listed segment.
    pub fn resume(&self) -> HashMap<u32, Resume> {
        self.segments
            .iter()
            .map(|s| {
                let resume = Resume {
                    offset: s.bytes,
                    last_seq: s.last_seq,
                };
                (s.id, resume)
            })
            .collect()
    }

    /// The entries in key order: key, and its location with the file number recovery gives
    /// the segment (its position in the log, from 1).
    pub fn entries(&self) -> Result<Vec<(&[u8], Entry)>, String> {
        let buf = &self.buf[..self.buf.len() - 4];
        let mut at = self.entries_at;
        let mut entries = Vec::with_capacity(self.entry_count.min(1 << 32) as usize);
        let field = |at: usize| {
            buf.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
        };
        for _ in 0..self.entry_count {
            let klen = field(at).ok_or("truncated entry")? as usize;
            let key = buf.get(at + 4..at + 4 + klen).ok_or("truncated key")?;
            at += 4 + klen;
            let (index, offset, len) = match (field(at), field(at + 4), field(at + 8)) {
                (Some(i), Some(o), Some(l)) if (i as usize) < self.segments.len() => (i, o, l),
                _ => return Err("bad entry".into()),
            };
            let field64 = |at: usize| {
                buf.get(at..at + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
            };
            let (seq, expires_at_ms) = match (field64(at + 12), field64(at + 20)) {
                (Some(seq), Some(expires)) => (seq, expires),
                _ => return Err("bad entry".into()),
            };
            at += 28;
            let location = Location {
                file: index + 1,
                value_offset: offset,
                value_len: len,
            };
            entries.push((
                key,
                Entry {
                    location,
                    seq,
                    expires_at_ms,
                },
            ));
        }
        if at != buf.len() {
            return Err("trailing bytes after the entries".into());
        }
        Ok(entries)
    }
}

/// Deletes the checkpoint (it describes the log only until the log changes).
pub fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_file(path(dir)) {
        Ok(()) => sync_dir(dir).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

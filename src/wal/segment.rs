//! A segment file: a fixed header, then records back to back.
//!
//! Named `<id>.wal` with the id in 10 decimal digits, so names sort in log order. A segment is
//! written to `<id>.wal.tmp`, fsynced, renamed into place and the directory fsynced, so a
//! segment either exists with a whole header or not at all.
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 8    | magic `KVSWAL\0\0`                                      |
//! | 8      | 4    | `version` u32 LE: 3 (1 and 2 are still read)            |
//! | 12     | 4    | `crc` u32 LE: CRC32 of bytes 0..12 and 16..64           |
//! | 16     | 16   | `log_id`: the data dir's log id                         |
//! | 32     | 4    | `segment_id` u32 LE: the same number as the file name   |
//! | 36     | 8    | `first_seq` u64 LE: the seq the first record will have  |
//! | 44     | 4    | `flags` u32 LE: bit 0 = compacted                       |
//! | 48     | 4    | `covers_through` u32 LE: compacted from segments up to  |
//! | 52     | 8    | `end_seq` u64 LE: compacted: the next segment's first   |
//! | 60     | 4    | `nonce` u32 LE: random per file, names this very file   |
//!
//! Version 3 is written: its records are record format 2 (`wal::record`). Versions 1 and 2 hold
//! record format 1; recovery rewrites such a segment once into version 3 (`wal::upgrade`)
//! before it reads the log. Version 1 (written before compaction existed) has zeros from byte 44
//! on: it is read as an ordinary segment with nonce 0 (`tests/format_v1.rs` upgrades one).
//!
//! A **compacted** segment holds the live records of the segments `id..=covers_through` as a
//! compaction found them: seqs increase but skip, and none reaches `end_seq`, where the next
//! segment starts. It is made under a temp name and renamed over segment `id`; the segments it
//! covers are deleted after, and recovery deletes any a crash left behind.

use std::path::{Path, PathBuf};

use super::LogId;

pub const MAGIC: [u8; 8] = *b"KVSWAL\0\0";
pub const VERSION: u32 = 3;
/// The first version whose records are record format 2.
pub const VERSION_RECORD_FORMAT_2: u32 = 3;
/// Oldest version this kvsd reads.
pub const VERSION_MIN: u32 = 1;
pub const FLAG_COMPACTED: u32 = 1;
pub const MAGIC_OFFSET: usize = 0;
pub const VERSION_OFFSET: usize = 8;
pub const CRC_OFFSET: usize = 12;
pub const LOG_ID_OFFSET: usize = 16;
pub const SEGMENT_ID_OFFSET: usize = 32;
pub const FIRST_SEQ_OFFSET: usize = 36;
pub const FLAGS_OFFSET: usize = 44;
pub const COVERS_OFFSET: usize = 48;
pub const END_SEQ_OFFSET: usize = 52;
pub const NONCE_OFFSET: usize = 60;
pub const HEADER_BYTES: usize = 64;

pub const EXTENSION: &str = "wal";
pub const TMP_SUFFIX: &str = ".wal.tmp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The version the file was written with; `encode` always writes [`VERSION`].
    pub version: u32,
    pub log_id: LogId,
    pub segment_id: u32,
    pub first_seq: u64,
    /// For a compacted segment: the last segment id it replaced, and the seq the segment after
    /// it starts at. None for an ordinary segment.
    pub compacted: Option<Compacted>,
    /// Random per file: the index checkpoint (`index.ckpt`) names each segment file it
    /// describes by id and nonce, so a file rewritten under the same id (a compaction) differs.
    pub nonce: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub covers_through: u32,
    pub end_seq: u64,
}

impl SegmentHeader {
    /// An ordinary segment's header with a fresh nonce.
    pub fn new(log_id: LogId, segment_id: u32, first_seq: u64) -> SegmentHeader {
        SegmentHeader {
            version: VERSION,
            log_id,
            segment_id,
            first_seq,
            compacted: None,
            nonce: random_nonce(),
        }
    }

    /// Whether its records are in an older record format, to be rewritten before use.
    pub fn is_old_format(&self) -> bool {
        self.version < VERSION_RECORD_FORMAT_2
    }

    /// The seq after this segment's records, if it says (compacted segments do).
    pub fn end_seq(&self) -> Option<u64> {
        self.compacted.map(|c| c.end_seq)
    }
}

/// Not cryptographic: tells files apart.
pub fn random_nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the file is shorter than a segment header ({len} of {HEADER_BYTES} bytes)")]
    Short { len: usize },
    #[error("not a kvs log segment (bad magic)")]
    BadMagic,
    #[error("segment format version {version} is not supported (this kvsd reads {VERSION_MIN} to {VERSION})")]
    BadVersion { version: u32 },
    #[error("segment header checksum mismatch")]
    BadChecksum,
    #[error("segment header has unknown flags {flags:#x}")]
    BadFlags { flags: u32 },
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut buf = [0u8; HEADER_BYTES];
        buf[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
        buf[VERSION_OFFSET..CRC_OFFSET].copy_from_slice(&VERSION.to_le_bytes());
        buf[LOG_ID_OFFSET..SEGMENT_ID_OFFSET].copy_from_slice(&self.log_id.0);
        buf[SEGMENT_ID_OFFSET..FIRST_SEQ_OFFSET].copy_from_slice(&self.segment_id.to_le_bytes());
        buf[FIRST_SEQ_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.first_seq.to_le_bytes());
        if let Some(compacted) = self.compacted {
            buf[FLAGS_OFFSET..COVERS_OFFSET].copy_from_slice(&FLAG_COMPACTED.to_le_bytes());
            buf[COVERS_OFFSET..END_SEQ_OFFSET]
                .copy_from_slice(&compacted.covers_through.to_le_bytes());
            buf[END_SEQ_OFFSET..NONCE_OFFSET].copy_from_slice(&compacted.end_seq.to_le_bytes());
        }
        buf[NONCE_OFFSET..HEADER_BYTES].copy_from_slice(&self.nonce.to_le_bytes());
        let crc = checksum(&buf);
        buf[CRC_OFFSET..LOG_ID_OFFSET].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let buf: &[u8; HEADER_BYTES] = buf
            .get(..HEADER_BYTES)
            .and_then(|b| b.try_into().ok())
            .ok_or(HeaderError::Short { len: buf.len() })?;
        if buf[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32::from_le_bytes(buf[VERSION_OFFSET..CRC_OFFSET].try_into().expect("4"));
        if !(VERSION_MIN..=VERSION).contains(&version) {
            return Err(HeaderError::BadVersion { version });
        }
        let crc = u32::from_le_bytes(buf[CRC_OFFSET..LOG_ID_OFFSET].try_into().expect("4"));
        if crc != checksum(buf) {
            return Err(HeaderError::BadChecksum);
        }
        let compacted = match u32_at(buf, FLAGS_OFFSET) {
            0 => None,
            FLAG_COMPACTED => Some(Compacted {
                covers_through: u32_at(buf, COVERS_OFFSET),
                end_seq: u64_at(buf, END_SEQ_OFFSET),
            }),
            flags => return Err(HeaderError::BadFlags { flags }),
        };
        Ok(SegmentHeader {
            version,
            log_id: LogId(
                buf[LOG_ID_OFFSET..SEGMENT_ID_OFFSET]
                    .try_into()
                    .expect("16"),
            ),
            segment_id: u32::from_le_bytes(
                buf[SEGMENT_ID_OFFSET..FIRST_SEQ_OFFSET]
                    .try_into()
                    .expect("4"),
            ),
            first_seq: u64_at(buf, FIRST_SEQ_OFFSET),
            compacted,
            nonce: u32_at(buf, NONCE_OFFSET),
        })
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8"))
}

fn checksum(buf: &[u8; HEADER_BYTES]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[..CRC_OFFSET]);
    hasher.update(&buf[LOG_ID_OFFSET..]);
    hasher.finalize()
}

pub fn path(dir: &Path, segment_id: u32) -> PathBuf {
    dir.join(format!("{segment_id:010}.{EXTENSION}"))
}

/// A segment being zero-filled ahead of use; also a temp name, so a crash leaves nothing behind.
pub fn prepared_path(dir: &Path, segment_id: u32) -> PathBuf {
    dir.join(format!("{segment_id:010}.prepared{TMP_SUFFIX}"))
}

/// A compacted segment being written; a temp name, so a crash leaves nothing behind.
pub fn compaction_path(dir: &Path, segment_id: u32) -> PathBuf {
    dir.join(format!("{segment_id:010}.compacting{TMP_SUFFIX}"))
}

pub fn tmp_path(dir: &Path, segment_id: u32) -> PathBuf {
    dir.join(format!("{segment_id:010}{TMP_SUFFIX}"))
}

/// The segment id in a file name like `0000000001.wal`; None for any other name.
pub fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_catches_damage() {
        let mut header = SegmentHeader::new(LogId([7; 16]), 3, 99);
        let compacted = SegmentHeader {
            compacted: Some(Compacted {
                covers_through: 5,
                end_seq: 700,
            }),
            ..header
        };
        assert_eq!(SegmentHeader::decode(&compacted.encode()), Ok(compacted));
        header.nonce = 0x1234_5678;
        let buf = header.encode();
        assert_eq!(SegmentHeader::decode(&buf), Ok(header));
        for byte in 0..HEADER_BYTES {
            let mut bad = buf;
            bad[byte] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {byte}");
        }
        assert_eq!(
            SegmentHeader::decode(&buf[..10]),
            Err(HeaderError::Short { len: 10 })
        );
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("0000000012.wal"), Some(12));
        assert_eq!(parse_name("12.wal"), None);
        assert_eq!(parse_name("0000000012.wal.tmp"), None);
        assert_eq!(path(Path::new("d"), 5), PathBuf::from("d/0000000005.wal"));
    }
}

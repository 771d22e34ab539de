//! Rewrites the segments an older kvsd wrote (segment versions 1 and 2, record format 1) into
//! today's format, once, before anything reads the log: afterwards every reader (recovery,
//! compaction, replication, snapshots) knows one record format.
//!
//! Each old segment is rewritten whole under a temp name, fsynced, renamed over the original
//! and the directory fsynced, so a crash leaves each segment either old or new, and the next
//! start carries on. Damage is judged as recovery judges it: a torn tail of the last segment
//! (a write never acknowledged) is left out with a warning; damage anywhere else stops the
//! start, unless `--repair-truncate`, which cuts the log there as recovery would.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::record::{self, v1};
use super::recovery::{sync_dir, RecoveryError};
use super::segment::{self, SegmentHeader};

/// Rewrites every old-format segment in `dir`; returns how many it rewrote.
pub fn run(dir: &Path, repair_truncate: bool) -> Result<usize, RecoveryError> {
    let mut ids = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| segment::parse_name(&entry.file_name().to_string_lossy()))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(RecoveryError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    ids.sort_unstable();
    let mut upgraded = 0;
    let mut covered_through = 0;
    for (index, &id) in ids.iter().enumerate() {
        let path = segment::path(dir, id);
        let corrupt = |offset: usize, reason: String| RecoveryError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        // Only the header, on every start: a current log is not read twice.
        let head = read_head(&path).map_err(io_error(&path))?;
        let header = SegmentHeader::decode(&head).map_err(|e| corrupt(0, e.to_string()))?;
        if let Some(compacted) = header.compacted {
            covered_through = covered_through.max(compacted.covers_through);
        }
        // A segment a compaction replaced is deleted by recovery, not rewritten.
        if !header.is_old_format() || (id < covered_through && header.compacted.is_none()) {
            continue;
        }
        let buf = fs::read(&path).map_err(io_error(&path))?;
        let is_last = index + 1 == ids.len() && header.compacted.is_none();
        let mut out = header_of_rewrite(&header).to_vec();
        let mut offset = segment::HEADER_BYTES;
        let mut last_seq = header.first_seq.saturating_sub(1);
        let mut records = 0u64;
        let damage = loop {
            if offset == buf.len() {
                break None;
            }
            match v1::decode(&buf[offset..]) {
                Ok((found, bytes)) => {
                    record::encode(&mut out, &found);
                    last_seq = found.seq;
                    offset += bytes;
                    records += 1;
                }
                // The zero-filled, never-written end of a preallocated segment.
                Err(_) if buf[offset..].iter().all(|byte| *byte == 0) => break None,
                Err(error) => break Some(error.to_string()),
            }
        };
        let mut delete_later = false;
        if let Some(reason) = damage {
            let torn = is_last && !v1_record_after(&buf, offset, last_seq);
            if torn {
                tracing::warn!(path = %path.display(), offset, %reason,
                    "leaving out a torn tail while upgrading: the last write before a crash, never acknowledged");
            } else if repair_truncate {
                tracing::error!(path = %path.display(), offset, %reason,
                    later_segments = ids.len() - index - 1,
                    "--repair-truncate: cutting the log at corruption while upgrading; records after it are lost");
                delete_later = true;
            } else {
                return Err(corrupt(offset, reason));
            }
        }
        if is_last {
            // Keep the active segment's zero-filled room, so appends still overwrite blocks.
            out.resize(out.len().max(buf.len()), 0);
        }
        let tmp = segment::tmp_path(dir, id);
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&out).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(dir)?;
        tracing::info!(path = %path.display(), records, from_version = header.version,
            "rewrote a segment in record format 2");
        upgraded += 1;
        if delete_later {
            for &later in &ids[index + 1..] {
                let later_path = segment::path(dir, later);
                fs::remove_file(&later_path).map_err(io_error(&later_path))?;
            }
            sync_dir(dir)?;
            break;
        }
    }
    Ok(upgraded)
}

/// Up to a segment header's bytes from the start of `path` (fewer if the file is shorter,
/// which `SegmentHeader::decode` reports).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(segment::HEADER_BYTES);
    File::open(path)?
        .take(segment::HEADER_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// The rewritten file's header: today's version, a new nonce (its offsets all moved, so an
/// index checkpoint of the old file must not match it), everything else as it was.
fn header_of_rewrite(old: &SegmentHeader) -> [u8; segment::HEADER_BYTES] {
    SegmentHeader {
        version: segment::VERSION,
        nonce: segment::random_nonce(),
        ..*old
    }
    .encode()
}

/// True if a valid format-1 record continuing the log starts anywhere after `from`: then the
/// damage at `from` is not a torn tail.
fn v1_record_after(buf: &[u8], from: usize, last_seq: u64) -> bool {
    let seq_max = last_seq + (buf.len() - from) as u64;
    (from + 1..buf.len()).any(|at| {
        let Some(seq) = buf.get(at + record::SEQ_OFFSET..at + record::TERM_OFFSET) else {
            return false;
        };
        let seq = u64::from_le_bytes(seq.try_into().expect("8"));
        seq > last_seq && seq <= seq_max && v1::decode(&buf[at..]).is_ok()
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Op, Record};
    use crate::wal::LogId;

    /// An old-format segment: a version-2 header and format-1 records.
    fn old_segment(dir: &Path, id: u32, first_seq: u64, records: &[Record<'_>], tail: &[u8]) {
        let mut header = SegmentHeader::new(LogId([3; 16]), id, first_seq).encode();
        header[segment::VERSION_OFFSET..segment::CRC_OFFSET].copy_from_slice(&2u32.to_le_bytes());
        let crc = {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&header[..segment::CRC_OFFSET]);
            hasher.update(&header[segment::LOG_ID_OFFSET..]);
            hasher.finalize()
        };
        header[segment::CRC_OFFSET..segment::LOG_ID_OFFSET].copy_from_slice(&crc.to_le_bytes());
        let mut buf = header.to_vec();
        for record in records {
            v1::encode(&mut buf, record);
        }
        buf.extend_from_slice(tail);
        fs::write(segment::path(dir, id), buf).unwrap();
    }

    /// A record read back: seq, kind, key, value.
    type Read = (u64, Op, Vec<u8>, Vec<u8>);

    fn read_back(dir: &Path, id: u32) -> (SegmentHeader, Vec<Read>) {
        let buf = fs::read(segment::path(dir, id)).unwrap();
        let header = SegmentHeader::decode(&buf).unwrap();
        let mut at = segment::HEADER_BYTES;
        let mut records = Vec::new();
        while let Ok((found, rec)) = record::decode(&buf[at..]) {
            records.push((rec.seq, rec.op, rec.key.to_vec(), rec.value.to_vec()));
            at += found.total_bytes;
        }
        assert!(
            buf[at..].iter().all(|b| *b == 0),
            "only zeros after the records"
        );
        (header, records)
    }

    #[test]
    fn old_segments_are_rewritten_once_keeping_every_record() {
        let dir = tempfile::tempdir().unwrap();
        old_segment(
            dir.path(),
            1,
            1,
            &[Record::set(1, 0, b"a", b"one"), Record::del(2, 0, b"a")],
            &[],
        );
        old_segment(
            dir.path(),
            2,
            3,
            &[Record::set(3, 0, b"b", b"two")],
            &[0; 100],
        );
        assert_eq!(run(dir.path(), false).unwrap(), 2);
        let (header, records) = read_back(dir.path(), 1);
        assert!(!header.is_old_format());
        assert_eq!(
            records,
            vec![
                (1, Op::Set, b"a".to_vec(), b"one".to_vec()),
                (2, Op::Del, b"a".to_vec(), Vec::new()),
            ]
        );
        assert_eq!(read_back(dir.path(), 2).1.len(), 1);
        // Nothing is left to do the second time.
        assert_eq!(run(dir.path(), false).unwrap(), 0);
    }

    #[test]
    fn a_torn_tail_is_left_out_but_damage_before_it_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut torn = Vec::new();
        v1::encode(&mut torn, &Record::set(3, 0, b"c", b"never acknowledged"));
        torn.truncate(torn.len() - 4);
        old_segment(
            dir.path(),
            1,
            1,
            &[Record::set(1, 0, b"a", b"1"), Record::set(2, 0, b"b", b"2")],
            &torn,
        );
        assert_eq!(run(dir.path(), false).unwrap(), 1);
        assert_eq!(read_back(dir.path(), 1).1.len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let mut flipped = Vec::new();
        v1::encode(&mut flipped, &Record::set(1, 0, b"a", b"1"));
        flipped[20] ^= 1;
        let mut rest = Vec::new();
        v1::encode(&mut rest, &Record::set(2, 0, b"b", b"2"));
        flipped.extend_from_slice(&rest);
        old_segment(dir.path(), 1, 1, &[], &flipped);
        let error = run(dir.path(), false).unwrap_err();
        assert!(
            matches!(error, RecoveryError::Corrupt { offset: 64, .. }),
            "{error}"
        );
        // --repair-truncate cuts there instead.
        assert_eq!(run(dir.path(), true).unwrap(), 1);
        assert!(read_back(dir.path(), 1).1.is_empty());
    }
}

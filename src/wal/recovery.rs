//! Start-up: scan every segment of a data dir, verify every record, hand each to the caller
//! (who rebuilds the index), and decide what damage means.
//!
//! - A torn tail (the last records of the newest segment incomplete or failing their CRC, with
//!   nothing valid after them) is what a crash mid-write leaves: it was never acknowledged, so
//!   it is truncated, fsynced, and logged.
//! - Damage with a valid record after it, damage in a sealed segment, a seq gap, or a segment of
//!   another log is corruption of acknowledged data: recovery refuses, naming file and offset,
//!   unless the operator asks for `--repair-truncate`.
//!
//! - Whatever recovery keeps is made durable before it returns: every segment is fdatasynced and
//!   the data dir fsynced (`sync_recovered`), since after a crash some records may be in the
//!   page cache only, and kvsd must not serve or stream what a power cut can still take back.
//!
//! Runs before the event loop starts, with plain blocking file I/O.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::{self, RecordHeader};
use super::segment::{self, Compacted, SegmentHeader};
use super::{Location, LogId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u32,
    /// The file number that `Location`s of this run of kvsd name it by (1, 2, … in log order).
    pub file: u32,
    pub first_seq: u64,
    pub compacted: Option<Compacted>,
    /// Bytes of header and records: where the next record goes.
    pub bytes: u64,
    /// Bytes of the file: more than `bytes` where it was zero-filled ahead of use.
    pub file_bytes: u64,
}

/// A segment whose records up to `offset` an index checkpoint already holds (the last of them
/// has `last_seq`): they are still read and verified, but not handed to `visit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub offset: u64,
    pub last_seq: u64,
}

#[derive(Debug)]
pub struct Recovered {
    pub log_id: LogId,
    /// Every segment, oldest first; the last one is where appends go.
    pub segments: Vec<SegmentInfo>,
    /// The seq of the newest record; 0 for an empty log.
    pub last_seq: u64,
    /// Every seq after this one is in the log, in order; seqs up to it may have been compacted
    /// away. 0 when nothing was ever compacted.
    pub horizon_seq: u64,
    pub records: u64,
    /// Bytes cut off a torn tail (or, with `--repair-truncate`, off damage).
    pub truncated_bytes: u64,
    /// True when the data dir held no log and a new one was made.
    pub created: bool,
    /// False if a `resume` offset did not fall on the record boundary and seq it named: the
    /// checkpoint does not describe this log (recover again without it).
    pub resume_matched: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "log corruption in {path} at byte {offset}: {reason}. This is not a torn write at the \
         end of the log: acknowledged data after this point would be lost by cutting here. \
         Restore the data dir from a replica or a backup, or start kvsd with --repair-truncate \
         to cut the log at this point and lose every record after it."
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "making {path} durable failed ({source}): the records recovery found in it may not be \
         on disk, so kvsd will not serve them. kvsd does not retry a failed sync (after a \
         failed writeback the kernel may drop the data and report the next sync as a success): \
         check the disk, then start kvsd again."
    )]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Scans `dir` (creating it and a new log if it holds none), verifies every record, and calls
/// `visit` for each in log order with where its value lives; in the segments named in
/// `resume`, only for the records after the offset given.
pub fn recover(
    dir: &Path,
    repair_truncate: bool,
    preallocate_bytes: u64,
    resume: &std::collections::HashMap<u32, Resume>,
    mut visit: impl FnMut(&RecordHeader, &[u8], Location),
) -> Result<Recovered, RecoveryError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })?;
        }
    }
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(segment::TMP_SUFFIX) {
            // A segment whose creation a crash interrupted: it never held a record.
            fs::remove_file(entry.path()).map_err(io_error(&entry.path()))?;
        } else if let Some(id) = segment::parse_name(&name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    if ids.is_empty() {
        let log_id = LogId::random().map_err(io_error(Path::new("/dev/urandom")))?;
        let first = SegmentHeader::new(log_id, 1, 1);
        create_segment(dir, &first, preallocate_bytes)?;
        return Ok(Recovered {
            log_id,
            segments: vec![SegmentInfo {
                id: 1,
                file: 1,
                first_seq: 1,
                compacted: None,
                bytes: segment::HEADER_BYTES as u64,
                file_bytes: preallocate_bytes.max(segment::HEADER_BYTES as u64),
            }],
            last_seq: 0,
            horizon_seq: 0,
            records: 0,
            truncated_bytes: 0,
            created: true,
            resume_matched: resume.is_empty(),
        });
    }

    let mut log_id = None;
    let mut segments = Vec::with_capacity(ids.len());
    let mut last_seq = 0;
    // Terms never fall along a log: a stale record that checksums is not taken for the next.
    let mut last_term = 0;
    let mut records = 0;
    let mut truncated_bytes = 0;
    let mut horizon_seq = 0;
    let mut covered_through = 0;
    let mut resume_matched = true;
    for (index, &id) in ids.iter().enumerate() {
        let path = segment::path(dir, id);
        if id <= covered_through {
            // A compaction replaced this segment and a crash came before it was deleted.
            tracing::info!(path = %path.display(), "deleting a segment that a compaction replaced");
            fs::remove_file(&path).map_err(io_error(&path))?;
            sync_dir(dir)?;
            continue;
        }
        let resume = resume.get(&id).copied();
        let buf = fs::read(&path).map_err(io_error(&path))?;
        let corrupt = |offset: usize, reason: String| RecoveryError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let header = SegmentHeader::decode(&buf).map_err(|e| corrupt(0, e.to_string()))?;
        if header.segment_id != id {
            return Err(corrupt(
                0,
                format!("the header names segment {}", header.segment_id),
            ));
        }
        match log_id {
            None => log_id = Some(header.log_id),
            Some(ours) if ours != header.log_id => {
                return Err(corrupt(
                    0,
                    format!(
                        "it belongs to log {} but this dir holds log {ours}",
                        header.log_id
                    ),
                ))
            }
            Some(_) => {}
        }
        if !segments.is_empty() && header.first_seq != last_seq + 1 {
            return Err(corrupt(
                0,
                format!(
                    "it starts at seq {} but the log before it ends at seq {last_seq}",
                    header.first_seq
                ),
            ));
        }
        last_seq = header.first_seq - 1;
        let file = segments.len() as u32 + 1;
        if let Some(compacted) = header.compacted {
            covered_through = compacted.covers_through;
        }

        // A compacted segment was fsynced before it was renamed into place: never torn.
        let is_last = index + 1 == ids.len() && header.compacted.is_none();
        let mut offset = segment::HEADER_BYTES;
        let visit_from = resume.map_or(0, |r| r.offset as usize);
        // Where a checkpoint's count of this segment ends: its last seq (a compacted segment
        // counts up to its end_seq, whose last records may have been dropped).
        let boundary = |offset: usize, last_seq: u64| {
            resume.is_some_and(|r| {
                r.offset as usize == offset
                    && (r.last_seq == last_seq || header.end_seq() == Some(r.last_seq + 1))
            })
        };
        let mut landed = resume.is_none() || boundary(offset, header.first_seq - 1);
        let damage = loop {
            if offset == buf.len() {
                break None;
            }
            let in_order = |seq: u64| match header.end_seq() {
                Some(end_seq) => seq > last_seq && seq < end_seq,
                None => seq == last_seq + 1,
            };
            match record::decode_header(&buf[offset..]) {
                Ok(record) if in_order(record.seq) && record.term >= last_term => {
                    let key_end = offset + record.value_offset();
                    let location = Location {
                        file,
                        value_offset: key_end as u32,
                        value_len: record.value_len,
                    };
                    if offset >= visit_from {
                        visit(
                            &record,
                            &buf[offset + record::KEY_OFFSET..key_end],
                            location,
                        );
                        records += 1;
                    }
                    last_seq = record.seq;
                    last_term = record.term;
                    offset += record.total_bytes;
                    landed |= boundary(offset, last_seq);
                }
                Ok(record) if in_order(record.seq) => {
                    break Some(format!(
                        "record seq {} has term {}, below the term {last_term} before it",
                        record.seq, record.term
                    ))
                }
                Ok(record) => {
                    break Some(match header.end_seq() {
                        Some(end_seq) => format!(
                            "record seq {} in a compacted segment where a seq after {last_seq} \
                             and before {end_seq} was due",
                            record.seq
                        ),
                        None => format!("record seq {} where {} was due", record.seq, last_seq + 1),
                    })
                }
                // Zeros to the end of the file: the unused part of a preallocated segment.
                Err(_) if buf[offset..].iter().all(|byte| *byte == 0) => break None,
                Err(error) => break Some(error.to_string()),
            }
        };
        let file_bytes = buf.len() as u64;
        let mut bytes = offset as u64;
        let damage_cut = damage.is_some();
        if let Some(reason) = damage {
            let torn = is_last && !valid_record_after(&buf, offset, last_seq);
            if !torn && !repair_truncate {
                return Err(corrupt(offset, reason));
            }
            // Torn bytes followed by zeros (a preallocated segment) are zeroed in place, which
            // keeps the preallocation; otherwise the file is cut where the damage starts.
            let nonzero_end = buf
                .iter()
                .rposition(|byte| *byte != 0)
                .map_or(0, |last| last + 1);
            let zero_in_place = torn && nonzero_end < buf.len();
            let cut = if zero_in_place {
                nonzero_end - offset
            } else {
                buf.len() - offset
            } as u64;
            if torn {
                tracing::warn!(path = %path.display(), offset, bytes = cut, %reason,
                    "removing a torn tail: the last write before a crash, never acknowledged");
            } else {
                tracing::error!(path = %path.display(), offset, bytes = cut, %reason,
                    later_segments = ids.len() - index - 1,
                    "--repair-truncate: cutting the log at corruption; records after it are lost");
            }
            if zero_in_place {
                zero_range(&path, offset as u64, cut as usize)?;
            } else {
                truncate(&path, offset as u64)?;
            }
            truncated_bytes += cut;
            bytes = offset as u64;
            if !torn {
                for &later in &ids[index + 1..] {
                    let later_path = segment::path(dir, later);
                    truncated_bytes += fs::metadata(&later_path).map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&later_path).map_err(io_error(&later_path))?;
                }
                sync_dir(dir)?;
                segments.push(SegmentInfo {
                    id,
                    file,
                    first_seq: header.first_seq,
                    compacted: header.compacted,
                    bytes,
                    file_bytes: bytes,
                });
                break;
            }
        }
        let file_bytes = if damage_cut {
            fs::metadata(&path).map_or(bytes, |m| m.len())
        } else {
            file_bytes
        };
        // The checkpoint's offset must be a record boundary this scan reached, with its seq.
        resume_matched &= landed && bytes as usize >= visit_from;
        if let Some(end_seq) = header.end_seq() {
            last_seq = end_seq - 1;
            horizon_seq = last_seq;
        }
        segments.push(SegmentInfo {
            id,
            file,
            first_seq: header.first_seq,
            compacted: header.compacted,
            bytes,
            file_bytes,
        });
    }
    if truncated_bytes > 0 {
        // Whatever was cut, a checkpoint may have counted on it: recover again without one.
        resume_matched = resume.is_empty();
    }
    sync_recovered(dir, &segments)?;
    let log_id = log_id.expect("at least one segment");
    let last = *segments.last().expect("at least one segment");
    if last.compacted.is_some() {
        // Appends never go into a compacted segment (a follower's installed snapshot ends with
        // one): start an ordinary segment after it.
        let header = SegmentHeader::new(log_id, last.id + 1, last_seq + 1);
        create_segment(dir, &header, preallocate_bytes)?;
        segments.push(SegmentInfo {
            id: last.id + 1,
            file: last.file + 1,
            first_seq: last_seq + 1,
            compacted: None,
            bytes: segment::HEADER_BYTES as u64,
            file_bytes: preallocate_bytes.max(segment::HEADER_BYTES as u64),
        });
    }
    Ok(Recovered {
        log_id,
        segments,
        last_seq,
        horizon_seq,
        records,
        truncated_bytes,
        created: false,
        resume_matched,
    })
}

/// Makes durable every segment recovery keeps, and the data dir's entries, before kvsd serves
/// or streams any record.
///
/// Recovery reads records through the page cache, so after `kill -9` it also finds records that
/// were written but never fdatasynced: the last batch, whose sync had not finished, or all of
/// them under `--fsync never`. Served as they are, a power cut before the kernel writes them back
/// would take back what clients have read and followers have copied, and a follower could hold
/// history its leader lost. PostgreSQL syncs its data directory before crash recovery for the
/// same reason. A segment with nothing dirty costs one fdatasync without data to write (one
/// device cache flush at most), so a clean start pays little. The dir's fsync makes durable the
/// renames and deletes that a crash may have left unsynced (a compaction's or a snapshot's).
fn sync_recovered(dir: &Path, segments: &[SegmentInfo]) -> Result<(), RecoveryError> {
    let sync_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecoveryError::Sync { path, source }
    };
    for segment in segments {
        let path = segment::path(dir, segment.id);
        // A file that will not open is any I/O error; a failed sync says what it puts at stake.
        let file = File::open(&path).map_err(io_error(&path))?;
        file.sync_data().map_err(sync_error(&path))?;
    }
    File::open(dir)
        .map_err(io_error(dir))?
        .sync_all()
        .map_err(sync_error(dir))
}

/// True if any offset after the damage at `from` holds a valid record that continues the log:
/// then the damage is not a torn tail. Candidates are filtered by a plausible seq before their
/// CRC is computed, so garbage costs little.
fn valid_record_after(buf: &[u8], from: usize, last_seq: u64) -> bool {
    // A record starts with a non-zero length, so none starts in a zero-filled end.
    let end = buf
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1);
    let seq_max = last_seq + (buf.len() - from) as u64;
    (from + 1..end.min(buf.len().saturating_sub(record::HEADER_BYTES))).any(|at| {
        let seq = u64::from_le_bytes(
            buf[at + record::SEQ_OFFSET..at + record::TERM_OFFSET]
                .try_into()
                .expect("8"),
        );
        seq > last_seq && seq <= seq_max && record::decode_header(&buf[at..]).is_ok()
    })
}

fn zero_range(path: &Path, offset: u64, len: usize) -> Result<(), RecoveryError> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all_at(&vec![0; len], offset)
        .map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn truncate(path: &Path, len: u64) -> Result<(), RecoveryError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Makes a new, empty segment durably: write to a temp name, fsync, rename, fsync the dir. It is
/// zero-filled to `preallocate_bytes`, so appends overwrite allocated blocks and an fdatasync
/// need not commit a new file size.
pub fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
    preallocate_bytes: u64,
) -> Result<(), RecoveryError> {
    let tmp = segment::tmp_path(dir, header.segment_id);
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&header.encode()).map_err(io_error(&tmp))?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut at = segment::HEADER_BYTES as u64;
    while at < preallocate_bytes {
        let len = (preallocate_bytes - at).min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..len]).map_err(io_error(&tmp))?;
        at += len as u64;
    }
    file.sync_all().map_err(io_error(&tmp))?;
    let path = segment::path(dir, header.segment_id);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), RecoveryError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Op, Record};

    /// A log of `count` records in one segment; returns its path and each record's end offset.
    fn write_log(dir: &Path, count: u64) -> (PathBuf, Vec<usize>) {
        recover(dir, false, 0, &Default::default(), |_, _, _| {}).unwrap();
        let path = segment::path(dir, 1);
        let mut buf = fs::read(&path).unwrap();
        let mut ends = Vec::new();
        for seq in 1..=count {
            let key = format!("key{seq}");
            let value = format!("value-{seq}");
            let op = if seq % 5 == 0 { Op::Del } else { Op::Set };
            let value = if op == Op::Del { "" } else { &value };
            record::encode(
                &mut buf,
                &Record {
                    seq,
                    term: 0,
                    op,
                    expires_at_ms: 0,
                    key: key.as_bytes(),
                    value: value.as_bytes(),
                },
            );
            ends.push(buf.len());
        }
        fs::write(&path, &buf).unwrap();
        (path, ends)
    }

    fn seqs(dir: &Path, repair: bool) -> Result<Vec<u64>, RecoveryError> {
        let mut seqs = Vec::new();
        recover(dir, repair, 0, &Default::default(), |header, _, _| {
            seqs.push(header.seq)
        })
        .map(|_| seqs)
    }

    /// A record whose term is below the one before it is stale (a suffix a new leader cut,
    /// written over): it ends the log like any damage, a torn tail at the end, corruption
    /// before later records.
    #[test]
    fn a_falling_term_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        recover(dir.path(), false, 0, &Default::default(), |_, _, _| {}).unwrap();
        let path = segment::path(dir.path(), 1);
        let mut buf = fs::read(&path).unwrap();
        for (seq, term) in [(1, 2), (2, 3), (3, 1)] {
            record::encode(&mut buf, &Record::set(seq, term, b"k", b"v"));
        }
        fs::write(&path, &buf).unwrap();
        assert_eq!(seqs(dir.path(), false).unwrap(), vec![1, 2]);

        let dir = tempfile::tempdir().unwrap();
        recover(dir.path(), false, 0, &Default::default(), |_, _, _| {}).unwrap();
        let path = segment::path(dir.path(), 1);
        let mut buf = fs::read(&path).unwrap();
        for (seq, term) in [(1, 2), (2, 1), (3, 2)] {
            record::encode(&mut buf, &Record::set(seq, term, b"k", b"v"));
        }
        fs::write(&path, &buf).unwrap();
        let error = seqs(dir.path(), false).unwrap_err().to_string();
        assert!(error.contains("has term 1, below the term 2"), "{error}");
    }

    #[test]
    fn a_new_dir_gets_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = recover(&data, false, 0, &Default::default(), |_, _, _| {}).unwrap();
        assert!(first.created);
        let again = recover(&data, false, 0, &Default::default(), |_, _, _| {}).unwrap();
        assert!(!again.created);
        assert_eq!(again.log_id, first.log_id);
        assert_eq!(again.last_seq, 0);
    }

    #[test]
    fn the_tail_cut_at_every_byte_of_the_last_records_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ends) = write_log(dir.path(), 6);
        let full = fs::read(&path).unwrap();
        let keep_from = ends[2];
        for cut in keep_from..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let whole = ends.iter().filter(|end| **end <= cut).count() as u64;
            let recovered = seqs(dir.path(), false).unwrap();
            assert_eq!(recovered, (1..=whole).collect::<Vec<_>>(), "cut at {cut}");
            // The torn bytes are gone: cut off, or zeroed in place where zeros followed them.
            let after = fs::read(&path).unwrap();
            let end = ends[whole as usize - 1];
            assert_eq!(&after[..end], &full[..end], "whole records kept");
            assert!(
                after[end..].iter().all(|b| *b == 0),
                "torn bytes removed at cut {cut}"
            );
            assert_eq!(
                recover(dir.path(), false, 0, &Default::default(), |_, _, _| {})
                    .unwrap()
                    .truncated_bytes,
                0
            );
        }
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ends) = write_log(dir.path(), 4);
        let mut buf = fs::read(&path).unwrap();
        buf[ends[3] - 2] ^= 0xff;
        fs::write(&path, &buf).unwrap();
        assert_eq!(seqs(dir.path(), false).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_bit_flipped_mid_log_is_refused_then_repaired_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ends) = write_log(dir.path(), 8);
        let mut buf = fs::read(&path).unwrap();
        let at = ends[2] + 3; // inside record 4's length field
        buf[at] ^= 0x04;
        fs::write(&path, &buf).unwrap();
        match seqs(dir.path(), false) {
            Err(RecoveryError::Corrupt {
                offset, path: bad, ..
            }) => {
                assert_eq!(offset, ends[2] as u64);
                assert_eq!(bad, path);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // Refusing changed nothing on disk.
        assert_eq!(fs::read(&path).unwrap(), buf);
        assert_eq!(seqs(dir.path(), true).unwrap(), vec![1, 2, 3]);
        assert_eq!(seqs(dir.path(), false).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn damage_in_a_sealed_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ends) = write_log(dir.path(), 3);
        let log_id = recover(dir.path(), false, 0, &Default::default(), |_, _, _| {})
            .unwrap()
            .log_id;
        create_segment(dir.path(), &SegmentHeader::new(log_id, 2, 4), 0).unwrap();
        let mut buf = fs::read(&path).unwrap();
        buf[ends[2] - 1] ^= 1; // the last record of the sealed segment
        fs::write(&path, &buf).unwrap();
        assert!(matches!(
            seqs(dir.path(), false),
            Err(RecoveryError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_segment_of_another_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let other = SegmentHeader::new(LogId([9; 16]), 2, 4);
        create_segment(dir.path(), &other, 0).unwrap();
        let error = seqs(dir.path(), false).unwrap_err().to_string();
        assert!(error.contains("belongs to log 0909"), "{error}");
    }

    #[test]
    fn a_zero_filled_tail_is_the_clean_end_of_a_preallocated_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ends) = write_log(dir.path(), 3);
        let mut buf = fs::read(&path).unwrap();
        buf.resize(buf.len() + 4096, 0);
        fs::write(&path, &buf).unwrap();
        let recovered = recover(dir.path(), false, 0, &Default::default(), |_, _, _| {}).unwrap();
        assert_eq!(recovered.last_seq, 3);
        assert_eq!(recovered.truncated_bytes, 0);
        assert_eq!(recovered.segments[0].bytes, ends[2] as u64);
        assert_eq!(recovered.segments[0].file_bytes, buf.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), buf, "nothing cut");
        // A torn record in front of the zeros is still a torn tail: zeroed, the file kept.
        buf[ends[2]..ends[2] + 5].copy_from_slice(b"\x30\x00\x00\x00\x99");
        fs::write(&path, &buf).unwrap();
        let recovered = recover(dir.path(), false, 0, &Default::default(), |_, _, _| {}).unwrap();
        assert_eq!((recovered.last_seq, recovered.truncated_bytes), (3, 5));
        let after = fs::read(&path).unwrap();
        assert_eq!(after.len(), buf.len());
        assert!(after[ends[2]..].iter().all(|b| *b == 0));
    }

    #[test]
    fn leftover_temp_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        fs::write(segment::tmp_path(dir.path(), 2), b"half").unwrap();
        assert_eq!(seqs(dir.path(), false).unwrap(), vec![1, 2]);
        assert!(!segment::tmp_path(dir.path(), 2).exists());
    }

    fn segment_bytes(header: &SegmentHeader, seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut buf = header.encode().to_vec();
        for seq in seqs {
            let key = format!("key{}", seq % 4);
            record::encode(
                &mut buf,
                &Record {
                    seq,
                    term: 0,
                    op: Op::Set,
                    expires_at_ms: 0,
                    key: key.as_bytes(),
                    value: b"v",
                },
            );
        }
        buf
    }

    #[test]
    fn a_compacted_segment_skips_seqs_and_replaces_the_segments_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let log_id = LogId([3; 16]);
        let plain = |id, first| SegmentHeader::new(log_id, id, first);
        let compacted = SegmentHeader {
            compacted: Some(Compacted {
                covers_through: 2,
                end_seq: 11,
            }),
            ..plain(1, 1)
        };
        // A crash came after the compacted segment 1 was renamed in, before 2 was deleted.
        fs::write(
            segment::path(dir.path(), 1),
            segment_bytes(&compacted, [3, 8]),
        )
        .unwrap();
        fs::write(
            segment::path(dir.path(), 2),
            segment_bytes(&plain(2, 6), 6..=10),
        )
        .unwrap();
        fs::write(
            segment::path(dir.path(), 3),
            segment_bytes(&plain(3, 11), 11..=12),
        )
        .unwrap();
        let mut files = Vec::new();
        let recovered = recover(
            dir.path(),
            false,
            0,
            &Default::default(),
            |header, _, location| files.push((header.seq, location.file)),
        )
        .unwrap();
        assert_eq!(files, vec![(3, 1), (8, 1), (11, 2), (12, 2)]);
        assert_eq!((recovered.last_seq, recovered.horizon_seq), (12, 10));
        assert!(
            !segment::path(dir.path(), 2).exists(),
            "the covered leftover is gone"
        );
        let ids: Vec<u32> = recovered.segments.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![1, 3]);

        // A seq out of order inside a compacted segment, or one reaching end_seq, is damage.
        for bad in [[8, 3], [3, 11]] {
            fs::write(segment::path(dir.path(), 1), segment_bytes(&compacted, bad)).unwrap();
            assert!(
                matches!(seqs(dir.path(), false), Err(RecoveryError::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_log_ending_in_a_compacted_segment_gets_a_new_segment_to_append_to() {
        let dir = tempfile::tempdir().unwrap();
        let compacted = SegmentHeader {
            compacted: Some(Compacted {
                covers_through: 1,
                end_seq: 21,
            }),
            ..SegmentHeader::new(LogId([4; 16]), 1, 1)
        };
        fs::write(
            segment::path(dir.path(), 1),
            segment_bytes(&compacted, [5, 20]),
        )
        .unwrap();
        let recovered = recover(dir.path(), false, 0, &Default::default(), |_, _, _| {}).unwrap();
        assert_eq!(recovered.last_seq, 20);
        let last = recovered.segments.last().unwrap();
        assert_eq!((last.id, last.first_seq, last.compacted), (2, 21, None));
        assert_eq!(seqs(dir.path(), false).unwrap(), vec![5, 20]);
    }
}

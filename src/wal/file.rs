//! The open log on the io_uring: appends batches to the newest segment, fdatasyncs it, starts
//! a new segment when one is full, and reads values back. With `server`, the one place that
//! names `tokio_uring`.
//!
//! Only the committer appends and syncs, one operation at a time; reads run concurrently.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use tokio_uring::fs::File;

use super::cache::ValueCache;
use super::recovery::Recovered;
use super::segment::{self, SegmentHeader};
use super::{Location, LogId};

/// One segment file, open for reads (and appends, if it is the active one).
struct Segment {
    file: Rc<File>,
    first_seq: u64,
    bytes: Cell<u64>,
}

pub struct LogFile {
    dir: PathBuf,
    /// Values read back, bounded (`--value-cache-bytes`).
    cache: RefCell<ValueCache>,
    log_id: Cell<LogId>,
    segment_bytes_max: u64,
    segments: RefCell<BTreeMap<u32, Segment>>,
    active_id: Cell<u32>,
    active_bytes: Cell<u64>,
    /// The active segment was zero-filled to full size when made: appends overwrite
    /// allocated blocks, so an fdatasync flushes data without a metadata journal commit.
    active_preallocated: Cell<bool>,
    /// The next segment, zero-filled in the background under its temp name, waiting for
    /// rotation to stamp its header and rename it into place.
    prepared: RefCell<Option<(u32, File)>>,
    prepare_wake: tokio::sync::Notify,
    /// Bytes of all segments.
    log_bytes: Cell<u64>,
}

impl LogFile {
    /// Opens the segments that recovery found. Must run inside the io_uring runtime.
    pub fn open(
        dir: &Path,
        recovered: &Recovered,
        segment_bytes_max: u64,
        value_cache_bytes: usize,
    ) -> io::Result<LogFile> {
        let mut segments = BTreeMap::new();
        let last = recovered
            .segments
            .last()
            .expect("recovery leaves a segment");
        for info in &recovered.segments {
            let path = segment::path(dir, info.id);
            let std_file = std::fs::OpenOptions::new()
                .read(true)
                .write(info.id == last.id)
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let file = Rc::new(File::from_std(std_file));
            segments.insert(
                info.id,
                Segment {
                    file,
                    first_seq: info.first_seq,
                    bytes: Cell::new(info.bytes),
                },
            );
        }
        Ok(LogFile {
            dir: dir.to_path_buf(),
            cache: RefCell::new(ValueCache::new(value_cache_bytes)),
            log_id: Cell::new(recovered.log_id),
            segment_bytes_max,
            segments: RefCell::new(segments),
            active_id: Cell::new(last.id),
            active_bytes: Cell::new(last.bytes),
            active_preallocated: Cell::new(last.file_bytes >= segment_bytes_max),
            prepared: RefCell::new(None),
            prepare_wake: tokio::sync::Notify::new(),
            log_bytes: Cell::new(recovered.segments.iter().map(|s| s.bytes).sum()),
        })
    }

    pub fn log_id(&self) -> LogId {
        self.log_id.get()
    }

    pub fn active_id(&self) -> u32 {
        self.active_id.get()
    }

    /// Each segment's id and the seq of its first record, oldest first.
    pub fn segment_first_seqs(&self) -> Vec<(u32, u64)> {
        self.segments
            .borrow()
            .iter()
            .map(|(id, segment)| (*id, segment.first_seq))
            .collect()
    }

    /// Bytes of the log from `offset` in `segment` to the end of the log.
    pub fn bytes_after(&self, segment: u32, offset: u64) -> u64 {
        let segments = self.segments.borrow();
        segments
            .range(segment..)
            .map(|(id, s)| {
                if *id == segment {
                    s.bytes.get().saturating_sub(offset)
                } else {
                    s.bytes.get()
                }
            })
            .sum()
    }

    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.get()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.borrow().len()
    }

    /// Where the next append will start, if it goes into the active segment.
    pub fn needs_rotation(&self) -> bool {
        self.active_bytes.get() >= self.segment_bytes_max
            || (!self.active_preallocated.get() && self.prepared.borrow().is_some())
    }

    /// Runs for the life of the server: keeps the next segment zero-filled and ready, so that
    /// rotation costs a header write and a rename, not a stall.
    pub async fn prepare_segments(&self) {
        // A segment that could not be prepared is not tried again (each try would zero-fill
        // up to a whole segment and log a warning, on every append of a full disk).
        let mut failed_id = None;
        loop {
            let segment_id = self.active_id.get() + 1;
            if self.prepared.borrow().is_none()
                && self.wants_next_segment()
                && failed_id != Some(segment_id)
            {
                match self.zero_filled(segment_id).await {
                    Ok(file) => *self.prepared.borrow_mut() = Some((segment_id, file)),
                    Err(error) => {
                        // Not fatal: rotation then makes a plain segment itself, in the space
                        // the part-filled file would otherwise hold on a full disk.
                        let _ = std::fs::remove_file(segment::prepared_path(&self.dir, segment_id));
                        failed_id = Some(segment_id);
                        tracing::warn!(%error, segment_id, "could not prepare the next log segment");
                    }
                }
            }
            self.prepare_wake.notified().await;
        }
    }

    /// The next segment is prepared once the active one is half full (or was not zero-filled),
    /// not at start, where its 64 MiB of writes would compete with the first fsyncs.
    fn wants_next_segment(&self) -> bool {
        !self.active_preallocated.get() || self.active_bytes.get() >= self.segment_bytes_max / 2
    }

    async fn zero_filled(&self, segment_id: u32) -> io::Result<File> {
        const CHUNK_BYTES: usize = 1024 * 1024;
        let tmp = segment::prepared_path(&self.dir, segment_id);
        let std_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let file = File::from_std(std_file);
        let mut zeros = vec![0u8; CHUNK_BYTES];
        let mut offset = 0;
        while offset < self.segment_bytes_max {
            let len = (self.segment_bytes_max - offset).min(CHUNK_BYTES as u64) as usize;
            zeros.truncate(len);
            let (result, returned) = file.write_all_at(zeros, offset).await;
            result?;
            zeros = returned;
            offset += len as u64;
        }
        file.sync_data().await?;
        Ok(file)
    }

    fn active(&self) -> Rc<File> {
        self.segments.borrow()[&self.active_id.get()].file.clone()
    }

    fn file(&self, segment: u32) -> io::Result<Rc<File>> {
        let file = self.segments.borrow().get(&segment).map(|s| s.file.clone());
        file.ok_or_else(|| io::Error::other(format!("log segment {segment} is not open")))
    }

    /// Writes `batch` at the end of the log (first starting a new segment whose first record
    /// will be `first_seq`, if the active one is full). Returns the segment and offset it
    /// starts at, and the buffer for reuse. Not durable until `sync`.
    pub async fn append(
        &self,
        batch: Vec<u8>,
        first_seq: u64,
    ) -> (io::Result<(u32, u64)>, Vec<u8>) {
        if self.needs_rotation() {
            if let Err(error) = self.rotate(first_seq).await {
                return (Err(error), batch);
            }
        }
        let offset = self.active_bytes.get();
        let len = batch.len() as u64;
        let (result, batch) = self.active().write_all_at(batch, offset).await;
        if result.is_ok() {
            self.segments.borrow()[&self.active_id.get()]
                .bytes
                .set(offset + len);
            self.active_bytes.set(offset + len);
            if self.prepared.borrow().is_none() && self.wants_next_segment() {
                self.prepare_wake.notify_one();
            }
            self.log_bytes.set(self.log_bytes.get() + len);
        }
        (result.map(|()| (self.active_id.get(), offset)), batch)
    }

    /// fdatasync of the active segment: everything appended so far is on stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        self.active().sync_data().await
    }

    /// Seals the active segment (fsynced, so a sealed segment never has a torn tail) and starts
    /// the next one durably: temp name, fsync, rename, fsync the dir.
    async fn rotate(&self, first_seq: u64) -> io::Result<()> {
        self.active().sync_data().await?;
        let segment_id = self.active_id.get() + 1;
        let header = SegmentHeader {
            log_id: self.log_id(),
            segment_id,
            first_seq,
        };
        let prepared = self.prepared.borrow_mut().take();
        let (tmp, file, preallocated) = match prepared {
            Some((id, file)) if id == segment_id => {
                (segment::prepared_path(&self.dir, segment_id), file, true)
            }
            stale => {
                if let Some((id, _)) = stale {
                    let _ = std::fs::remove_file(segment::prepared_path(&self.dir, id));
                }
                let tmp = segment::tmp_path(&self.dir, segment_id);
                (tmp.clone(), create_rw(&tmp)?, false)
            }
        };
        let (result, _) = file.write_all_at(header.encode().to_vec(), 0).await;
        result?;
        file.sync_all().await?;
        let path = segment::path(&self.dir, segment_id);
        tokio_uring::fs::rename(&tmp, &path).await?;
        File::open(&self.dir).await?.sync_all().await?;
        let bytes = Cell::new(segment::HEADER_BYTES as u64);
        self.segments.borrow_mut().insert(
            segment_id,
            Segment {
                file: Rc::new(file),
                first_seq,
                bytes,
            },
        );
        self.active_id.set(segment_id);
        self.active_bytes.set(segment::HEADER_BYTES as u64);
        self.active_preallocated.set(preallocated);
        self.prepare_wake.notify_one();
        self.log_bytes
            .set(self.log_bytes.get() + segment::HEADER_BYTES as u64);
        tracing::info!(segment = %path.display(), first_seq, preallocated, "started a new log segment");
        Ok(())
    }

    /// Replaces an empty log's only segment with one that carries `log_id`: a new follower
    /// takes its leader's log id before it holds any record.
    pub async fn adopt(&self, log_id: LogId) -> io::Result<()> {
        let segment_id = self.active_id.get();
        let empty = self.segments.borrow().len() == 1
            && self.active_bytes.get() == segment::HEADER_BYTES as u64;
        if !empty {
            return Err(io::Error::other(
                "only an empty log can take another log id",
            ));
        }
        let header = SegmentHeader {
            log_id,
            segment_id,
            first_seq: 1,
        };
        let tmp = segment::tmp_path(&self.dir, segment_id);
        let file = create_rw(&tmp)?;
        let (result, _) = file.write_all_at(header.encode().to_vec(), 0).await;
        result?;
        file.sync_all().await?;
        tokio_uring::fs::rename(&tmp, segment::path(&self.dir, segment_id)).await?;
        File::open(&self.dir).await?.sync_all().await?;
        let bytes = Cell::new(segment::HEADER_BYTES as u64);
        let file = Rc::new(file);
        self.segments.borrow_mut().insert(
            segment_id,
            Segment {
                file,
                first_seq: 1,
                bytes,
            },
        );
        self.log_id.set(log_id);
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of `segment`; fewer at the end of the file.
    pub async fn read_at(&self, segment: u32, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.file(segment)?;
        // Never past the end of the records: a preallocated segment continues with zeros.
        let end = self
            .segments
            .borrow()
            .get(&segment)
            .map_or(0, |s| s.bytes.get());
        let len = len.min(end.saturating_sub(offset) as usize);
        if len == 0 {
            return Ok(Vec::new());
        }
        let (result, mut buf) = file.read_at(Vec::with_capacity(len), offset).await;
        let read = result?;
        buf.truncate(read);
        Ok(buf)
    }

    /// Reads the value at `location` from the log (the page cache, usually) and keeps it in the
    /// value cache. Callers look in the cache first (`cached_value`).
    pub async fn read_value(&self, location: Location) -> io::Result<Bytes> {
        let file = self.file(location.segment)?;
        let buf = Vec::with_capacity(location.value_len as usize);
        if location.value_len == 0 {
            return Ok(Bytes::new());
        }
        let (result, buf) = file.read_exact_at(buf, location.value_offset as u64).await;
        result?;
        let value = Bytes::from(buf);
        self.cache.borrow_mut().insert(location, value.clone());
        Ok(value)
    }

    /// The value at `location` if the cache holds it: no I/O.
    pub fn cached_value(&self, location: Location) -> Option<Bytes> {
        self.cache.borrow_mut().get(location)
    }

    /// Whether the cache holds the value at `location` (counts nothing).
    pub fn is_cached(&self, location: Location) -> bool {
        self.cache.borrow().contains(location)
    }

    /// Cache hits, misses and bytes held, for STATS.
    pub fn cache_stats(&self) -> (u64, u64, usize) {
        let cache = self.cache.borrow();
        (cache.hits, cache.misses, cache.bytes())
    }
}

/// A new file open for reading and writing (`File::create` opens write-only, and values are
/// read back from the same handle).
fn create_rw(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    Ok(File::from_std(file))
}

//! The open log on the io_uring: appends batches to the newest segment, fdatasyncs it, starts
//! a new segment when one is full, and reads values back.
//!
//! Only the committer appends (one append at a time) and syncs; an append may run while the
//! previous one's fdatasync is in flight. Reads run concurrently.
//!
//! An append of up to `INLINE_APPEND_BYTES_MAX` is a plain pwrite on the loop's thread, not a
//! ring operation: the kernel cannot copy into ext4's page cache without a chance of blocking,
//! so the ring hands every buffered file write to an io-wq worker thread, and that worker's
//! wake-up and completion took 100-250 µs per append on a busy machine, against ~8 µs for the
//! copy itself (docs/runtime.md, "Appends"). fdatasync stays on the ring, off the loop.
//!
//! Segments are named by id (their order in the log); each open file also gets a *file number*
//! for this run, which is what a `Location` names. A compaction puts a new file under an old
//! id: the old file stays readable under its number until the index no longer points into it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::runtime::File;
use bytes::Bytes;

use super::cache::ValueCache;
use super::prepare::Pace;
use super::recovery::Recovered;
use super::segment::{self, Compacted, SegmentHeader};
use super::{Location, LogId};
use crate::limits::{
    INLINE_APPEND_BYTES_MAX, PREPARE_CHUNK_BYTES, PREPARE_PAUSE_MS_MAX, PREPARE_SYNC_BYTES,
};

/// A std view of `file`'s descriptor for a blocking call on the loop's thread, never closed by
/// it (tokio-uring's `File` owns the descriptor).
fn std_view(file: &File) -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(file.as_raw_fd()) })
}

/// One segment file, open for reads (and appends, if it is the active one).
pub struct Segment {
    pub id: u32,
    pub file_no: u32,
    file: File,
    pub first_seq: u64,
    pub compacted: Option<Compacted>,
    bytes: Cell<u64>,
}

impl Segment {
    /// Bytes of header and records.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }
}

pub struct LogFile {
    dir: PathBuf,
    /// Values read back, bounded (`--value-cache-bytes`).
    cache: RefCell<ValueCache>,
    log_id: Cell<LogId>,
    segment_bytes_max: u64,
    /// The log now, by segment id.
    segments: RefCell<BTreeMap<u32, Rc<Segment>>>,
    /// Every readable file by file number: the log's, and files a compaction replaced that
    /// reads may still name.
    files: RefCell<HashMap<u32, Rc<Segment>>>,
    next_file_no: Cell<u32>,
    /// Every seq after this is in the log in order; 0 if nothing was ever compacted.
    horizon_seq: Cell<u64>,
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
        let mut files = HashMap::new();
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
            let segment = Rc::new(Segment {
                id: info.id,
                file_no: info.file,
                file: File::from_std(std_file),
                first_seq: info.first_seq,
                compacted: info.compacted,
                bytes: Cell::new(info.bytes),
            });
            files.insert(info.file, segment.clone());
            segments.insert(info.id, segment);
        }
        Ok(LogFile {
            dir: dir.to_path_buf(),
            cache: RefCell::new(ValueCache::new(value_cache_bytes)),
            log_id: Cell::new(recovered.log_id),
            segment_bytes_max,
            segments: RefCell::new(segments),
            files: RefCell::new(files),
            next_file_no: Cell::new(last.file + 1),
            horizon_seq: Cell::new(recovered.horizon_seq),
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

    pub fn active_file_no(&self) -> u32 {
        self.active_segment().file_no
    }

    pub fn horizon_seq(&self) -> u64 {
        self.horizon_seq.get()
    }

    /// The segments of the log, oldest first.
    pub fn segments(&self) -> Vec<Rc<Segment>> {
        self.segments.borrow().values().cloned().collect()
    }

    /// The file of the segment after the one in `file_no`, if that file is still in the log.
    pub fn next_file(&self, file_no: u32) -> Option<u32> {
        let id = self.files.borrow().get(&file_no)?.id;
        let segments = self.segments.borrow();
        if segments.get(&id).map(|s| s.file_no) != Some(file_no) {
            return None;
        }
        segments
            .range(id + 1..)
            .next()
            .map(|(_, segment)| segment.file_no)
    }

    /// Bytes of the log from `offset` in file `file_no` to the end of the log.
    pub fn bytes_after(&self, file_no: u32, offset: u64) -> u64 {
        let Some(id) = self.files.borrow().get(&file_no).map(|s| s.id) else {
            return 0;
        };
        let segments = self.segments.borrow();
        segments
            .range(id..)
            .map(|(_, s)| {
                if s.file_no == file_no {
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

    /// Whether the next append must first start a new segment: the active one is full, or it
    /// was not zero-filled and a zero-filled one is ready.
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
                    Ok(Some(file)) => *self.prepared.borrow_mut() = Some((segment_id, file)),
                    Ok(None) => {
                        // The log filled the active segment first and made a plain one itself:
                        // prepare the segment after that one instead (at once: see `Pace`).
                        let _ = std::fs::remove_file(segment::prepared_path(&self.dir, segment_id));
                        tracing::info!(
                            segment_id,
                            "the log filled its segment before the next one was prepared"
                        );
                        continue;
                    }
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

    /// The next segment is prepared from the active segment's first append (at once if the
    /// active one was not zero-filled): paced to the log, it has the whole segment's time to
    /// be written in. An idle server does not fill a segment it may never need.
    fn wants_next_segment(&self) -> bool {
        !self.active_preallocated.get() || self.active_bytes.get() > segment::HEADER_BYTES as u64
    }

    /// Zero-fills segment `segment_id` under its temp name, `PREPARE_CHUNK_BYTES` at a time at
    /// the pace `Pace` allows, with an fdatasync every `PREPARE_SYNC_BYTES`, so the disk never
    /// holds more than that of it in front of the log's own fdatasync. Between pieces it waits
    /// for the log's next append or a short timer. None if the log moved past the active
    /// segment first.
    async fn zero_filled(&self, segment_id: u32) -> io::Result<Option<File>> {
        let tmp = segment::prepared_path(&self.dir, segment_id);
        let std_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let file = File::from_std(std_file);
        let started = Instant::now();
        let active_id = self.active_id.get();
        let log_start = self.active_bytes.get();
        let pace = Pace::new(
            self.segment_bytes_max,
            self.segment_bytes_max.saturating_sub(log_start),
            !self.active_preallocated.get(),
        );
        let mut zeros = vec![0u8; PREPARE_CHUNK_BYTES];
        let mut offset = 0;
        let mut synced = 0;
        while offset < self.segment_bytes_max {
            if self.active_id.get() != active_id {
                return Ok(None);
            }
            let len = (self.segment_bytes_max - offset).min(PREPARE_CHUNK_BYTES as u64);
            let appended = self.active_bytes.get().saturating_sub(log_start);
            let wait = pace.wait(started.elapsed(), appended, offset + len);
            if !wait.is_zero() {
                let pause = wait.min(Duration::from_millis(PREPARE_PAUSE_MS_MAX));
                tokio::select! {
                    _ = self.prepare_wake.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            zeros.truncate(len as usize);
            let (result, returned) = file.write_all_at(zeros, offset).await;
            result?;
            zeros = returned;
            offset += len;
            if offset - synced >= PREPARE_SYNC_BYTES || offset == self.segment_bytes_max {
                file.sync_data().await?;
                synced = offset;
            }
        }
        tracing::debug!(
            segment_id,
            ms = started.elapsed().as_millis() as u64,
            "prepared the next log segment"
        );
        Ok(Some(file))
    }

    fn active_segment(&self) -> Rc<Segment> {
        self.segments.borrow()[&self.active_id.get()].clone()
    }

    fn file(&self, file_no: u32) -> io::Result<Rc<Segment>> {
        let file = self.files.borrow().get(&file_no).cloned();
        file.ok_or_else(|| io::Error::other(format!("log file {file_no} is no longer open")))
    }

    fn add_file(&self, id: u32, file: File, first_seq: u64, compacted: Option<Compacted>) -> u32 {
        let file_no = self.next_file_no.get();
        self.next_file_no.set(file_no + 1);
        let segment = Rc::new(Segment {
            id,
            file_no,
            file,
            first_seq,
            compacted,
            bytes: Cell::new(segment::HEADER_BYTES as u64),
        });
        self.files.borrow_mut().insert(file_no, segment.clone());
        self.segments.borrow_mut().insert(id, segment);
        file_no
    }

    /// Writes `batch` at the end of the log (first starting a new segment whose first record
    /// will be `first_seq`, if the active one is full). Returns the file number and offset it
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
        let active = self.active_segment();
        let (result, batch) = if batch.len() <= INLINE_APPEND_BYTES_MAX {
            use std::os::unix::fs::FileExt;
            (std_view(&active.file).write_all_at(&batch, offset), batch)
        } else {
            active.file.write_all_at(batch, offset).await
        };
        if result.is_ok() {
            active.bytes.set(offset + len);
            self.active_bytes.set(offset + len);
            if self.prepared.borrow().is_none() && self.wants_next_segment() {
                self.prepare_wake.notify_one();
            }
            self.log_bytes.set(self.log_bytes.get() + len);
        }
        (result.map(|()| (active.file_no, offset)), batch)
    }

    /// fdatasync of the active segment: everything appended so far is on stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        self.active_segment().file.sync_data().await
    }

    /// fdatasync of log file `file_no`: everything appended to it so far is on stable
    /// storage (a sealed segment was synced when it was sealed).
    pub async fn sync_file(&self, file_no: u32) -> io::Result<()> {
        self.file(file_no)?.file.sync_data().await
    }

    /// Seals the active segment (fsynced, so a sealed segment never has a torn tail) and starts
    /// the next one durably: temp name, fsync, rename, fsync the dir.
    async fn rotate(&self, first_seq: u64) -> io::Result<()> {
        let started = Instant::now();
        self.active_segment().file.sync_data().await?;
        let segment_id = self.active_id.get() + 1;
        let header = SegmentHeader::new(self.log_id(), segment_id, first_seq);
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
        crate::runtime::rename(&tmp, &path).await?;
        File::open(&self.dir).await?.sync_all().await?;
        self.add_file(segment_id, file, first_seq, None);
        self.active_id.set(segment_id);
        self.active_bytes.set(segment::HEADER_BYTES as u64);
        self.active_preallocated.set(preallocated);
        self.prepare_wake.notify_one();
        self.log_bytes
            .set(self.log_bytes.get() + segment::HEADER_BYTES as u64);
        tracing::info!(
            segment = %path.display(),
            first_seq,
            preallocated,
            ms = started.elapsed().as_millis() as u64,
            "started a new log segment"
        );
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
        let header = SegmentHeader::new(log_id, segment_id, 1);
        let tmp = segment::tmp_path(&self.dir, segment_id);
        let file = create_rw(&tmp)?;
        let (result, _) = file.write_all_at(header.encode().to_vec(), 0).await;
        result?;
        file.sync_all().await?;
        crate::runtime::rename(&tmp, &segment::path(&self.dir, segment_id)).await?;
        File::open(&self.dir).await?.sync_all().await?;
        if let Some(old) = self.segments.borrow_mut().remove(&segment_id) {
            self.files.borrow_mut().remove(&old.file_no);
        }
        self.add_file(segment_id, file, 1, None);
        self.log_id.set(log_id);
        Ok(())
    }

    /// Raft: cuts the log back to `offset` of file `file_no` (a record boundary), for a
    /// follower's uncommitted suffix that its leader overrides. Segments after that file are
    /// deleted and the directory fsynced; the cut bytes are zeroed and fdatasynced (as a
    /// preallocated segment's tail, which recovery reads as the end of the log), so the cut is
    /// durable before this returns and nothing after it is ever acknowledged from the old suffix.
    pub async fn truncate_from(&self, file_no: u32, offset: u64) -> io::Result<()> {
        let cut = self.file(file_no)?;
        if self.segments.borrow().get(&cut.id).map(|s| s.file_no) != Some(file_no) {
            return Err(io::Error::other(format!(
                "log file {file_no} is no longer in the log: cannot truncate it"
            )));
        }
        if offset < segment::HEADER_BYTES as u64 || offset > cut.bytes.get() {
            return Err(io::Error::other(format!(
                "cannot truncate log file {file_no} at {offset}: it holds {} bytes",
                cut.bytes.get()
            )));
        }
        let later: Vec<Rc<Segment>> = self
            .segments
            .borrow()
            .range(cut.id + 1..)
            .map(|(_, s)| s.clone())
            .collect();
        for segment in &later {
            let path = segment::path(&self.dir, segment.id);
            crate::runtime::remove_file(&path).await?;
            self.segments.borrow_mut().remove(&segment.id);
            self.files.borrow_mut().remove(&segment.file_no);
            self.log_bytes
                .set(self.log_bytes.get().saturating_sub(segment.bytes.get()));
        }
        let active = if later.is_empty() {
            cut
        } else {
            File::open(&self.dir).await?.sync_all().await?;
            // The cut segment was sealed (opened read-only): open it for writing and make it
            // the active one again.
            let path = segment::path(&self.dir, cut.id);
            let std_file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let file_bytes = std_file.metadata()?.len();
            let reopened = Rc::new(Segment {
                id: cut.id,
                file_no: cut.file_no,
                file: File::from_std(std_file),
                first_seq: cut.first_seq,
                compacted: cut.compacted,
                bytes: Cell::new(cut.bytes.get()),
            });
            self.files.borrow_mut().insert(file_no, reopened.clone());
            self.segments.borrow_mut().insert(cut.id, reopened.clone());
            self.active_id.set(cut.id);
            self.active_preallocated
                .set(file_bytes >= self.segment_bytes_max);
            reopened
        };
        let end = active.bytes.get();
        if end > offset {
            let zeros = vec![0u8; (end - offset) as usize];
            let (result, _) = active.file.write_all_at(zeros, offset).await;
            result?;
        }
        active.file.sync_data().await?;
        self.log_bytes
            .set(self.log_bytes.get().saturating_sub(end - offset));
        active.bytes.set(offset);
        self.active_bytes.set(offset);
        Ok(())
    }

    /// Raft: starts the log over at `first_seq` (after a snapshot, the entries before it are
    /// gone): every segment's file deleted and the directory fsynced, then a new segment that
    /// begins there. A crash between the two leaves no segment, and recovery starts a new log
    /// (the snapshot holds the state); the other order could leave the old segments before one
    /// that does not follow them, which recovery refuses as damage.
    pub async fn restart_at(&self, first_seq: u64) -> io::Result<()> {
        let older: Vec<Rc<Segment>> = self.segments.borrow().values().cloned().collect();
        for segment in &older {
            crate::runtime::remove_file(&segment::path(&self.dir, segment.id)).await?;
        }
        File::open(&self.dir).await?.sync_all().await?;
        self.rotate(first_seq).await?;
        for segment in &older {
            self.segments.borrow_mut().remove(&segment.id);
            self.files.borrow_mut().remove(&segment.file_no);
            self.log_bytes
                .set(self.log_bytes.get().saturating_sub(segment.bytes.get()));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of file `file_no`; fewer at the end of its records.
    pub async fn read_at(&self, file_no: u32, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let segment = self.file(file_no)?;
        // Never past the end of the records: a preallocated segment continues with zeros.
        let len = len.min(segment.bytes.get().saturating_sub(offset) as usize);
        if len == 0 {
            return Ok(Vec::new());
        }
        let (result, mut buf) = segment.file.read_at(Vec::with_capacity(len), offset).await;
        let read = result?;
        buf.truncate(read);
        Ok(buf)
    }

    /// Reads the value at `location` from the log (the page cache, usually) and keeps it in the
    /// value cache. Callers look in the cache first (`cached_value`).
    pub async fn read_value(&self, location: Location) -> io::Result<Bytes> {
        let segment = self.file(location.file)?;
        let buf = Vec::with_capacity(location.value_len as usize);
        if location.value_len == 0 {
            return Ok(Bytes::new());
        }
        let (result, buf) = segment
            .file
            .read_exact_at(buf, location.value_offset as u64)
            .await;
        result?;
        let value = Bytes::from(buf);
        self.cache.borrow_mut().insert(location, value.clone());
        Ok(value)
    }

    /// Reads the value at `location` at once, blocking the loop for the read: for the few
    /// requests that must decide on a stored value when they are accepted (INCRBY, MGET, a
    /// TXN comparing values), whose values are small and recently written, so nearly always
    /// in the value cache or the page cache. Keeps it in the value cache.
    pub fn read_value_now(&self, location: Location) -> io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        if let Some(value) = self.cached_value(location) {
            return Ok(value);
        }
        let segment = self.file(location.file)?;
        let mut buf = vec![0; location.value_len as usize];
        std_view(&segment.file).read_exact_at(&mut buf, location.value_offset as u64)?;
        let value = Bytes::from(buf);
        self.cache.borrow_mut().insert(location, value.clone());
        Ok(value)
    }

    /// Puts a value just made durable at `location` into the cache (it must be the bytes
    /// there).
    pub fn cache_value(&self, location: Location, value: Bytes) {
        self.cache.borrow_mut().insert(location, value);
    }

    /// The value at `location` if the cache holds it: no I/O.
    pub fn cached_value(&self, location: Location) -> Option<Bytes> {
        self.cache.borrow_mut().get(location)
    }

    /// Hands the value at `location` to `read` if the cache holds it: no I/O, no copy.
    pub fn read_cached<R>(&self, location: Location, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.cache.borrow_mut().read(location, read)
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

/// A compacted segment being written under a temp name: the live records of the segments
/// `id..=covers_through`, in log order.
pub struct CompactionOutput {
    header: SegmentHeader,
    tmp: PathBuf,
    file: File,
    file_no: u32,
    buf: Vec<u8>,
    /// Where `buf` starts in the file.
    written: u64,
}

impl CompactionOutput {
    /// The file number this output will have once installed.
    pub fn file_no(&self) -> u32 {
        self.file_no
    }

    /// Adds one record's bytes; returns the offset it will start at.
    pub fn push(&mut self, record: &[u8]) -> u64 {
        let at = self.written + self.buf.len() as u64;
        self.buf.extend_from_slice(record);
        at
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes what is buffered.
    pub async fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len() as u64;
        let (result, mut buf) = self.file.write_all_at(buf, self.written).await;
        result?;
        self.written += len;
        buf.clear();
        self.buf = buf;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// fdatasync of what is written so far: done every few MiB, so that the device never has
    /// a whole segment of dirty pages to take at once in front of the log's own fdatasync.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data().await
    }
}

impl LogFile {
    /// Starts a compacted segment that will replace the segments `first..=last` (sealed, in the
    /// log), whose records all come before `end_seq`.
    pub async fn compaction_output(
        &self,
        first: &Segment,
        last: &Segment,
        end_seq: u64,
    ) -> io::Result<CompactionOutput> {
        let header = SegmentHeader {
            compacted: Some(Compacted {
                covers_through: last.id,
                end_seq,
            }),
            ..SegmentHeader::new(self.log_id(), first.id, first.first_seq)
        };
        let tmp = segment::compaction_path(&self.dir, first.id);
        let file = create_rw(&tmp)?;
        let file_no = self.next_file_no.get();
        self.next_file_no.set(file_no + 1);
        let mut output = CompactionOutput {
            header,
            tmp,
            file,
            file_no,
            buf: Vec::with_capacity(1024 * 1024),
            written: 0,
        };
        output.push(&header.encode());
        output.flush().await?;
        Ok(output)
    }

    /// Makes the output durable under its temp name (step one of installing it).
    pub async fn sync_output(&self, output: &mut CompactionOutput) -> io::Result<()> {
        output.flush().await?;
        output.file.sync_all().await
    }

    /// Renames a synced output over its first segment: from here on a crash recovers the
    /// compacted log. Then deletes the other segments it covers and fsyncs the directory.
    /// `between` runs after the rename (a test's fault point). Returns the replaced files'
    /// numbers: they stay readable until `forget`.
    pub async fn install(
        &self,
        output: CompactionOutput,
        between: impl Fn(&str),
    ) -> io::Result<Vec<u32>> {
        let header = output.header;
        let compacted = header.compacted.expect("a compaction output");
        let path = segment::path(&self.dir, header.segment_id);
        crate::runtime::rename(&output.tmp, &path).await?;
        between("renamed");
        let replaced: Vec<Rc<Segment>> = self
            .segments
            .borrow()
            .range(header.segment_id..=compacted.covers_through)
            .map(|(_, segment)| segment.clone())
            .collect();
        for segment in &replaced {
            if segment.id != header.segment_id {
                crate::runtime::remove_file(&segment::path(&self.dir, segment.id)).await?;
            }
        }
        between("covered-deleted");
        File::open(&self.dir).await?.sync_all().await?;
        let freed: u64 = replaced.iter().map(|s| s.bytes.get()).sum();
        {
            let mut segments = self.segments.borrow_mut();
            for segment in &replaced {
                segments.remove(&segment.id);
            }
        }
        let segment = Rc::new(Segment {
            id: header.segment_id,
            file_no: output.file_no,
            file: output.file,
            first_seq: header.first_seq,
            compacted: Some(compacted),
            bytes: Cell::new(output.written),
        });
        self.files
            .borrow_mut()
            .insert(output.file_no, segment.clone());
        self.segments
            .borrow_mut()
            .insert(header.segment_id, segment);
        self.horizon_seq
            .set(self.horizon_seq.get().max(compacted.end_seq - 1));
        self.log_bytes
            .set(self.log_bytes.get() + output.written - freed);
        Ok(replaced.iter().map(|s| s.file_no).collect())
    }

    /// Abandons an output (its temp file is removed; recovery would remove it too).
    pub fn abandon(&self, output: CompactionOutput) {
        let _ = std::fs::remove_file(&output.tmp);
    }

    /// Closes files that are no longer in the log and that no reader names any more.
    pub fn forget(&self, file_nos: &[u32]) {
        let mut files = self.files.borrow_mut();
        for file_no in file_nos {
            files.remove(file_no);
        }
    }

    /// The segment id of file `file_no`, if it is still in the log.
    pub fn id_in_log(&self, file_no: u32) -> Option<u32> {
        let id = self.files.borrow().get(&file_no)?.id;
        let in_log = self.segments.borrow().get(&id)?.file_no == file_no;
        in_log.then_some(id)
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

/// Raft (`raft::snapshot`): files outside the chain of segments that values may live in (the
/// state machine's snapshot), and dropping the front of the log a snapshot covers.
impl LogFile {
    /// A file number for a file that `open_extra` will make readable.
    pub fn reserve_file_no(&self) -> u32 {
        let file_no = self.next_file_no.get();
        self.next_file_no.set(file_no + 1);
        file_no
    }

    /// Makes the file at `path` readable as `file_no` (from `reserve_file_no`): `Location`s may
    /// name it until `forget`. It is not part of the log.
    pub fn open_extra(&self, file_no: u32, path: &Path) -> io::Result<()> {
        let std_file = std::fs::File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let bytes = std_file.metadata()?.len();
        let segment = Rc::new(Segment {
            id: u32::MAX,
            file_no,
            file: File::from_std(std_file),
            first_seq: 0,
            compacted: None,
            bytes: Cell::new(bytes),
        });
        self.files.borrow_mut().insert(file_no, segment);
        Ok(())
    }

    /// Deletes the sealed segments at the front of the log whose records all come before
    /// `seq` (never the active one), then fsyncs the directory. Returns their file numbers:
    /// they stay readable until `forget`.
    pub async fn remove_before(&self, seq: u64) -> io::Result<Vec<u32>> {
        let doomed: Vec<Rc<Segment>> = {
            let segments = self.segments.borrow();
            let list: Vec<&Rc<Segment>> = segments.values().collect();
            list.windows(2)
                .take_while(|pair| pair[1].first_seq <= seq)
                .map(|pair| pair[0].clone())
                .collect()
        };
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        for segment in &doomed {
            crate::runtime::remove_file(&segment::path(&self.dir, segment.id)).await?;
            self.segments.borrow_mut().remove(&segment.id);
            self.log_bytes
                .set(self.log_bytes.get().saturating_sub(segment.bytes.get()));
        }
        File::open(&self.dir).await?.sync_all().await?;
        Ok(doomed.iter().map(|s| s.file_no).collect())
    }
}

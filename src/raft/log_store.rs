//! openraft's log storage on kvsd's write-ahead log (`wal::file::LogFile`).
//!
//! An entry is one log record: seq = index + 1, its term, its kind. The store keeps, per entry
//! after the last purged one, where its record is (file number, offset, length, term): 24 bytes
//! an entry, so the log's own bytes stay on disk (the page cache) and only a bounded window of
//! recent entries is kept decoded for the replication streams that read the tail.
//!
//! - `append` writes the entries with one write and returns: they are readable at once (the
//!   page cache, and the window of recent entries), and a flush task of its own fdatasyncs
//!   them and reports them flushed through openraft's callback, in append order, one
//!   fdatasync for every append written meanwhile (the group commit of `server::committer`).
//!   openraft's core (patched: `vendor/openraft/KVS-PATCH.md`) waits for that callback before
//!   a follower answers AppendEntries, so a follower's "appended" (which the leader counts
//!   towards a majority) is always durable; the leader replicates its own entries while they
//!   are flushed, and counts itself only once they are durable.
//! - A failed write or fdatasync poisons the store: that append's callback and every later
//!   append fail, never retried (after a failed fsync the page cache may have dropped them).
//! - `truncate`, `purge` and `save_vote` first wait until every written append is durable
//!   (`settle`): a cut or a purge never races a write, and a node's log is durable before it
//!   votes in a new term, so what it claims in an election survives a crash.
//! - At open, a committed vote is read back as not committed (`read_vote` hands it so): openraft 0.9 restarts a
//!   node whose vote says it leads as that term's leader at once, with its own progress at its
//!   last log id. With the leader's appends flushed behind replication, a power cut could take
//!   entries of that term from its log that followers hold, and a leader restored in the same
//!   term would reuse their log ids. So a restarted node always stands for election in a new
//!   term (a follower relearns the committed vote from the leader's first message).
//! - `truncate` cuts the uncommitted suffix with `LogFile::truncate_from`, durable before it
//!   returns, so nothing is acknowledged after a cut that a crash could bring back.
//! - `purge` forgets entries, and deletes the segments at the front of the log whose records
//!   all come before both the purge point and the durable snapshot (`raft::snapshot`): the
//!   snapshot holds their state, so disk stays bounded (see docs/replication.md).
//! - The vote and the purged log id live in `raft-vote` (`vote`), fsynced. The purged log id
//!   written there never passes the durable snapshot, so after a restart the entries after it
//!   are either in the log or in the snapshot.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader};
use tokio::sync::watch;

use super::codec;
use super::snapshot;
use super::vote::{self, HardState};
use super::{io_error, log_id, seq_of, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::wal::file::LogFile;
use crate::wal::record;
use crate::wal::recovery::{self, Recovered, RecoveryError};
use crate::wal::RecordHeader;

/// Decoded entries kept for the replication streams reading the tail, at most this many bytes.
const RECENT_BYTES_MAX: usize = 8 << 20;
/// Reading entries back from the log: at most this many bytes per read.
const READ_CHUNK_BYTES: u64 = 1 << 20;
/// `raft-committed` is rewritten at most this often (it is a hint; see `vote`).
const COMMITTED_WRITE_MS: u128 = 100;

/// A file write slower than this is logged: the disk is busy (see `vote`).
const SLOW_FILE_WRITE_MS: u128 = 50;

fn slow_file_write(name: &str, started: Instant) {
    let ms = started.elapsed().as_millis();
    if ms >= SLOW_FILE_WRITE_MS {
        tracing::warn!(
            file = name,
            ms = ms as u64,
            "raft: a slow write (the disk is busy)"
        );
    }
}

/// Where one entry's record is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
    pub term: u64,
}

/// The Raft log on kvsd's WAL, shared by the log store and the state machine (which finds a
/// committed entry's value in the log through it).
pub struct RaftLog {
    dir: PathBuf,
    pub file: Rc<LogFile>,
    /// The slots of the entries with seqs `first_seq..first_seq + len`.
    slots: RefCell<VecDeque<Slot>>,
    first_seq: Cell<u64>,
    /// The seq the next record in the log files must have.
    next_seq: Cell<u64>,
    hard: RefCell<HardState>,
    /// The newest purged log id openraft gave (`hard.purged` stops at the snapshot).
    purged: Cell<Option<LogId>>,
    /// The last log id of the durable snapshot (`raft::snapshot`), if there is one.
    snapshot: Cell<Option<LogId>>,
    committed: Cell<Option<LogId>>,
    committed_written: Cell<Option<Instant>>,
    /// A write of `raft-committed` is on its way.
    committed_writing: Cell<bool>,
    recent: RefCell<BTreeMap<u64, (Entry, usize)>>,
    recent_bytes: Cell<usize>,
    /// Appends written so far (readable; the flush task makes them durable in this order).
    /// The leader's proposer paces its batches on it.
    pub appends: watch::Sender<u64>,
    /// Appends made durable so far (never more than `appends`).
    durable: watch::Sender<u64>,
    /// The appends written and not yet reported flushed, oldest first: the append's number,
    /// the log file it ended in, and openraft's callback.
    unflushed: RefCell<VecDeque<(u64, u32, LogFlushed<TypeConfig>)>>,
    /// A flush task is running (it runs while `unflushed` is not empty).
    flushing: Cell<bool>,
    /// Why the log store refuses all further writes, after a failed write or fdatasync.
    poisoned: RefCell<Option<String>>,
    /// Tests only (`--delay-log-flush-ms`): each fdatasync waits this long first, so that
    /// written appends stay unflushed, for a power cut to take (tests/power_loss.rs).
    pub flush_delay: Cell<std::time::Duration>,
}

impl RaftLog {
    /// The log as recovery found it: `records` are (seq, slot) in order, `last_seq` the seq of
    /// the newest record in the files.
    pub fn open(
        dir: &Path,
        file: Rc<LogFile>,
        records: Vec<(u64, Slot)>,
        last_seq: u64,
    ) -> std::io::Result<RaftLog> {
        let mut hard = vote::read_hard_state(dir)?;
        // A committed vote is restored as not committed: see the module's comment (`read_vote`).
        if let Some(vote) = &mut hard.vote {
            vote.committed = false;
        }
        // Entries up to the snapshot's last log id are in the snapshot, wherever the log starts.
        let snapshot = snapshot::read_meta(dir)?.and_then(|meta| meta.last_log_id);
        let purged = hard.purged.max(snapshot);
        let purged_seq = purged.as_ref().map_or(0, seq_of);
        let mut slots = VecDeque::with_capacity(records.len());
        let mut first_seq = purged_seq + 1;
        for (seq, slot) in records {
            if seq <= purged_seq {
                continue;
            }
            if slots.is_empty() {
                first_seq = seq;
            }
            slots.push_back(slot);
        }
        if !slots.is_empty() && first_seq != purged_seq + 1 && purged_seq > 0 {
            return Err(std::io::Error::other(format!(
                "the log starts at seq {first_seq} but raft-vote says entries up to {purged_seq} were purged: entries are missing"
            )));
        }
        // Never past the log: the leader's last appends may be committed on the others before
        // they are durable here, and a power cut can take them (and the hint is not fsynced).
        let held_last_seq = first_seq + slots.len() as u64 - 1;
        let committed =
            vote::read_committed(dir).filter(|id| seq_of(id) <= held_last_seq.max(purged_seq));
        Ok(RaftLog {
            dir: dir.to_path_buf(),
            file,
            slots: RefCell::new(slots),
            first_seq: Cell::new(first_seq),
            next_seq: Cell::new(last_seq + 1),
            hard: RefCell::new(hard),
            purged: Cell::new(purged),
            snapshot: Cell::new(snapshot),
            committed: Cell::new(committed),
            committed_written: Cell::new(None),
            committed_writing: Cell::new(false),
            recent: RefCell::default(),
            recent_bytes: Cell::new(0),
            appends: watch::Sender::new(0),
            durable: watch::Sender::new(0),
            unflushed: RefCell::default(),
            flushing: Cell::new(false),
            poisoned: RefCell::default(),
            flush_delay: Cell::default(),
        })
    }

    /// Recovers the log in `dir` (creating it if new) as a Raft log. Must run inside the
    /// io_uring runtime.
    pub fn recover(
        dir: &Path,
        repair_truncate: bool,
        segment_bytes: u64,
        value_cache_bytes: usize,
    ) -> Result<(RaftLog, Recovered), RecoveryError> {
        let mut records: Vec<(u64, Slot)> = Vec::new();
        let recovered = recovery::recover(
            dir,
            repair_truncate,
            segment_bytes,
            &Default::default(),
            |header: &RecordHeader, _key, _value, location| {
                let offset = u64::from(location.value_offset)
                    - (record::KEY_OFFSET as u64 + u64::from(header.key_len));
                records.push((
                    header.seq,
                    Slot {
                        file: location.file,
                        offset,
                        len: header.total_bytes as u32,
                        term: header.term,
                    },
                ));
            },
        )?;
        let io = |source: std::io::Error| RecoveryError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let file =
            Rc::new(LogFile::open(dir, &recovered, segment_bytes, value_cache_bytes).map_err(io)?);
        let log = RaftLog::open(dir, file, records, recovered.last_seq).map_err(io)?;
        Ok((log, recovered))
    }

    /// Where the entry with `seq` is, if the log holds it.
    pub fn slot(&self, seq: u64) -> Option<Slot> {
        let first = self.first_seq.get();
        seq.checked_sub(first)
            .and_then(|i| self.slots.borrow().get(i as usize).copied())
    }

    /// The log id of the newest entry (or of the last purged one).
    pub fn last_log_id(&self) -> Option<LogId> {
        let slots = self.slots.borrow();
        match slots.back() {
            Some(slot) => Some(log_id(
                slot.term,
                self.first_seq.get() + slots.len() as u64 - 1,
            )),
            None => self.purged.get(),
        }
    }

    pub fn purged(&self) -> Option<LogId> {
        self.purged.get()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot with `last` is durable and the index reads nothing before it from the log.
    pub fn set_snapshot(&self, last: Option<LogId>) {
        self.snapshot.set(self.snapshot.get().max(last));
    }

    pub fn snapshot(&self) -> Option<LogId> {
        self.snapshot.get()
    }

    /// Closes files no longer in the log once reads that may still name them are done.
    pub fn retire(&self, file_nos: Vec<u32>) {
        if file_nos.is_empty() {
            return;
        }
        let file = self.file.clone();
        crate::runtime::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(
                crate::limits::COMPACTION_RETIRE_MS,
            ))
            .await;
            file.forget(&file_nos);
        });
    }

    pub fn vote(&self) -> Option<Vote> {
        self.hard.borrow().vote
    }

    fn remember(&self, seq: u64, entry: &Entry, bytes: usize) {
        let mut recent = self.recent.borrow_mut();
        recent.insert(seq, (entry.clone(), bytes));
        let mut total = self.recent_bytes.get() + bytes;
        while total > RECENT_BYTES_MAX {
            match recent.pop_first() {
                Some((_, (_, b))) => total -= b,
                None => break,
            }
        }
        self.recent_bytes.set(total);
    }

    fn forget(&self, range: impl RangeBounds<u64>) {
        let mut recent = self.recent.borrow_mut();
        let gone: Vec<u64> = recent.range(range).map(|(seq, _)| *seq).collect();
        for seq in gone {
            if let Some((_, bytes)) = recent.remove(&seq) {
                self.recent_bytes.set(self.recent_bytes.get() - bytes);
            }
        }
    }

    /// Entries with seqs in `from..to` (the log's own: nothing purged), read from the window of
    /// recent entries or from the log files.
    pub async fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::with_capacity(to.saturating_sub(from).min(4096) as usize);
        let mut seq = from;
        while seq < to {
            if let Some((entry, _)) = self.recent.borrow().get(&seq) {
                out.push(entry.clone());
                seq += 1;
                continue;
            }
            let Some(first) = self.slot(seq) else {
                break;
            };
            // One read for a run of records that lie back to back in one file.
            let mut end = first.offset + u64::from(first.len);
            let mut last = seq;
            while last + 1 < to && end - first.offset < READ_CHUNK_BYTES {
                match self.slot(last + 1) {
                    Some(next) if next.file == first.file && next.offset == end => {
                        end += u64::from(next.len);
                        last += 1;
                    }
                    _ => break,
                }
            }
            let read_error = |e: std::io::Error| {
                io_error(
                    ErrorSubject::Log(log_id(first.term, seq)),
                    ErrorVerb::Read,
                    e,
                )
            };
            let buf = self
                .file
                .read_at(first.file, first.offset, (end - first.offset) as usize)
                .await
                .map_err(read_error)?;
            if buf.len() as u64 != end - first.offset {
                return Err(read_error(std::io::Error::other(
                    "the log ends before the entry",
                )));
            }
            let mut at = 0;
            for expected in seq..=last {
                let (header, rec) = record::decode(&buf[at..])
                    .map_err(|e| read_error(std::io::Error::other(e.to_string())))?;
                if header.seq != expected {
                    return Err(read_error(std::io::Error::other(format!(
                        "record seq {} where {expected} was due",
                        header.seq
                    ))));
                }
                out.push(
                    codec::entry_of(&rec)
                        .map_err(|e| read_error(std::io::Error::other(e.to_string())))?,
                );
                at += header.total_bytes;
            }
            seq = last + 1;
        }
        Ok(out)
    }

    /// The error every write gets once the store is poisoned.
    fn check_poisoned(&self) -> std::io::Result<()> {
        match &*self.poisoned.borrow() {
            None => Ok(()),
            Some(why) => Err(std::io::Error::other(format!(
                "the raft log refuses writes after an earlier failure ({why}); restart kvsd to recover from the log on disk"
            ))),
        }
    }

    fn poison(&self, why: &std::io::Error) {
        let mut poisoned = self.poisoned.borrow_mut();
        if poisoned.is_none() {
            tracing::error!(error = %why, "raft: a log write failed; the log refuses all further writes");
            *poisoned = Some(why.to_string());
        }
    }

    /// Waits until every append written so far is durable (or the store is poisoned).
    pub async fn settle(&self) -> std::io::Result<()> {
        let written = *self.appends.borrow();
        let mut durable = self.durable.subscribe();
        loop {
            self.check_poisoned()?;
            if *durable.borrow_and_update() >= written {
                return Ok(());
            }
            if durable.changed().await.is_err() {
                return Err(std::io::Error::other("the raft log is closed"));
            }
        }
    }

    /// Queues `callback` to be called once the append numbered `append_no`, which ended in
    /// log file `file_no`, is durable; starts the flush task if none runs.
    fn flush_later(
        self: &Rc<Self>,
        append_no: u64,
        file_no: u32,
        callback: LogFlushed<TypeConfig>,
    ) {
        self.unflushed
            .borrow_mut()
            .push_back((append_no, file_no, callback));
        if !self.flushing.replace(true) {
            crate::runtime::spawn(self.clone().flush());
        }
    }

    /// The flush task: one fdatasync for all the appends written since the last one began,
    /// then their callbacks in order; again while appends wait, then it ends.
    async fn flush(self: Rc<Self>) {
        loop {
            let delay = self.flush_delay.get();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let batch: Vec<_> = self.unflushed.borrow_mut().drain(..).collect();
            let Some(&(last_no, file_no, _)) = batch.last() else {
                self.flushing.set(false);
                return;
            };
            // The newest file holds the latest writes; a segment is fdatasynced when the log
            // moves on from it (`LogFile::rotate`), so older files need nothing here.
            let result = match self.check_poisoned() {
                Ok(()) => self.file.sync_file(file_no).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.durable.send_replace(last_no);
                    for (_, _, callback) in batch {
                        callback.log_io_completed(Ok(()));
                    }
                }
                Err(error) => {
                    self.poison(&error);
                    for (_, _, callback) in batch {
                        callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                    }
                    // Wake whoever settles: they see the poison.
                    self.durable.send_modify(|_| {});
                }
            }
        }
    }

    async fn save_hard(&self, change: impl FnOnce(&mut HardState)) -> Result<(), StorageError> {
        let mut next = self.hard.borrow().clone();
        change(&mut next);
        let started = Instant::now();
        vote::save_hard_state(&self.dir, &next)
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        slow_file_write("raft-vote", started);
        *self.hard.borrow_mut() = next;
        Ok(())
    }
}

/// The log store handed to openraft (and its reader): a handle on the shared `RaftLog`.
#[derive(Clone)]
pub struct LogStore {
    pub log: Rc<RaftLog>,
}

fn seq_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => i + 1,
        Bound::Excluded(i) => i + 2,
        Bound::Unbounded => 1,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i + 2,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (from, to) = seq_range(&range);
        let first = self.log.first_seq.get();
        let end = first + self.log.slots.borrow().len() as u64;
        self.log.entries(from.max(first), to.min(end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.log.purged(),
            last_log_id: self.log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // The log this node answers or stands with in the new vote's term is durable first.
        self.log
            .settle()
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.log.save_hard(|hard| hard.vote = Some(*vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.log.vote())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let log = &self.log;
        log.committed.set(committed);
        let due = log
            .committed_written
            .get()
            .is_none_or(|at| at.elapsed().as_millis() >= COMMITTED_WRITE_MS);
        if due && !log.committed_writing.replace(true) {
            log.committed_written.set(Some(Instant::now()));
            // Only a hint (a failure costs re-applying more at the next start), so openraft's
            // core does not wait for it: written in a task of its own, one at a time.
            let log = log.clone();
            crate::runtime::spawn(async move {
                let started = Instant::now();
                if let Err(error) = vote::save_committed(&log.dir, committed.as_ref()).await {
                    tracing::warn!(%error, "could not write raft-committed");
                }
                slow_file_write("raft-committed", started);
                log.committed_writing.set(false);
            });
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log.committed.get())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let log = &self.log;
        let entries: Vec<Entry> = entries.into_iter().collect();
        let write_error = |e: std::io::Error| io_error(ErrorSubject::Logs, ErrorVerb::Write, e);
        if let Err(error) = log.check_poisoned() {
            callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(write_error(error));
        }
        let Some(first) = entries.first() else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let first_seq = seq_of(&first.log_id);
        if first_seq != log.next_seq.get() {
            if !log.slots.borrow().is_empty() {
                return Err(write_error(std::io::Error::other(format!(
                    "appending seq {first_seq} where {} was due",
                    log.next_seq.get()
                ))));
            }
            // Nothing held (a new log, or all of it purged): the log starts over at this seq.
            log.settle().await.map_err(write_error)?;
            log.file.restart_at(first_seq).await.map_err(write_error)?;
            log.next_seq.set(first_seq);
        }
        if log.slots.borrow().is_empty() {
            log.first_seq.set(first_seq);
        }
        let mut buf = Vec::new();
        let mut lens = Vec::with_capacity(entries.len());
        for entry in &entries {
            let before = buf.len();
            codec::encode_entry(&mut buf, entry);
            lens.push(buf.len() - before);
        }
        let (result, _) = log.file.append(buf, first_seq).await;
        let (file_no, offset) = match result {
            Ok(at) => at,
            Err(error) => {
                // A write that failed part way may have left bytes behind; nothing after it may
                // be written as if it had not.
                log.poison(&error);
                return Err(write_error(error));
            }
        };
        let mut at = offset;
        for (entry, len) in entries.iter().zip(lens) {
            log.slots.borrow_mut().push_back(Slot {
                file: file_no,
                offset: at,
                len: len as u32,
                term: entry.log_id.leader_id.term,
            });
            log.remember(seq_of(&entry.log_id), entry, len + 64);
            at += len as u64;
        }
        log.next_seq.set(first_seq + entries.len() as u64);
        let mut append_no = 0;
        log.appends.send_modify(|n| {
            *n += 1;
            append_no = *n;
        });
        log.flush_later(append_no, file_no, callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let log = &self.log;
        let seq = seq_of(&log_id);
        let Some(cut) = log.slot(seq) else {
            return Ok(());
        };
        log.settle()
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        tracing::info!(
            from_seq = seq,
            "raft: truncating the uncommitted suffix of the log"
        );
        log.file
            .truncate_from(cut.file, cut.offset)
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let keep = (seq - log.first_seq.get()) as usize;
        log.slots.borrow_mut().truncate(keep);
        log.next_seq.set(seq);
        log.forget(seq..);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let log = &self.log;
        let seq = seq_of(&log_id);
        log.settle()
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        log.purged.set(log.purged.get().max(Some(log_id)));
        // On disk, never past the durable snapshot: what a restart needs is in one or the other.
        let durable = Some(log_id).min(log.snapshot.get());
        if let Some(durable) = durable {
            if Some(durable) > log.hard.borrow().purged {
                log.save_hard(|hard| hard.purged = Some(durable)).await?;
            }
            let removed = log
                .file
                .remove_before(seq_of(&durable) + 1)
                .await
                .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            if !removed.is_empty() {
                tracing::debug!(
                    segments = removed.len(),
                    through_seq = seq_of(&durable),
                    "raft: deleted log segments the snapshot covers"
                );
            }
            log.retire(removed);
        }
        {
            let mut slots = log.slots.borrow_mut();
            while log.first_seq.get() <= seq && slots.pop_front().is_some() {
                log.first_seq.set(log.first_seq.get() + 1);
            }
            if slots.is_empty() {
                log.first_seq.set(seq + 1);
            }
        }
        log.forget(..=seq);
        Ok(())
    }
}

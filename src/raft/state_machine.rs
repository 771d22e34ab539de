//! The state machine: the engine's index, fed only committed entries.
//!
//! openraft calls `apply` once entries are committed (on a majority of voters' disks). A SET
//! points the index at the value inside the entry's own log record, so applying copies nothing;
//! a DEL removes the key. Nothing uncommitted ever reaches the index, so truncating a
//! follower's uncommitted suffix needs nothing from the engine.
//!
//! Snapshots (`raft::snapshot`): `build_snapshot` writes every live key at the applied log id
//! into `raft-snapshot` and points the index at the copies, so the log before that id holds
//! nothing the index reads and openraft's purge deletes it. A snapshot from the leader is
//! received and checked record by record by `snapshot_receive` (which refuses a damaged one to
//! its sender); `install_snapshot` makes it durable and only then swaps it in as the whole
//! state. At start-up `restore` loads the snapshot before openraft applies
//! the log after it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta};
use tokio::sync::watch;

use super::log_store::RaftLog;
use super::snapshot::{self, SnapshotFile};
use super::snapshot_receive;
use super::{
    io_error, seq_of, Command, Entry, LogId, Member, NodeId, Reply, StorageError, StoredMembership,
    TypeConfig,
};
use crate::engine::{Engine, Slot};
use crate::wal::record::{self, Op, Record};
use crate::wal::Location;

pub struct StateMachine {
    pub engine: Rc<RefCell<Engine>>,
    pub log: Rc<RaftLog>,
    applied: Cell<Option<LogId>>,
    membership: RefCell<StoredMembership>,
    /// The durable snapshot: its meta, and the file number its values are read by.
    snapshot: RefCell<Option<(snapshot::Meta, u32)>>,
    /// Held by whoever writes `raft-snapshot` or opens it with its meta: openraft builds a
    /// snapshot in a task of its own, beside installs and sends.
    snapshot_lock: tokio::sync::Mutex<()>,
    /// Snapshots built and installed since start, for STATS.
    pub snapshots_built: Cell<u64>,
    pub snapshots_installed: Cell<u64>,
    /// Snapshots received from a leader and refused as damaged since start, for STATS.
    pub snapshots_rejected: Cell<u64>,
    /// The snapshot being received from the leader, chunk by chunk (`snapshot_receive`).
    pub receiving: tokio::sync::Mutex<Option<snapshot_receive::Receiving>>,
    /// `--damage-snapshot-sends` (tests): snapshot reads left to send with one bit flipped.
    pub damage_sends: Rc<Cell<u32>>,
    /// The seq of the newest applied entry: what `min_seq` reads wait for.
    pub applied_seq: watch::Sender<u64>,
    /// `--crash-point` (tests): `snapshot-build:renamed`, `snapshot-install:synced`, ….
    pub crash_point: RefCell<Option<String>>,
}

impl StateMachine {
    pub fn new(engine: Rc<RefCell<Engine>>, log: Rc<RaftLog>) -> StateMachine {
        StateMachine {
            engine,
            log,
            applied: Cell::new(None),
            membership: RefCell::default(),
            snapshot: RefCell::default(),
            snapshot_lock: tokio::sync::Mutex::new(()),
            snapshots_built: Cell::new(0),
            snapshots_installed: Cell::new(0),
            snapshots_rejected: Cell::new(0),
            receiving: tokio::sync::Mutex::new(None),
            damage_sends: Rc::default(),
            applied_seq: watch::Sender::new(0),
            crash_point: RefCell::default(),
        }
    }

    /// At start-up: loads the data dir's snapshot, if it has one, as the state (openraft then
    /// applies the committed entries after it). Removes a snapshot left half-written.
    pub async fn restore(&self) -> std::io::Result<()> {
        let dir = self.log.dir().to_path_buf();
        for leftover in [snapshot::TMP, snapshot::RECEIVING] {
            match crate::runtime::remove_file(&dir.join(leftover)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let path = snapshot::path(&dir);
        if !path.exists() {
            return Ok(());
        }
        let file_no = self.log.file.reserve_file_no();
        let (meta, engine) = snapshot::load_file(&path, file_no)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        self.log.file.open_extra(file_no, &path)?;
        tracing::info!(
            keys = meta.records,
            last_seq = meta.last_log_id.as_ref().map_or(0, seq_of),
            "loaded the raft snapshot"
        );
        self.take(engine, meta, file_no);
        Ok(())
    }

    /// Makes `engine` (the state of snapshot `meta`, its values in file `file_no`) the state.
    pub(super) fn take(&self, engine: Engine, meta: snapshot::Meta, file_no: u32) {
        // Kept: the engine's Raft side (whether it leads, its epoch), which the snapshot lacks.
        self.engine.borrow_mut().install_state(engine);
        self.applied.set(meta.last_log_id);
        *self.membership.borrow_mut() = meta.membership.clone();
        if let Some(id) = meta.last_log_id {
            self.applied_seq.send_replace(seq_of(&id));
        }
        self.log.set_snapshot(meta.last_log_id);
        if let Some((_, old)) = self.snapshot.replace(Some((meta, file_no))) {
            self.log.retire(vec![old]);
        }
    }

    /// The durable snapshot's meta as openraft has it.
    fn current_meta(&self) -> Option<SnapshotMeta<NodeId, Member>> {
        self.snapshot
            .borrow()
            .as_ref()
            .map(|(meta, _)| raft_meta(meta))
    }

    /// The durable snapshot's last seq and its file's bytes, for STATS (0 when none).
    pub fn snapshot_stats(&self) -> (u64, u64) {
        let seq = self
            .snapshot
            .borrow()
            .as_ref()
            .and_then(|(meta, _)| meta.last_log_id.as_ref().map(seq_of))
            .unwrap_or(0);
        let bytes = std::fs::metadata(snapshot::path(self.log.dir())).map_or(0, |m| m.len());
        (seq, bytes)
    }

    pub(super) fn crash_point(&self, what: &str, step: &str) {
        if let Some(point) = self.crash_point.borrow().as_deref() {
            if point.split_once(':') == Some((what, step)) {
                tracing::warn!(what, step, "KVS_CRASH_POINT: aborting the process here");
                std::process::abort();
            }
        }
    }
}

fn raft_meta(meta: &snapshot::Meta) -> SnapshotMeta<NodeId, Member> {
    SnapshotMeta {
        last_log_id: meta.last_log_id,
        last_membership: meta.membership.clone(),
        snapshot_id: meta.snapshot_id(),
    }
}

fn snapshot_error(verb: ErrorVerb) -> impl Fn(std::io::Error) -> StorageError {
    move |e| io_error(ErrorSubject::Snapshot(None), verb, e)
}

/// The handle openraft holds (and its snapshot builder).
#[derive(Clone)]
pub struct Machine(pub Rc<StateMachine>);

impl Machine {
    fn apply_one(&self, entry: &Entry) -> Result<Reply, StorageError> {
        let sm = &self.0;
        let seq = seq_of(&entry.log_id);
        let reply = match &entry.payload {
            EntryPayload::Blank => Reply,
            EntryPayload::Membership(membership) => {
                *sm.membership.borrow_mut() =
                    StoredMembership::new(Some(entry.log_id), membership.clone());
                Reply
            }
            EntryPayload::Normal(Command::Set { key, value }) => {
                let slot = sm.log.slot(seq).ok_or_else(|| {
                    io_error(
                        ErrorSubject::Apply(entry.log_id),
                        ErrorVerb::Read,
                        std::io::Error::other(format!("committed entry {seq} is not in the log")),
                    )
                })?;
                let value_offset = slot.offset + (record::KEY_OFFSET + key.len()) as u64;
                let location = Location {
                    file: slot.file,
                    value_offset: u32::try_from(value_offset).expect("segment offsets fit u32"),
                    value_len: value.len() as u32,
                };
                let term = entry.log_id.leader_id.term;
                sm.engine
                    .borrow_mut()
                    .recover(&Record::set(seq, term, key, value), location)
                    .map_err(|e| apply_error(entry, e))?;
                Reply
            }
            EntryPayload::Normal(Command::Del { key }) => {
                let mut engine = sm.engine.borrow_mut();
                let nowhere = Location {
                    file: 0,
                    value_offset: 0,
                    value_len: 0,
                };
                let term = entry.log_id.leader_id.term;
                engine
                    .recover(&Record::del(seq, term, key), nowhere)
                    .map_err(|e| apply_error(entry, e))?;
                Reply
            }
            EntryPayload::Normal(Command::Ops(ops)) => super::batch::apply(sm, entry, ops)?,
        };
        sm.applied.set(Some(entry.log_id));
        Ok(reply)
    }
}

fn apply_error(entry: &Entry, reason: String) -> StorageError {
    io_error(
        ErrorSubject::Apply(entry.log_id),
        ErrorVerb::Write,
        std::io::Error::other(reason),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    /// Writes every live key at the applied log id to `raft-snapshot` (temp name, fsync,
    /// rename, fsync the dir), reading values on the ring and yielding between chunks, then
    /// points the index at the copies of the keys no write has changed since.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let sm = &self.0;
        let _writing = sm.snapshot_lock.lock().await;
        let applied = sm.applied.get();
        let current = sm.current_meta();
        if let Some(meta) = current.filter(|meta| meta.last_log_id == applied) {
            let path = snapshot::path(sm.log.dir());
            let data = SnapshotFile::open(&path, Some(sm.damage_sends.clone()))
                .await
                .map_err(snapshot_error(ErrorVerb::Read))?;
            return Ok(Snapshot {
                meta,
                snapshot: Box::new(data),
            });
        }
        let started = std::time::Instant::now();
        // The index as it is at `applied`: taken at once, so the snapshot is exactly that state.
        let pairs: Vec<(Box<[u8]>, Slot)> = sm
            .engine
            .borrow()
            .index_entries()
            .map(|(key, slot)| (key.into(), slot))
            .collect();
        let meta = snapshot::Meta {
            last_log_id: applied,
            membership: sm.membership.borrow().clone(),
            records: pairs.len() as u64,
        };
        // Refused before anything is written: the index's value offsets are 32-bit.
        let head_bytes = snapshot::encode_head(&meta).len() as u64;
        let record_bytes = pairs.iter().fold(head_bytes, |sum, (key, slot)| {
            sum + (record::KEY_OFFSET + key.len()) as u64 + u64::from(slot.location.value_len)
        });
        if record_bytes > snapshot::FILE_BYTES_MAX {
            return Err(snapshot_error(ErrorVerb::Write)(std::io::Error::other(format!(
                "the live data ({record_bytes} bytes as records) does not fit one raft snapshot file ({} bytes, 4 GiB); keep a Raft node's live data under that (docs/replication.md)",
                snapshot::FILE_BYTES_MAX
            ))));
        }
        let term = applied.map_or(0, |id| id.leader_id.term);
        let dir = sm.log.dir().to_path_buf();
        let (tmp, path) = (dir.join(snapshot::TMP), snapshot::path(&dir));
        let write_error = snapshot_error(ErrorVerb::Write);
        let file = crate::runtime::File::create(&tmp)
            .await
            .map_err(&write_error)?;
        let file_no = sm.log.file.reserve_file_no();
        let mut targets: Vec<Location> = Vec::with_capacity(pairs.len());
        let mut buf = snapshot::encode_head(&meta);
        let mut written = 0u64;
        for (key, slot) in &pairs {
            let value = match sm.log.file.cached_value(slot.location) {
                Some(value) => value,
                None => sm
                    .log
                    .file
                    .read_value(slot.location)
                    .await
                    .map_err(snapshot_error(ErrorVerb::Read))?,
            };
            let at = written + buf.len() as u64;
            record::encode(
                &mut buf,
                &Record {
                    seq: slot.seq,
                    term,
                    op: Op::Set,
                    expires_at_ms: 0,
                    key,
                    value: &value,
                },
            );
            let value_offset = at + (record::KEY_OFFSET + key.len()) as u64;
            let value_offset = u32::try_from(value_offset + value.len() as u64)
                .map(|_| value_offset as u32)
                .map_err(|_| {
                    write_error(std::io::Error::other(
                        "the live data does not fit one snapshot file (4 GiB)",
                    ))
                })?;
            targets.push(Location {
                file: file_no,
                value_offset,
                value_len: slot.location.value_len,
            });
            if buf.len() >= snapshot::IO_BYTES {
                let len = buf.len() as u64;
                let (result, mut back) = file.write_all_at(buf, written).await;
                result.map_err(&write_error)?;
                written += len;
                back.clear();
                buf = back;
            }
        }
        let (result, _) = file.write_all_at(buf, written).await;
        result.map_err(&write_error)?;
        file.sync_all().await.map_err(&write_error)?;
        file.close().await.map_err(&write_error)?;
        sm.crash_point("snapshot-build", "synced");
        crate::runtime::rename(&tmp, &path)
            .await
            .map_err(&write_error)?;
        snapshot::sync_dir(&dir).await.map_err(&write_error)?;
        sm.crash_point("snapshot-build", "renamed");
        sm.log
            .file
            .open_extra(file_no, &path)
            .map_err(snapshot_error(ErrorVerb::Read))?;
        for (n, ((key, slot), to)) in pairs.iter().zip(&targets).enumerate() {
            sm.engine.borrow_mut().relocate(key, slot.location, *to);
            if n % RELOCATE_SLICE == RELOCATE_SLICE - 1 {
                tokio::task::yield_now().await;
            }
        }
        sm.log.set_snapshot(applied);
        if let Some((_, old)) = sm.snapshot.replace(Some((meta.clone(), file_no))) {
            sm.log.retire(vec![old]);
        }
        sm.snapshots_built.set(sm.snapshots_built.get() + 1);
        tracing::info!(
            keys = meta.records,
            last_seq = applied.as_ref().map_or(0, seq_of),
            ms = started.elapsed().as_millis() as u64,
            "built a raft snapshot"
        );
        let data = SnapshotFile::open(&path, Some(sm.damage_sends.clone()))
            .await
            .map_err(snapshot_error(ErrorVerb::Read))?;
        Ok(Snapshot {
            meta: raft_meta(&meta),
            snapshot: Box::new(data),
        })
    }
}

/// Keys pointed at their snapshot copies per turn of the loop.
const RELOCATE_SLICE: usize = 4096;

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.0.applied.get(), self.0.membership.borrow().clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut replies = Vec::new();
        for entry in entries {
            replies.push(self.apply_one(&entry)?);
        }
        if let Some(applied) = self.0.applied.get() {
            self.0.applied_seq.send_replace(seq_of(&applied));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// Not how kvsd receives a snapshot from a leader: `snapshot_receive` takes the chunks,
    /// so that a damaged one is refused to its sender instead of stopping this member. An
    /// empty placeholder, for a caller that puts a whole snapshot in it (openraft's suite).
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        Ok(Box::new(SnapshotFile::empty()))
    }

    /// Makes a snapshot that `snapshot_receive` has received whole, checked record by record
    /// and written to `raft-snapshot.recv`, the state: fsyncs it, renames it over
    /// `raft-snapshot`, fsyncs the dir, and only then swaps the index. A crash before the rename
    /// leaves the old state (the log it had is untouched: purging follows the install); after
    /// it, the new one. An error here is this member's own disk failing, which stops it.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        mut data: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let sm = &self.0;
        let _writing = sm.snapshot_lock.lock().await;
        let started = std::time::Instant::now();
        let dir = sm.log.dir().to_path_buf();
        let path = snapshot::path(&dir);
        let write_error = snapshot_error(ErrorVerb::Write);
        let received = match data.received.take() {
            Some(received) => received,
            // A whole snapshot file handed over directly: copied and checked the same way.
            None => snapshot_receive::copy_whole(sm, meta, &data)
                .await
                .map_err(|why| write_error(std::io::Error::other(why)))?,
        };
        let snapshot::Received {
            path: received_path,
            file,
            meta: loaded,
            engine,
            file_no,
        } = received;
        if loaded.last_log_id != meta.last_log_id || loaded.membership != meta.last_membership {
            return Err(write_error(std::io::Error::other(format!(
                "the snapshot received holds {} where its sender said {}",
                loaded.snapshot_id(),
                meta.snapshot_id
            ))));
        }
        file.sync_all().await.map_err(&write_error)?;
        file.close().await.map_err(&write_error)?;
        sm.crash_point("snapshot-install", "synced");
        crate::runtime::rename(&received_path, &path)
            .await
            .map_err(&write_error)?;
        snapshot::sync_dir(&dir).await.map_err(&write_error)?;
        sm.crash_point("snapshot-install", "renamed");
        sm.log
            .file
            .open_extra(file_no, &path)
            .map_err(snapshot_error(ErrorVerb::Read))?;
        tracing::info!(
            keys = loaded.records,
            last_seq = loaded.last_log_id.as_ref().map_or(0, seq_of),
            ms = started.elapsed().as_millis() as u64,
            "installed a raft snapshot from the leader"
        );
        sm.take(engine, loaded, file_no);
        sm.snapshots_installed.set(sm.snapshots_installed.get() + 1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // The meta and the file it describes, never a new file under an old meta.
        let _reading = self.0.snapshot_lock.lock().await;
        let Some(meta) = self.0.current_meta() else {
            return Ok(None);
        };
        let path = snapshot::path(self.0.log.dir());
        let data = SnapshotFile::open(&path, Some(self.0.damage_sends.clone()))
            .await
            .map_err(snapshot_error(ErrorVerb::Read))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}

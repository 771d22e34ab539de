//! The state machine: the engine's index, fed only committed entries.
//!
//! openraft calls `apply` once entries are committed (on a majority of voters' disks). A SET
//! points the index at the value inside the entry's own log record, so applying copies nothing;
//! a DEL removes the key. Nothing uncommitted ever reaches the index, so truncating a
//! follower's uncommitted suffix needs nothing from the engine.
//!
//! Snapshots: this slice never makes one on its own (openraft's snapshot policy is `Never` and
//! no log is purged), so a member that falls behind catches up from the log. `build_snapshot`
//! copies every key and value (openraft's storage suite builds one); installing a snapshot that
//! holds keys is refused with a clear error (see docs/replication.md).

use std::cell::{Cell, RefCell};
use std::io::Cursor;
use std::rc::Rc;

use bytes::{BufMut, BytesMut};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta};
use tokio::sync::watch;

use super::log_store::RaftLog;
use super::{
    io_error, seq_of, Command, Entry, LogId, Member, NodeId, Reply, StorageError, StoredMembership,
    TypeConfig,
};
use crate::engine::Engine;
use crate::wal::record::{self, Record};
use crate::wal::Location;

/// The newest snapshot built or installed: its meta and data.
type StoredSnapshot = (SnapshotMeta<NodeId, Member>, Vec<u8>);

pub struct StateMachine {
    pub engine: Rc<RefCell<Engine>>,
    pub log: Rc<RaftLog>,
    applied: Cell<Option<LogId>>,
    membership: RefCell<StoredMembership>,
    snapshot: RefCell<Option<StoredSnapshot>>,
    snapshot_count: Cell<u64>,
    /// The seq of the newest applied entry: what `min_seq` reads wait for.
    pub applied_seq: watch::Sender<u64>,
}

impl StateMachine {
    pub fn new(engine: Rc<RefCell<Engine>>, log: Rc<RaftLog>) -> StateMachine {
        StateMachine {
            engine,
            log,
            applied: Cell::new(None),
            membership: RefCell::default(),
            snapshot: RefCell::default(),
            snapshot_count: Cell::new(0),
            applied_seq: watch::Sender::new(0),
        }
    }
}

/// The handle openraft holds (and its snapshot builder).
#[derive(Clone)]
pub struct Machine(pub Rc<StateMachine>);

impl Machine {
    fn apply_one(&self, entry: &Entry) -> Result<Reply, StorageError> {
        let sm = &self.0;
        let seq = seq_of(&entry.log_id);
        let reply = match &entry.payload {
            EntryPayload::Blank => Reply::default(),
            EntryPayload::Membership(membership) => {
                *sm.membership.borrow_mut() =
                    StoredMembership::new(Some(entry.log_id), membership.clone());
                Reply::default()
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
                Reply::default()
            }
            EntryPayload::Normal(Command::Del { key }) => {
                let mut engine = sm.engine.borrow_mut();
                let existed = engine.contains(key);
                let nowhere = Location {
                    file: 0,
                    value_offset: 0,
                    value_len: 0,
                };
                let term = entry.log_id.leader_id.term;
                engine
                    .recover(&Record::del(seq, term, key), nowhere)
                    .map_err(|e| apply_error(entry, e))?;
                Reply {
                    existed,
                    ..Reply::default()
                }
            }
            EntryPayload::Normal(Command::Batch(commands)) => {
                super::batch::apply(sm, entry, commands)?
            }
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

/// A snapshot's data: `klen` u32 LE, `vlen` u32 LE, key, value; back to back.
fn put_pair(dst: &mut BytesMut, key: &[u8], value: &[u8]) {
    dst.put_u32_le(key.len() as u32);
    dst.put_u32_le(value.len() as u32);
    dst.put_slice(key);
    dst.put_slice(value);
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let sm = &self.0;
        let (last_log_id, last_membership) = (sm.applied.get(), sm.membership.borrow().clone());
        let pairs: Vec<(Vec<u8>, Location)> = sm
            .engine
            .borrow()
            .index_entries()
            .map(|(key, slot)| (key.to_vec(), slot.location))
            .collect();
        let mut data = BytesMut::new();
        for (key, location) in pairs {
            let value = sm
                .log
                .file
                .read_value(location)
                .await
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            put_pair(&mut data, &key, &value);
        }
        sm.snapshot_count.set(sm.snapshot_count.get() + 1);
        let snapshot_id = match last_log_id {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term,
                id.index,
                sm.snapshot_count.get()
            ),
            None => format!("--{}", sm.snapshot_count.get()),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let data = data.to_vec();
        *sm.snapshot.borrow_mut() = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        if !data.is_empty() {
            return Err(io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                std::io::Error::other(
                    "installing a snapshot that holds keys is not supported yet: this member must catch up from the log (see docs/replication.md)",
                ),
            ));
        }
        let sm = &self.0;
        sm.applied.set(meta.last_log_id);
        *sm.membership.borrow_mut() = meta.last_membership.clone();
        if let Some(id) = meta.last_log_id {
            sm.applied_seq.send_replace(seq_of(&id));
        }
        *sm.snapshot.borrow_mut() = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .0
            .snapshot
            .borrow()
            .as_ref()
            .map(|(meta, data)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(data.clone())),
            }))
    }
}

//! Receiving a snapshot from the leader, one InstallSnapshot chunk at a time, so that a damaged
//! one is refused to its sender and never stops this member.
//!
//! openraft's own receiver (`Raft::install_snapshot`) writes the chunks and hands the whole
//! stream to the state machine's `install_snapshot`, where any error is a `StorageError`: fatal,
//! the member stops. A bad CRC in flight, a short stream or a wrong count is not this member's
//! disk failing, so kvsd receives the chunks itself (openraft's documented way for an
//! application's own transport: check, then `Raft::install_full_snapshot`):
//!
//! - Each chunk is written to `raft-snapshot.recv` on the ring and fed to a `snapshot::Loader`,
//!   which checks every byte (meta and record CRCs, kinds) as it arrives and builds the new
//!   index beside the old one. The head's meta must be the one the RPC names.
//! - Damage, or a write that fails, drops the receive (the file is removed, the state and the
//!   log are untouched) and answers the chunk with an ERROR: openraft's sender retries that
//!   chunk, finds no receive to continue (a `SnapshotMismatch`), and starts the snapshot over
//!   from its first byte. `snapshots_rejected` in STATS counts these.
//! - The last chunk also checks the record count and that nothing is torn; only then is the
//!   snapshot handed to openraft, whose state machine fsyncs, renames and swaps it in. An
//!   error there (fsync, rename) is this member's own disk: fatal, as for the log.
//!
//! Nothing here reads the snapshot back: each byte is checked once, as it arrives.

use std::path::PathBuf;

use openraft::error::{InstallSnapshotError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::storage::Snapshot;
use openraft::{SnapshotMeta, SnapshotSegmentId};

use super::snapshot::{self, Loader, Received, SnapshotFile};
use super::state_machine::StateMachine;
use super::{seq_of, Member, NodeId, Raft, TypeConfig};
use crate::runtime::File;

/// A snapshot being received: where it is written and what has been checked of it.
pub struct Receiving {
    snapshot_id: String,
    path: PathBuf,
    file: File,
    loader: Loader,
    /// Bytes received, checked and written.
    written: u64,
    /// Offset and length of the last chunk taken: a resend of it (its answer was lost) is
    /// answered again, not taken twice.
    last_chunk: (u64, usize),
}

/// Answers one InstallSnapshot chunk. An `Err` is the text of an ERROR frame to the sender.
pub async fn receive(
    raft: &Raft,
    sm: &StateMachine,
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> Result<InstallSnapshotResponse<NodeId>, String> {
    // A sender of an older term is told the newer one and sends nothing more.
    let vote = raft
        .with_raft_state(|state| *state.vote_ref())
        .await
        .map_err(|e| e.to_string())?;
    if rpc.vote < vote {
        return Ok(InstallSnapshotResponse { vote });
    }
    let InstallSnapshotRequest {
        vote: sender_vote,
        meta,
        offset,
        data,
        done,
    } = rpc;
    let chunk = Chunk {
        meta: &meta,
        offset,
    };
    let mut slot = sm.receiving.lock().await;
    let ours = |r: &Receiving| r.snapshot_id == meta.snapshot_id;
    if slot
        .as_ref()
        .is_some_and(|r| ours(r) && r.last_chunk == (offset, data.len()))
        && !done
    {
        return Ok(InstallSnapshotResponse { vote });
    }
    if offset == 0 {
        if let Some(old) = slot.take() {
            drop_receive(old).await;
        }
        let receiving = begin(sm, &meta.snapshot_id).await.map_err(|e| {
            format!(
                "cannot receive the snapshot: creating {}: {e}",
                snapshot::RECEIVING
            )
        })?;
        *slot = Some(receiving);
    }
    let expect = match slot.as_ref() {
        Some(r) if ours(r) => r.written,
        _ => 0,
    };
    if offset != expect || slot.is_none() {
        if let Some(old) = slot.take() {
            drop_receive(old).await;
        }
        return Err(chunk.mismatch(expect));
    }
    let receiving = slot.as_mut().expect("a receive in progress");
    if let Err(why) = take_chunk(receiving, &chunk, data).await {
        let old = slot.take().expect("a receive in progress");
        drop_receive(old).await;
        return Err(refuse(sm, &chunk, why));
    }
    if !done {
        return Ok(InstallSnapshotResponse { vote });
    }
    let receiving = slot.take().expect("a receive in progress");
    let path = receiving.path.clone();
    let received = match finish(receiving, &meta) {
        Ok(received) => received,
        Err(why) => {
            let _ = crate::runtime::remove_file(&path).await;
            return Err(refuse(sm, &chunk, why));
        }
    };
    tracing::info!(
        snapshot = %meta.snapshot_id,
        last_seq = meta.last_log_id.as_ref().map_or(0, seq_of),
        "received a whole snapshot from the leader and checked it"
    );
    let data = SnapshotFile::received(received);
    let answer = raft
        .install_full_snapshot(
            sender_vote,
            Snapshot {
                meta,
                snapshot: Box::new(data),
            },
        )
        .await;
    // openraft skips a snapshot no newer than what this member has committed; its file is
    // then still here. (An installed one was renamed away, and no new receive can have begun
    // while `slot` is held.)
    match crate::runtime::remove_file(&path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "removing a snapshot not installed");
        }
        _ => {}
    }
    drop(slot);
    let answer = answer.map_err(|e| e.to_string())?;
    Ok(InstallSnapshotResponse { vote: answer.vote })
}

/// The chunk being answered: which snapshot, and where in it.
struct Chunk<'a> {
    meta: &'a SnapshotMeta<NodeId, Member>,
    offset: u64,
}

impl Chunk<'_> {
    /// The error openraft's sender takes as "start over from the first byte" (the network
    /// maps its text to `InstallSnapshotError::SnapshotMismatch`).
    fn mismatch(&self, expect: u64) -> String {
        let segment = |offset| SnapshotSegmentId {
            id: self.meta.snapshot_id.clone(),
            offset,
        };
        InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: segment(expect),
            got: segment(self.offset),
        })
        .to_string()
    }
}

/// Counts and logs a refused snapshot; the answer to its sender.
fn refuse(sm: &StateMachine, chunk: &Chunk<'_>, why: String) -> String {
    sm.snapshots_rejected.set(sm.snapshots_rejected.get() + 1);
    tracing::warn!(
        snapshot = %chunk.meta.snapshot_id,
        offset = chunk.offset,
        %why,
        "refused the snapshot the leader is sending; this member keeps its state, and the leader sends it again"
    );
    format!(
        "snapshot {} refused (chunk at byte {}): {why}; send it again from its start",
        chunk.meta.snapshot_id, chunk.offset
    )
}

/// Starts receiving snapshot `snapshot_id` (its first chunk) into `raft-snapshot.recv`.
async fn begin(sm: &StateMachine, snapshot_id: &str) -> std::io::Result<Receiving> {
    let path = sm.log.dir().join(snapshot::RECEIVING);
    let file = File::create(&path).await?;
    Ok(Receiving {
        snapshot_id: snapshot_id.to_string(),
        path,
        file,
        loader: Loader::new(sm.log.file.reserve_file_no()),
        written: 0,
        last_chunk: (u64::MAX, 0),
    })
}

/// Checks and writes one chunk; an error is damage or a failed write, and ends the receive.
async fn take_chunk(
    receiving: &mut Receiving,
    chunk: &Chunk<'_>,
    data: Vec<u8>,
) -> Result<(), String> {
    // Checked first: damage is refused before it costs a write.
    for piece in data.chunks(snapshot::IO_BYTES) {
        receiving.loader.push(piece).map_err(|e| e.to_string())?;
        tokio::task::yield_now().await;
    }
    if let Some(meta) = receiving.loader.meta() {
        same_snapshot(meta, chunk.meta)?;
    }
    let len = data.len();
    let (written, _) = receiving.file.write_all_at(data, receiving.written).await;
    written.map_err(|e| format!("writing {}: {e}", snapshot::RECEIVING))?;
    receiving.last_chunk = (chunk.offset, len);
    receiving.written += len as u64;
    Ok(())
}

/// The snapshot's own meta must be the one its sender named.
fn same_snapshot(
    meta: &snapshot::Meta,
    named: &SnapshotMeta<NodeId, Member>,
) -> Result<(), String> {
    if meta.last_log_id != named.last_log_id || meta.membership != named.last_membership {
        return Err(format!(
            "it holds snapshot {} where its sender named {}",
            meta.snapshot_id(),
            named.snapshot_id
        ));
    }
    Ok(())
}

/// After the last chunk: the whole snapshot, checked, ready to install.
fn finish(receiving: Receiving, named: &SnapshotMeta<NodeId, Member>) -> Result<Received, String> {
    let Receiving {
        file, loader, path, ..
    } = receiving;
    let file_no = loader.file_no();
    let (meta, engine) = loader.finish().map_err(|e| e.to_string())?;
    same_snapshot(&meta, named)?;
    Ok(Received {
        path,
        file,
        meta,
        engine,
        file_no,
    })
}

/// A whole snapshot handed to the state machine directly rather than received here (openraft's
/// storage suite installs a leader's snapshot file on a follower's state machine this way):
/// copied to `raft-snapshot.recv` with the same checks. Not for use while a receive is under
/// way (they share the file).
pub async fn copy_whole(
    sm: &StateMachine,
    meta: &SnapshotMeta<NodeId, Member>,
    source: &SnapshotFile,
) -> Result<Received, String> {
    let mut receiving = begin(sm, &meta.snapshot_id)
        .await
        .map_err(|e| format!("creating {}: {e}", snapshot::RECEIVING))?;
    let mut offset = 0u64;
    loop {
        let data = match source.read_at(offset, snapshot::IO_BYTES).await {
            Ok(data) if data.is_empty() => break,
            Ok(data) => data,
            Err(e) => {
                drop_receive(receiving).await;
                return Err(format!("reading {}: {e}", source.path.display()));
            }
        };
        let len = data.len() as u64;
        if let Err(why) = take_chunk(&mut receiving, &Chunk { meta, offset }, data).await {
            drop_receive(receiving).await;
            return Err(why);
        }
        offset += len;
    }
    finish(receiving, meta)
}

/// Abandons a receive: its file goes (the state and the log never depended on it).
async fn drop_receive(receiving: Receiving) {
    let _ = receiving.file.close().await;
    if let Err(e) = crate::runtime::remove_file(&receiving.path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %receiving.path.display(), error = %e, "removing an abandoned snapshot receive");
        }
    }
}

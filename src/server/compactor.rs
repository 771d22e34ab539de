//! Compaction (a Bitcask-style merge): rewrites sealed segments that are mostly garbage into
//! compacted segments holding only their live records, so the log stays within a bound of the
//! live data.
//!
//! One pass walks the sealed segments oldest first. A segment whose garbage reaches
//! `--compact-garbage-ratio` (any garbage, on `kvsctl compact`) starts a run; following segments
//! that also qualify, or are small, join it while the live bytes fit one segment. Each run:
//!
//! 1. copy its live records (seq unchanged) into `<first>.compacting.wal.tmp`, in 1 MiB reads
//!    and writes on the io_uring, yielding between them;
//! 2. fsync it, rename it over segment `<first>`, delete the other segments of the run, fsync
//!    the directory (a crash after the rename recovers the compacted log; recovery deletes the
//!    covered segments a crash left behind);
//! 3. point the index at the copies, in slices; the old files stay open for reads in flight
//!    and are closed a while later.
//!
//! Tombstones are dropped only when every older segment was rewritten in this same pass (or
//! held no garbage): then no older record of the key is left to come back at recovery.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::change;
use crate::limits::{
    COMPACTION_CHECK_MS, COMPACTION_IO_BYTES, COMPACTION_RETIRE_MS, COMPACTION_SWITCH_SLICE,
    COMPACTION_SYNC_BYTES,
};
use crate::wal::file::Segment;
use crate::wal::record::{self, DecodeError, Op, Record};
use crate::wal::{segment, Location};

use super::Node;

/// What the compactor tells `STATS` and `COMPACT`.
#[derive(Default)]
pub struct CompactionState {
    /// Passes started and finished; a COMPACT waits for a pass that started after it.
    passes_started: u64,
    passes_done: u64,
    requested: bool,
    last: Option<Result<String, String>>,
    pub runs_total: u64,
    pub bytes_reclaimed_total: u64,
    pub running: bool,
}

/// Runs for the life of the server: a pass every `COMPACTION_CHECK_MS`, or at once on request.
pub async fn run(node: Rc<Node>) {
    let mut shutdown = node.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = node.shard.compact_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(COMPACTION_CHECK_MS)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let forced = {
            let mut state = node.shard.compaction.borrow_mut();
            state.passes_started += 1;
            state.running = true;
            std::mem::take(&mut state.requested)
        };
        let result = pass(&node, forced).await;
        if let Err(error) = &result {
            tracing::error!(%error, "compaction failed; the log is unchanged where it failed");
        }
        let mut state = node.shard.compaction.borrow_mut();
        state.passes_done += 1;
        state.running = false;
        state.last = Some(result);
        drop(state);
        node.shard.compact_done.send_modify(|done| *done += 1);
    }
}

/// COMPACT: asks for a pass and waits until a pass that started after now is done.
pub async fn request(node: &Node) -> Result<String, String> {
    let want = {
        let mut state = node.shard.compaction.borrow_mut();
        state.requested = true;
        state.passes_started + 1
    };
    let mut done = node.shard.compact_done.subscribe();
    node.shard.compact_wake.notify_one();
    loop {
        {
            let state = node.shard.compaction.borrow();
            if state.passes_done >= want {
                return state.last.clone().unwrap_or_else(|| Ok(String::new()));
            }
        }
        if done.changed().await.is_err() || *node.shutdown.borrow() {
            return Err("the server is shutting down".into());
        }
    }
}

/// Garbage of one segment: bytes of records the index does not point at.
fn garbage(node: &Node, segment: &Segment) -> (u64, u64) {
    let records = segment.bytes() - segment::HEADER_BYTES as u64;
    let live = node.shard.engine.borrow().live_bytes(segment.file_no);
    (records, records.saturating_sub(live))
}

async fn pass(node: &Rc<Node>, forced: bool) -> Result<String, String> {
    if let Some(failed) = node.shard.engine.borrow().write_failed() {
        return Err(format!("not compacting: {failed}"));
    }
    let segments = node.shard.log.segments();
    let sealed = &segments[..segments.len() - 1];
    // Segments a follower's cursor is in, or has yet to read, stay as they are.
    let followed_from = node
        .follower_positions()
        .into_iter()
        .filter_map(|(file, _)| node.shard.log.id_in_log(file))
        .min()
        .unwrap_or(u32::MAX);
    let ratio = node.config.compact_garbage_ratio;
    let segment_max = node.config.segment_bytes;
    let qualifies = |segment: &Segment| {
        let (records, garbage) = garbage(node, segment);
        garbage > 0 && (forced || garbage as f64 >= ratio * records as f64)
    };
    let small = |segment: &Segment| segment.bytes() < segment_max / 4;

    let started = Instant::now();
    let before = node.shard.log.log_bytes();
    let mut drop_tombstones = true;
    let mut runs = 0;
    let mut i = 0;
    while i < sealed.len() && sealed[i].id < followed_from {
        if !qualifies(&sealed[i]) {
            if garbage(node, &sealed[i]).1 > 0 {
                drop_tombstones = false;
            }
            i += 1;
            continue;
        }
        let mut live = node.shard.engine.borrow().live_bytes(sealed[i].file_no);
        let mut end = i + 1;
        while end < sealed.len() && sealed[end].id < followed_from {
            let next = &sealed[end];
            let next_live = node.shard.engine.borrow().live_bytes(next.file_no);
            if !(qualifies(next) || small(next)) || live + next_live > segment_max {
                break;
            }
            live += next_live;
            end += 1;
        }
        // The segment after the run (sealed or active) starts where the run's seqs end.
        let end_seq = segments[end].first_seq;
        if !compact_run(node, &sealed[i..end], end_seq, drop_tombstones).await? {
            break;
        }
        runs += 1;
        i = end;
    }
    if runs == 0 {
        return Ok(format!(
            "compacted:0\nlog_bytes:{before}\nsegments:{}\n",
            node.shard.log.segment_count()
        ));
    }
    let after = node.shard.log.log_bytes();
    let reclaimed = before.saturating_sub(after);
    {
        let mut state = node.shard.compaction.borrow_mut();
        state.runs_total += runs;
        state.bytes_reclaimed_total += reclaimed;
    }
    tracing::info!(
        runs,
        log_bytes_before = before,
        log_bytes_after = after,
        horizon_seq = node.shard.log.horizon_seq(),
        ms = started.elapsed().as_millis() as u64,
        "compacted the log"
    );
    Ok(format!(
        "compacted:{runs}\nlog_bytes_before:{before}\nlog_bytes:{after}\nsegments:{}\nhorizon_seq:{}\n",
        node.shard.log.segment_count(),
        node.shard.log.horizon_seq()
    ))
}

/// Rewrites `run` (consecutive sealed segments) into one compacted segment. Returns false if
/// it had to give up without changing anything (a follower started reading the run).
async fn compact_run(
    node: &Rc<Node>,
    run: &[Rc<Segment>],
    end_seq: u64,
    drop_tombstones: bool,
) -> Result<bool, String> {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let io = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
    let mut output = node
        .shard
        .log
        .compaction_output(first, last, end_seq)
        .await
        .map_err(io("creating the compacted segment"))?;
    let new_file = output.file_no();
    // (key, where it was, where its value is in the output)
    let mut moved: Vec<(Box<[u8]>, Location, u32)> = Vec::new();
    let mut synced = 0;
    for segment in run {
        let mut offset = segment::HEADER_BYTES as u64;
        let mut want = COMPACTION_IO_BYTES;
        loop {
            let asked = want;
            let chunk = node
                .shard
                .log
                .read_at(segment.file_no, offset, want)
                .await
                .map_err(io("reading a segment to compact"))?;
            if chunk.is_empty() {
                break;
            }
            want = COMPACTION_IO_BYTES;
            let mut at = 0;
            while at < chunk.len() {
                let header = match record::decode_header(&chunk[at..]) {
                    Ok(header) => header,
                    Err(DecodeError::Incomplete { need, .. }) if at > 0 || chunk.len() == asked => {
                        want = want.max(need);
                        break;
                    }
                    Err(error) => {
                        return Err(format!(
                            "segment {} at byte {}: {error}",
                            segment.id,
                            offset + at as u64
                        ))
                    }
                };
                let key = &chunk[at + record::KEY_OFFSET..at + header.value_offset()];
                let location = Location {
                    file: segment.file_no,
                    value_offset: (offset + (at + header.value_offset()) as u64) as u32,
                    value_len: header.value_len,
                };
                let record = Record {
                    seq: header.seq,
                    term: header.term,
                    op: header.op,
                    expires_at_ms: header.expires_at_ms,
                    key,
                    value: &chunk[at + header.value_offset()..at + header.total_bytes],
                };
                // The record is kept if any key change it makes is still the key's state: a
                // SET the index points at, a tombstone of a key still absent, the EXPIRE
                // that last changed a key. A Txn record is kept whole for any one of its.
                let mut keep = false;
                let mut live_sets: Vec<(&[u8], Location, u32)> = Vec::new();
                {
                    let engine = node.shard.engine.borrow();
                    for change in change::changes(&record) {
                        let change_key = change.key(&record);
                        let change_location = Location {
                            file: location.file,
                            value_offset: location.value_offset + change.value_offset,
                            value_len: change.value_len,
                        };
                        let live = match change.op {
                            Op::Set => engine.is_live(change_key, change_location),
                            Op::Del | Op::Expired => {
                                !drop_tombstones && !engine.contains(change_key)
                            }
                            Op::ExpireAt => engine.is_last_change(change_key, header.seq),
                            _ => false,
                        };
                        if live && change.op == Op::Set {
                            live_sets.push((change_key, change_location, change.value_offset));
                        }
                        keep |= live;
                    }
                    // Not key data: a no-op entry says nothing once it is older than the
                    // log's start; the cluster's configuration is kept.
                    keep |= header.op == Op::Membership;
                }
                if keep {
                    let start = output.push(&chunk[at..at + header.total_bytes]);
                    let value_start = start + header.value_offset() as u64;
                    for (change_key, from, value_offset) in live_sets {
                        let to = value_start + value_offset as u64;
                        moved.push((change_key.into(), from, to as u32));
                    }
                }
                at += header.total_bytes;
            }
            offset += at as u64;
            if output.buffered() >= COMPACTION_IO_BYTES {
                output
                    .flush()
                    .await
                    .map_err(io("writing the compacted segment"))?;
                if output.bytes() - synced >= COMPACTION_SYNC_BYTES {
                    output
                        .sync_data()
                        .await
                        .map_err(io("syncing the compacted segment"))?;
                    synced = output.bytes();
                }
            }
        }
    }
    node.shard
        .log
        .sync_output(&mut output)
        .await
        .map_err(io("syncing the compacted segment"))?;
    crash_point(node, "synced");
    let run_files: Vec<u32> = run.iter().map(|s| s.file_no).collect();
    let followed = node
        .follower_positions()
        .iter()
        .chain(node.watch_positions.borrow().values())
        .any(|(file, _)| run_files.contains(file));
    if followed || node.shard.engine.borrow().write_failed().is_some() {
        node.shard.log.abandon(output);
        return Ok(false);
    }
    let replaced = node
        .shard
        .log
        .install(output, |step| crash_point(node, step))
        .await
        .map_err(io("installing the compacted segment"))?;
    crash_point(node, "installed");
    for (n, (key, from, value_offset)) in moved.iter().enumerate() {
        let to = Location {
            file: new_file,
            value_offset: *value_offset,
            value_len: from.value_len,
        };
        node.shard.engine.borrow_mut().relocate(key, *from, to);
        if n == moved.len() / 2 {
            crash_point(node, "switching");
        }
        if n % COMPACTION_SWITCH_SLICE == COMPACTION_SWITCH_SLICE - 1 {
            tokio::task::yield_now().await;
        }
    }
    crash_point(node, "switched");
    tracing::debug!(
        first = first.id,
        last = last.id,
        records = moved.len(),
        "compacted a run of segments"
    );
    // Reads decided before the switch may still name the old files for a moment.
    let later = node.clone();
    crate::runtime::spawn(async move {
        tokio::time::sleep(Duration::from_millis(COMPACTION_RETIRE_MS)).await;
        later.shard.log.forget(&replaced);
    });
    Ok(true)
}

fn crash_point(node: &Node, step: &str) {
    node.crash_point("compaction", step);
}

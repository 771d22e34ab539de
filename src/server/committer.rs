//! The committer: the one task that makes batches durable (group commit), keeping the disk's
//! flush busy.
//!
//! Writes and flushes overlap: while batch N's fdatasync runs, the records that arrived meanwhile
//! are taken as batch N+1 and written (into the page cache), and N+1's fdatasync starts the
//! moment N's completes. So a flush is always in flight under load and each covers everything
//! written before it began. Batches become visible (index, replies) strictly in log order, and
//! only once their flush completes.
//!
//! The commit window (`--commit-window-ms`, PostgreSQL's commit_delay idea): after a flush, the
//! clients it answered usually write again within a round trip. Starting the next flush before
//! they do splits the writers into two half batches that alternate; waiting until every client
//! just answered has sent its next request (or the window ends) keeps each flush full.
//!
//! A failed write or sync poisons the engine: retrying an fsync can report success after the
//! kernel dropped the dirty pages, so kvsd never pretends it did not happen.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::Batch;

use super::config::FsyncPolicy;
use super::Node;

/// A batch written to the log at (file number, offset), not yet known durable.
struct Written {
    batch: Batch,
    file: u32,
    offset: u64,
}

type Op<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
/// A batch's write: where it landed in the log, and the batch back.
type Write<'a> = Op<'a, (io::Result<(u32, u64)>, Batch)>;
/// A flush in flight: the fdatasync, the batches it covers, and when it started.
type Flush<'a> = (Op<'a, io::Result<()>>, Vec<Written>, Instant);

pub async fn run(node: Rc<Node>) {
    let shard = &node.shard;
    let log = &shard.log;
    let always = node.config.fsync == FsyncPolicy::Always;
    let window = node.config.commit_window;
    let mut spares: Vec<Batch> = Vec::new();
    let mut written: VecDeque<Written> = VecDeque::new();
    let mut writing: Option<Write<'_>> = None;
    let mut syncing: Option<Flush<'_>> = None;
    // When the last flush completed: the commit window runs from there.
    let mut flushed_at: Option<Instant> = None;
    // The commit window held the next flush back since the last one completed.
    let mut held = false;
    loop {
        let failed = shard.engine.borrow().write_failed().is_some();
        if failed {
            // Nothing written after a failure is ever flushed or acknowledged.
            spares.extend(written.drain(..).map(|mut w| {
                w.batch.clear();
                w.batch
            }));
        }
        if writing.is_none() && !failed {
            let spare = spares.pop().unwrap_or_default();
            match shard.engine.borrow_mut().take_batch(spare) {
                Ok(mut batch) => {
                    shard.batch_taken.notify_waiters();
                    let first_seq = batch.first_seq().expect("a taken batch is not empty");
                    let buf = batch.take_buf();
                    writing = Some(Box::pin(async move {
                        let (result, buf) = log.append(buf, first_seq).await;
                        batch.restore_buf(buf);
                        (result, batch)
                    }));
                }
                Err(empty) => spares.push(empty),
            }
        }
        // A flush covers the batches whose writes completed before it starts.
        let mut window_ends = None;
        if syncing.is_none() && !written.is_empty() {
            if !always {
                // `interval` and `never`: written is as durable as it gets here.
                let batches: Vec<Written> = written.drain(..).collect();
                applied(&node, &batches, Instant::now(), false);
                spares.extend(batches.into_iter().map(|mut w| {
                    w.batch.clear();
                    w.batch
                }));
                continue;
            }
            // Within the window after a flush: hold while clients it answered have not spoken
            // yet, and once they all have (or once we held at all), until what they sent is
            // written too, so it joins this flush rather than trailing into the next.
            let window_open = match (window, flushed_at) {
                (Some(window), Some(at)) => Some(at + window).filter(|&ends| Instant::now() < ends),
                _ => None,
            };
            let awaited = shard.awaiting_clients.get() > 0;
            let unwritten = writing.is_some() || shard.has_open_batch();
            match window_open {
                Some(ends) if awaited || (held && unwritten) => {
                    held = true;
                    if writing.is_none() {
                        window_ends = Some(ends);
                    }
                }
                _ => {
                    held = false;
                    let file = written.back().expect("not empty").file;
                    let batches: Vec<Written> = written.drain(..).collect();
                    syncing = Some((Box::pin(log.sync_file(file)), batches, Instant::now()));
                }
            }
        }
        shard
            .committing
            .set(writing.is_some() || syncing.is_some() || !written.is_empty());
        if !shard.committing.get() {
            shard.committer_idle.notify_waiters();
        }
        tokio::select! {
            (result, mut batch) = poll(&mut writing) => {
                writing = None;
                match result {
                    Ok((file, offset)) => written.push_back(Written { batch, file, offset }),
                    Err(error) => {
                        fail(&node, format!("write: {error}"));
                        batch.clear();
                        spares.push(batch);
                    }
                }
            }
            result = poll_sync(&mut syncing) => {
                let (_, batches, started) = syncing.take().expect("a flush was in flight");
                match result {
                    Ok(()) => applied(&node, &batches, started, true),
                    Err(error) => fail(&node, format!("fdatasync: {error}")),
                }
                flushed_at = Some(Instant::now());
                shard.new_window();
                if window.is_some() {
                    // Let the connections just answered run first: each that owes its client
                    // nothing more counts itself in the window before the next flush is decided.
                    tokio::task::yield_now().await;
                }
                spares.extend(batches.into_iter().map(|mut w| {
                    w.batch.clear();
                    w.batch
                }));
            }
            _ = shard.commit_wake.notified() => {}
            _ = sleep_until(window_ends), if window_ends.is_some() => {}
        }
    }
}

/// The batches are durable (or, without `--fsync always`, written): their writes become
/// visible, in log order, and their replies may go.
fn applied(node: &Node, batches: &[Written], started: Instant, synced: bool) {
    let shard = &node.shard;
    {
        let mut engine = shard.engine.borrow_mut();
        for written in batches {
            engine.apply_durable(&written.batch, written.file, written.offset);
        }
        for (location, value) in engine.take_to_cache() {
            shard.log.cache_value(location, value);
        }
    }
    let records = batches.iter().map(|w| w.batch.len()).sum();
    node.stats.count_batch(
        records,
        synced.then(|| started.elapsed()),
        node.writers.get(),
    );
    node.progressed();
}

async fn poll<'a, T>(op: &mut Option<Op<'a, T>>) -> T {
    match op {
        Some(op) => op.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn poll_sync(syncing: &mut Option<Flush<'_>>) -> io::Result<()> {
    match syncing {
        Some((op, _, _)) => op.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Under `--fsync interval=<ms>`: fdatasync the log every interval while it has unsynced data.
pub async fn sync_every(node: Rc<Node>, every: Duration) {
    let mut synced_seq = node.shard.engine.borrow().durable_seq();
    loop {
        tokio::time::sleep(every).await;
        let written = node.shard.engine.borrow().durable_seq();
        if written == synced_seq || node.shard.engine.borrow().write_failed().is_some() {
            continue;
        }
        match node.shard.log.sync().await {
            Ok(()) => synced_seq = written,
            Err(error) => fail(&node, format!("fdatasync: {error}")),
        }
    }
}

pub fn fail(node: &Node, error: String) {
    tracing::error!(
        %error,
        "a log write failed: refusing every further write; reads go on. \
         Writes not yet acknowledged may or may not be on disk. Fix the disk and restart kvsd."
    );
    node.shard.engine.borrow_mut().fail(error);
    node.progressed();
}

//! The committer: the one task that makes batches durable (group commit).
//!
//! Whenever no write + fdatasync is in flight it takes the whole open batch, writes it with one
//! write and syncs it with one fdatasync on the io_uring; whatever arrives meanwhile forms the
//! next batch, so batches grow with load by themselves, with no timer. Only after the sync
//! completes are the batch's writes applied to the index and their replies released.
//!
//! A failed write or sync poisons the engine: retrying an fsync can report success after the
//! kernel dropped the dirty pages, so kvsd never pretends it did not happen.

use std::rc::Rc;
use std::time::Instant;

use crate::engine::Batch;

use super::config::FsyncPolicy;
use super::Shared;

pub async fn run(shared: Rc<Shared>) {
    let mut spare = Batch::default();
    loop {
        let taken = shared.engine.borrow_mut().take_batch(spare);
        let mut batch = match taken {
            Ok(batch) => batch,
            Err(empty) => {
                spare = empty;
                shared.committing.set(false);
                shared.commit_wake.notified().await;
                continue;
            }
        };
        shared.committing.set(true);
        shared.batch_taken.notify_waiters();
        let started = Instant::now();
        let first_seq = batch.first_seq().expect("a taken batch is not empty");
        let (appended, buf) = shared.log.append(batch.take_buf(), first_seq).await;
        batch.restore_buf(buf);
        let durable = match appended {
            Ok(at) if shared.config.fsync == FsyncPolicy::Always => shared
                .log
                .sync()
                .await
                .map(|()| at)
                .map_err(|e| format!("fdatasync: {e}")),
            Ok(at) => Ok(at),
            Err(error) => Err(format!("write: {error}")),
        };
        match durable {
            Ok((segment, offset)) => {
                shared
                    .engine
                    .borrow_mut()
                    .apply_durable(&batch, segment, offset);
                shared.stats.count_batch(batch.len(), started.elapsed());
            }
            Err(error) => fail(&shared, error),
        }
        shared.progress.send_modify(|generation| *generation += 1);
        batch.clear();
        spare = batch;
    }
}

/// Under `--fsync interval=<ms>`: fdatasync the log every interval while it has unsynced data.
pub async fn sync_every(shared: Rc<Shared>, every: std::time::Duration) {
    let mut synced_seq = shared.engine.borrow().durable_seq();
    loop {
        tokio::time::sleep(every).await;
        let written = shared.engine.borrow().durable_seq();
        if written == synced_seq || shared.engine.borrow().write_failed().is_some() {
            continue;
        }
        match shared.log.sync().await {
            Ok(()) => synced_seq = written,
            Err(error) => {
                fail(&shared, format!("fdatasync: {error}"));
                shared.progress.send_modify(|generation| *generation += 1);
            }
        }
    }
}

pub fn fail(shared: &Shared, error: String) {
    tracing::error!(
        %error,
        "a log write failed: refusing every further write; reads go on. \
         Writes not yet acknowledged may or may not be on disk. Fix the disk and restart kvsd."
    );
    shared.engine.borrow_mut().fail(error);
}

//! openraft's own storage test suite (`openraft::testing::Suite`) against kvsd's Raft log
//! store (`kvs::raft::log_store`, on the WAL in a temp dir) and state machine.
//!
//! The suite's `test_all` runs each case on a multi-threaded tokio runtime of its own; kvsd's
//! log lives on the io_uring loop, so each case is run here, one by one, inside
//! `kvs::runtime::start` (the same cases, in the same order as 0.9.21's `test_store`).

use std::cell::RefCell;
use std::rc::Rc;

use kvs::engine::Engine;
use kvs::raft::log_store::{LogStore, RaftLog};
use kvs::raft::state_machine::{Machine, StateMachine};
use kvs::raft::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, Machine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = RaftLog::recover(dir.path(), false, 1 << 20, 1 << 20).expect("recovery");
        let log = Rc::new(log);
        let engine = Rc::new(RefCell::new(Engine::new(0)));
        let sm = Rc::new(StateMachine::new(engine, log.clone()));
        Ok((dir, LogStore { log }, Machine(sm)))
    }
}

type S = Suite<TypeConfig, LogStore, Machine, Builder, tempfile::TempDir>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                kvs::runtime::start(async {
                    let (_dir, store, sm) = Builder.build().await?;
                    S::$name(store, sm).await
                })
                .unwrap();
            }
        )*
    };
}

cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[test]
fn transfer_snapshot() {
    kvs::runtime::start(S::transfer_snapshot(&Builder)).unwrap();
}

/// The suite never restarts a store: this does, and checks that the log, the vote and a cut
/// suffix survive it as they were left (the vote as not committed).
#[test]
fn the_log_vote_and_a_truncation_survive_a_restart() {
    use openraft::storage::RaftLogStorage;
    use openraft::{EntryPayload, RaftLogReader};
    let dir = tempfile::tempdir().unwrap();
    let entry = |term, seq| kvs::raft::Entry {
        log_id: kvs::raft::log_id(term, seq),
        payload: EntryPayload::Normal(kvs::raft::Command::Set {
            key: bytes::Bytes::from(format!("k{seq}")),
            value: bytes::Bytes::from(format!("v{seq}")),
        }),
    };
    kvs::runtime::start(async {
        let (log, _) = RaftLog::recover(dir.path(), false, 1 << 20, 1 << 20).unwrap();
        let mut store = LogStore { log: Rc::new(log) };
        let entries: Vec<_> = (1..=10).map(|seq| entry(1, seq)).collect();
        append(&mut store, entries).await;
        store.truncate(kvs::raft::log_id(1, 7)).await.unwrap();
        append(&mut store, vec![entry(2, 7)]).await;
        store
            .save_vote(&openraft::Vote::new_committed(2, 9))
            .await
            .unwrap();
    });
    kvs::runtime::start(async {
        let (log, _) = RaftLog::recover(dir.path(), false, 1 << 20, 1 << 20).unwrap();
        let mut store = LogStore { log: Rc::new(log) };
        let got = store.try_get_log_entries(0..100).await.unwrap();
        let want: Vec<_> = (1..=6)
            .map(|seq| entry(1, seq))
            .chain([entry(2, 7)])
            .collect();
        assert_eq!(got, want);
        // The vote comes back for the same leader, not committed: a restarted node stands for
        // election in a new term rather than resume a leadership whose last unflushed appends a
        // crash may have taken (src/raft/log_store.rs).
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(openraft::Vote::new(2, 9))
        );
    });
}

async fn append(store: &mut LogStore, entries: Vec<kvs::raft::Entry>) {
    use openraft::storage::RaftLogStorageExt;
    store.blocking_append(entries).await.unwrap();
}

//! The seeds' flags and Raft (issue 11): `--leader` / `--leader-addr` keep today's asynchronous
//! replication (Raft is asked for with `--bootstrap` / `--join` until a Raft node compacts its log
//! and nears a single node's write rate), and a Raft member's data dir is never started outside
//! its cluster.

mod common;

use common::raft::{get_min_seq, options, stats, wait_for, LEADER_WAIT};
use kvs::client::Client;

/// A data dir that belongs to a Raft cluster is never started as an asynchronous leader: the
/// seed command line (`--leader`) is refused with a message naming what to pass.
#[test]
fn a_raft_data_dir_is_not_started_outside_raft() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let node = common::start(&data, &["--node-id", "n1", "--bootstrap"]);
    wait_for("a leader", LEADER_WAIT, || {
        stats(&node.addr).filter(|s| s["role"] == "leader")
    });
    assert!(node.stop().success());
    let refused = common::try_start(&data, &["--node-id", "n1", "--leader"])
        .err()
        .expect("a Raft member's data dir started with --leader");
    assert!(refused.contains("belongs to a Raft cluster"), "{refused}");
    // Its own command line still starts it.
    let again = common::start(&data, &["--node-id", "n1", "--bootstrap"]);
    assert!(again.stop().success());
}

/// The seeds' `--leader` / `--leader-addr` are today's asynchronous leader and follower, with or
/// without `--async-replication`; Raft takes `--bootstrap` / `--join`.
#[test]
fn async_replication_and_data_dirs_written_outside_raft_keep_todays_replication() {
    let dir = tempfile::tempdir().unwrap();
    let leader = common::start(
        &dir.path().join("l"),
        &["--node-id", "l", "--leader", "--async-replication"],
    );
    let follower = common::start(
        &dir.path().join("f"),
        &[
            "--node-id",
            "f",
            "--async-replication",
            "--leader-addr",
            &leader.addr,
        ],
    );
    let seq = Client::connect_with(&leader.addr, options())
        .unwrap()
        .set(b"k", b"v")
        .unwrap();
    let got = wait_for("the follower applies k", LEADER_WAIT, || {
        get_min_seq(&follower.addr, "k", seq).ok()
    });
    assert_eq!(got.as_deref(), Some("v"));
    for node in [&leader.addr, &follower.addr] {
        let s = stats(node).unwrap();
        assert!(!s.contains_key("term"), "not a Raft node: {s:?}");
    }
    assert!(stats(&follower.addr).unwrap().contains_key("link_state"));
    assert!(leader.stop().success());

    // The leader's data dir, restarted with only --leader: still today's leader, data intact.
    let again = common::start(&dir.path().join("l"), &["--node-id", "l", "--leader"]);
    let s = stats(&again.addr).unwrap();
    assert!(
        !s.contains_key("term"),
        "a data dir written outside Raft stays outside: {s:?}"
    );
    let mut client = Client::connect_with(&again.addr, options()).unwrap();
    assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

//! The seeds' flags and Raft (issue 11): on a new data dir `--leader` means `--bootstrap` and
//! `--leader-addr X` means `--join X`, so the seeds' three command lines make a Raft cluster that
//! fails over by itself; `--async-replication`, or a data dir an asynchronous leader wrote, keeps
//! asynchronous replication; and a Raft member's data dir is never started outside its cluster.

mod common;

use common::raft::{get_min_seq, options, stats, voting, wait_for, LEADER_WAIT};
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
    for outside in [
        &["--node-id", "n1"][..],
        &["--node-id", "n1", "--leader", "--async-replication"],
    ] {
        let refused = common::try_start(&data, outside)
            .err()
            .unwrap_or_else(|| panic!("a Raft member's data dir started with {outside:?}"));
        assert!(refused.contains("belongs to a Raft cluster"), "{refused}");
    }
    // Its own command line still starts it, and so does the seeds' --leader.
    for again in [
        &["--node-id", "n1", "--bootstrap"][..],
        &["--node-id", "n1", "--leader"],
    ] {
        let node = common::start(&data, again);
        wait_for("a leader again", LEADER_WAIT, || {
            stats(&node.addr).filter(|s| s["role"] == "leader")
        });
        assert!(node.stop().success());
    }
}

/// The README's three seed command lines (`--leader`, then two `--leader-addr`) make a
/// three-voter Raft cluster: a write acknowledged by the leader is on the others, and when the
/// leader is killed the other two elect a new one that still has it.
#[test]
fn the_seeds_command_lines_make_a_raft_cluster_that_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let first = common::start(&dir.path().join("d1"), &["--node-id", "leader", "--leader"]);
    wait_for("the bootstrapped leader", LEADER_WAIT, || {
        stats(&first.addr).filter(|s| s["role"] == "leader")
    });
    let mut nodes = vec![first];
    for id in ["f1", "f2"] {
        let leader_addr = nodes[0].addr.clone();
        nodes.push(common::start(
            &dir.path().join(id),
            &["--node-id", id, "--leader-addr", &leader_addr],
        ));
    }
    let leader_of = |nodes: &[common::Kvsd]| {
        nodes
            .iter()
            .position(|n| stats(&n.addr).is_some_and(|s| s["role"] == "leader"))
    };
    wait_for("three voters", LEADER_WAIT * 2, || {
        (voting(&nodes[leader_of(&nodes)?].addr)? == 3).then_some(())
    });
    // Acknowledged by whichever node leads (an election may have moved it meanwhile).
    let seq = wait_for("a write acknowledged", LEADER_WAIT, || {
        let leader = &nodes[leader_of(&nodes)?];
        Client::connect_with(&leader.addr, options())
            .ok()?
            .set(b"x", b"foo")
            .ok()
    });
    for node in &nodes {
        let got = wait_for("every member applies x", LEADER_WAIT, || {
            get_min_seq(&node.addr, "x", seq).ok()
        });
        assert_eq!(got.as_deref(), Some("foo"));
    }
    let leading = wait_for("the leader", LEADER_WAIT, || leader_of(&nodes));
    nodes.remove(leading).kill9();
    // A read on the new leader, once it serves (a leader answers linearizable reads once it
    // has committed an entry of its term).
    let got = wait_for("a new leader's read", LEADER_WAIT, || {
        let leader = &nodes[leader_of(&nodes)?];
        Client::connect_with(&leader.addr, options())
            .ok()?
            .get(b"x")
            .ok()
    });
    assert_eq!(got.as_deref(), Some(&b"foo"[..]));
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

//! The seeds' commands on Raft (issue 11): the README's `--leader` / `--leader-addr` walkthrough
//! starts a Raft cluster (`--leader` on a new data dir means `--bootstrap`, `--leader-addr X`
//! means `--join X`) that elects a new leader by itself after a kill -9 and takes its old leader
//! back with the same command line; `--async-replication` keeps today's asynchronous leader and
//! follower; a data dir written outside Raft stays outside it.

mod common;

use std::process::Command;

use common::raft::{free_port, get_min_seq, options, stats, wait_for, Cluster, LEADER_WAIT};
use kvs::client::Client;

fn kvsctl(addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::KVSCTL)
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's three commands (`--leader`, then two `--leader-addr`) make three voters; a
/// write through a follower with kvsctl lands on the leader; after kill -9 of the leader the
/// other two elect one of themselves, which has the write; the old leader, restarted with the
/// same `--leader` command line on its now non-empty data dir, rejoins as a follower.
#[test]
fn the_seed_commands_start_a_raft_cluster_that_fails_over() {
    let ports = [free_port(), free_port(), free_port()];
    let first = format!("127.0.0.1:{}", ports[0]);
    let mut cluster = Cluster::start_with(ports, |i| {
        let mut args = vec!["--node-id".to_string(), format!("n{}", i + 1)];
        if i == 0 {
            args.push("--leader".into());
        } else {
            args.extend(["--leader-addr".to_string(), first.clone()]);
        }
        args
    });
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    assert_eq!(leader, 0, "n1 bootstrapped the cluster");
    let ours = stats(&cluster.addr(0)).unwrap();
    assert_eq!(ours["role"], "leader", "{ours:?}");
    assert!(ours["term"].parse::<u64>().unwrap() >= 1, "{ours:?}");
    assert_eq!(ours["members"], "3", "{ours:?}");

    // kvsctl against a follower follows NOT_LEADER to the leader.
    let (ok, out, err) = kvsctl(&cluster.addr(2), &["set", "x", "foo"]);
    assert!(ok, "kvsctl set: {out} {err}");
    let seq = Client::connect_with(&cluster.addr(0), options())
        .unwrap()
        .set(b"y", b"bar")
        .unwrap();

    cluster.kill(0);
    let new = wait_for("a new leader", LEADER_WAIT, || {
        (1..3).find(|&i| stats(&cluster.addr(i)).is_some_and(|s| s["role"] == "leader"))
    });
    let (ok, out, err) = kvsctl(&cluster.addr(new), &["get", "x"]);
    assert!(ok, "kvsctl get on the new leader: {out} {err}");
    assert_eq!(out.trim(), "foo");

    // The same command line (`--leader` on what is now a Raft member's data dir).
    cluster.restart(0);
    let value = wait_for("n1 applies y again", LEADER_WAIT, || {
        get_min_seq(&cluster.addr(0), "y", seq).ok()
    });
    assert_eq!(value.as_deref(), Some("bar"));
    let theirs = stats(&cluster.addr(0)).unwrap();
    assert_eq!(theirs["role"], "follower", "{theirs:?}");
    cluster.wait_voters(3);
}

/// `--async-replication` keeps today's asynchronous leader and follower, and a data dir they
/// wrote keeps them even without the flag: `--leader` there is not a Raft bootstrap.
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
